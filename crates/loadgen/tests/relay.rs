//! The bench's ceiling relays bytes both ways, one upstream connection per
//! client, taking the upstreams in turn.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

/// An upstream that answers each read with `tag` followed by what it read.
fn upstream(tag: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&[tag, &buf[..n]].concat()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

struct Relay(Child, u16);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(upstreams: &[u16]) -> Relay {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    for u in upstreams {
        cmd.args(["--upstream", &format!("127.0.0.1:{u}")]);
    }
    let relay = Relay(cmd.spawn().expect("spawn the relay"), port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the relay never listened");
        thread::sleep(Duration::from_millis(20));
    }
    relay
}

fn exchange(conn: &mut TcpStream, send: &[u8], expect: usize) -> Vec<u8> {
    conn.write_all(send).expect("send");
    let mut got = vec![0u8; expect];
    conn.read_exact(&mut got).expect("the upstream's answer");
    got
}

#[test]
fn relays_both_ways_and_takes_upstreams_in_turn() {
    let (a, b) = (upstream(b"A"), upstream(b"B"));
    let relay = relay(&[a, b]);
    // The readiness probe took the first upstream; the next two connections
    // take B then A, each keeping its own upstream for all its exchanges.
    let mut first = TcpStream::connect(("127.0.0.1", relay.1)).expect("connect");
    let mut second = TcpStream::connect(("127.0.0.1", relay.1)).expect("connect");
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(exchange(&mut first, b"hello", 6), b"Bhello");
    assert_eq!(exchange(&mut second, b"world", 6), b"Aworld");
    assert_eq!(exchange(&mut first, b"again", 6), b"Bagain");
}
