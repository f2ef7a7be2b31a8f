//! The token's contract through `cryptoki`: profile, keys, key policy, signatures, persistence,
//! PIN lockout and slot identity.

use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use vpbox_sm::sm2::{DEFAULT_ID, Signature, message_digest};

use crate::*;

#[test]
fn init_token_init_pin_login_and_the_vendor_profile() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let info = pkcs11.get_library_info().unwrap();
        assert_eq!(info.manufacturer_id(), "vpbox test token");
        assert!(info.library_description().contains("Sansec-style SM2"));
        let slot = init_token(&pkcs11);
        let token = pkcs11.get_token_info(slot).unwrap();
        assert_eq!(token.label(), LABEL);
        assert_eq!(token.manufacturer_id(), "vpbox-sansec-compatible");
        assert_eq!(token.model(), "TESTTOKEN");
        assert_eq!(token.serial_number().len(), 16);
        assert!(token.login_required() && token.token_initialized());
        assert!(token.user_pin_initialized() && !token.user_pin_locked());
        let session = user_session(&pkcs11, slot);
        let state = session.get_session_info().unwrap().session_state();
        assert_eq!(state, cryptoki::session::SessionState::RwUser);
        // cryptoki drops vendor codes from C_GetMechanismList, so probe each one
        // (pkcs11-sm.md, "The cryptoki crate").
        for code in [CKM_SM2_KEY_PAIR_GEN, CKM_SM2_RAW, CKM_SM3_SM2, CKM_SM3_SM2_DER, CKM_SM3] {
            pkcs11
                .get_mechanism_info(slot, MechanismType::new_vendor_defined(code).unwrap())
                .unwrap();
        }
        assert_eq!(
            rv(pkcs11.get_mechanism_info(slot, MechanismType::ECDSA)),
            RvError::MechanismInvalid
        );
        let digest = session.digest(&mechanism(CKM_SM3), b"abc").unwrap();
        assert_eq!(digest, vpbox_sm::sm3::hash(b"abc").0);
        assert_eq!(session.generate_random_vec(16).unwrap().len(), 16);
        return c.done();
    }
    Scenario::new("token::init_token_init_pin_login_and_the_vendor_profile", "").run("main");
}

#[test]
fn sm2_key_pair_is_found_by_id_and_keeps_its_policy() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let session = user_session(&pkcs11, slot);
        let (public, private) = generate(&session, b"node-1", "consensus");
        assert_eq!(find(&session, ObjectClass::PUBLIC_KEY, b"node-1"), public);
        assert_eq!(find(&session, ObjectClass::PRIVATE_KEY, b"node-1"), private);
        let by_type = session
            .find_objects(&[
                Attribute::KeyType(sm2_key_type()),
                Attribute::Label(b"consensus".to_vec()),
            ])
            .unwrap();
        assert_eq!(by_type, vec![public, private]);
        // CKA_EC_POINT is readable on both halves (a profile property) and agrees.
        assert_eq!(public_key(&session, public), public_key(&session, private));
        let attributes = session
            .get_attributes(
                private,
                &[
                    AttributeType::EcParams,
                    AttributeType::Local,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                ],
            )
            .unwrap();
        assert_eq!(
            attributes,
            vec![
                Attribute::EcParams(SM2_EC_PARAMS.to_vec()),
                Attribute::Local(true),
                Attribute::AlwaysSensitive(true),
                Attribute::NeverExtractable(true),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
            ]
        );
        // CKA_VALUE of a sensitive key: CKR_ATTRIBUTE_SENSITIVE (and CK_UNAVAILABLE_INFORMATION).
        let info = session.get_attribute_info(private, &[AttributeType::Value]).unwrap();
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{info:?}");
        // The key was generated unmodifiable: no attribute can change.
        let extractable = session.update_attributes(private, &[Attribute::Extractable(true)]);
        assert_eq!(rv(extractable), RvError::ActionProhibited);

        // A modifiable key (template defaults) still cannot be made extractable or
        // non-sensitive (v2.40 §4.9), but its usage flags can change, and are enforced.
        let minimal = [Attribute::Token(true), Attribute::Id(b"node-2".to_vec())];
        let destroyable = [Attribute::Token(true), Attribute::Destroyable(false)];
        let mechanism = mechanism(CKM_SM2_KEY_PAIR_GEN);
        let (_, second) = session.generate_key_pair(&mechanism, &minimal, &minimal).unwrap();
        let extractable = session.update_attributes(second, &[Attribute::Extractable(true)]);
        assert_eq!(rv(extractable), RvError::AttributeReadOnly);
        let sensitive = session.update_attributes(second, &[Attribute::Sensitive(false)]);
        assert_eq!(rv(sensitive), RvError::AttributeReadOnly);
        session.update_attributes(second, &[Attribute::Sign(false)]).unwrap();
        let e = [7u8; 32];
        let refused = session.sign(&crate::mechanism(CKM_SM2_RAW), second, &e);
        assert_eq!(rv(refused), RvError::KeyFunctionNotPermitted);
        session.destroy_object(second).unwrap();
        let (_, kept) = session.generate_key_pair(&mechanism, &minimal, &destroyable).unwrap();
        assert_eq!(rv(session.destroy_object(kept)), RvError::ActionProhibited);
        // No import: C_CreateObject is not offered.
        let import = session.create_object(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
        assert_eq!(rv(import), RvError::FunctionNotSupported);
        return c.done();
    }
    Scenario::new("token::sm2_key_pair_is_found_by_id_and_keeps_its_policy", "").run("main");
}

