//! SM4 (GB/T 32907-2016) for data at rest: CBC with PKCS#7 padding, and GCM.
//!
//! New data should use [`seal`]/[`open`] (SM4-GCM with a random 96-bit nonce stored in front of
//! the ciphertext): it authenticates, where CBC only hides. CBC is here because operators and
//! other banks' tools exchange `openssl enc -sm4-cbc` files.

use aead::{Aead, KeyInit, Payload};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// SM4 key length in bytes.
pub const KEY_LEN: usize = 16;
/// SM4 block (and CBC IV) length in bytes.
pub const BLOCK_LEN: usize = 16;
/// SM4-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// SM4-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

mod block;
mod gcm;
mod sliced;

pub use block::Sm4Encrypt;

pub use gcm::Sm4Gcm;

/// A 128-bit SM4 key; zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Sm4Key([u8; KEY_LEN]);

impl Sm4Key {
    /// A key from 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| Error::BadLength {
            what: "key",
            expected: KEY_LEN,
            got: bytes.len(),
        })?;
        Ok(Self(key))
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, Error> {
        let mut key = [0u8; KEY_LEN];
        random(&mut key)?;
        Ok(Self(key))
    }

    /// The key bytes, for handing to another SM4 implementation.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Sm4Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4Key(..)")
    }
}

/// SM4-CBC encryption with PKCS#7 padding (as `openssl enc -sm4-cbc -K … -iv …`).
pub fn cbc_encrypt(key: &Sm4Key, iv: &[u8; BLOCK_LEN], plaintext: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<sm4::Sm4>::new(&key.0.into(), &(*iv).into())
        .encrypt_padded_vec::<Pkcs7>(plaintext)
}

/// SM4-CBC decryption; fails on a length that is not whole blocks or on bad padding.
pub fn cbc_decrypt(
    key: &Sm4Key,
    iv: &[u8; BLOCK_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    cbc::Decryptor::<sm4::Sm4>::new(&key.0.into(), &(*iv).into())
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .map_err(|_| Error::Decrypt)
}

/// SM4-GCM encryption; returns ciphertext ‖ 16-byte tag. Never reuse a nonce under one key.
pub fn gcm_seal(
    key: &Sm4Key,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    Sm4Gcm::new(&key.0.into()).encrypt(&(*nonce).into(), Payload { msg: plaintext, aad }).map_err(
        |_| Error::BadLength { what: "plaintext", expected: 1 << 36, got: plaintext.len() },
    )
}

/// SM4-GCM decryption of ciphertext ‖ tag; fails if anything was altered.
pub fn gcm_open(
    key: &Sm4Key,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, Error> {
    Sm4Gcm::new(&key.0.into())
        .decrypt(&(*nonce).into(), Payload { msg: sealed, aad })
        .map_err(|_| Error::Decrypt)
}

/// Encrypts data at rest: a random nonce ‖ SM4-GCM ciphertext ‖ tag, bound to `aad` (say, the
/// file's purpose and name, so a sealed blob cannot be swapped for another).
pub fn seal(key: &Sm4Key, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&gcm_seal(key, &nonce, aad, plaintext)?);
    Ok(out)
}

/// Opens what [`seal`] made.
pub fn open(key: &Sm4Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Decrypt);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Decrypt)?;
    gcm_open(key, &nonce, aad, rest)
}

/// GB/T 32907-2016 Appendix A's key and plaintext (both examples), for the tests.
#[cfg(test)]
const STANDARD_EXAMPLE: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
];

pub(crate) fn random(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD: [u8; 16] = STANDARD_EXAMPLE;

    // RFC 8998 Appendix A.1: SM4-GCM.
    #[test]
    fn rfc8998_gcm_vector() {
        let key = Sm4Key::from_slice(&STD).unwrap();
        let nonce: [u8; 12] = hex::decode("00001234567800000000abcd").unwrap().try_into().unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let pt = hex::decode(
            "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd\
             eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa",
        )
        .unwrap();
        let sealed = gcm_seal(&key, &nonce, &aad, &pt).unwrap();
        assert_eq!(
            hex::encode(&sealed),
            "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735\
             d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d\
             83de3541e4c2b58177e065a9bf7b62ec"
        );
        assert_eq!(gcm_open(&key, &nonce, &aad, &sealed).unwrap(), pt);
    }

    #[test]
    fn cbc_round_trip_and_padding() {
        let key = Sm4Key::generate().unwrap();
        let iv = [7u8; 16];
        for len in [0usize, 1, 15, 16, 17, 1000] {
            let pt = vec![0xa5u8; len];
            let ct = cbc_encrypt(&key, &iv, &pt);
            assert_eq!(ct.len(), (len / 16 + 1) * 16, "PKCS#7 always pads");
            assert_eq!(cbc_decrypt(&key, &iv, &ct).unwrap(), pt);
        }
        assert_eq!(cbc_decrypt(&key, &iv, &[0u8; 15]), Err(Error::Decrypt));
    }

    #[test]
    fn sealed_data_detects_tampering_and_wrong_context() {
        let key = Sm4Key::generate().unwrap();
        let sealed = seal(&key, b"wal/000001", b"secret ledger state").unwrap();
        assert_eq!(open(&key, b"wal/000001", &sealed).unwrap(), b"secret ledger state");
        assert_eq!(open(&key, b"wal/000002", &sealed), Err(Error::Decrypt));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(open(&key, b"wal/000001", &bad), Err(Error::Decrypt), "flip at {i}");
        }
        assert_eq!(open(&key, b"", &sealed[..20]), Err(Error::Decrypt));
        let other = Sm4Key::generate().unwrap();
        assert_eq!(open(&other, b"wal/000001", &sealed), Err(Error::Decrypt));
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = Sm4Key::from_slice(&STD).unwrap();
        assert_eq!(format!("{key:?}"), "Sm4Key(..)");
        assert!(Sm4Key::from_slice(&[0u8; 15]).is_err());
    }
}
