//! SM3 (GB/T 32905-2016), one-shot and streaming, and many messages at once ([`hash_each`]).

use core::fmt;

use sm3::Digest as _;

mod lanes;
pub use lanes::{LANES, Simd, hash_each};

/// A 32-byte SM3 digest: block and transaction hashes, anchor keys and values, `Z` and `e`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters, no prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits, with or without a `0x` prefix.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Streaming SM3.
#[derive(Clone, Default)]
pub struct Sm3 {
    inner: sm3::Sm3,
}

impl Sm3 {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Absorbs `data`; returns `self` for chaining.
    pub fn update(&mut self, data: impl AsRef<[u8]>) -> &mut Self {
        self.inner.update(data.as_ref());
        self
    }

    /// The digest of everything absorbed.
    pub fn finalize(self) -> Digest {
        Digest(self.inner.finalize().into())
    }
}

impl std::io::Write for Sm3 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SM3 of `data` in one call.
pub fn hash(data: impl AsRef<[u8]>) -> Digest {
    let mut h = Sm3::new();
    h.update(data);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    // GB/T 32905-2016 Appendix A, example 1: "abc".
    #[test]
    fn standard_vector_abc() {
        assert_eq!(
            hash(b"abc").to_hex(),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    // GB/T 32905-2016 Appendix A, example 2: "abcd" repeated 16 times (64 bytes).
    #[test]
    fn standard_vector_64_bytes() {
        assert_eq!(
            hash(b"abcd".repeat(16)).to_hex(),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    #[test]
    fn streaming_equals_one_shot_at_every_split() {
        let data: Vec<u8> = (0..200u8).collect();
        let whole = hash(&data);
        for cut in 0..data.len() {
            let mut h = Sm3::new();
            h.update(&data[..cut]).update(&data[cut..]);
            assert_eq!(h.finalize(), whole, "split at {cut}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let d = hash(b"x");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex(&format!("0x{}", d.to_hex())), Some(d));
        assert_eq!(Digest::from_hex("00"), None);
        assert_eq!(Digest::from_hex(&"zz".repeat(32)), None);
    }
}
