//! A-4: A-1 and A-2 again with modified hash functions (the spec's two,
//! two strong mixers, a high-vnode ring, Maglev), and the share of keys
//! that move when one replica joins (ideal: 1/(N+1)).

use std::{collections::BTreeMap, fmt::Write as _};

use ring::HashPreset;

use super::{ExperimentError, Settings, Stack, Variant, a1, a2, provenance, table, write};
use crate::{RunConfig, chart};

const VARIANTS: [Variant; 6] = [
    Variant::new("ring (spec)", "ring", HashPreset::Spec),
    Variant::new("ring (spec-v1)", "ring", HashPreset::SpecV1),
    Variant::new("ring (fmix64)", "ring", HashPreset::Fmix64),
    Variant::new("ring (xxh3)", "ring", HashPreset::Xxh3),
    Variant {
        label: "ring (xxh3 M=16384 K=128)",
        policy: "ring",
        preset: HashPreset::Xxh3,
        slots: 16_384,
        vnodes: 128,
    },
    Variant::new("maglev", "maglev", HashPreset::Spec),
];

const KEY_HEADER: &str = "x-request-id";

/// Which replica served each request id, with the key taken from a header.
async fn mapping(
    stack: &Stack,
    settings: &Settings,
) -> Result<BTreeMap<u64, String>, ExperimentError> {
    let config = RunConfig {
        target: stack.url.clone(),
        requests: settings.requests,
        concurrency: settings.concurrency,
        trace: true,
        key_header: Some(KEY_HEADER.into()),
        ..RunConfig::default()
    };
    let report = crate::run(config).await?;
    if report.failed > 0 {
        return Err(ExperimentError::Failed(format!(
            "{} requests failed while mapping keys",
            report.failed
        )));
    }
    Ok(report
        .trace
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| Some((t.index, t.replica?)))
        .collect())
}

struct Moved {
    label: &'static str,
    n: usize,
    moved: usize,
    to_new: usize,
    total: usize,
}

async fn keys_moved(settings: &Settings, v: &Variant, n: usize) -> Result<Moved, ExperimentError> {
    let mut spec = v.spec(n);
    spec.key = format!("header:{KEY_HEADER}");
    let stack = Stack::start(&spec, settings).await?;
    let result = async {
        let before = mapping(&stack, settings).await?;
        let (status, body) = stack
            .request("POST", "/add", r#"{"n": 1, "hostnames": ["joiner"]}"#)
            .await?;
        if status != 200 {
            return Err(ExperimentError::Failed(format!(
                "/add answered {status}: {body}"
            )));
        }
        let after = mapping(&stack, settings).await?;
        let mut moved = 0;
        let mut to_new = 0;
        for (key, was) in &before {
            if let Some(now) = after.get(key)
                && now != was
            {
                moved += 1;
                to_new += usize::from(now == "joiner");
            }
        }
        Ok(Moved {
            label: v.label,
            n,
            moved,
            to_new,
            total: before.len(),
        })
    }
    .await;
    stack.stop().await;
    result
}

pub(crate) async fn run(settings: &Settings) -> Result<String, ExperimentError> {
    let dir = settings.dir("a4")?;
    let results = a1::distribution(settings, &VARIANTS, 3).await?;
    let dist = a1::write_distribution(
        &dir,
        "a4-a1",
        &format!(
            "A-4 (A-1 again): {} requests over 3 replicas",
            settings.requests
        ),
        &results,
    )?;
    let points = a2::scaling(settings, &VARIANTS).await?;
    let scale = a2::write_scaling(
        &dir,
        "a4-a2",
        "A-4 (A-2 again): load per replica, N = 2..6",
        &points,
    )?;

    let mut moved = Vec::new();
    for v in &VARIANTS {
        moved.push(keys_moved(settings, v, 3).await?);
    }
    let mut csv = String::from("policy,n,keys,moved,moved_to_new,moved_fraction,ideal\n");
    let mut rows = Vec::new();
    for m in &moved {
        let frac = m.moved as f64 / m.total.max(1) as f64;
        let ideal = 1.0 / (m.n as f64 + 1.0);
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{frac:.4},{ideal:.4}",
            m.label, m.n, m.total, m.moved, m.to_new
        );
        rows.push(vec![
            m.label.to_owned(),
            format!("{} -> {}", m.n, m.n + 1),
            format!("{:.1}%", 100.0 * frac),
            format!("{:.1}%", 100.0 * ideal),
            format!("{} of {}", m.moved - m.to_new, m.moved),
        ]);
    }
    write(&dir.join("moved.csv"), csv)?;
    let series = vec![
        (
            "keys moved".to_owned(),
            moved
                .iter()
                .map(|m| {
                    (
                        m.label.to_owned(),
                        100.0 * m.moved as f64 / m.total.max(1) as f64,
                    )
                })
                .collect(),
        ),
        (
            "ideal 1/(N+1)".to_owned(),
            moved
                .iter()
                .map(|m| (m.label.to_owned(), 100.0 / (m.n as f64 + 1.0)))
                .collect(),
        ),
    ];
    chart::bar_chart(
        &dir.join("a4-moved.svg"),
        "A-4: keys moved when a 4th replica joins (%)",
        "% of keys",
        &series,
    )?;
    let summary = format!(
        "# A-4: modified hash functions\n\n{}\nRing variants use `--policy ring` with the named `--hash-preset` (M = 512, K = 9 unless stated).\n\n## A-1 again (N = 3)\n\n![A-4 A-1](a4-a1.svg)\n\n{dist}\n## A-2 again (N = 2..6)\n\n![A-4 A-2](a4-a2.svg)\n\n{scale}\n## Keys moved when one replica joins\n\n{} keys (6-digit request ids in header `{KEY_HEADER}`, used as the key), mapped before and after `/add`.\n\n![A-4 moved](a4-moved.svg)\n\n{}",
        provenance(settings),
        settings.requests,
        table(
            &[
                "policy",
                "N",
                "keys moved",
                "ideal",
                "moved between old replicas"
            ],
            &rows
        )
    );
    write(&dir.join("summary.md"), &summary)?;
    Ok(summary)
}