/// GB/T 32918.2 §6.1: the raw mechanism signs the caller's `e = SM3(Z‖M)`; the software
/// verifier checks `r‖s` against the same `e`.
#[test]
fn raw_signature_over_e_verifies_with_vpbox_sm() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let session = user_session(&pkcs11, slot);
        let (public, private) = generate(&session, b"k", "k");
        let key = public_key(&session, public);
        let e = message_digest(&key.z(DEFAULT_ID).unwrap(), &[b"block 7 prepare"]);
        let raw = session.sign(&mechanism(CKM_SM2_RAW), private, e.as_bytes()).unwrap();
        assert_eq!(raw.len(), 64);
        let signature = Signature::from_raw(&raw).unwrap();
        assert!(key.verify_digest(&e, &signature).is_valid());
        assert!(key.verify(DEFAULT_ID, b"block 7 prepare", &signature).is_valid());
        assert!(!key.verify(DEFAULT_ID, b"block 7 commit", &signature).is_valid());
        // The token's own verification agrees; a 31-byte e is refused.
        session.verify(&mechanism(CKM_SM2_RAW), public, e.as_bytes(), &raw).unwrap();
        let short = session.sign(&mechanism(CKM_SM2_RAW), private, &e.as_bytes()[..31]);
        assert_eq!(rv(short), RvError::DataLenRange);
        // SM3-with-SM2 (raw output): the token computes Z and e itself.
        let raw = session.sign(&mechanism(CKM_SM3_SM2), private, b"message").unwrap();
        let signature = Signature::from_raw(&raw).unwrap();
        assert!(key.verify(DEFAULT_ID, b"message", &signature).is_valid());
        return c.done();
    }
    Scenario::new("token::raw_signature_over_e_verifies_with_vpbox_sm", "").run("main");
}

