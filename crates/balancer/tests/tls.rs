//! TLS termination and HTTP/2 at the edge, with real clients: rustls and
//! `openssl s_client` for the handshake (TLS 1.2 and 1.3, ALPN), `curl`
//! for HTTPS with h2 and h2c, a certificate reload that drops no
//! connection, start-up errors for bad certificates, forwarding headers
//! under TLS, a WebSocket-style tunnel over TLS, and the HTTP/2 Rapid Reset
//! bound.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use common::raw::{RawUpstream, Reply, Seen, ok, raw_upstream, read_for};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A self-signed pair for localhost in `dir`: (cert path, key path, DER).
fn pair(dir: &Path, tag: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("gen");
    let (cert, key) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&cert, generated.cert.pem()).expect("cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("key");
    (cert, key, generated.cert.der().clone())
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-tls-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

async fn over(upstream: &RawUpstream, cert: &Path, key: &Path) -> balancer::Running {
    common::start_static(vec![upstream.url.clone()], "round-robin", |config| {
        config.tls.tls_listen = Some("127.0.0.1:0".into());
        config.tls.tls_cert = Some(cert.to_owned());
        config.tls.tls_key = Some(key.to_owned());
    })
    .await
}

/// A rustls client trusting exactly `trusted`, offering `alpn`.
fn connector(trusted: &[CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    trusted: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    connector(trusted, alpn)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake")
}

async fn get_over(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0; 8192];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn https_with_alpn_forwarding_headers_and_a_reload_that_drops_nothing() {
    let dir = temp("reload");
    let (cert, key, first) = pair(&dir, "a");
    let up = raw_upstream(|_| ok("fine")).await;
    let lb = over(&up, &cert, &key).await;
    let addr = lb.tls_addr().expect("tls address");

    let mut h1 = tls_connect(addr, std::slice::from_ref(&first), &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let reply = get_over(&mut h1, "/one").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let h2 = tls_connect(addr, std::slice::from_ref(&first), &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(h2);
    let seen = up.requests();
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert!(
        seen[0].all("forwarded")[0].contains("proto=https"),
        "{:?}",
        seen[0]
    );

    // New files: new handshakes get the new certificate (the files are
    // looked at every 2 s); the connection already open keeps working.
    let (new_cert, new_key, second) = pair(&dir, "b");
    std::fs::copy(&new_cert, &cert).expect("replace cert");
    std::fs::copy(&new_key, &key).expect("replace key");
    let mut reloaded = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let fresh = connector(std::slice::from_ref(&second), &[b"http/1.1"])
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await;
        if fresh.is_ok() {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new certificate was never served");
    let reply = get_over(&mut h1, "/two").await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "the open connection was dropped: {reply}"
    );
    // A bad pair is refused and the current one kept.
    std::fs::write(&key, "garbage").expect("break key");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _still = tls_connect(addr, &[second], &[b"http/1.1"]).await;
    lb.stop().await;
}

#[tokio::test]
async fn real_clients_curl_h2_h2c_and_openssl_tls12_tls13() {
    common::ensure_tools(&[("curl", "curl"), ("openssl", "openssl")]);
    let dir = temp("clients");
    let (cert, key, _) = pair(&dir, "c");
    let up = raw_upstream(|_| ok("fine")).await;
    let lb = over(&up, &cert, &key).await;
    let tls = lb.tls_addr().expect("tls");
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--max-time",
                "5",
            ])
            .args(args)
            .output()
            .await
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let https = format!("https://localhost:{}/x", tls.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    let cacert = cert.display().to_string();
    for (flag, want) in [("--http2", "200 2"), ("--http1.1", "200 1.1")] {
        let got = curl(vec![
            flag.into(),
            "--cacert".into(),
            cacert.clone(),
            "--resolve".into(),
            resolve.clone(),
            https.clone(),
        ])
        .await;
        assert_eq!(got, want, "curl {flag}");
    }
    let got = curl(vec![
        "--http2-prior-knowledge".into(),
        format!("http://{}/x", lb.addr()),
    ])
    .await;
    assert_eq!(got, "200 2", "h2c with prior knowledge");

    for (version, alpn, want_alpn) in [
        ("-tls1_2", "h2", "ALPN protocol: h2"),
        ("-tls1_3", "http/1.1", "ALPN protocol: http/1.1"),
    ] {
        let out = tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &tls.to_string(),
                "-servername",
                "localhost",
            ])
            .args([version, "-alpn", alpn, "-CAfile", &cacert])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want_alpn), "{version}: {text}");
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{version}: {text}"
        );
        let want_version = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(text.contains(want_version), "{version}: {text}");
    }
    lb.stop().await;
}

#[tokio::test]
async fn bad_certificates_stop_the_start_with_a_clear_error() {
    let dir = temp("errors");
    let (cert, key, _) = pair(&dir, "ok");
    let (_, other_key, _) = pair(&dir, "other");
    let expired = {
        let k = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        let c = params.self_signed(&k).expect("sign");
        let (cp, kp) = (dir.join("old.crt"), dir.join("old.key"));
        std::fs::write(&cp, c.pem()).expect("cert");
        std::fs::write(&kp, k.serialize_pem()).expect("key");
        (cp, kp)
    };
    let unreadable = dir.join("unreadable.crt");
    std::fs::write(&unreadable, "x").expect("write");
    let missing = dir.join("missing.crt");
    let cases = [
        (missing.clone(), key.clone(), "cannot read --tls-cert"),
        (
            cert.clone(),
            other_key,
            "does not belong to the certificate",
        ),
        (expired.0, expired.1, "expired"),
        (unreadable, key.clone(), "no certificate"),
    ];
    for (c, k, want) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--replicas",
                "0",
            ])
            .arg("--tls-cert")
            .arg(&c)
            .arg("--tls-key")
            .arg(&k)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {}", c.display());
        assert!(stderr.contains(want), "{}: {stderr}", c.display());
    }
}

