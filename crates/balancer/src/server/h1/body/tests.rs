//! The request body's tests: a whole one, and a streamed one against a real
//! loopback connection.

use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;

use super::*;
use crate::conns::testing::tcp_pair;

/// Feeds until reading ends, as the connection's loop does.
async fn feed(feeder: &mut Feeder, tcp: &TcpStream) {
    std::future::poll_fn(|cx| {
        loop {
            match ready!(feeder.poll_feed(tcp, cx)) {
                Fed::Piece => {}
                Fed::Done => return Poll::Ready(()),
            }
        }
    })
    .await;
}

#[test]
fn a_body_is_no_larger_than_the_full_body_it_replaced() {
    assert!(
        std::mem::size_of::<RequestBody>() <= std::mem::size_of::<http_body_util::Full<Bytes>>()
    );
}

#[test]
fn a_short_read_does_not_hold_a_whole_piece_buffer() {
    let held = |filled: usize| {
        let mut read = BytesMut::with_capacity(PIECE);
        read.resize(filled, b'x');
        let piece = fitted(read);
        assert_eq!(piece.len(), filled);
        piece.try_into_mut().expect("unshared").capacity()
    };
    assert!(held(100) < 1024, "{}", held(100));
    // A long read is handed on as it is, uncopied.
    assert!(held(PIECE / 2) >= PIECE);
}

#[tokio::test]
async fn a_whole_body_is_handed_on_once() {
    let mut body = RequestBody::Whole(Bytes::from_static(b"abc"));
    assert_eq!(body.size_hint().exact(), Some(3));
    let frame = body.frame().await.expect("a frame").expect("ok");
    assert_eq!(&frame.into_data().expect("data")[..], b"abc");
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());
    assert!(RequestBody::Whole(Bytes::new()).is_end_stream());
}

#[tokio::test]
async fn a_body_streams_in_large_pieces_and_what_follows_is_kept() {
    let (ours, mut client) = tcp_pair().await;
    let len = 300 * 1024;
    let (mut body, mut feeder) = streamed(Bytes::from_static(b"first"), len as u64);
    assert_eq!(body.size_hint().exact(), Some(len as u64));
    let sent: Vec<u8> = (0..len - 5).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.expect("write");
        client.write_all(b"GET /next").await.expect("write");
        (sent, client)
    });
    let mut got = Vec::new();
    let mut pieces = 0;
    let read = async {
        while let Some(frame) = body.frame().await {
            let data = frame.expect("piece").into_data().expect("data");
            assert!(data.len() <= PIECE);
            got.extend_from_slice(&data);
            pieces += 1;
        }
        assert!(body.is_end_stream());
    };
    tokio::join!(read, feed(&mut feeder, &ours));
    let (sent, _client) = writer.await.expect("writer");
    assert_eq!(&got[..5], b"first");
    assert!(got[5..] == sent[..], "the body arrives whole and in order");
    // Fewer pieces than 16 KiB reads would have made, when the client
    // is ahead of the reader.
    assert!(pieces < len / (16 * 1024) + 2, "{pieces} pieces");
    assert!(!feeder.watch().abandoned());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (whole, next) = feeder.finish(&ours);
    assert!(whole);
    assert!(next.is_empty(), "read past the body only when given back");
}

#[tokio::test]
async fn bytes_read_ahead_are_used_first_and_what_is_past_the_body_given_back() {
    let (ours, _client) = tcp_pair().await;
    let (body, mut feeder) = streamed(Bytes::from_static(b"ab"), 5);
    feeder.read_ahead(Bytes::from_static(b"cdeGET /"));
    let (collected, ()) = tokio::join!(body.collect(), feed(&mut feeder, &ours));
    assert_eq!(&collected.expect("body").to_bytes()[..], b"abcde");
    let (whole, next) = feeder.finish(&ours);
    assert!(whole);
    assert_eq!(&next[..], b"GET /");
}

#[tokio::test]
async fn a_client_that_closes_mid_body_fails_it() {
    let (ours, mut client) = tcp_pair().await;
    let (body, mut feeder) = streamed(Bytes::new(), 100);
    client.write_all(b"only part").await.expect("write");
    drop(client);
    let (collected, ()) = tokio::join!(body.collect(), feed(&mut feeder, &ours));
    let err = collected.expect_err("short body");
    assert!(matches!(err, BodyError::Closed), "{err}");
    assert!(feeder.watch().abandoned());
    let (whole, _) = feeder.finish(&ours);
    assert!(!whole, "the connection closes");
}

#[tokio::test]
async fn a_body_let_go_of_is_drained_if_sent_and_closes_the_connection_if_not() {
    for (send_all, keeps) in [(true, true), (false, false)] {
        let (ours, mut client) = tcp_pair().await;
        let (body, mut feeder) = streamed(Bytes::new(), 40_000);
        let sent = if send_all { 40_000 } else { 30_000 };
        client.write_all(&vec![b'x'; sent]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The request answered without reading its body.
        drop(body);
        feed(&mut feeder, &ours).await;
        assert!(feeder.watch().abandoned());
        let (whole, next) = feeder.finish(&ours);
        assert_eq!(whole, keeps, "all sent: {send_all}");
        assert!(next.is_empty());
    }
}

#[tokio::test]
async fn a_body_outliving_its_connection_loop_ends_with_an_error() {
    let (ours, _client) = tcp_pair().await;
    let (body, feeder) = streamed(Bytes::from_static(b"x"), 10);
    drop(feeder.finish(&ours));
    let err = body.collect().await.expect_err("never whole");
    assert!(matches!(err, BodyError::Abandoned), "{err}");
}
