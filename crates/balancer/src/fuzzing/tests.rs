//! The committed seed corpora and every crash the fuzzers found, replayed
//! through the targets' checks on every `cargo test`.

use std::path::PathBuf;

/// A target's checks.
type Check = fn(&[u8]);

/// Every fuzz target, by its directory name under `fuzz/corpus/`.
const TARGETS: [(&str, Check); 7] = [
    ("admin_body", super::admin_body),
    ("upstream", super::upstream),
    ("config", super::config),
    ("key", super::key),
    ("headers", super::headers),
    ("request_head", super::request_head),
    ("own_request_head", super::own_request_head),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn seeds_and_regressions_pass_every_target() {
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let mut seeds = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
                continue;
            };
            for entry in dir.flatten() {
                let data = std::fs::read(entry.path()).expect("read seed");
                check(&data);
                seeds += 1;
            }
        }
        assert!(seeds > 0, "no seeds for {target}");
        replayed += seeds;
    }
    assert!(replayed >= TARGETS.len());
}