#[tokio::test]
async fn an_upgrade_is_tunnelled_over_tls() {
    let dir = temp("ws");
    let (cert, key, der) = pair(&dir, "w");
    let up = raw_upstream(|s: &Seen| {
        if s.header("upgrade").is_some() {
            Reply::Echo(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                    .to_vec(),
            )
        } else {
            ok("fine")
        }
    })
    .await;
    let lb = over(&up, &cert, &key).await;
    let mut tls = tls_connect(lb.tls_addr().expect("tls"), &[der], &[b"http/1.1"]).await;
    tls.write_all(
        b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = vec![0; 4096];
    let n = tls.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"over tls").await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf[..n], b"over tls");
    lb.stop().await;
}

/// An h2c attacker on `addr`: opens a stream, waits `hold` (so the balancer
/// has accepted it and started forwarding), resets it, again, for at most
/// 5 s or until the connection is closed. Streams sent, and whether the
/// balancer closed the connection.
async fn rapid_reset(addr: std::net::SocketAddr, hold: Duration) -> (u32, bool) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(connection);
    let mut sent = 0u32;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let ready = match tokio::time::timeout(Duration::from_secs(1), h2.clone().ready()).await {
            Ok(Ok(ready)) => ready,
            _ => break,
        };
        h2 = ready;
        let request = http::Request::get(format!("http://{addr}/attack"))
            .body(())
            .expect("request");
        let Ok((response, _)) = h2.send_request(request, true) else {
            break;
        };
        sent += 1;
        if hold.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(hold).await;
        }
        // Dropping the response future resets the stream.
        drop(response);
    }
    let closed = tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .is_ok();
    eprintln!(
        "rapid reset (hold {hold:?}): {sent} streams in {:?}, closed: {closed}",
        started.elapsed()
    );
    (sent, closed)
}

#[tokio::test]
async fn rapid_reset_closes_the_attacking_connection_and_others_are_served() {
    // A slow replica: every stream the attacker resets was forwarded.
    let up = raw_upstream(|_| Reply::SendAfter(Duration::from_millis(500), ok_bytes())).await;
    let lb = common::start_static(vec![up.url.clone()], "round-robin", |config| {
        config.limits.max_abandoned = 50;
    })
    .await;
    let addr = lb.addr();

    // Reset before the balancer even accepts the stream: h2's own cap on
    // resets pending accept closes the connection (GOAWAY).
    let (sent, closed) = rapid_reset(addr, Duration::ZERO).await;
    assert!(closed && sent < 2_000, "{sent} streams, closed: {closed}");
    // Reset after the balancer accepted and forwarded it: the balancer's
    // own bound (--max-abandoned 50) closes the connection.
    let (sent, closed) = rapid_reset(addr, Duration::from_millis(5)).await;
    assert!(
        closed,
        "the attacking connection is still open after {sent} reset streams"
    );
    assert!(
        sent <= 60,
        "{sent} streams before the connection was closed"
    );

    // Meanwhile and afterwards, other clients are served.
    for _ in 0..5 {
        let (status, body) = common::send(common::client().get(format!("http://{addr}/x"))).await;
        assert_eq!(status, 200, "{body}");
    }
    lb.stop().await;
}

fn ok_bytes() -> Vec<u8> {
    match ok("fine") {
        Reply::Send(bytes) => bytes,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_half_read_response_over_h2_does_not_pin_the_replica() {
    // An h2 client that opens a stream and never reads its large response:
    // flow control stalls it, the send timeout does not apply (the
    // connection itself keeps moving), so the stream must still end when
    // the client resets or leaves.
    let big = {
        let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 4194304\r\n\r\n".to_vec();
        bytes.resize(bytes.len() + 4 * 1024 * 1024, b'x');
        bytes
    };
    let up = raw_upstream(move |_| Reply::Send(big.clone())).await;
    let lb = common::start_static(vec![up.url.clone()], "round-robin", |config| {
        config.limits.send_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = lb.addr();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2");
    let conn = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{addr}/big"))
        .body(())
        .expect("request");
    let (response, _) = h2.send_request(request, true).expect("send");
    let response = response.await.expect("head");
    assert_eq!(response.status(), 200);
    // Read nothing, then leave.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(response);
    drop(h2);
    conn.abort();
    let mut released = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, status) =
            common::send(common::client().get(format!("http://{addr}/lb/status"))).await;
        if status["replicas"][0]["in_flight"] == 0 {
            released = true;
            break;
        }
    }
    assert!(released, "a stream its client left still pins the replica");
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(b"GET /lb/health HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_for(&mut socket, Duration::from_secs(1))
            .await
            .starts_with("HTTP/1.1 200")
    );
    lb.stop().await;
}
