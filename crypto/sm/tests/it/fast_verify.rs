//! The fast verifier (`vpbox_sm::curve`: combs, wNAF, per-key tables) against two references:
//! libsm's signatures and RustCrypto's generic verifier. Each verdict is asked twice more than
//! the valid signatures a key shows before its table is built, and once more without tables,
//! so every path runs: wNAF (the first sights), the table's building and the table.

use libsm::sm2::signature::SigCtx;
use num_bigint::BigUint;
use proptest::prelude::*;
use sm2::elliptic_curve::PrimeField;
use sm2::elliptic_curve::point::AffineCoordinates;
use vpbox_sm::sm2::{DEFAULT_ID, PublicKey, SecretKey, Signature, message_digest};
use vpbox_sm::{Digest, Verification};

const N: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123";

fn n() -> BigUint {
    BigUint::parse_bytes(N.as_bytes(), 16).unwrap()
}

fn be32(v: &BigUint) -> [u8; 32] {
    let b = v.to_bytes_be();
    let mut out = [0u8; 32];
    out[32 - b.len()..].copy_from_slice(&b);
    out
}

fn secret_scalar(key: &SecretKey) -> BigUint {
    let der = key.to_pkcs8_der().unwrap();
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).unwrap() + 5;
    BigUint::from_bytes_be(&der[at..at + 32])
}

/// Verifications by every path of the fast verifier, all equal to the reference's verdict.
fn verdict(key: &PublicKey, e: &Digest, sig: &Signature) -> Verification {
    let reference = key.verify_digest_reference(e, sig);
    assert_eq!(key.verify_digest_first_sight(e, sig), reference, "without a table: {sig:?}");
    for sight in 1..=vpbox_sm::VERIFY_TABLE_AFTER + 2 {
        assert_eq!(key.verify_digest(e, sig), reference, "sight {sight}: {sig:?}");
    }
    reference
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_fast_verifier_agrees_on_libsm_signatures_and_their_tamperings(
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        at in 0usize..64,
        bit in 0u8..8,
    ) {
        let ctx = SigCtx::new();
        let key = SecretKey::generate().unwrap();
        let sk = ctx.load_seckey(&be32(&secret_scalar(&key))).unwrap();
        let pk = ctx.pk_from_sk(&sk).unwrap();
        let theirs = ctx.sign(&msg, &sk, &pk).unwrap();
        let sig = Signature::from_der(&theirs.der_encode()).unwrap();
        let public = key.public_key();
        let e = message_digest(&public.z(DEFAULT_ID).unwrap(), &[&msg]);
        prop_assert_eq!(verdict(public, &e, &sig), Verification::Valid);
        // Another message, another key, a flipped bit of the signature: all refused.
        let mut other = e;
        other.0[at % 32] ^= 1 << bit;
        prop_assert_eq!(verdict(public, &other, &sig), Verification::Invalid);
        let stranger = SecretKey::generate().unwrap();
        prop_assert_eq!(verdict(stranger.public_key(), &e, &sig), Verification::Invalid);
        let mut raw = sig.to_raw();
        raw[at] ^= 1 << bit;
        if let Ok(flipped) = Signature::from_raw(&raw) {
            prop_assert_eq!(verdict(public, &e, &flipped), Verification::Invalid);
        }
    }
}

/// x of k·G, by RustCrypto.
fn x_of(k: &BigUint) -> BigUint {
    let k = Option::<sm2::Scalar>::from(sm2::Scalar::from_repr(be32(k).into())).unwrap();
    let x = (sm2::ProjectivePoint::GENERATOR * k).to_affine().x();
    BigUint::from_bytes_be(&x)
}

/// Step B5: with t = r + s = n the sum is s·G alone; an e chosen so that R = e + x(s·G) would
/// equal r is still refused, by t = 0.
#[test]
fn t_zero_is_refused_even_where_the_rest_would_pass() {
    let n = n();
    let key = SecretKey::generate().unwrap();
    for seed in 1u32..=3 {
        let r = BigUint::from_bytes_be(&vpbox_sm::sm3::hash(seed.to_be_bytes()).0) % &n;
        let s = &n - &r;
        let e = (&r + &n - x_of(&s) % &n) % &n;
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&be32(&r));
        raw[32..].copy_from_slice(&be32(&s));
        let sig = Signature::from_raw(&raw).unwrap();
        assert_eq!(verdict(key.public_key(), &Digest(be32(&e)), &sig), Verification::Invalid);
    }
}

