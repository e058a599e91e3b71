//! Nanoseconds per `Policy::pick` for every registered policy, with 3 and 100
//! replicas, random keys, every replica healthy and nothing tried yet (the
//! first attempt of a request, i.e. the hot path).
//!
//! `cargo bench -p balancer --bench pick`
//!
//! The spec's slotted ring cannot hold 100 servers with its default M = 512,
//! K = 9 (N x K > M is refused at start); for 100 replicas it is measured
//! with M = 4096 and K = 12 (log2 M), the smallest power-of-two ring that
//! fits with room for probing. The benchmark id says so.

use std::{hint::black_box, net::SocketAddr, sync::Arc};

use balancer::{
    policy::{self, Pick, Policy, PolicyOptions},
    replica::{Replica, generated_name},
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn replicas(n: u32) -> Vec<Arc<Replica>> {
    (1..=n)
        .map(|i| {
            let addr =
                SocketAddr::from(([127, 0, 0, 1], u16::try_from(10_000 + i).unwrap_or(10_000)));
            Arc::new(Replica::new(generated_name(i), i, addr, 1 + i % 3, 0))
        })
        .collect()
}

/// The policy `name` prepared for `members`, and a note on any option changed
/// from the default to make it fit.
fn build(name: &str, members: &[Arc<Replica>]) -> (Arc<dyn Policy>, &'static str) {
    let default = PolicyOptions::default();
    let built = policy::from_name(name, &default).and_then(|p| policy::prepared(&p, members));
    match built {
        Ok(p) => (p, ""),
        Err(_) => {
            let mut options = PolicyOptions::default();
            options.ring.slots = 4096;
            options.ring.vnodes = 12;
            let p = policy::from_name(name, &options)
                .and_then(|p| policy::prepared(&p, members))
                .unwrap_or_else(|e| {
                    panic!("{name} cannot be built for {} replicas: {e}", members.len())
                });
            (p, " (M=4096,K=12)")
        }
    }
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [3, 100] {
        let members = replicas(n);
        // Fixed pseudo-random keys, cycled, so every policy sees the same ones.
        let mut rng = fastrand::Rng::with_seed(7);
        let keys: Vec<u64> = (0..4096).map(|_| rng.u64(..)).collect();
        for name in policy::names() {
            let (policy, note) = build(name, &members);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(format!("{name}{note}"), n), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    let pick = Pick {
                        key: keys[i],
                        replicas: &members,
                        tried: &[],
                    };
                    black_box(policy.pick(black_box(&pick)))
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = pick
}
criterion_main!(benches);
