//! Cross-checks against libsm 0.6, an independent implementation (num-bigint, variable time:
//! fine as a test oracle, never for keys).

use libsm::sm2::signature::{SigCtx, Signature as LibsmSig};
use proptest::prelude::*;
use vpbox_sm::sm2::{DEFAULT_ID, SecretKey, Signature, message_digest};
use vpbox_sm::{Verification, sm3, sm4};

fn libsm_keypair(key: &SecretKey, ctx: &SigCtx) -> (num_bigint::BigUint, libsm::sm2::ecc::Point) {
    // Export only inside the test: libsm needs the scalar to act as the second signer.
    let der = key.to_pkcs8_der().unwrap();
    let scalar = pkcs8_scalar(&der);
    let sk = ctx.load_seckey(&scalar).unwrap();
    let pk = ctx.pk_from_sk(&sk).unwrap();
    (sk, pk)
}

/// The 32-byte scalar inside a PKCS#8 SM2 key: the OCTET STRING `04 20` that follows the
/// SEC1 version `02 01 01`.
fn pkcs8_scalar(der: &[u8]) -> [u8; 32] {
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).unwrap() + 5;
    der[at..at + 32].try_into().unwrap()
}

#[test]
fn public_key_derivation_agrees() {
    let ctx = SigCtx::new();
    for _ in 0..5 {
        let key = SecretKey::generate().unwrap();
        let (_, pk) = libsm_keypair(&key, &ctx);
        let theirs = ctx.serialize_pubkey(&pk, false).unwrap();
        assert_eq!(theirs, key.public_key().to_sec1_uncompressed().to_vec());
    }
}

#[test]
fn signatures_verify_both_ways_with_default_id() {
    let ctx = SigCtx::new();
    let key = SecretKey::generate().unwrap();
    let (sk, pk) = libsm_keypair(&key, &ctx);
    for msg in [&b""[..], b"abc", &[0x5a; 1000]] {
        // ours → libsm (DER both ways, so the encodings must agree too)
        let ours = key.sign(DEFAULT_ID, msg).unwrap();
        let parsed = LibsmSig::der_decode(&ours.to_der()).unwrap();
        assert!(ctx.verify(msg, &pk, &parsed).unwrap(), "libsm rejects our signature");
        // libsm → ours
        let theirs = ctx.sign(msg, &sk, &pk).unwrap();
        let parsed = Signature::from_der(&theirs.der_encode()).unwrap();
        assert_eq!(key.public_key().verify(DEFAULT_ID, msg, &parsed), Verification::Valid);
        assert_eq!(key.public_key().verify(DEFAULT_ID, b"other", &parsed), Verification::Invalid);
    }
}

#[test]
fn z_and_e_agree_for_other_ids() {
    let ctx = SigCtx::new();
    let key = SecretKey::generate().unwrap();
    let (sk, pk) = libsm_keypair(&key, &ctx);
    for id in ["", "ALICE123@YAHOO.COM", "TLSv1.3+GM+Cipher+Suite", &"x".repeat(300)] {
        let theirs = ctx.hash(id, &pk, b"message").unwrap();
        let z = key.public_key().z(id.as_bytes()).unwrap();
        assert_eq!(message_digest(&z, &[b"message"]).0, theirs, "id {id:?}");
        let sig = ctx.sign_raw(&theirs, &sk).unwrap();
        let sig = Signature::from_der(&sig.der_encode()).unwrap();
        assert!(key.public_key().verify(id.as_bytes(), b"message", &sig).is_valid());
    }
}

#[test]
fn sm4_cbc_agrees() {
    let key = sm4::Sm4Key::generate().unwrap();
    let iv = [0x42u8; 16];
    let theirs = libsm::sm4::cipher_mode::Sm4CipherMode::new(
        key.expose_secret(),
        libsm::sm4::cipher_mode::CipherMode::Cbc,
    )
    .unwrap();
    for len in [0usize, 1, 16, 31, 4096] {
        let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let ours = sm4::cbc_encrypt(&key, &iv, &pt);
        assert_eq!(theirs.encrypt(&[], &pt, &iv).unwrap(), ours, "len {len}");
        assert_eq!(sm4::cbc_decrypt(&key, &iv, &ours).unwrap(), pt);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sm3_agrees(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let theirs = libsm::sm3::hash::Sm3Hash::new(&data).get_hash();
        prop_assert_eq!(sm3::hash(&data).0, theirs);
    }
}
