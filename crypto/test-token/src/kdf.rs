//! HMAC-SM3 (RFC 2104 over GB/T 32905) and PBKDF2-HMAC-SM3 (RFC 8018 §5.2): the PIN hashing and
//! key derivation of the token, built on [`vpbox_sm::sm3::Sm3`] rather than new primitives.

use vpbox_sm::sm3::Sm3;
use zeroize::Zeroizing;

/// SM3's block size in bytes (GB/T 32905 §4.2).
const BLOCK_LEN: usize = 64;
/// SM3's output size in bytes.
pub(crate) const OUT_LEN: usize = 32;

/// HMAC-SM3 of `data` under `key` (RFC 2104 §2).
pub(crate) fn hmac_sm3(key: &[u8], data: &[&[u8]]) -> Zeroizing<[u8; OUT_LEN]> {
    let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
    if key.len() > BLOCK_LEN {
        block[..OUT_LEN].copy_from_slice(&vpbox_sm::sm3::hash(key).0);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut ipad = Zeroizing::new([0x36u8; BLOCK_LEN]);
    let mut opad = Zeroizing::new([0x5cu8; BLOCK_LEN]);
    for i in 0..BLOCK_LEN {
        ipad[i] ^= block[i];
        opad[i] ^= block[i];
    }
    let mut inner = Sm3::new();
    inner.update(ipad.as_ref());
    for part in data {
        inner.update(part);
    }
    let inner = Zeroizing::new(inner.finalize().0);
    let mut outer = Sm3::new();
    outer.update(opad.as_ref()).update(inner.as_ref());
    Zeroizing::new(outer.finalize().0)
}

/// PBKDF2 with HMAC-SM3 as the PRF (RFC 8018 §5.2), filling `out`.
pub(crate) fn pbkdf2_sm3(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    for (index, chunk) in out.chunks_mut(OUT_LEN).enumerate() {
        // RFC 8018 numbers blocks from 1; `out` is at most a few blocks long.
        let block_index = u32::try_from(index + 1).unwrap_or(u32::MAX).to_be_bytes();
        let mut u = hmac_sm3(password, &[salt, &block_index]);
        let mut t = u.clone();
        for _ in 1..iterations {
            u = hmac_sm3(password, &[u.as_ref()]);
            for (t, u) in t.iter_mut().zip(u.iter()) {
                *t ^= u;
            }
        }
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The expected values come from OpenSSL 3.0:
    // `openssl mac -digest SM3 -macopt key:Jefe HMAC` and `openssl kdf … PBKDF2`.
    #[test]
    fn hmac_sm3_matches_openssl_rfc4231_case_2() {
        let mac = hmac_sm3(b"Jefe", &[b"what do ya ", b"want for nothing?"]);
        assert_eq!(
            hex::encode(mac.as_ref()),
            "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882"
        );
    }

    #[test]
    fn hmac_sm3_hashes_long_keys_first() {
        let long = [0xaau8; 100];
        assert_eq!(
            hmac_sm3(&long, &[b"x"]).as_ref(),
            hmac_sm3(&vpbox_sm::sm3::hash(long).0, &[b"x"]).as_ref()
        );
    }

    #[test]
    fn pbkdf2_sm3_matches_openssl() {
        let mut out = [0u8; 32];
        let salt = hex::decode("00112233445566778899aabbccddeeff").unwrap();
        pbkdf2_sm3(b"123456", &salt, 1000, &mut out);
        assert_eq!(
            hex::encode(out),
            "748aca2078c9317612e4bcaad925ea33fe59300dd28f997509473eb352921645"
        );
        // Two output blocks, the second truncated (RFC 8018 §5.2 step 4).
        let mut out = [0u8; 40];
        pbkdf2_sm3(b"password", b"salt", 2, &mut out);
        assert_eq!(
            hex::encode(out),
            "fee723a2bc966e11dffb66133f4e8df577383c78ade30e3298edbd3e54ed85b7650006f9e15d3798"
        );
    }
}
