//! Hex for the workspace, imported under the name `hex` (see the workspace's `Cargo.toml`): the
//! calls of the `hex` crate the workspace makes, with its strict form — digits only, in either
//! case, no `0x` prefix (a caller that allows one strips it first, as the JSON-RPC parameters
//! do) — on `const-hex`'s code, which decodes and encodes with SIMD instructions.
//!
//! **Why not the `hex` crate**: a day-end batch of 10,000 pairs is 1.3 MB of hex. The POSP
//! client encodes it, and the proxy and the node decode it: the `hex` crate took 1.5–2.2 ms for
//! each of those on this project's machines, `const-hex` 17–30 µs. A whole-machine profile of a
//! 250,000-line day-end upload on a four-node cluster put the `hex` crate's decoding at about
//! 3 % of all CPU time (the client's parsing of the file's lines included).
//!
//! **Why not `const-hex` directly**: it strips an optional `0x` or `0X` prefix itself, so `0X…`
//! and `0x0x…` would be taken where the node documents, and its tests pin, a refusal. Here a
//! prefix is an invalid character, as it was.

pub use const_hex::{FromHexError, encode, encode_to_slice, encode_upper};

/// The bytes of `data`'s hex digits (an even number of them, no prefix).
pub fn decode(data: impl AsRef<[u8]>) -> Result<Vec<u8>, FromHexError> {
    let data = data.as_ref();
    no_prefix(data)?;
    const_hex::decode(data)
}

/// [`decode`] into `out`, which must be exactly half as long as `data`.
pub fn decode_to_slice(data: impl AsRef<[u8]>, out: &mut [u8]) -> Result<(), FromHexError> {
    let data = data.as_ref();
    no_prefix(data)?;
    const_hex::decode_to_slice(data, out)
}

/// A `0x` or `0X` prefix is refused as the invalid character it is.
fn no_prefix(data: &[u8]) -> Result<(), FromHexError> {
    match data {
        [b'0', c @ (b'x' | b'X'), ..] => {
            Err(FromHexError::InvalidHexCharacter { c: char::from(*c), index: 1 })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_prefix_or_a_bad_digit_is_refused() {
        assert_eq!(decode("00ff10Ab").unwrap(), vec![0, 0xff, 0x10, 0xab]);
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
        for bad in ["0x00", "0X00", "0x0x00", "0xx0", "abc", "zz", "0 ", " 00", "00\n"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let mut out = [0u8; 2];
        assert!(decode_to_slice("0x00", &mut [0u8; 1]).is_err());
        assert!(decode_to_slice("000", &mut out).is_err());
        assert!(decode_to_slice("000000", &mut out).is_err(), "longer than the slice");
        decode_to_slice("beef", &mut out).unwrap();
        assert_eq!(out, [0xbe, 0xef]);
        assert_eq!(encode([0xbe, 0xef]), "beef");
        assert_eq!(encode_upper([0xbe, 0xef]), "BEEF");
    }

    proptest! {
        /// Round trips in both cases, and one digit replaced by a byte that is not one is found
        /// at its index, at any length (the SIMD code works in blocks: the tail is checked too).
        #[test]
        fn round_trips_and_any_bad_character_is_found(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            at in any::<prop::sample::Index>(),
            bad in any::<u8>().prop_filter("not a hex digit", |b| !b.is_ascii_hexdigit()),
        ) {
            let text = encode(&bytes);
            prop_assert_eq!(&decode(&text).unwrap(), &bytes);
            prop_assert_eq!(&decode(encode_upper(&bytes)).unwrap(), &bytes);
            if !text.is_empty() {
                let i = at.index(text.len());
                let mut broken = text.into_bytes();
                broken[i] = bad;
                match decode(&broken) {
                    Err(FromHexError::InvalidHexCharacter { index, .. }) => {
                        prop_assert_eq!(index, i)
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}
