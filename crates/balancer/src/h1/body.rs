//! A response body read straight from the replica's socket by whoever
//! polls it (the client connection's task): no task, channel or buffer of
//! its own per upstream connection. Bytes read come out as frames without
//! a copy. When it ends, [`ResponseBody::finish`] says what becomes of the
//! connection: kept for the next request, closed, or first finishing an
//! upload the replica answered before reading to its end.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::{
    Error,
    chunked::{Decoder, Step},
    request::Outgoing,
    response::Framing,
};

/// The first read of a body; reads grow while they fill the buffer.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Where the body is.
#[derive(Debug)]
enum State {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Decoder),
    /// Until the replica closes.
    Close,
    Done,
}

/// A replica's response body on its own connection.
#[derive(Debug)]
pub struct ResponseBody {
    io: Option<TcpStream>,
    /// Bytes read, not yet handed on.
    buf: BytesMut,
    state: State,
    keep_alive: bool,
    /// The rest of the request, when the replica answered before it was
    /// all sent: sent while the body is read.
    upload: Option<Outgoing>,
    read_size: usize,
}

/// What becomes of the connection once the body has ended.
pub enum End {
    /// Ready for another request.
    Reusable(TcpStream),
    /// Reusable once the rest of the request has been written (the future
    /// gives the connection back then, or `None` if that failed).
    AfterUpload(Pin<Box<dyn Future<Output = Option<TcpStream>> + Send>>),
    Closed,
}

impl ResponseBody {
    pub(super) fn new(
        io: TcpStream,
        buf: BytesMut,
        framing: Framing,
        keep_alive: bool,
        upload: Option<Outgoing>,
    ) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Decoder::default()),
            Framing::Close => State::Close,
        };
        Self {
            io: Some(io),
            buf,
            state,
            keep_alive,
            upload,
            read_size: FIRST_READ,
        }
    }

    /// Once the body has ended: what becomes of its connection.
    pub fn finish(&mut self) -> End {
        let Some(io) = self.io.take() else {
            return End::Closed;
        };
        // Bytes past the body's end were never asked for: not a
        // connection to send the next request on.
        if !matches!(self.state, State::Done) || !self.keep_alive || !self.buf.is_empty() {
            return End::Closed;
        }
        match self.upload.take() {
            None => End::Reusable(io),
            Some(mut upload) => End::AfterUpload(Box::pin(async move {
                std::future::poll_fn(|cx| upload.poll_send(&io, cx))
                    .await
                    .ok()?;
                Some(io)
            })),
        }
    }

    /// Moves the upload along, if one is left; a failed one only means the
    /// connection is not kept (the replica has answered already).
    fn push_upload(&mut self, cx: &mut Context<'_>) {
        if let (Some(upload), Some(io)) = (&mut self.upload, &self.io) {
            match upload.poll_send(io, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(_)) => {
                    self.upload = None;
                    self.keep_alive = false;
                }
            }
        }
    }

    /// Hands on what `buf` holds of the body, if anything.
    fn decode(&mut self) -> Result<Option<Frame<Bytes>>, Error> {
        match &mut self.state {
            State::Done => Ok(None),
            State::Length(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(*left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::Done;
                }
                Ok(Some(Frame::data(self.buf.split_to(take).freeze())))
            }
            State::Close => {
                Ok((!self.buf.is_empty()).then(|| Frame::data(self.buf.split().freeze())))
            }
            State::Chunked(decoder) => match decoder.step(&mut self.buf)? {
                Step::Data(data) => Ok(Some(Frame::data(data))),
                Step::Trailers(map) => {
                    self.state = State::Done;
                    Ok(Some(Frame::trailers(map)))
                }
                Step::End => {
                    self.state = State::Done;
                    Ok(None)
                }
                Step::More => Ok(None),
            },
        }
    }

    /// Reads more of the body into `buf`: `Ok(false)` when the replica
    /// closed the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(io) = &self.io else {
            return Poll::Ready(Ok(false));
        };
        let want = match self.state {
            State::Length(left) => {
                usize::try_from(left).map_or(self.read_size, |l| l.min(self.read_size))
            }
            _ => self.read_size,
        };
        loop {
            ready!(io.poll_read_ready(cx))?;
            self.buf.reserve(want);
            match super::read(io, &mut self.buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(n) => {
                    if n >= self.read_size {
                        self.read_size = (self.read_size * 2).min(MAX_READ);
                    }
                    return Poll::Ready(Ok(true));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        this.push_upload(cx);
        loop {
            if let Some(frame) = this.decode()? {
                return Poll::Ready(Some(Ok(frame)));
            }
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            match ready!(this.poll_read(cx)) {
                Ok(true) => {}
                Ok(false) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.io = None;
                    return Poll::Ready(Some(Err(Error::Incomplete)));
                }
                Err(e) => {
                    this.io = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
