//! One bounded codec for the workspace's bytes: length-prefixed frames on streams and a checked
//! cursor for binary decoders.
//!
//! Every stream between vpbox processes (peer links and their handshake, the signer protocol)
//! carries frames:
//!
//! ```text
//! frame = len:u32be body            (len ≤ max, the caller's bound for that stream)
//! ```
//!
//! **Memory rule.** An announced length is only a claim. [`read_frame`] refuses a length above
//! `max` before it allocates anything; below that, the body's buffer starts at no more than
//! [`RESERVE_MAX`] and grows with the bytes that actually arrive (by doubling, so to at most
//! about twice them), never with the length. A peer that announces 8 MiB and sends 3 bytes
//! costs 64 KiB, not 8 MiB.
//!
//! **End of stream.** Before the first byte of a length it is a clean end: [`read_frame`]
//! answers `Ok(None)`. Anywhere after, inside the length or inside the body, the frame was cut
//! short: an [`io::ErrorKind::UnexpectedEof`] error, so a caller never mistakes a torn frame for
//! a peer that hung up between frames.
//!
//! Every binary decoder reads its input through a [`Reader`]: each read is checked against the
//! bytes that remain and fails with [`Short`] instead of panicking, and [`Reader::finish`]
//! refuses leftovers with [`Trailing`]. Callers map both into their own error types, so each
//! format keeps its own messages. Integers are big-endian.

// Decodes untrusted bytes: no unwrap/expect/panic outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::io::{self, Read, Write};

/// Bytes of a frame's length prefix.
pub const LEN_BYTES: usize = 4;
/// The most [`read_frame`] reserves for a body before any of it has arrived.
pub const RESERVE_MAX: usize = 64 << 10;

/// Reads one frame of at most `max` bytes from `r`; `Ok(None)` at a clean end of stream.
///
/// A length above `max` is refused ([`io::ErrorKind::InvalidData`]) before anything is
/// allocated or read past the length; a stream that ends inside the length or the body is an
/// [`io::ErrorKind::UnexpectedEof`] error. The body's buffer grows with the bytes that arrive
/// (see the [crate docs](crate)). Nothing past the frame is read from `r`.
pub fn read_frame(r: &mut (impl Read + ?Sized), max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; LEN_BYTES];
    let mut got = 0;
    while got < LEN_BYTES {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "frame length cut short"));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // On a 16-bit target a length past usize::MAX is past any `max` as well.
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = Vec::with_capacity(len.min(RESERVE_MAX));
    // `take` stops at the frame's end without asking `r` for more, so a reader over a socket
    // never blocks on the next frame.
    let got = Read::take(&mut *r, len as u64).read_to_end(&mut body)?;
    if got < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "frame cut short"));
    }
    Ok(Some(body))
}

/// Writes `body` as one frame: its length, then the body, in two writes (wrap an unbuffered
/// stream in a [`io::BufWriter`] to make them one). A body longer than `max` (or than a `u32`
/// can count) is refused with [`io::ErrorKind::InvalidInput`] before anything is written, so
/// the stream stays usable. Does not flush.
pub fn write_frame(w: &mut (impl Write + ?Sized), body: &[u8], max: usize) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= max)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)
}

/// A cursor over untrusted bytes: every read is checked against what remains, and a failed
/// read consumes nothing.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        match self.rest.split_at_checked(n) {
            Some((head, rest)) => {
                self.rest = rest;
                Ok(head)
            }
            None => Err(Short { needed: n - self.rest.len() }),
        }
    }

    /// Everything not yet read, for a last field that runs to the end.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// The next `N` bytes, as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Checks that nothing is left: a value's encoding is exactly its bytes.
    pub fn finish(&self) -> Result<(), Trailing> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(Trailing(n)),
        }
    }
}

/// The input ended before the value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// Bytes still needed by the read that failed.
    pub needed: usize,
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "truncated input: needed {} more bytes", self.needed)
    }
}

impl std::error::Error for Short {}

/// Bytes were left over after a complete value (how many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailing(pub usize);

impl std::fmt::Display for Trailing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} trailing bytes", self.0)
    }
}

