//! 10,000 requests on N = 3; requests per replica, for the spec's ring,
//! the default policy and round robin side by side.

use std::fmt::Write as _;

use super::{
    BASELINE, ExperimentError, Settings, Variant, counts, max_over_mean, measure, provenance,
    table, write, write_json,
};
use crate::chart;

/// One policy's result: label, requests per replica, the full report.
pub(crate) type Distribution = (&'static str, Vec<(String, u64)>, crate::Report);

pub(crate) async fn distribution(
    settings: &Settings,
    variants: &[Variant],
    replicas: usize,
) -> Result<Vec<Distribution>, ExperimentError> {
    let mut results = Vec::new();
    for v in variants {
        let report = measure(&v.spec(replicas), settings, |_| {}).await?;
        results.push((v.label, counts(&report, replicas), report));
    }
    Ok(results)
}

/// Writes counts.csv, the bar chart and a table; returns the table rows.
pub(crate) fn write_distribution(
    dir: &std::path::Path,
    stem: &str,
    title: &str,
    results: &[Distribution],
) -> Result<String, ExperimentError> {
    let mut csv = String::from("policy,replica,requests\n");
    let mut rows = Vec::new();
    for (label, counts, report) in results {
        for (replica, n) in counts {
            let _ = writeln!(csv, "{label},{replica},{n}");
        }
        let values: Vec<u64> = counts.iter().map(|(_, n)| *n).collect();
        rows.push(vec![
            (*label).to_owned(),
            values
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            format!("{:.2}", max_over_mean(&values)),
            report.failed.to_string(),
            format!("{:.0}", report.rps),
        ]);
    }
    write(&dir.join(format!("{stem}.csv")), csv)?;
    let series: Vec<chart::BarSeries> = results
        .iter()
        .map(|(label, counts, _)| {
            (
                (*label).to_owned(),
                counts.iter().map(|(r, n)| (r.clone(), *n as f64)).collect(),
            )
        })
        .collect();
    chart::bar_chart(&dir.join(format!("{stem}.svg")), title, "requests", &series)?;
    Ok(table(
        &[
            "policy",
            "requests per replica",
            "max/mean",
            "failed",
            "req/s",
        ],
        &rows,
    ))
}

pub(crate) async fn run(settings: &Settings) -> Result<String, ExperimentError> {
    let dir = settings.dir("a1")?;
    let results = distribution(settings, &BASELINE, 3).await?;
    let reports: Vec<_> = results.iter().map(|(l, _, r)| (l, r)).collect();
    write_json(&dir.join("reports.json"), &reports)?;
    let title = format!("A-1: {} requests over 3 replicas", settings.requests);
    let tbl = write_distribution(&dir, "a1", &title, &results)?;
    let spec_skew = results.first().map_or(0.0, |(_, c, _)| {
        max_over_mean(&c.iter().map(|(_, n)| *n).collect::<Vec<_>>())
    });
    let summary = format!(
        "# A-1: requests per replica, N = 3\n\n{}\n![A-1](a1.svg)\n\n{tbl}\nThe spec's ring sends its busiest replica {spec_skew:.2}x the mean share.\n",
        provenance(settings)
    );
    write(&dir.join("summary.md"), &summary)?;
    Ok(summary)
}
