//! ns per lookup for each ring: `cargo bench -p ring`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ring::{BoundedLoad, HashPreset, Maglev, RingConfig, SlottedRing};

fn keys() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..1024).map(|_| rng.u64(..)).collect()
}

fn lookups(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("lookup");
    for preset in [HashPreset::Spec, HashPreset::Xxh3] {
        let ring = SlottedRing::build(
            RingConfig {
                preset,
                ..RingConfig::default()
            },
            [1, 2, 3],
        )
        .expect("ring");
        let mut i = 0;
        g.bench_function(format!("slotted-{preset}-n3"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(ring.lookup(black_box(keys[i])))
            })
        });
    }
    for n in [3u32, 100] {
        let ids: Vec<_> = (1..=n).collect();
        let maglev = Maglev::build(&ids).expect("maglev");
        let mut i = 0;
        g.bench_function(format!("maglev-n{n}"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(maglev.lookup(black_box(keys[i])))
            })
        });
    }
    let maglev = Maglev::build(&[1, 2, 3]).expect("maglev");
    let bound = BoundedLoad::new(0.25).expect("eps");
    let loads = [0u64, 3, 4, 5];
    let mut i = 0;
    g.bench_function("bounded-load-n3", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(
                bound.pick(maglev.candidates(black_box(keys[i])), 3, 12, |id| {
                    loads[id as usize]
                }),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
