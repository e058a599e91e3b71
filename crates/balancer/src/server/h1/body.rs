//! A request body as the fast path hands it on: whole when it came with
//! its head, or streamed from the connection when it is longer than what
//! came (an upload).
//!
//! A streamed body is read by the connection's own loop ([`Feeder`]), in
//! the task that serves the request, and handed to the request's body
//! ([`Streamed`]) one piece at a time: the loop reads a piece only once
//! the last has been taken, so a slow replica holds back a fast client.
//! Each read is up to [`PIECE`] bytes where hyper's server read 16 KiB
//! pieces and passed them through a channel to another task, two wake-ups
//! a piece. What the body's time bounds are (`proxy::upload`) is not this
//! module's concern: it reads when asked and says how the client's side
//! ended.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker, ready},
};

use bytes::{Buf as _, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

/// The most read from the client for one piece of a body.
pub const PIECE: usize = 64 * 1024;

/// Why a streamed body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the request body was complete")]
    Closed,
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
    #[error("the connection stopped reading the request body")]
    Abandoned,
}

/// A request's body. As small as the `Full<Bytes>` it replaced (see the
/// test): the request's future holds it in several of its states, and
/// 24 bytes more took that future (4,096 bytes) into mimalloc's next size
/// class, 1 KiB more for every request in flight.
#[derive(Debug)]
pub enum RequestBody {
    /// Read with its head (empty once handed on).
    Whole(Bytes),
    /// Still arriving.
    Streamed(Box<Streamed>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Whole(bytes) if bytes.is_empty() => Poll::Ready(None),
            Self::Whole(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
            Self::Streamed(streamed) => streamed.poll_piece(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(bytes) => bytes.is_empty(),
            Self::Streamed(streamed) => streamed.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Self::Streamed(streamed) => SizeHint::with_exact(streamed.left),
        }
    }
}

/// What the connection's loop and the request's body share.
#[derive(Debug, Default)]
struct Shared {
    /// A piece read and not yet taken.
    piece: Option<Bytes>,
    /// How reading ended short of the body's end, once it has.
    failed: Option<BodyError>,
    /// The body was dropped: nothing more is to be read for it.
    dropped: bool,
    /// Reading failed (the client closed, or the socket failed).
    broken: bool,
    /// The whole body has been read from the client.
    read: bool,
    /// The body, waiting for a piece.
    body: Option<Waker>,
    /// The loop, waiting for the piece to be taken.
    feeder: Option<Waker>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // Nothing panics while holding it; a poisoned state is still whole.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The request's side of a streamed body.
#[derive(Debug)]
pub struct Streamed {
    shared: Arc<Mutex<Shared>>,
    /// Bytes of the body not yet handed on.
    left: u64,
    /// An error has been handed on: the body ends there.
    ended: bool,
}

impl Streamed {
    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.left == 0 || self.ended {
            return Poll::Ready(None);
        }
        let mut shared = lock(&self.shared);
        if let Some(piece) = shared.piece.take() {
            wake(&mut shared.feeder);
            self.left -= piece.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if let Some(failed) = shared.failed.take() {
            self.ended = true;
            return Poll::Ready(Some(Err(failed)));
        }
        park(&mut shared.body, cx);
        Poll::Pending
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.dropped = true;
        wake(&mut shared.feeder);
    }
}

/// What a call to [`Feeder::poll_feed`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// Handed on a piece: the request may have use for it at once.
    Piece,
    /// Nothing more will be read: the body is whole, failed, or dropped.
    Done,
}

/// The connection's side of a streamed body: reads it from the socket.
#[derive(Debug)]
pub struct Feeder {
    shared: Arc<Mutex<Shared>>,
    /// Bytes of the body not yet read from the client.
    left: u64,
    /// Read earlier (given back to the connection), to be used before the
    /// socket; whatever of it is past the body is the next request's.
    ahead: Bytes,
    /// Reading has ended: the body is whole, or failed, or dropped.
    done: bool,
}

/// Tells from elsewhere whether a streamed body will be read to its end.
#[derive(Debug, Clone)]
pub struct Watch(Arc<Mutex<Shared>>);

impl Watch {
    /// Whether the body will not be read to its end: its reading failed,
    /// or the request let go of it before its end.
    pub fn abandoned(&self) -> bool {
        let shared = lock(&self.0);
        !shared.read && (shared.broken || shared.dropped)
    }
}

/// A body of `len` bytes of which `first` has been read, streamed from the
/// connection by the returned [`Feeder`].
pub fn streamed(first: Bytes, len: u64) -> (RequestBody, Feeder) {
    let left = len - first.len() as u64;
    let shared = Arc::new(Mutex::new(Shared {
        piece: (!first.is_empty()).then_some(first),
        read: left == 0,
        ..Shared::default()
    }));
    let body = Streamed {
        shared: shared.clone(),
        left: len,
        ended: false,
    };
    let feeder = Feeder {
        shared,
        left,
        ahead: Bytes::new(),
        done: left == 0,
    };
    (RequestBody::Streamed(Box::new(body)), feeder)
}

impl Feeder {
    /// Bytes read before the socket: used first.
    pub fn read_ahead(&mut self, bytes: Bytes) {
        debug_assert!(self.ahead.is_empty());
        self.ahead = bytes;
    }

