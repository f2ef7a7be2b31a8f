//! Fault injection: device resets, device errors, latency, bad configuration.

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::UserType;

use crate::*;

/// `reset_every = 5`: five operations succeed, the sixth finds its session gone
/// (CKR_SESSION_HANDLE_INVALID), and a new session starts logged out.
#[test]
fn n5_reset_every_5_invalidates_the_session_at_the_6th_operation() {
    if let Some(c) = child() {
        let pkcs11 = open();
        if c.phase == "setup" {
            init_token(&pkcs11);
            return c.done();
        }
        // A fresh process: the operation count starts at zero.
        let slot = slot(&pkcs11);
        let session = pkcs11.open_rw_session(slot).unwrap();
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap(); // 1
        for _ in 2..=5 {
            session.get_session_info().unwrap();
        }
        assert_eq!(rv(session.get_session_info()), RvError::SessionHandleInvalid);
        let fresh = pkcs11.open_rw_session(slot).unwrap();
        let state = fresh.get_session_info().unwrap().session_state();
        assert_eq!(state, cryptoki::session::SessionState::RwPublic, "login was lost");
        return c.done();
    }
    let name = "faults::n5_reset_every_5_invalidates_the_session_at_the_6th_operation";
    let scenario = Scenario::new(name, "reset_every = 5");
    scenario.run("setup");
    scenario.run("main");
}

/// `device_error_rate = 0.5`: every second signature computation fails with
/// CKR_DEVICE_ERROR, deterministically.
#[test]
fn device_error_rate_fails_every_nth_signature() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let session = user_session(&pkcs11, slot);
        let (_, private) = generate(&session, b"k", "k");
        let outcomes: Vec<_> = (0..6)
            .map(|_| match session.sign(&mechanism(CKM_SM2_RAW), private, &[1; 32]) {
                Ok(_) => None,
                Err(Error::Pkcs11(rv, _)) => Some(rv),
                Err(e) => panic!("{e}"),
            })
            .collect();
        let failed = Some(RvError::DeviceError);
        assert_eq!(outcomes, [None, failed, None, failed, None, failed]);
        return c.done();
    }
    Scenario::new("faults::device_error_rate_fails_every_nth_signature", "device_error_rate = 0.5")
        .run("main");
}

/// `latency_ms` is added to each signature.
#[test]
fn latency_ms_delays_each_signature() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let session = user_session(&pkcs11, slot);
        let (_, private) = generate(&session, b"k", "k");
        let start = Instant::now();
        for _ in 0..3 {
            session.sign(&mechanism(CKM_SM2_RAW), private, &[1; 32]).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(3 * 40), "{:?}", start.elapsed());
        return c.done();
    }
    Scenario::new("faults::latency_ms_delays_each_signature", "latency_ms = 40").run("main");
}

/// A missing or invalid configuration makes C_Initialize fail with CKR_GENERAL_ERROR.
#[test]
fn bad_configuration_fails_initialize_with_general_error() {
    if let Some(c) = child() {
        let pkcs11 = Pkcs11::new(module_path()).unwrap();
        let result = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        assert_eq!(rv(result), RvError::GeneralError);
        return c.done();
    }
    let scenario =
        Scenario::new("faults::bad_configuration_fails_initialize_with_general_error", "");
    std::fs::write(scenario.conf(), "token_dir = 3\n").unwrap();
    scenario.run("invalid");
    std::fs::remove_file(scenario.conf()).unwrap();
    scenario.run("missing");
}
