//! TLS_SM4_GCM_SM3 (RFC 8998 §2): SM3 as the transcript hash, HKDF over HMAC-SM3 for the
//! TLS 1.3 key schedule, and SM4-GCM (128-bit key, 96-bit nonce, 128-bit tag) as the record
//! AEAD, built the way RFC 8446 §5.2 builds AES-GCM records.

use aes_gcm::KeyInit;
use aes_gcm::aead::AeadInOut;
use hmac::Mac;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::hash::HashAlgorithm;
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{CipherSuiteCommon, hash, hmac as rustls_hmac};
use rustls::{
    CipherSuite, ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion,
    SupportedCipherSuite, Tls13CipherSuite,
};
use sm3::Digest as _;
// SM4-GCM from vpbox-sm: its own counter mode, 128 blocks at a time bitsliced, then four.
use vpbox_sm::sm4::Sm4Gcm;

/// The code point of TLS_SM4_GCM_SM3 (RFC 8998 §2, IANA TLS Cipher Suites).
pub const TLS_SM4_GCM_SM3_ID: CipherSuite = CipherSuite::Unknown(0x00C6);

/// TLS_SM4_GCM_SM3, ready to be listed in a [`rustls::crypto::CryptoProvider`].
pub static TLS_SM4_GCM_SM3: SupportedCipherSuite = SupportedCipherSuite::Tls13(&Tls13CipherSuite {
    common: CipherSuiteCommon {
        suite: TLS_SM4_GCM_SM3_ID,
        hash_provider: &Sm3Hash,
        // SM4 has AES's 128-bit block, so AES-GCM's record limit applies (RFC 8446 §5.5).
        confidentiality_limit: 1 << 24,
    },
    hkdf_provider: &HkdfUsingHmac(&HmacSm3),
    aead_alg: &Sm4GcmAead,
    // No SM4 header protection is defined for QUIC; rustls refuses QUIC with this suite.
    quic: None,
});

/// SM3 has no TLS 1.2 `HashAlgorithm` code. rustls compares this value only to decide whether
/// a session may resume under another suite, so it must merely differ from SHA-256's.
const SM3_HASH_ALGORITHM: HashAlgorithm = HashAlgorithm::Unknown(0xF3);

/// SM3 (GB/T 32905) for rustls: the transcript hash of TLS_SM4_GCM_SM3.
pub(crate) struct Sm3Hash;

impl hash::Hash for Sm3Hash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sm3Context(sm3::Sm3::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&sm3::Sm3::digest(data))
    }

    fn output_len(&self) -> usize {
        32
    }

    fn algorithm(&self) -> HashAlgorithm {
        SM3_HASH_ALGORITHM
    }
}

struct Sm3Context(sm3::Sm3);

impl hash::Context for Sm3Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Self(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

type HmacSm3Core = hmac::Hmac<sm3::Sm3>;

/// HMAC-SM3 (RFC 2104 over SM3); rustls builds HKDF (RFC 5869) on it.
pub(crate) struct HmacSm3;

impl rustls_hmac::Hmac for HmacSm3 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rustls_hmac::Key> {
        // HMAC accepts keys of every length (longer ones are hashed first), so this cannot fail.
        match HmacSm3Core::new_from_slice(key) {
            Ok(mac) => Box::new(HmacSm3Key(Some(mac))),
            Err(_) => Box::new(HmacSm3Key(None)),
        }
    }

    fn hash_output_len(&self) -> usize {
        32
    }
}

struct HmacSm3Key(Option<HmacSm3Core>);

impl rustls_hmac::Key for HmacSm3Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> rustls_hmac::Tag {
        let Some(keyed) = &self.0 else {
            // Unreachable (see `with_key`); an all-zero tag fails every later check.
            return rustls_hmac::Tag::new(&[0; 32]);
        };
        let mut mac = keyed.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rustls_hmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        32
    }
}

/// SM4 key length (RFC 8998 §2: 128 bits).
const KEY_LEN: usize = 16;
/// GCM tag length (RFC 8998 §2: 16 octets).
const TAG_LEN: usize = 16;

/// SM4-GCM as a TLS 1.3 record protection algorithm.
pub(crate) struct Sm4GcmAead;

impl Tls13AeadAlgorithm for Sm4GcmAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Sm4GcmRecords::new(key.as_ref(), iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Sm4GcmRecords::new(key.as_ref(), iv))
    }

    fn key_len(&self) -> usize {
        KEY_LEN
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        // rustls's secret extraction (for kTLS) has no SM4 variant.
        Err(UnsupportedOperationError)
    }
}

