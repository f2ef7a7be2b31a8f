//! The signer's wire protocol: length-prefixed binary frames, version 1. Sans-IO: these
//! functions only encode and decode bytes, bounded and without panics on any input.
//!
//! ```text
//! frame    = len:u32be body            (len ≤ FRAME_MAX)
//! request  = version:u8=1 op:u8 …
//!   op 1 PublicKey  key:name
//!   op 2 Sign       key:name domain:name digest:[32] position
//!   op 3 Health
//! name     = len:u8 bytes              (1–64 bytes of [A-Za-z0-9/_.-])
//! position = 0                          none (non-consensus domains)
//!          | 1 view:u64 seq:u64 phase:u8   a vote (0 pre-prepare, 1 prepare, 2 commit)
//!          | 2 seq:u64                      a checkpoint
//!          | 3 view:u64                     a view change
//!          | 4 view:u64                     a new view
//!          | 5                              another consensus message (not guarded)
//! response = version:u8=1 status:u8 …
//!   status 0 (ok): PublicKey → SEC1 point [65]; Sign → r‖s [64]; Health → nothing
//!   otherwise: message: len:u16be UTF-8
//! ```

use crate::guard::{Phase, Position};

/// Protocol version.
pub const VERSION: u8 = 1;
/// The largest frame body either side accepts.
pub const FRAME_MAX: usize = 4096;
const NAME_MAX: usize = 64;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The public key of a configured key.
    PublicKey {
        /// The key's name in the signer's config.
        key: String,
    },
    /// Sign `digest` in `domain` with `key`, at `position` (required in the consensus domain).
    Sign {
        /// The key's name.
        key: String,
        /// The signing domain's tag.
        domain: String,
        /// What is signed: the SM3 digest of the message, framed in the domain.
        digest: [u8; 32],
        /// The consensus position this signature is for.
        position: Option<Position>,
    },
    /// Is the signer up and its token answering?
    Health,
}

/// Why a request failed, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The request could not be decoded or is not allowed as formed.
    BadRequest = 1,
    /// No key by that name.
    UnknownKey = 3,
    /// A different digest was already signed at this position: refused (double-sign guard).
    Conflict = 4,
    /// The position is older than the window the guard remembers: refused.
    TooOld = 5,
    /// The HSM failed.
    HsmFailure = 6,
    /// The signer failed internally (its state could not be persisted).
    Internal = 7,
    /// Too many connections.
    Busy = 8,
}

impl Status {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Ok,
            1 => Self::BadRequest,
            3 => Self::UnknownKey,
            4 => Self::Conflict,
            5 => Self::TooOld,
            6 => Self::HsmFailure,
            7 => Self::Internal,
            8 => Self::Busy,
            _ => return None,
        })
    }
}

/// What the signer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// An uncompressed SEC1 public key.
    PublicKey([u8; 65]),
    /// A raw r‖s signature.
    Signature([u8; 64]),
    /// Healthy.
    Healthy,
    /// Refused or failed.
    Error(Status, String),
}

