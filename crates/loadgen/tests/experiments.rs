//! Every experiment end to end at a small scale, so the pipeline that
//! produces `analysis/` cannot rot: real stacks, real replica processes,
//! a few hundred requests.

use loadgen::experiment::{self, Experiment, Settings};

fn settings(name: &str) -> Settings {
    let out = std::env::temp_dir().join(format!("loadgen-exp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    Settings::small(out, env!("CARGO_BIN_EXE_loadgen").into())
}

fn assert_files(s: &Settings, dir: &str, files: &[&str]) {
    for f in files {
        let path = s.out.join(dir).join(f);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(meta.len() > 0, "{} is empty", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a1_counts_every_request_per_policy() {
    let s = settings("a1");
    let summary = experiment::run(Experiment::A1, &s).await.expect("a1");
    assert!(summary.contains("round-robin"), "{summary}");
    assert_files(
        &s,
        "a1",
        &["a1.csv", "a1.svg", "summary.md", "reports.json"],
    );
    let csv = std::fs::read_to_string(s.out.join("a1/a1.csv")).expect("csv");
    // Round robin over 3 replicas: exactly 100 each of 300.
    let rr: Vec<&str> = csv
        .lines()
        .filter(|l| l.starts_with("round-robin,"))
        .collect();
    assert_eq!(
        rr,
        vec![
            "round-robin,server-1,100",
            "round-robin,server-2,100",
            "round-robin,server-3,100"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a2_covers_each_n() {
    let s = settings("a2");
    experiment::run(Experiment::A2, &s).await.expect("a2");
    assert_files(&s, "a2", &["a2.csv", "a2.svg", "summary.md"]);
    let csv = std::fs::read_to_string(s.out.join("a2/a2.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 1 + 3 * 2, "{csv}");
    assert!(csv.contains("round-robin,3,100.0,100,100,1.000"), "{csv}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a3_kills_a_replica_and_measures_recovery() {
    let s = settings("a3");
    let summary = experiment::run(Experiment::A3, &s).await.expect("a3");
    assert_files(
        &s,
        "a3",
        &[
            "a3.svg",
            "trace.csv",
            "endpoints.csv",
            "events.json",
            "summary.md",
        ],
    );
    assert!(
        summary.contains("All statuses as expected: true"),
        "{summary}"
    );
    assert!(summary.contains("| failed requests | 0 |"), "{summary}");
    assert!(!summary.contains("not observed"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a4_compares_presets_and_counts_moved_keys() {
    let s = settings("a4");
    let summary = experiment::run(Experiment::A4, &s).await.expect("a4");
    assert_files(
        &s,
        "a4",
        &[
            "a4-a1.svg",
            "a4-a2.svg",
            "a4-moved.svg",
            "moved.csv",
            "summary.md",
        ],
    );
    let moved = std::fs::read_to_string(s.out.join("a4/moved.csv")).expect("csv");
    // Consistent hashing: on the slotted ring every moved key goes to the joiner.
    for line in moved.lines().skip(1).filter(|l| l.starts_with("ring")) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols[3], cols[4], "a key moved between old replicas: {line}");
    }
    assert!(summary.contains("maglev"));
}