impl std::error::Error for Trailing {}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, body, 1 << 20).unwrap();
        out
    }

    /// Serves `data`, then ends; records the largest buffer it was offered and fails the test
    /// if it is read past `limit` bytes.
    struct Probe<'a> {
        data: &'a [u8],
        served: usize,
        limit: usize,
        largest_buf: usize,
    }

    impl Read for Probe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.largest_buf = self.largest_buf.max(buf.len());
            let n = buf.len().min(self.data.len() - self.served);
            assert!(self.served + n <= self.limit, "read past byte {}", self.limit);
            buf[..n].copy_from_slice(&self.data[self.served..self.served + n]);
            self.served += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let bodies: [&[u8]; 4] = [b"", b"a", &[7; 300], &[0; 70_000]];
        let mut stream = Vec::new();
        for b in bodies {
            stream.extend_from_slice(&frame(b));
        }
        let mut r = stream.as_slice();
        for b in bodies {
            assert_eq!(read_frame(&mut r, 1 << 20).unwrap().as_deref(), Some(b));
        }
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), None, "a clean end");
    }

    #[test]
    fn the_format_is_a_big_endian_length_then_the_body() {
        assert_eq!(frame(b"xyz"), [0, 0, 0, 3, b'x', b'y', b'z']);
    }

    #[test]
    fn a_length_past_max_is_refused_before_anything_else_is_read() {
        // u32::MAX announced with 8 MiB allowed: refused after the 4 length bytes, no body
        // read, nothing reserved.
        let mut data = u32::MAX.to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 16]);
        let mut r = Probe { data: &data, served: 0, limit: LEN_BYTES, largest_buf: 0 };
        let e = read_frame(&mut r, 8 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(r.served, LEN_BYTES);
        // One past the bound is refused; the bound itself is not.
        let e = read_frame(&mut [0, 0, 0, 9].as_slice(), 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let nine = frame(&[1; 9]);
        assert_eq!(read_frame(&mut nine.as_slice(), 9).unwrap(), Some(vec![1; 9]));
    }

    #[test]
    fn memory_follows_the_bytes_that_arrive_not_the_announced_length() {
        // 8 MiB announced, 3 bytes sent: no read is offered a buffer past RESERVE_MAX.
        let mut data = (8u32 << 20).to_be_bytes().to_vec();
        data.extend_from_slice(&[1, 2, 3]);
        let mut r = Probe { data: &data, served: 0, limit: data.len(), largest_buf: 0 };
        let e = read_frame(&mut r, 8 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "a body cut short");
        assert!(r.largest_buf <= RESERVE_MAX, "offered {} bytes", r.largest_buf);
    }

    #[test]
    fn a_frame_reads_no_further_than_its_end() {
        let mut data = frame(b"abc");
        data.extend_from_slice(&[9; 8]);
        let mut r = Probe { data: &data, served: 0, limit: 7, largest_buf: 0 };
        assert_eq!(read_frame(&mut r, 16).unwrap(), Some(b"abc".to_vec()));
    }

    #[test]
    fn an_end_inside_the_length_or_body_is_an_error_not_a_clean_end() {
        assert_eq!(read_frame(&mut [].as_slice(), 16).unwrap(), None);
        let whole = frame(b"hello");
        for cut in 1..whole.len() {
            let e = read_frame(&mut &whole[..cut], 16).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn reads_that_trickle_or_are_interrupted_still_assemble_the_frame() {
        struct Trickle<'a>(&'a [u8], bool);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = buf.len().min(self.0.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = frame(b"slowly");
        assert_eq!(read_frame(&mut Trickle(&data, false), 16).unwrap(), Some(b"slowly".to_vec()));
    }

    #[test]
    fn a_body_past_max_is_not_written() {
        let mut out = Vec::new();
        let e = write_frame(&mut out, &[0; 9], 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty(), "nothing written, the stream stays usable");
        write_frame(&mut out, &[0; 8], 8).unwrap();
        assert_eq!(out.len(), 12);
    }

    #[test]
    fn the_reader_reads_big_endian_and_checks_every_bound() {
        let bytes = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 5, 6, 7];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.finish(), Err(Trailing(3)));
        assert_eq!(r.array::<4>(), Err(Short { needed: 1 }));
        assert_eq!(r.take(usize::MAX), Err(Short { needed: usize::MAX - 3 }));
        assert_eq!(r.remaining(), 3, "a failed read consumes nothing");
        assert_eq!(r.array::<2>(), Ok([5, 6]));
        assert_eq!(r.take(1), Ok(&[7][..]));
        assert_eq!(r.u8(), Err(Short { needed: 1 }));
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(r.take(0), Ok(&[][..]));
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u16(), Ok(0x0100));
        assert_eq!(r.rest(), &bytes[2..]);
        assert_eq!((r.remaining(), r.finish(), r.rest()), (0, Ok(()), &[][..]));
    }

    #[test]
    fn errors_say_what_went_wrong() {
        assert_eq!(Short { needed: 3 }.to_string(), "truncated input: needed 3 more bytes");
        assert_eq!(Trailing(2).to_string(), "2 trailing bytes");
    }
}
