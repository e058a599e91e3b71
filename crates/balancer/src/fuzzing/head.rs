//! Request heads as a client sends them: raw bytes through hyper's HTTP/1
//! server, configured as the listener configures it, into the checks and
//! rewrites every request goes through before a replica sees it; and
//! through our own server side's parser (`server::h1::head`), which must
//! take only what hyper takes, and take it to mean the same request.

use std::{convert::Infallible, net::SocketAddr, sync::OnceLock};

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use http::{HeaderMap, Method, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::server::{
    h1::head::{self, Parsed},
    request,
};

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
    drop(hyper_heads(data));
}

/// A request head as its parser understood it.
type Head = (Method, Uri, Version, HeaderMap);

/// The largest head both parsers are given (hyper's read buffer).
const MAX_HEAD: usize = 16 * 1024;

/// Serves `data` through hyper as [`request_head`] says; the heads of the
/// requests hyper accepted, in order.
fn hyper_heads(data: &[u8]) -> Vec<Head> {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let head = (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                req.headers().clone(),
            );
            seen.lock().expect("heads").push(head);
            inspect(&mut req);
            async {
                Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD)
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
    std::mem::take(&mut *heads.lock().expect("heads"))
}

/// Parses `data` as our own server side does, request after request, up
/// to one after which the connection closes (HTTP/1.0 without
/// keep-alive, `Connection: close`). Bytes it leaves (to hyper, or for
/// more to arrive) are left untouched;
/// every request it takes passes the listener's checks, and is one hyper
/// takes too, with the same method, target, version and fields.
pub fn own_request_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut ours = Vec::new();
    loop {
        let before = buf.clone();
        match head::parse(&mut buf, MAX_HEAD) {
            Parsed::Request(ready) => {
                assert!(buf.len() < before.len(), "a request that took no bytes");
                let mut req = ready.request;
                ours.push((
                    req.method().clone(),
                    req.uri().clone(),
                    req.version(),
                    req.headers().clone(),
                ));
                inspect(&mut req);
                // The connection closes after this one's answer; or what
                // follows is the rest of its body, streamed.
                if !ready.keep_alive || ready.feeder.is_some() {
                    break;
                }
            }
            Parsed::Partial | Parsed::Hyper => {
                assert_eq!(buf, before, "bytes left to hyper were changed");
                break;
            }
        }
    }
    if ours.is_empty() {
        return;
    }
    // hyper on the bytes our parser took: the same requests, in order.
    let taken = data.len() - buf.len();
    let theirs = hyper_heads(&data[..taken]);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "hyper took a different number of requests"
    );
    for (ours, theirs) in ours.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "the parsers disagree on a head");
    }
}

fn inspect<B>(req: &mut Request<B>) {
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
