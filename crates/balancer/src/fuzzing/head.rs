//! Request heads as a client sends them: raw bytes through hyper's HTTP/1
//! server, configured as the listener configures it, into the checks and
//! rewrites every request goes through before a replica sees it.

use std::{convert::Infallible, net::SocketAddr, sync::OnceLock};

use http::{Request, Response, Version, header};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::server::request;

/// One runtime for every input: building one per input would dominate.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Serves `data` as one client connection's bytes. Every request hyper
/// accepts is checked as the listener checks it; one that passes must have
/// exactly one valid `Host` (HTTP/1.1) and come out of the rewrite with
/// valid forwarding headers. A connection that hangs past the deadline is
/// a finding too.
pub fn request_head(data: &[u8]) {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            inspect(&mut req);
            Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(16 * 1024)
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .with_upgrades();
        let talk = async move {
            let (mut read, mut write) = tokio::io::split(client);
            let _ = write.write_all(data).await;
            let _ = write.shutdown().await;
            let mut sink = Vec::new();
            let _ = read.read_to_end(&mut sink).await;
        };
        let both = async {
            let (_, served) = tokio::join!(talk, conn);
            drop(served);
        };
        assert!(
            tokio::time::timeout(super::HEAD_DEADLINE, both)
                .await
                .is_ok(),
            "a connection hung"
        );
    });
}

fn inspect(req: &mut Request<Incoming>) {
    let http11 = req.version() == Version::HTTP_11;
    let absolute = req.uri().authority().cloned();
    if request::check(req).is_err() {
        return;
    }
    let hosts: Vec<_> = req.headers().get_all(header::HOST).iter().collect();
    assert!(hosts.len() <= 1, "two Host lines passed");
    assert!(
        !http11 || hosts.len() == 1,
        "an HTTP/1.1 request without Host passed"
    );
    if let Some(authority) = absolute {
        assert_eq!(
            hosts.first().map(|h| h.as_bytes()),
            Some(authority.as_str().as_bytes())
        );
    }
    if let Some(host) = hosts.first() {
        let host = host.to_str().expect("a checked Host is text");
        assert!(
            !host.is_empty() && !host.contains(['@', ' ', '"', '/']),
            "{host:?}"
        );
    }
    let client: SocketAddr = "198.51.100.1:9".parse().expect("addr");
    super::check_prepared(req.headers_mut(), client, "http");
}
