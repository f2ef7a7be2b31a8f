//! The signer's wire protocol: length-prefixed binary frames, version 2. Sans-IO apart from
//! [`read_frame`]/[`write_frame`]: the codecs only encode and decode bytes, bounded and without
//! panics on any input.
//!
//! ```text
//! frame    = len:u32be body            (len ≤ FRAME_MAX)
//! request  = version:u8=2 op:u8 …
//!   op 1 PublicKey  key:name
//!   op 2 Sign       key:name domain:name payload:bytes
//!   op 3 Health
//!   op 4 Guard      key:name            the double-sign guard's state and refusals
//! name     = len:u8 bytes              (1–64 bytes of [A-Za-z0-9/_.-])
//! bytes    = len:u32be bytes           (≤ PAYLOAD_MAX)
//! response = version:u8=2 status:u8 …
//!   status 0 (ok): PublicKey → SEC1 point [65]; Sign → r‖s [64]; Health → nothing;
//!                  Guard → bytes (UTF-8 JSON)
//!   otherwise: message: len:u16be UTF-8
//! ```
//!
//! The domain is a [`vpbox_sm::Domain`] tag, or [`crate::tls13::DOMAIN`] for TLS 1.3
//! CertificateVerify signatures (the proxy's handshakes; see [`crate::tls13`]).
//!
//! Version 2 sends the whole payload to be signed, never a digest: the signer hashes it
//! itself and, in the consensus domain, decodes it to find out what it is signing (which
//! message, at which position, from which node) — a caller cannot label a vote as something
//! else. The signature is over `SM3(payload)` framed in the domain, as in version 1.

/// Protocol version.
pub const VERSION: u8 = 2;
/// The largest payload a signer accepts: the largest consensus message a node signs (a new
/// view carrying its view changes) fits with room to spare.
pub const PAYLOAD_MAX: usize = 16 << 20;
/// The largest frame body either side accepts.
pub const FRAME_MAX: usize = PAYLOAD_MAX + 256;
const NAME_MAX: usize = 64;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The public key of a configured key.
    PublicKey {
        /// The key's name in the signer's config.
        key: String,
    },
    /// Sign `payload` in `domain` with `key`.
    Sign {
        /// The key's name.
        key: String,
        /// The signing domain's tag.
        domain: String,
        /// The bytes to sign: in the consensus domain, a consensus signing payload.
        payload: Vec<u8>,
    },
    /// Is the signer up and its token answering?
    Health,
    /// The double-sign guard of `key`: what it remembers and what it refused.
    Guard {
        /// The key's name.
        key: String,
    },
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
    /// Something different was already signed at this position: refused (double-sign guard).
    Conflict = 4,
    /// The position is older than what the guard remembers: refused.
    TooOld = 5,
    /// The HSM failed.
    HsmFailure = 6,
    /// The signer failed internally (its state could not be persisted).
    Internal = 7,
    /// Too many connections.
    Busy = 8,
    /// The position is further above what the guard has signed than a request may jump.
    OutOfRange = 9,
    /// The payload names another node as its sender than the one this key signs for.
    WrongSender = 10,
    /// The caller's user may not sign in this domain with this key.
    Forbidden = 11,
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
            9 => Self::OutOfRange,
            10 => Self::WrongSender,
            11 => Self::Forbidden,
            _ => return None,
        })
    }

    /// Whether this is a refusal by the double-sign guard (the node's vote was not signed
    /// because of what the guard remembers), as opposed to a failure.
    pub fn is_guard_refusal(self) -> bool {
        matches!(self, Self::Conflict | Self::TooOld | Self::OutOfRange | Self::WrongSender)
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
    /// The guard's state, as JSON.
    Guard(String),
    /// Refused or failed.
    Error(Status, String),
}