/// s·G = t·P, so the sum doubles a point (the adders' P = Q case), in signatures forged with
/// the private key (valid ones): accepted as the reference accepts them; and with a wrong e,
/// refused.
#[test]
fn a_sum_of_two_equal_points_verifies() {
    let n = n();
    let key = SecretKey::generate().unwrap();
    let d = secret_scalar(&key);
    let inv = |v: &BigUint| v.modpow(&(&n - 2u32), &n);
    for seed in 1u32..=3 {
        let r = BigUint::from_bytes_be(&vpbox_sm::sm3::hash(seed.to_be_bytes()).0) % &n;
        // s = (r + s)·d  ⇔  s = r·d / (1 − d)
        let s = &r * &d % &n * inv(&((&n + 1u32 - &d) % &n)) % &n;
        let e = (&r + &n - x_of(&(&s * 2u32 % &n)) % &n) % &n;
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&be32(&r));
        raw[32..].copy_from_slice(&be32(&s));
        let sig = Signature::from_raw(&raw).unwrap();
        assert_eq!(verdict(key.public_key(), &Digest(be32(&e)), &sig), Verification::Valid);
        let wrong = Digest(be32(&((&e + 1u32) % &n)));
        assert_eq!(verdict(key.public_key(), &wrong, &sig), Verification::Invalid);
    }
}

/// Signatures forged with the private key so that `s·G + t·P` is the point at infinity, or
/// `t = r + s = n` (with a digest that is not chosen to pass: see the test above): refused by
/// both, on every path.
#[test]
fn sums_at_infinity_and_t_zero_are_refused() {
    let n = n();
    let key = SecretKey::generate().unwrap();
    let d = secret_scalar(&key);
    let public = key.public_key();
    let inv = |v: &BigUint| v.modpow(&(&n - 2u32), &n);
    for seed in 1u32..=4 {
        let r = BigUint::from_bytes_be(&vpbox_sm::sm3::hash(seed.to_be_bytes()).0) % &n;
        // s + (r + s)·d = 0  ⇔  s = −r·d / (1 + d)
        let s = (&n - (&r * &d % &n)) % &n * inv(&((&d + 1u32) % &n)) % &n;
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&be32(&r));
        raw[32..].copy_from_slice(&be32(&s));
        let sig = Signature::from_raw(&raw).unwrap();
        // e such that R = e + x₁ would be r for any x₁: no e helps at infinity.
        for e in [Digest([0; 32]), Digest(be32(&r))] {
            assert_eq!(verdict(public, &e, &sig), Verification::Invalid);
        }
        let mut raw_t0 = raw;
        raw_t0[32..].copy_from_slice(&be32(&(&n - &r)));
        let sig = Signature::from_raw(&raw_t0).unwrap();
        assert_eq!(verdict(public, &Digest(be32(&r)), &sig), Verification::Invalid);
    }
}

/// Digests at, above and far below n (reduced modulo n before use, GB/T 32918.2 B4): signed
/// and verified as the reference does.
#[test]
fn digests_at_and_above_n_verify_as_the_reference_does() {
    let key = SecretKey::generate().unwrap();
    let public = key.public_key();
    let mut high = [0xFFu8; 32];
    for e in [Digest(be32(&n())), Digest(high), Digest([0; 32])] {
        let sig = key.sign_digest(&e).unwrap();
        assert_eq!(verdict(public, &e, &sig), Verification::Valid);
    }
    high[0] = 0xFE;
    let sig = key.sign_digest(&Digest(high)).unwrap();
    assert_eq!(verdict(public, &Digest(high), &sig), Verification::Valid);
}

/// Many keys, each seen twice more than a table needs, interleaved: their tables are built and
/// used, and every table serves its own key only.
/// (Eviction is the unit test `curve::tests::the_cache_keeps_at_most_its_limits`.)
#[test]
fn interleaved_keys_each_verify_with_their_own_table() {
    let keys: Vec<SecretKey> = (0..40).map(|_| SecretKey::generate().unwrap()).collect();
    let e = Digest([7; 32]);
    let sigs: Vec<Signature> = keys.iter().map(|k| k.sign_digest(&e).unwrap()).collect();
    for _ in 0..vpbox_sm::VERIFY_TABLE_AFTER + 2 {
        for (k, s) in keys.iter().zip(&sigs) {
            assert_eq!(k.public_key().verify_digest(&e, s), Verification::Valid);
            assert_eq!(k.public_key().verify_digest(&Digest([8; 32]), s), Verification::Invalid);
        }
    }
}