    /// Reads the next piece once the last has been taken.
    pub fn poll_feed(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<Fed> {
        if self.done {
            return Poll::Ready(Fed::Done);
        }
        {
            let mut shared = lock(&self.shared);
            if shared.dropped {
                self.done = true;
                return Poll::Ready(Fed::Done);
            }
            if shared.piece.is_some() {
                park(&mut shared.feeder, cx);
                return Poll::Pending;
            }
        }
        let read = if self.ahead.is_empty() {
            loop {
                if let Err(e) = ready!(tcp.poll_read_ready(cx)) {
                    break Err(BodyError::Io(e));
                }
                let mut piece = BytesMut::with_capacity(self.want());
                match tcp.try_read_buf(&mut piece) {
                    Ok(0) => break Err(BodyError::Closed),
                    Ok(_) => break Ok(fitted(piece)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(BodyError::Io(e)),
                }
            }
        } else {
            let n = self.want().min(self.ahead.len());
            Ok(self.ahead.split_to(n))
        };
        let mut shared = lock(&self.shared);
        match read {
            Ok(piece) => {
                self.left -= piece.len() as u64;
                self.done = self.left == 0;
                shared.read = self.done;
                shared.piece = Some(piece);
                wake(&mut shared.body);
                Poll::Ready(Fed::Piece)
            }
            Err(e) => {
                self.done = true;
                shared.broken = true;
                shared.failed = Some(e);
                wake(&mut shared.body);
                Poll::Ready(Fed::Done)
            }
        }
    }

    /// How much the next read asks for.
    fn want(&self) -> usize {
        usize::try_from(self.left).map_or(PIECE, |left| left.min(PIECE))
    }

    /// What tells whether the body will be read to its end.
    pub fn watch(&self) -> Watch {
        Watch(self.shared.clone())
    }

    /// Ends the body once its response has been sent: reads and drops what
    /// is left of it if the client has already sent it (as hyper's server
    /// does), and says whether the connection is then at the start of the
    /// next request; if not it must close. Returns what was read past the
    /// body, which is the next request's.
    pub fn finish(mut self, tcp: &TcpStream) -> (bool, Bytes) {
        let broken = lock(&self.shared).broken;
        if self.left > 0 && !broken {
            let skip = self.want().min(self.ahead.len());
            self.ahead.advance(skip);
            self.left -= skip as u64;
            let mut scratch = [0u8; 16 * 1024];
            while self.left > 0 {
                let want = self.want().min(scratch.len());
                match tcp.try_read(&mut scratch[..want]) {
                    Ok(n) if n > 0 => self.left -= n as u64,
                    _ => break,
                }
            }
        }
        let whole = self.left == 0 && !broken;
        (whole, std::mem::take(&mut self.ahead))
    }
}

/// A piece as it is handed on: a short read (a slow client's) is copied
/// out of the buffer read into, so that what waits for the replica holds
/// about the bytes read, not a [`PIECE`]-sized buffer each.
fn fitted(read: BytesMut) -> Bytes {
    if read.len() < read.capacity() / 4 {
        Bytes::copy_from_slice(&read)
    } else {
        read.freeze()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if self.left > 0 && !shared.broken {
            // A body still held (by a request that outlived its response)
            // gets an end rather than a wait that never ends.
            shared.failed = Some(BodyError::Abandoned);
        }
        wake(&mut shared.body);
    }
}

#[cfg(test)]
mod tests;