/// One direction of SM4-GCM record protection. `cipher` is `None` only if rustls handed over a
/// key of the wrong length, which it never does; every record then fails instead of panicking.
struct Sm4GcmRecords {
    cipher: Option<Sm4Gcm>,
    iv: Iv,
}

impl Sm4GcmRecords {
    fn new(key: &[u8], iv: Iv) -> Self {
        Self { cipher: Sm4Gcm::new_from_slice(key).ok(), iv }
    }
}

/// `TLS_SM4_GCM_SM3`'s record protection, both directions, for an SM4 `key` and `iv` given
/// outside a handshake: what the record layer's fuzz target drives (rustls derives traffic
/// keys only inside itself). Not for connections: rustls makes those.
#[doc(hidden)]
pub fn records(
    key: &[u8; KEY_LEN],
    iv: [u8; 12],
) -> (Box<dyn MessageEncrypter>, Box<dyn MessageDecrypter>) {
    (
        Box::new(Sm4GcmRecords::new(key, Iv::from(iv))),
        Box::new(Sm4GcmRecords::new(key, Iv::from(iv))),
    )
}

/// Encrypts `buf` in place and returns the tag (GCM as in NIST SP 800-38D, with SM4).
fn seal_in_place(
    cipher: &Sm4Gcm,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], Error> {
    let tag = cipher
        .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
        .map_err(|_| Error::EncryptError)?;
    Ok(tag.into())
}

/// Decrypts `buf` (ciphertext only) in place if `tag` authenticates it and `aad`.
fn open_in_place(
    cipher: &Sm4Gcm,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), Error> {
    cipher
        .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
        .map_err(|_| Error::DecryptError)
}