/// The DER SM3-with-SM2 mechanism produces what OpenSSL 3 verifies with the default ID.
#[test]
fn der_sm3_with_sm2_signature_verifies_with_openssl() {
    let scenario = Scenario::new("token::der_sm3_with_sm2_signature_verifies_with_openssl", "");
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let session = user_session(&pkcs11, slot);
        let (public, private) = generate(&session, b"k", "k");
        let key = public_key(&session, public);
        let message = br#"{"slip":"0001","amount":"12.00"}"#;
        // Multi-part signing hashes the same message.
        session.sign_init(&mechanism(CKM_SM3_SM2_DER), private).unwrap();
        session.sign_update(&message[..10]).unwrap();
        session.sign_update(&message[10..]).unwrap();
        let multipart = session.sign_final().unwrap();
        let der = session.sign(&mechanism(CKM_SM3_SM2_DER), private, message).unwrap();
        for signature in [&der, &multipart] {
            assert!(
                key.verify(DEFAULT_ID, message, &Signature::from_der(signature).unwrap())
                    .is_valid()
            );
        }
        std::fs::write(c.path("pub.pem"), key.to_spki_pem()).unwrap();
        std::fs::write(c.path("msg"), message).unwrap();
        std::fs::write(c.path("sig.der"), &der).unwrap();
        std::fs::write(c.path("sig-multipart.der"), &multipart).unwrap();
        return c.done();
    }
    scenario.run("sign");
    for sig in ["sig.der", "sig-multipart.der"] {
        let (ok, out) = scenario.command(
            "openssl",
            &[
                "pkeyutl",
                "-verify",
                "-rawin",
                "-digest",
                "sm3",
                "-pkeyopt",
                "distid:1234567812345678",
                "-pubin",
                "-inkey",
                scenario.path("pub.pem").to_str().unwrap(),
                "-in",
                scenario.path("msg").to_str().unwrap(),
                "-sigfile",
                scenario.path(sig).to_str().unwrap(),
            ],
        );
        assert!(ok && out.contains("Signature Verified Successfully"), "{sig}: {out}");
    }
}

/// Objects, PINs and the sealed key survive C_Finalize and a new process.
#[test]
fn keys_persist_across_finalize_and_a_new_process() {
    if let Some(c) = child() {
        let pkcs11 = open();
        match c.phase.as_str() {
            "generate" => {
                let slot = init_token(&pkcs11);
                let session = user_session(&pkcs11, slot);
                let (public, _) = generate(&session, b"persist", "persist");
                let key = public_key(&session, public);
                std::fs::write(c.path("pub.hex"), hex::encode(key.to_sec1_uncompressed())).unwrap();
                drop(session);
                pkcs11.finalize().unwrap();
            }
            "sign" => {
                let slot = slot(&pkcs11);
                let session = pkcs11.open_ro_session(slot).unwrap();
                // Not logged in: the private key is invisible, the public key is not.
                let none =
                    session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]).unwrap();
                assert!(none.is_empty());
                session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
                let private = find(&session, ObjectClass::PRIVATE_KEY, b"persist");
                let saved = std::fs::read_to_string(c.path("pub.hex")).unwrap();
                let key =
                    vpbox_sm::sm2::PublicKey::from_sec1(&hex::decode(saved).unwrap()).unwrap();
                assert_eq!(public_key(&session, private), key);
                let raw = session.sign(&mechanism(CKM_SM3_SM2), private, b"after restart").unwrap();
                let signature = Signature::from_raw(&raw).unwrap();
                assert!(key.verify(DEFAULT_ID, b"after restart", &signature).is_valid());
            }
            other => panic!("{other}"),
        }
        return c.done();
    }
    let scenario = Scenario::new("token::keys_persist_across_finalize_and_a_new_process", "");
    scenario.run("generate");
    // At rest: no PIN, no plaintext key (the stored state is JSON with hex values).
    let state = std::fs::read_to_string(scenario.path("token/slot-0/token.json")).unwrap();
    assert!(!state.contains(&hex::encode(USER_PIN)) && !state.contains(USER_PIN));
    scenario.run("sign");
}

