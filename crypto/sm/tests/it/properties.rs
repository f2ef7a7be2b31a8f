//! Property tests: sign → verify, tamper → Invalid, wrong ID → Invalid (GB/T 32918.2 §6–7), and
//! decoders of untrusted bytes never panic.

use std::sync::OnceLock;

use proptest::prelude::*;
use vpbox_sm::sm2::{PublicKey, SecretKey, Signature};
use vpbox_sm::{Domain, Verification};

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sign_then_verify(msg in proptest::collection::vec(any::<u8>(), 0..512),
                        id in proptest::collection::vec(any::<u8>(), 0..64)) {
        let sig = key().sign(&id, &msg).unwrap();
        prop_assert_eq!(key().public_key().verify(&id, &msg, &sig), Verification::Valid);
        prop_assert_eq!(Signature::from_der(&sig.to_der()).unwrap(), sig);
    }

    #[test]
    fn tampered_message_is_invalid(msg in proptest::collection::vec(any::<u8>(), 1..256),
                                   at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let sig = key().sign(b"1234567812345678", &msg).unwrap();
        let mut bad = msg.clone();
        bad[at.index(msg.len())] ^= 1 << bit;
        prop_assert_eq!(key().public_key().verify(b"1234567812345678", &bad, &sig), Verification::Invalid);
    }

    #[test]
    fn tampered_signature_is_invalid(at in 0usize..64, bit in 0u8..8) {
        let sig = key().sign(b"1234567812345678", b"m").unwrap();
        let mut raw = sig.to_raw();
        raw[at] ^= 1 << bit;
        // A flipped bit may push r or s out of range: then it does not even parse.
        if let Ok(bad) = Signature::from_raw(&raw) {
            prop_assert_eq!(key().public_key().verify(b"1234567812345678", b"m", &bad), Verification::Invalid);
        }
    }

    #[test]
    fn wrong_id_is_invalid(id in "[a-z]{1,20}") {
        let sig = key().sign(b"1234567812345678", b"m").unwrap();
        prop_assert_eq!(key().public_key().verify(id.as_bytes(), b"m", &sig), Verification::Invalid);
    }

    #[test]
    fn wrong_domain_is_invalid(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let sig = key().sign_digest(&Domain::TX.digest(key().public_key(), &payload)).unwrap();
        prop_assert!(key().public_key().verify_in(Domain::TX, &payload, &sig).is_valid());
        prop_assert_eq!(key().public_key().verify_in(Domain::CONSENSUS, &payload, &sig), Verification::Invalid);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Signature::from_der(&bytes);
        let _ = Signature::from_raw(&bytes);
        let _ = SecretKey::from_pkcs8_der(&bytes);
        let _ = PublicKey::from_spki_der(&bytes);
        let _ = PublicKey::from_sec1(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = SecretKey::from_pem(&text);
        let _ = PublicKey::from_pem(&format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n"));
    }

    #[test]
    fn mutated_der_never_panics(at in 0usize..200, byte in any::<u8>()) {
        let mut der = key().to_pkcs8_der().unwrap().to_vec();
        let i = at % der.len();
        der[i] = byte;
        let _ = SecretKey::from_pkcs8_der(&der);
        let mut spki = key().public_key().to_spki_der();
        let j = at % spki.len();
        spki[j] = byte;
        let _ = PublicKey::from_spki_der(&spki);
    }
}
