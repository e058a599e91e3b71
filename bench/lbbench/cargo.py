"""Where cargo puts its builds, and the release binaries the bench runs.

The target directory is asked of `cargo metadata` and nothing else: it
honours CARGO_TARGET_DIR, `build.target-dir` in any config.toml, and
workspaces alike, where a hard-coded `target/` does not."""

import json
import subprocess
from pathlib import Path

from . import ROOT, log


def parse_target_dir(metadata_json):
    """`target_directory` out of `cargo metadata --format-version 1` output."""
    return Path(json.loads(metadata_json)["target_directory"])


def target_dir(cwd=ROOT):
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=cwd, capture_output=True, text=True, check=True)
    return parse_target_dir(meta.stdout)


def build(no_build=False, bin_dir=None, packages=("backend", "balancer", "loadgen")):
    """The directory with release `backend`, `balancer` and `relay` (loadgen's): `bin_dir` as
    given, else cargo's release directory after building them (unless
    `no_build`)."""
    if bin_dir:
        return Path(bin_dir).resolve()
    if not no_build:
        pkgs = [a for p in packages for a in ("-p", p)]
        log(f"cargo build --release {' '.join(pkgs)}")
        subprocess.run(["cargo", "build", "--release", *pkgs], cwd=ROOT, check=True)
    return target_dir() / "release"