/// Three consecutive wrong user PINs lock the PIN (persisted); then even the right PIN is
/// refused until the SO sets a new one.
#[test]
fn three_wrong_pins_lock_the_token_and_the_right_pin_is_refused() {
    if let Some(c) = child() {
        let pkcs11 = open();
        match c.phase.as_str() {
            "lock" => {
                let slot = init_token(&pkcs11);
                let session = pkcs11.open_rw_session(slot).unwrap();
                for _ in 0..3 {
                    let wrong = session.login(UserType::User, Some(&pin("000000")));
                    assert_eq!(rv(wrong), RvError::PinIncorrect);
                }
                let right = session.login(UserType::User, Some(&pin(USER_PIN)));
                assert_eq!(rv(right), RvError::PinLocked);
                assert!(pkcs11.get_token_info(slot).unwrap().user_pin_locked());
            }
            "still-locked" => {
                let slot = slot(&pkcs11);
                let session = pkcs11.open_rw_session(slot).unwrap();
                let right = session.login(UserType::User, Some(&pin(USER_PIN)));
                assert_eq!(rv(right), RvError::PinLocked);
                session.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
                session.init_pin(&pin("24682468")).unwrap();
                session.logout().unwrap();
                session.login(UserType::User, Some(&pin("24682468"))).unwrap();
                assert!(!pkcs11.get_token_info(slot).unwrap().user_pin_locked());
            }
            other => panic!("{other}"),
        }
        return c.done();
    }
    let scenario =
        Scenario::new("token::three_wrong_pins_lock_the_token_and_the_right_pin_is_refused", "");
    scenario.run("lock");
    scenario.run("still-locked");
}

/// Re-initialising a token gives it a new slot ID (from the next C_Initialize on) while its
/// label and serial stay: find tokens by label and serial, never by slot number.
#[test]
fn reinit_changes_the_slot_id_but_label_and_serial_match() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = slot(&pkcs11);
        let info = pkcs11.get_token_info(slot).unwrap();
        let seen = format!("{} {} {}", slot.id(), info.label(), info.serial_number());
        std::fs::write(c.path(&format!("slot-{}", c.phase)), seen).unwrap();
        if c.phase != "after" {
            init_token(&pkcs11);
        }
        return c.done();
    }
    let scenario =
        Scenario::new("token::reinit_changes_the_slot_id_but_label_and_serial_match", "");
    for phase in ["first", "second", "after"] {
        scenario.run(phase);
    }
    let read =
        |phase: &str| std::fs::read_to_string(scenario.path(&format!("slot-{phase}"))).unwrap();
    let (second, after) = (read("second"), read("after"));
    let (slot_before, rest_before) = second.split_once(' ').unwrap();
    let (slot_after, rest_after) = after.split_once(' ').unwrap();
    assert_ne!(slot_before, slot_after, "{second} / {after}");
    assert_eq!(rest_before, rest_after);
    assert!(rest_after.starts_with(LABEL));
}

/// The signer's pattern (pkcs11-sm.md, "A long-running signer"): one login for the
/// application, one session per worker thread, signing concurrently under CKF_OS_LOCKING_OK.
#[test]
fn one_login_serves_sessions_signing_on_several_threads() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let first = user_session(&pkcs11, slot);
        let (public, private) = generate(&first, b"k", "k");
        let key = public_key(&first, public);
        std::thread::scope(|scope| {
            for worker in 0..4u8 {
                let (pkcs11, key) = (&pkcs11, &key);
                scope.spawn(move || {
                    let session = pkcs11.open_ro_session(slot).unwrap();
                    let state = session.get_session_info().unwrap().session_state();
                    assert_eq!(state, cryptoki::session::SessionState::RoUser);
                    for i in 0..10u8 {
                        let e = vpbox_sm::sm3::hash([worker, i]);
                        let raw = session.sign(&mechanism(CKM_SM2_RAW), private, &e.0).unwrap();
                        let signature = Signature::from_raw(&raw).unwrap();
                        assert!(key.verify_digest(&e, &signature).is_valid());
                    }
                });
            }
        });
        return c.done();
    }
    Scenario::new("token::one_login_serves_sessions_signing_on_several_threads", "").run("main");
}
