//! Prints each preset's shares of 10,000 random 6-digit keys over servers
//! 1..=3 on the spec's ring (M = 512, K = 9), and Maglev's.
//!
//! `cargo run -p ring --example spec_shares`

use ring::{HashPreset, Maglev, RingConfig, SlottedRing};

fn main() -> Result<(), ring::RingError> {
    let mut rng = fastrand::Rng::with_seed(2024);
    let keys: Vec<u64> = (0..10_000).map(|_| rng.u64(100_000..=999_999)).collect();
    let report = |name: &str, lookup: &dyn Fn(u64) -> Option<u32>| {
        let mut counts = [0usize; 3];
        for &k in &keys {
            if let Some(s) = lookup(k) {
                counts[s as usize - 1] += 1;
            }
        }
        let max = *counts.iter().max().unwrap_or(&0) as f64 / (keys.len() as f64 / 3.0);
        println!("{name:<8} {counts:?}  max/mean {max:.2}");
    };
    for preset in HashPreset::ALL {
        let ring = SlottedRing::build(
            RingConfig {
                preset,
                ..RingConfig::default()
            },
            [1, 2, 3],
        )?;
        report(preset.name(), &|k| ring.lookup(k));
    }
    let maglev = Maglev::build(&[1, 2, 3])?;
    report("maglev", &|k| maglev.lookup(k));
    Ok(())
}