/// A decoding failure: the bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed signer message: {0}")]
pub struct DecodeError(pub &'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }
    fn name(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > NAME_MAX {
            return Err(DecodeError("name length out of range"));
        }
        let bytes = self.take(len)?;
        if !bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(b)) {
            return Err(DecodeError("name has characters outside [A-Za-z0-9/_.-]"));
        }
        // All bytes are ASCII, checked above.
        Ok(bytes.iter().map(|&b| char::from(b)).collect())
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() { Ok(()) } else { Err(DecodeError("trailing bytes")) }
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names longer than NAME_MAX never reach the wire: they are refused when configured, and a
    // too-long one here would be refused by the peer's decoder.
    let len = u8::try_from(name.len().min(NAME_MAX)).unwrap_or(0);
    out.push(len);
    out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

impl Request {
    /// Encodes a frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Self::PublicKey { key } => {
                out.push(1);
                put_name(&mut out, key);
            }
            Self::Sign { key, domain, digest, position } => {
                out.push(2);
                put_name(&mut out, key);
                put_name(&mut out, domain);
                out.extend_from_slice(digest);
                match position {
                    None => out.push(0),
                    Some(Position::Vote { view, seq, phase }) => {
                        out.push(1);
                        out.extend_from_slice(&view.to_be_bytes());
                        out.extend_from_slice(&seq.to_be_bytes());
                        out.push(*phase as u8);
                    }
                    Some(Position::Checkpoint { seq }) => {
                        out.push(2);
                        out.extend_from_slice(&seq.to_be_bytes());
                    }
                    Some(Position::ViewChange { view }) => {
                        out.push(3);
                        out.extend_from_slice(&view.to_be_bytes());
                    }
                    Some(Position::NewView { view }) => {
                        out.push(4);
                        out.extend_from_slice(&view.to_be_bytes());
                    }
                    Some(Position::Message) => out.push(5),
                }
            }
            Self::Health => out.push(3),
        }
        out
    }

    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(body);
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported version"));
        }
        let req = match r.u8()? {
            1 => Self::PublicKey { key: r.name()? },
            2 => {
                let key = r.name()?;
                let domain = r.name()?;
                let digest = r.array::<32>()?;
                let position = match r.u8()? {
                    0 => None,
                    1 => {
                        let view = r.u64()?;
                        let seq = r.u64()?;
                        let phase = Phase::from_u8(r.u8()?).ok_or(DecodeError("unknown phase"))?;
                        Some(Position::Vote { view, seq, phase })
                    }
                    2 => Some(Position::Checkpoint { seq: r.u64()? }),
                    3 => Some(Position::ViewChange { view: r.u64()? }),
                    4 => Some(Position::NewView { view: r.u64()? }),
                    5 => Some(Position::Message),
                    _ => return Err(DecodeError("unknown position kind")),
                };
                Self::Sign { key, domain, digest, position }
            }
            3 => Self::Health,
            _ => return Err(DecodeError("unknown operation")),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    /// Encodes a frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Self::PublicKey(p) => {
                out.push(Status::Ok as u8);
                out.extend_from_slice(p);
            }
            Self::Signature(s) => {
                out.push(Status::Ok as u8);
                out.extend_from_slice(s);
            }
            Self::Healthy => out.push(Status::Ok as u8),
            Self::Error(status, msg) => {
                out.push(*status as u8);
                let msg = &msg.as_bytes()[..msg.len().min(1024)];
                let len = u16::try_from(msg.len()).unwrap_or(0);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&msg[..usize::from(len)]);
            }
        }
        out
    }

    /// Decodes a frame body; `op` says which success payload to expect.
    pub fn decode(body: &[u8], request: &Request) -> Result<Self, DecodeError> {
        let mut r = Reader(body);
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported version"));
        }
        let status = Status::from_u8(r.u8()?).ok_or(DecodeError("unknown status"))?;
        let resp = if status == Status::Ok {
            match request {
                Request::PublicKey { .. } => Self::PublicKey(r.array::<65>()?),
                Request::Sign { .. } => Self::Signature(r.array::<64>()?),
                Request::Health => Self::Healthy,
            }
        } else {
            let len = usize::from(u16::from_be_bytes(r.array::<2>()?));
            let msg = String::from_utf8_lossy(r.take(len)?).into_owned();
            Self::Error(status, msg)
        };
        r.finish()?;
        Ok(resp)
    }
}

/// Reads one frame from `r`: `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes one frame.
pub fn write_frame(w: &mut impl std::io::Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= FRAME_MAX)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Request> {
        vec![
            Request::PublicKey { key: "consensus".into() },
            Request::Health,
            Request::Sign {
                key: "k".into(),
                domain: "VPBOX/consensus/v1".into(),
                digest: [7; 32],
                position: None,
            },
            Request::Sign {
                key: "k".into(),
                domain: "VPBOX/consensus/v1".into(),
                digest: [1; 32],
                position: Some(Position::Vote { view: 3, seq: u64::MAX, phase: Phase::Commit }),
            },
            Request::Sign {
                key: "k".into(),
                domain: "d".into(),
                digest: [0; 32],
                position: Some(Position::Checkpoint { seq: 10 }),
            },
            Request::Sign {
                key: "k".into(),
                domain: "d".into(),
                digest: [0; 32],
                position: Some(Position::ViewChange { view: 2 }),
            },
            Request::Sign {
                key: "k".into(),
                domain: "d".into(),
                digest: [0; 32],
                position: Some(Position::NewView { view: 2 }),
            },
            Request::Sign {
                key: "consensus".into(),
                domain: "VPBOX/consensus/v1".into(),
                digest: [3; 32],
                position: Some(Position::Message),
            },
        ]
    }

    #[test]
    fn requests_round_trip_and_truncations_are_errors() {
        for req in samples() {
            let bytes = req.encode();
            assert_eq!(Request::decode(&bytes), Ok(req.clone()));
            for cut in 0..bytes.len() {
                assert!(Request::decode(&bytes[..cut]).is_err(), "{req:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(DecodeError("trailing bytes")));
        }
    }

    #[test]
    fn responses_round_trip() {
        let cases = [
            (Response::PublicKey([4; 65]), Request::PublicKey { key: "k".into() }),
            (Response::Signature([9; 64]), samples()[2].clone()),
            (Response::Healthy, Request::Health),
            (Response::Error(Status::Conflict, "refused".into()), Request::Health),
        ];
        for (resp, req) in cases {
            assert_eq!(Response::decode(&resp.encode(), &req), Ok(resp));
        }
    }

    #[test]
    fn names_are_checked() {
        let mut bad = Request::PublicKey { key: "ok".into() }.encode();
        bad[3] = b' ';
        assert!(Request::decode(&bad).is_err());
        assert!(Request::decode(&[1, 1, 0]).is_err(), "empty name");
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let mut data = (u32::MAX).to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 8]);
        assert!(read_frame(&mut data.as_slice()).is_err());
        assert_eq!(read_frame(&mut [].as_slice()).unwrap(), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes, &Request::Health);
            let _ = Response::decode(&bytes, &samples()[3]);
            let _ = read_frame(&mut bytes.as_slice());
        }
    }
}
