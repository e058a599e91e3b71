//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz, libFuzzer),
//! behind the `fuzzing` feature: one function per parser of untrusted
//! input, each taking raw bytes and asserting the invariants that must hold
//! for *any* input, so a broken invariant is a crash the fuzzer reports.
//!
//! The unit tests below replay the committed seed corpora and every crash
//! the fuzzers found (`fuzz/corpus/`, `fuzz/regressions/`) through the
//! same functions, so the normal suite keeps them fixed.

mod head;

use std::{net::SocketAddr, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::time::Instant;

use crate::{
    change::{Change, Direction, Hostname},
    config::{self, Config},
    policy::{self, KeySource},
    proxy::{forwarded, headers::prepare_headers},
    upstream::UpstreamSpec,
};

pub use head::{own_request_head, request_head};

/// `/add` and `/rm` bodies: the first byte picks the direction and the
/// maximum `n`, the rest is the body.
pub fn admin_body(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let direction = if first & 1 == 0 {
        Direction::Add
    } else {
        Direction::Remove
    };
    let max_n = usize::from(first >> 1);
    match Change::from_json(direction, body, max_n) {
        Ok(change) => {
            assert!(change.n() >= 1 && change.n() <= max_n, "n out of range");
            assert!(change.hostnames().len() <= change.n(), "more names than n");
            let mut names: Vec<_> = change.hostnames().iter().map(Hostname::as_str).collect();
            for name in &names {
                assert_eq!(
                    Hostname::try_from(*name).as_ref().map(Hostname::as_str),
                    Ok(*name)
                );
            }
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), change.hostnames().len(), "a name twice");
            // What was accepted, written out again, means the same change.
            let again = serde_json::json!({ "n": change.n(), "hostnames": change.hostnames().iter().map(Hostname::as_str).collect::<Vec<_>>() });
            let again = serde_json::to_vec(&again).expect("serialises");
            assert_eq!(Change::from_json(direction, &again, max_n), Ok(change));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(name) = Hostname::try_from(String::from_utf8_lossy(body).into_owned()) {
        let s = name.as_str();
        assert!((1..=Hostname::MAX_LEN).contains(&s.len()));
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_eq!(Hostname::try_from(name.to_string()), Ok(name));
    }
}

/// `--upstream` values: parse, display, parse again gives the same.
pub fn upstream(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = UpstreamSpec::parse(&text, 0) else {
        return;
    };
    assert!(spec.weight >= 1);
    let shown = spec.to_string();
    assert_eq!(UpstreamSpec::parse(&shown, 9), Ok(spec), "{shown}");
}

/// A TOML `--config` file (before the first NUL byte) and a command line
/// (after it, NUL-separated). Whatever parses must be usable: every
/// timeout can be added to a clock, and building the policy it names
/// returns an error rather than panicking.
pub fn config(data: &[u8]) {
    let (toml, flags) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(cli) = config::parse_toml(&String::from_utf8_lossy(toml)) {
        usable(&cli.config);
    }
    let args = std::iter::once("balancer".to_owned()).chain(
        flags
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            // `--config FILE` would read the file system.
            .filter(|a| !a.contains("config")),
    );
    use clap::Parser as _;
    if let Ok(cli) = config::Cli::try_parse_from(args) {
        usable(&cli.config);
    }
}

fn usable(c: &Config) {
    let l = &c.limits;
    let now = Instant::now();
    for d in [
        c.health_interval,
        c.health_timeout,
        c.ready_timeout,
        c.drain_timeout,
        c.orchestrator.stop_timeout,
        l.header_read_timeout,
        l.client_idle_timeout,
        l.client_body_timeout,
        l.client_body_grace,
        l.send_timeout,
        l.connect_timeout,
        l.response_timeout,
        l.upstream_idle_timeout,
        l.tunnel_timeout,
        l.queue_timeout,
    ] {
        assert!(now.checked_add(d).is_some(), "{d:?} overflows a clock");
    }
    let _ = c.weights();
    let _ = policy::from_name(&c.policy, &c.policy_options());
    let key = c.key.to_string();
    assert_eq!(key.parse::<KeySource>().as_ref(), Ok(&c.key), "{key}");
}

/// `--key` values and the request parts a key is taken from: a key source
/// parses back from its display; a key is the same for the same request;
/// cookies give the same key whether sent on one line or several.
pub fn key(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let source = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let Ok(source) = source.parse::<KeySource>() else {
        return;
    };
    assert_eq!(
        source.to_string().parse::<KeySource>().as_ref(),
        Ok(&source)
    );
    let headers = header_map(lines);
    let client: SocketAddr = "10.1.2.3:4".parse().expect("addr");
    let parts = |headers: &HeaderMap| {
        let mut req = http::Request::new(());
        *req.headers_mut() = headers.clone();
        req.into_parts().0
    };
    let one = parts(&headers);
    let key = source.key(&one, client.ip());
    match &source {
        // A random key by design.
        KeySource::Random => {}
        // A header the request lacks gives a random key too (spread, not
        // piled onto one replica); otherwise the key is the request's.
        KeySource::Header(name) if !headers.contains_key(name) => {}
        KeySource::Cookie(name) => {
            // The same cookies on one `; `-joined line (HTTP/1.1) or one
            // per line (HTTP/2 may split them) give the same key.
            let pairs: Vec<String> = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            let sent = pairs
                .iter()
                .any(|p| p.split_once('=').is_some_and(|(k, _)| k == name));
            let (Ok(line), true) = (HeaderValue::from_str(&pairs.join("; ")), sent) else {
                return;
            };
            let mut joined = HeaderMap::new();
            joined.insert(header::COOKIE, line);
            let mut split = HeaderMap::new();
            for p in &pairs {
                if let Ok(v) = HeaderValue::from_str(p) {
                    split.append(header::COOKIE, v);
                }
            }
            assert_eq!(source.key(&parts(&joined), client.ip()), key, "joined");
            assert_eq!(source.key(&parts(&split), client.ip()), key, "split");
        }
        _ => assert_eq!(source.key(&one, client.ip()), key, "not deterministic"),
    }
}

/// Header rewriting: whatever headers a client sends, what goes upstream
/// has no hop-by-hop header (but `TE: trailers`), forwarding headers that
/// name this client and this listener, and a `Forwarded` that parses with
/// the balancer's element last and intact.
pub fn headers(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let client: SocketAddr = if first & 1 == 0 {
        "192.0.2.7:1234".parse().expect("addr")
    } else {
        "[2001:db8::9]:1234".parse().expect("addr")
    };
    let proto = if first & 2 == 0 { "http" } else { "https" };
    let mut h = header_map(rest.split(|&b| b == b'\n'));
    check_prepared(&mut h, client, proto);
}

/// Runs [`prepare_headers`] on `h` and checks what it made of them.
fn check_prepared(h: &mut HeaderMap, client: SocketAddr, proto: &'static str) {
    let host = h.get(header::HOST).cloned();
    let prior = h
        .get_all(header::FORWARDED)
        .iter()
        .map(|v| v.to_str().map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .and_then(|lines| forwarded::parse(&lines.join(", ")))
        .filter(|e| !e.is_empty());
    prepare_headers(h, client, proto);
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(!h.contains_key(name), "{name} went upstream");
    }
    if let Some(te) = h.get(header::TE) {
        assert_eq!(te, "trailers");
    }
    assert_eq!(
        h.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(),
        [proto]
    );
    assert_eq!(h.get("x-forwarded-host"), host.as_ref());
    let xff = h
        .get("x-forwarded-for")
        .expect("x-forwarded-for")
        .to_str()
        .expect("ascii");
    let ip = client.ip().to_string();
    assert!(xff == ip || xff.ends_with(&format!(", {ip}")), "{xff}");
    let values: Vec<_> = h.get_all(header::FORWARDED).iter().collect();
    assert_eq!(values.len(), 1, "one Forwarded line");
    let value = values[0].to_str().expect("ascii");
    let elements = forwarded::parse(value).unwrap_or_else(|| panic!("invalid: {value}"));
    let (ours, before) = elements.split_last().expect("an element");
    let for_ = if client.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip
    };
    let mut want = vec![
        ("for".to_owned(), for_),
        ("proto".to_owned(), proto.to_owned()),
    ];
    if let Some(host) = host.as_ref().and_then(|v| v.to_str().ok()) {
        want.push(("host".to_owned(), host.to_owned()));
    }
    assert_eq!(ours, &want, "{value}");
    assert_eq!(before, prior.as_deref().unwrap_or_default(), "{value}");
}

/// `name: value` lines into a header map; lines that are not a valid
/// header are skipped.
fn header_map<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            h.append(name, value);
        }
    }
    h
}

/// How long one input may take in [`request_head`]; a hang is a finding.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests;
