//! The judging of a soak, on made-up observations: each goal can fail.

use super::*;
use crate::soak::process::Resources;

fn record(method: &'static str, start_s: f64, end_s: f64, ok: bool) -> Record {
    Record {
        method,
        start_s,
        end_s,
        status: Some(if ok { 200 } else { 502 }),
        error: (!ok).then(|| "failed".into()),
        replica: ok.then(|| "1".into()),
    }
}

fn fate(action: Action, at_s: f64, replica: &str, until_s: Option<f64>) -> Fate {
    Fate {
        action,
        at_s,
        replica: replica.into(),
        pid: Some(1),
        until_s,
        result: "true".into(),
    }
}

fn event(at_s: f64, kind: EventKind, replica: &str) -> balancer::events::Event {
    balancer::events::Event {
        seq: 1,
        at_ms: 1_000_000 + (at_s * 1000.0) as u64,
        kind,
        replica: replica.into(),
        detail: String::new(),
    }
}

fn observed(
    requests: Vec<Record>,
    fates: Vec<Fate>,
    events: Vec<balancer::events::Event>,
) -> Observed {
    let sample = |t_s, rss_kib, fds| Sample {
        t_s,
        resources: Resources { rss_kib, fds },
    };
    Observed {
        requests,
        abuse: Vec::new(),
        fates,
        events,
        samples: vec![
            sample(0.0, 10_240, 40),
            sample(5.0, 20_480, 90),
            sample(9.0, 11_000, 45),
        ],
        baseline: 0,
        load_end_s: 8.0,
        t0_unix_ms: 1_000_000,
    }
}

fn judge(o: Observed) -> Report {
    let config = SoakConfig {
        duration: std::time::Duration::from_secs(8),
        out: "unused".into(),
        balancer_bin: "unused".into(),
        seed: 1,
    };
    analyse(o, true, 3, Vec::new(), &config)
}

fn met(r: &Report, name: &str) -> bool {
    r.goals
        .iter()
        .find(|g| g.name.starts_with(name))
        .expect(name)
        .met
}

#[test]
fn failures_and_ejections_are_laid_against_the_fates() {
    let fates = vec![
        fate(Action::Kill, 2.0, "server-1", None),
        fate(Action::Stop, 5.0, "server-2", Some(6.0)),
        fate(Action::Remove, 7.0, "server-3", None),
    ];
    let requests = vec![
        record("GET", 0.5, 0.6, true),
        record("POST", 1.9, 2.1, false), // in flight at the kill
        record("POST", 5.5, 8.0, false), // sent to the frozen replica
    ];
    let events = vec![event(5.6, EventKind::Down, "server-2")];
    let r = judge(observed(requests.clone(), fates.clone(), events));
    assert!(r.passed(), "{:?}", r.goals);
    assert_eq!(r.posts_failed[0].explained_by, ["kill:server-1"]);
    assert_eq!(r.rss_mib.peak, 20.0);

    // A POST that failed with no kill or stop near it, a failed GET, a
    // replica ejected with nothing done to it, a removal that failed a
    // request: each breaks its goal.
    let mut requests = requests;
    requests.push(record("POST", 9.5, 9.6, false));
    requests.push(record("GET", 3.0, 3.1, false));
    let events = vec![event(4.0, EventKind::Suspect, "server-3")];
    let r = judge(observed(requests, fates, events));
    assert!(!met(&r, "GETs answered"));
    assert!(!met(&r, "POSTs failed only"));
    assert!(!met(&r, "Replicas ejected"));
    assert!(!r.passed());
}

#[test]
fn resources_that_stay_up_break_their_goals() {
    let mut o = observed(
        vec![
            record("GET", 0.0, 0.1, true),
            record("POST", 0.0, 0.1, true),
        ],
        Vec::new(),
        Vec::new(),
    );
    o.samples.push(Sample {
        t_s: 10.0,
        resources: Resources {
            rss_kib: 200 * 1024,
            fds: 400,
        },
    });
    let r = judge(o);
    for goal in ["Peak RSS", "End RSS", "Peak fds", "End fds"] {
        assert!(!met(&r, goal), "{goal}");
    }
}
