//! N = 2..6, 10,000 requests each: mean load per replica and the
//! spread (min/max) per N, for the same policies as A-1.

use std::fmt::Write as _;

use super::{
    BASELINE, ExperimentError, Settings, Variant, counts, measure, provenance, table, write,
};
use crate::chart;

pub(crate) struct Point {
    pub label: &'static str,
    pub n: usize,
    pub mean: f64,
    pub min: u64,
    pub max: u64,
}

pub(crate) async fn scaling(
    settings: &Settings,
    variants: &[Variant],
) -> Result<Vec<Point>, ExperimentError> {
    let mut points = Vec::new();
    for v in variants {
        for &n in &settings.ns {
            let report = measure(&v.spec(n), settings, |_| {}).await?;
            let values: Vec<u64> = counts(&report, n).into_iter().map(|(_, c)| c).collect();
            let mean = values.iter().sum::<u64>() as f64 / n as f64;
            points.push(Point {
                label: v.label,
                n,
                mean,
                min: values.iter().copied().min().unwrap_or(0),
                max: values.iter().copied().max().unwrap_or(0),
            });
        }
    }
    Ok(points)
}

pub(crate) fn write_scaling(
    dir: &std::path::Path,
    stem: &str,
    title: &str,
    points: &[Point],
) -> Result<String, ExperimentError> {
    let mut csv = String::from("policy,n,mean,min,max,max_over_mean\n");
    let mut rows = Vec::new();
    for p in points {
        let ratio = if p.mean > 0.0 {
            p.max as f64 / p.mean
        } else {
            0.0
        };
        let _ = writeln!(
            csv,
            "{},{},{:.1},{},{},{:.3}",
            p.label, p.n, p.mean, p.min, p.max, ratio
        );
        rows.push(vec![
            p.label.to_owned(),
            p.n.to_string(),
            format!("{:.0}", p.mean),
            p.min.to_string(),
            p.max.to_string(),
            format!("{ratio:.2}"),
        ]);
    }
    write(&dir.join(format!("{stem}.csv")), csv)?;
    let mut series: Vec<chart::Line> = Vec::new();
    let mut labels: Vec<&str> = points.iter().map(|p| p.label).collect();
    labels.dedup();
    if let Some(first) = labels.first() {
        series.push((
            "mean".into(),
            points
                .iter()
                .filter(|p| p.label == *first)
                .map(|p| (p.n as f64, p.mean))
                .collect(),
        ));
    }
    for label in &labels {
        let of = || points.iter().filter(|p| p.label == *label);
        series.push((
            format!("{label}: max"),
            of().map(|p| (p.n as f64, p.max as f64)).collect(),
        ));
        series.push((
            format!("{label}: min"),
            of().map(|p| (p.n as f64, p.min as f64)).collect(),
        ));
    }
    chart::line_chart(
        &dir.join(format!("{stem}.svg")),
        title,
        "replicas N",
        "requests per replica",
        &series,
        &[],
    )?;
    Ok(table(
        &["policy", "N", "mean", "min", "max", "max/mean"],
        &rows,
    ))
}

pub(crate) async fn run(settings: &Settings) -> Result<String, ExperimentError> {
    let dir = settings.dir("a2")?;
    let points = scaling(settings, &BASELINE).await?;
    let title = format!(
        "A-2: load per replica, {} requests, N = 2..6",
        settings.requests
    );
    let tbl = write_scaling(&dir, "a2", &title, &points)?;
    let worst = |label: &str| {
        points
            .iter()
            .filter(|p| p.label == label)
            .map(|p| {
                if p.mean > 0.0 {
                    p.max as f64 / p.mean
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max)
    };
    let summary = format!(
        "# A-2: load per replica as N grows\n\n{}\n![A-2](a2.svg)\n\n{tbl}\nWorst max/mean over all N: {}.\n",
        provenance(settings),
        BASELINE
            .iter()
            .map(|v| format!("{} {:.2}", v.label, worst(v.label)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    write(&dir.join("summary.md"), &summary)?;
    Ok(summary)
}
