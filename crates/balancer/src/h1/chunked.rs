//! The chunked transfer coding of a response body (RFC 9112 7.1), decoded
//! in place: each chunk's data is handed on as a slice of the bytes read,
//! without a copy, and the trailer section becomes a trailers frame.

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Error;

/// Longest chunk-size line, extensions included, and longest trailer
/// section: a replica sending more is broken.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero) chunk: the trailer section.
    Trailers,
    Done,
}

/// What one step of decoding gave.
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

/// A chunked body's decoder.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl Decoder {
    /// Decodes what it can from the front of `buf`, consuming it.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        loop {
            match self.state {
                State::Size => {
                    let Some(end) = line_end(buf, MAX_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Chunked("no CRLF after a chunk's data"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    // An empty section is the common case: one CRLF.
                    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n", MAX_TRAILERS)? else {
                        return Ok(Step::More);
                    };
                    let section = buf.split_to(end + 4).freeze();
                    self.state = State::Done;
                    return Ok(Step::Trailers(trailers(&section)?));
                }
                State::Done => return Ok(Step::End),
            }
        }
    }
}

/// Where the CRLF ending the first line of `buf` is, if it is there.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, Error> {
    find(buf, b"\r\n", max)
}

fn find(buf: &[u8], needle: &[u8], max: usize) -> Result<Option<usize>, Error> {
    match buf.windows(needle.len()).position(|w| w == needle) {
        Some(at) if at <= max => Ok(Some(at)),
        Some(_) => Err(Error::Chunked(
            "a chunk line or trailer section is too long",
        )),
        None if buf.len() > max + needle.len() => Err(Error::Chunked(
            "a chunk line or trailer section is too long",
        )),
        None => Ok(None),
    }
}

/// The size on a chunk-size line, extensions (after `;`) ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line
        .iter()
        .position(|&b| b == b';')
        .map_or(line, |at| &line[..at]);
    let digits = trim(digits);
    if digits.is_empty() || digits.len() > 16 {
        return Err(Error::Chunked("bad chunk size"));
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char)
            .to_digit(16)
            .ok_or(Error::Chunked("bad chunk size"))?;
        Ok(n << 4 | u64::from(d))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The trailer section (field lines, then the final CRLF) as a header map.
fn trailers(section: &Bytes) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    let mut headers = [httparse::EMPTY_HEADER; 64];
    match httparse::parse_headers(section, &mut headers) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            for h in parsed {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| Error::Chunked("bad trailer name"))?;
                let value = HeaderValue::from_maybe_shared(section.slice_ref(h.value))
                    .map_err(|_| Error::Chunked("bad trailer value"))?;
                map.append(name, value);
            }
            Ok(map)
        }
        _ => Err(Error::Chunked("bad trailer section")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Decodes `wire` fed in the given piece sizes; the data and trailers.
    fn decode(wire: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        let mut sizes = pieces.iter().copied().cycle();
        loop {
            match decoder.step(&mut buf)? {
                Step::Data(d) => data.extend_from_slice(&d),
                Step::Trailers(t) => trailers = Some(t),
                Step::End => return Ok((data, trailers)),
                Step::More => {
                    if fed == wire.len() {
                        return Err(Error::Chunked("ended early"));
                    }
                    let n = sizes.next().unwrap_or(1).max(1).min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    fn encode(chunks: &[Vec<u8>], trailer: Option<(&str, &str)>) -> Vec<u8> {
        let mut wire = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            wire.extend_from_slice(format!("{:X};ext=1\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        if let Some((k, v)) = trailer {
            wire.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    #[test]
    fn decodes_chunks_and_trailers() {
        let wire = b"5\r\nhello\r\n1;a=b\r\n!\r\n0\r\ngrpc-status: 0\r\n\r\n";
        let (data, trailers) = decode(wire, &[wire.len()]).expect("decodes");
        assert_eq!(data, b"hello!");
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    }

    #[test]
    fn rejects_bad_framing() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(
                decode(wire, &[3]).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = vec![b'1'; MAX_LINE + 10];
        assert!(decode(&long, &[long.len()]).is_err());
    }

    proptest! {
        /// However the bytes arrive, the same data and trailers come out.
        #[test]
        fn any_split_decodes_the_same(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            pieces in proptest::collection::vec(1usize..40, 1..8),
            trailer in any::<bool>(),
        ) {
            let wire = encode(&chunks, trailer.then_some(("x-sum", "7")));
            let (data, trailers) = decode(&wire, &pieces).expect("decodes");
            prop_assert_eq!(data, chunks.concat());
            prop_assert_eq!(trailers.is_some(), trailer);
        }
    }
}