impl MessageEncrypter for Sm4GcmRecords {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let cipher = self.cipher.as_ref().ok_or(Error::EncryptError)?;
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        // TLSInnerPlaintext: content ‖ type (no padding).
        payload.extend_from_slice(&msg.typ.to_array());
        let nonce = Nonce::new(&self.iv, seq).0;
        let tag = seal_in_place(cipher, &nonce, &make_tls13_aad(total_len), payload.as_mut())?;
        payload.extend_from_slice(&tag);
        // TLS 1.3 records carry the legacy version 0x0303 (RFC 8446 §5.1).
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Sm4GcmRecords {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let cipher = self.cipher.as_ref().ok_or(Error::DecryptError)?;
        let payload = &mut msg.payload;
        let total_len = payload.len();
        let Some(plain_len) = total_len.checked_sub(TAG_LEN) else {
            return Err(Error::DecryptError);
        };
        let aad = make_tls13_aad(total_len);
        let (body, tag) = payload.split_at_mut(plain_len);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::DecryptError)?;
        open_in_place(cipher, &Nonce::new(&self.iv, seq).0, &aad, body, &tag)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::OutboundChunks;
    use rustls::crypto::hash::Hash as _;
    use rustls::crypto::hmac::Hmac as _;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // RFC 8998 Appendix A.1 (SM4-GCM test vector).
    #[test]
    fn sm4_gcm_matches_rfc8998_appendix_a1() {
        let cipher = Sm4Gcm::new_from_slice(&h("0123456789abcdeffedcba9876543210")).unwrap();
        let nonce: [u8; 12] = h("00001234567800000000abcd").try_into().unwrap();
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = h("aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd\
                       eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa");
        let mut buf = plain.clone();
        let tag = seal_in_place(&cipher, &nonce, &aad, &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf),
            "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735\
             d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d"
        );
        assert_eq!(hex::encode(tag), "83de3541e4c2b58177e065a9bf7b62ec");
        open_in_place(&cipher, &nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plain);
        let mut bad_tag = tag;
        bad_tag[0] ^= 1;
        let mut ct = h("17f399f08c67d5ee19d0dc9969c4bb7d");
        assert!(open_in_place(&cipher, &nonce, &aad, &mut ct, &bad_tag).is_err());
    }

    // RFC 8446 §5.2–5.3: a record seals content ‖ type under nonce = iv XOR seq, with the
    // record header as AAD; any change to it, the sequence number or the key is refused.
    #[test]
    fn records_round_trip_and_refuse_tampering() {
        let k = [7u8; KEY_LEN];
        let (mut enc, mut dec) = records(&k, [9u8; 12]);
        let data = b"anchor batch 17";
        let msg = OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_3,
            payload: OutboundChunks::Single(data),
        };
        let sealed = enc.encrypt(msg, 5).unwrap().encode();
        assert_eq!(sealed.len(), 5 + data.len() + 1 + TAG_LEN);

        let open = |dec: &mut dyn MessageDecrypter, mut rec: Vec<u8>, seq| {
            let msg = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                &mut rec[5..],
            );
            dec.decrypt(msg, seq).map(|m| (m.typ, m.payload.to_vec()))
        };
        assert_eq!(
            open(&mut *dec, sealed.clone(), 5).unwrap(),
            (ContentType::ApplicationData, data.to_vec())
        );
        assert_eq!(open(&mut *dec, sealed.clone(), 6), Err(Error::DecryptError));
        for at in 5..sealed.len() {
            let mut bad = sealed.clone();
            bad[at] ^= 0x80;
            assert_eq!(open(&mut *dec, bad, 5), Err(Error::DecryptError), "byte {at}");
        }
        let mut other = Sm4GcmRecords::new(&[8u8; 16], Iv::from([9u8; 12]));
        assert_eq!(open(&mut other, sealed.clone(), 5), Err(Error::DecryptError));
        // A key of the wrong length fails every record instead of panicking.
        let mut broken = Sm4GcmRecords::new(&[8u8; 32], Iv::from([9u8; 12]));
        assert_eq!(open(&mut broken, sealed, 5), Err(Error::DecryptError));
        // Shorter than a tag: refused, not a panic.
        assert_eq!(open(&mut *dec, vec![0x17, 3, 3, 0, 3, 1, 2, 3], 5), Err(Error::DecryptError));
    }

    // GB/T 32905-2016 Appendix A.1: SM3("abc").
    #[test]
    fn sm3_matches_the_standard() {
        assert_eq!(
            hex::encode(Sm3Hash.hash(b"abc").as_ref()),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let mut ctx = Sm3Hash.start();
        ctx.update(b"a");
        let forked = ctx.fork();
        ctx.update(b"bc");
        assert_eq!(ctx.fork_finish().as_ref(), Sm3Hash.hash(b"abc").as_ref());
        assert_eq!(forked.finish().as_ref(), Sm3Hash.hash(b"a").as_ref());
    }

    // HMAC-SM3 against OpenSSL 3.0:
    // `printf 'what do ya want for nothing?' | openssl dgst -sm3 -hmac Jefe`.
    #[test]
    fn hmac_sm3_matches_openssl() {
        let tag = HmacSm3.with_key(b"Jefe").sign(&[b"what do ya ", b"want for nothing?"]);
        assert_eq!(hex::encode(tag.as_ref()), HMAC_SM3_JEFE);
    }

    // HKDF-SM3 (RFC 5869 with SM3; RFC 8998 §2) on the inputs of RFC 5869 Appendix A.1,
    // against OpenSSL 3.0: `openssl kdf -keylen 42 -kdfopt digest:SM3 -kdfopt hexkey:0b…0b
    // -kdfopt hexsalt:000102…0c -kdfopt hexinfo:f0f1…f9 HKDF` (and `mode:EXTRACT_ONLY`).
    #[test]
    fn hkdf_sm3_matches_openssl() {
        use rustls::crypto::tls13::Hkdf as _;
        let ikm = [0x0b; 22];
        let salt = h("000102030405060708090a0b0c");
        let info = h("f0f1f2f3f4f5f6f7f8f9");
        let hkdf = HkdfUsingHmac(&HmacSm3);
        let mut okm = [0u8; 42];
        hkdf.extract_from_secret(Some(&salt), &ikm).expand_slice(&[&info], &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "c69fe91b7aaee2dd5718d72dcaee0cce93f1b8e41f792da51261b6a517e68b36ed2c595572b01dfa359b"
        );
        let prk = HmacSm3.with_key(&salt).sign(&[&ikm]);
        assert_eq!(
            hex::encode(prk.as_ref()),
            "e0d6f7b0bd056327b7659f1f39ad850561fbcf4fb10fb58e88eafa55cf7cd01e"
        );
    }

    /// Computed by OpenSSL 3.0 (see `hmac_sm3_matches_openssl`).
    const HMAC_SM3_JEFE: &str = "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882";
}