/// A decoding failure: the bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed signer message: {0}")]
pub struct DecodeError(pub &'static str);

/// The shared bounded cursor, with this protocol's messages and its `name` and `bytes` fields.
struct Reader<'a>(vpbox_wire::Reader<'a>);

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self(vpbox_wire::Reader::new(body))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.0.take(n).map_err(|_| DecodeError("truncated"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.0.u8().map_err(|_| DecodeError("truncated"))
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.0.u16().map_err(|_| DecodeError("truncated"))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.0.u32().map_err(|_| DecodeError("truncated"))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.0.array().map_err(|_| DecodeError("truncated"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > PAYLOAD_MAX {
            return Err(DecodeError("payload too large"));
        }
        self.take(len)
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
        self.0.finish().map_err(|_| DecodeError("trailing bytes"))
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names longer than NAME_MAX never reach the wire: they are refused when configured, and a
    // too-long one here would be refused by the peer's decoder.
    let len = u8::try_from(name.len().min(NAME_MAX)).unwrap_or(0);
    out.push(len);
    out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Longer payloads are refused by `Client::sign` before they are encoded; cut here only so
    // that the frame stays well formed (and is then refused by the peer as truncated).
    let len = bytes.len().min(PAYLOAD_MAX);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
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
            Self::Sign { key, domain, payload } => {
                out.reserve(payload.len() + 80);
                out.push(2);
                put_name(&mut out, key);
                put_name(&mut out, domain);
                put_bytes(&mut out, payload);
            }
            Self::Health => out.push(3),
            Self::Guard { key } => {
                out.push(4);
                put_name(&mut out, key);
            }
        }
        out
    }

    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported version"));
        }
        let req = match r.u8()? {
            1 => Self::PublicKey { key: r.name()? },
            2 => {
                let key = r.name()?;
                let domain = r.name()?;
                let payload = r.bytes()?.to_vec();
                Self::Sign { key, domain, payload }
            }
            3 => Self::Health,
            4 => Self::Guard { key: r.name()? },
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
            Self::Guard(json) => {
                out.push(Status::Ok as u8);
                put_bytes(&mut out, json.as_bytes());
            }
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

    /// Decodes a frame body; `request` says which success payload to expect.
    pub fn decode(body: &[u8], request: &Request) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported version"));
        }
        let status = Status::from_u8(r.u8()?).ok_or(DecodeError("unknown status"))?;
        let resp = if status == Status::Ok {
            match request {
                Request::PublicKey { .. } => Self::PublicKey(r.array::<65>()?),
                Request::Sign { .. } => Self::Signature(r.array::<64>()?),
                Request::Health => Self::Healthy,
                Request::Guard { .. } => Self::Guard(
                    String::from_utf8(r.bytes()?.to_vec())
                        .map_err(|_| DecodeError("guard state is not UTF-8"))?,
                ),
            }
        } else {
            let len = usize::from(r.u16()?);
            let msg = String::from_utf8_lossy(r.take(len)?).into_owned();
            Self::Error(status, msg)
        };
        r.finish()?;
        Ok(resp)
    }
}

/// Reads one frame of at most [`FRAME_MAX`] bytes from `r`: `Ok(None)` at a clean end of
/// stream, an error if the stream ends inside a frame. Memory grows with the bytes that
/// actually arrive, never with the length a peer announces ([`vpbox_wire::read_frame`]).
pub fn read_frame(r: &mut (impl std::io::Read + ?Sized)) -> std::io::Result<Option<Vec<u8>>> {
    vpbox_wire::read_frame(r, FRAME_MAX)
}

/// Writes one frame (a body over [`FRAME_MAX`] is refused unsent) and flushes.
pub fn write_frame(w: &mut (impl std::io::Write + ?Sized), body: &[u8]) -> std::io::Result<()> {
    vpbox_wire::write_frame(w, body, FRAME_MAX)?;
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
            Request::Guard { key: "consensus".into() },
            Request::Sign { key: "k".into(), domain: "VPBOX/selftest/v1".into(), payload: vec![] },
            Request::Sign {
                key: "consensus".into(),
                domain: "VPBOX/consensus/v1".into(),
                payload: vec![7; 300],
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
    fn version_one_requests_are_refused() {
        // A version-1 Sign carried a digest and a caller-chosen position label.
        let mut v1 = samples()[4].encode();
        v1[0] = 1;
        assert_eq!(Request::decode(&v1), Err(DecodeError("unsupported version")));
    }

    #[test]
    fn responses_round_trip() {
        let cases = [
            (Response::PublicKey([4; 65]), Request::PublicKey { key: "k".into() }),
            (Response::Signature([9; 64]), samples()[3].clone()),
            (Response::Healthy, Request::Health),
            (Response::Guard("{\"positions\":3}".into()), samples()[2].clone()),
            (Response::Error(Status::Conflict, "refused".into()), Request::Health),
            (Response::Error(Status::OutOfRange, "refused".into()), Request::Health),
            (Response::Error(Status::WrongSender, "refused".into()), Request::Health),
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
        assert!(Request::decode(&[VERSION, 1, 0]).is_err(), "empty name");
    }

    #[test]
    fn oversized_frames_and_payloads_are_refused_before_allocation() {
        let mut data = (u32::MAX).to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 8]);
        assert!(read_frame(&mut data.as_slice()).is_err());
        assert_eq!(read_frame(&mut [].as_slice()).unwrap(), None);
        // A frame that announces 16 MiB but ends after 3 bytes.
        let mut short = (FRAME_MAX as u32).to_be_bytes().to_vec();
        short.extend_from_slice(&[1, 2, 3]);
        assert!(read_frame(&mut short.as_slice()).is_err());
        let mut big = vec![VERSION, 2, 1, b'k', 1, b'd'];
        big.extend_from_slice(&(PAYLOAD_MAX as u32 + 1).to_be_bytes());
        assert_eq!(Request::decode(&big), Err(DecodeError("payload too large")));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes, &Request::Health);
            let _ = Response::decode(&bytes, &samples()[2]);
            let _ = Response::decode(&bytes, &samples()[4]);
            let _ = read_frame(&mut bytes.as_slice());
        }
    }
}
