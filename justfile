# Recipes for the load balancer. `just` itself: `pip install rust-just`
# (or `cargo install just`).

# Where cargo builds (CARGO_TARGET_DIR when set).
target_dir := env_var_or_default("CARGO_TARGET_DIR", "target")

compose := `if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo "docker-compose"; fi`

# List the recipes.
default:
    @just --list

# Run the balancer with 3 local replica processes on 127.0.0.1:5000.
run *ARGS:
    cargo run --release -p balancer -- {{ARGS}}

# Every test (what CI runs, besides fmt, clippy and e2e).
test:
    cargo test --workspace

# Release binaries for this machine.
build:
    cargo build --release --workspace

# Static binaries and the FROM-scratch images (offline).
images:
    docker/build

# Build the images and start the stack: the balancer spawns 3 backend containers on net1.
up: images
    {{compose}} up -d balancer
    @for i in $(seq 1 100); do curl -sf localhost:5000/rep >/dev/null && break; sleep 0.1; done
    @curl -s localhost:5000/rep; echo

# Stop the stack and remove every container the balancer spawned, and net1.
down:
    -{{compose}} down --remove-orphans
    -docker ps -aq --filter label=lb.project=lb | xargs -r docker rm -f
    -docker network rm net1 2>/dev/null

# Follow the balancer's logs.
logs:
    {{compose}} logs -f balancer

# End-to-end tests against the Docker engine.
e2e:
    .ci/e2e

# Proxy benchmark side by side with HAProxy and nginx -- the headline
# (50/500 connections x 1/2 threads) and every suite: instructions per
# request, 10,000 connections, 1 MiB bodies, 100 replicas, memory per
# connection, TLS keep-alive / new handshakes / h2 -- then the criterion
# benches (policy pick, ring lookup).
# About 20 minutes on 2 cores. `bench/run --suites headline` alone is quick.
bench OUT="analysis/bench":
    bench/run --out {{OUT}}
    bench/pick --out {{OUT}}
    cargo bench -p ring --bench lookup

# One experiment (a1..a4) or several; replicas are containers when a Docker
# engine answers (images built first), local processes otherwise.
experiment +NAMES:
    #!/usr/bin/env bash
    set -euo pipefail
    mode=""
    if docker info >/dev/null 2>&1; then
        docker/build
        mode=--docker
    else
        echo "no Docker engine: replicas run as local processes"
    fi
    cargo run --release -p loadgen -- experiment {{NAMES}} --out analysis $mode

# Experiment A-1: requests per replica, N = 3.
experiment-a1: (experiment "a1")

# Experiment A-2: load per replica, N = 2..6.
experiment-a2: (experiment "a2")

# Experiment A-3: every endpoint, then a replica killed.
experiment-a3: (experiment "a3")

# Experiment A-4: modified hash functions, keys moved.
experiment-a4: (experiment "a4")

# All four experiments.
experiments: (experiment "a1" "a2" "a3" "a4")

# A three-node Docker Swarm on this machine (own engines in network
# namespaces; the host engine's swarm state is not touched). See swarm/lab.
swarm-lab:
    swarm/lab up

# Remove the Swarm lab entirely and check that nothing of it is left.
swarm-lab-down:
    swarm/lab down

# Fuzz every target under fuzz/ for SECONDS each (libFuzzer, nightly);
# prints executions and coverage per target and writes them, with any
# crash, to analysis/fuzz/. Installs cargo-fuzz if missing.
fuzz SECONDS="60":
    fuzz/run {{SECONDS}}

# A bounded chaos run against a balancer process (default 3 minutes):
# steady GET/POST load, slow and abusive clients, replicas SIGKILLed,
# SIGSTOPped, added and removed. Results under analysis/soak/; fails if a
# goal is violated.
soak DURATION="3m":
    cargo build --release -p balancer -p loadgen
    {{target_dir}}/release/loadgen soak --duration {{DURATION}} --out analysis/soak --balancer-bin {{target_dir}}/release/balancer

# The short soak CI runs (~40 s); results under target/soak-ci/.
soak-ci:
    cargo build --release -p balancer -p loadgen
    {{target_dir}}/release/loadgen soak --duration 40s --out {{target_dir}}/soak-ci --balancer-bin {{target_dir}}/release/balancer

# The stack on Docker Swarm: `docker stack deploy` of compose.yaml with
# swarm/compose.swarm.yaml (two balancers, --orchestrator swarm, host-mode
# ports LB_PORT / LB_PORT_2, default 5000 / 5001). A one-node swarm is
# created if none is active (and left by swarm-down only then).
swarm-up:
    swarm/up

# Remove the stack, every replica service it created and its network; leave
# the swarm if swarm-up created it.
swarm-down:
    swarm/down

# End-to-end test of --orchestrator swarm: two balancers on a one-node swarm.
e2e-swarm:
    .ci/e2e-swarm
