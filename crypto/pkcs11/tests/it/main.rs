//! The library against real SoftHSM2. Each scenario runs in a child process (this test binary
//! re-executed with `--exact NAME`) with its own `SOFTHSM2_CONF`, because a PKCS#11 module reads
//! its configuration once per process and tests run in parallel.

use std::path::Path;
use std::process::Command;

use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use vpbox_pkcs11::keys::{self, KeyPolicy};
use vpbox_pkcs11::{Error, OpenToken, Pin, Pkcs11Signer, SignerConfig, TokenSelector};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const CHILD: &str = "VPBOX_PKCS11_IT_CHILD";

/// In the parent: makes a SoftHSM token and re-runs `name` in a child that sees it. In the
/// child: returns true, and the caller runs the scenario.
fn in_child_with_softhsm(name: &str, label: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "87654321",
            "--pin",
            "123456",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util must be installed");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let marker = dir.path().join("ran");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, &marker)
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child {name} failed:\n{text}");
    assert!(marker.exists(), "child {name} ran nothing:\n{text}");
    false
}

fn mark_ran() {
    if let Some(m) = std::env::var_os(CHILD) {
        std::fs::write(Path::new(&m), b"ok").unwrap();
    }
}

#[test]
fn softhsm_keeps_the_locked_template_locked() {
    if !in_child_with_softhsm("softhsm_keeps_the_locked_template_locked", "locked") {
        return;
    }
    let token =
        OpenToken::open(Path::new(MODULE), &TokenSelector::Label("locked".into()), None).unwrap();
    assert_eq!(token.profile.name, "softhsm2");
    let session = token.login(&Pin::new("123456"), true).unwrap();
    let (_, private) =
        keys::generate(&session, &token.profile, "k", b"\x01", KeyPolicy::default()).unwrap();

    // EXTRACTABLE cannot be turned on, SENSITIVE cannot be turned off (PKCS#11 v2.40 §4.9).
    assert!(
        session.update_attributes(private, &[Attribute::Extractable(true)]).is_err(),
        "EXTRACTABLE was set"
    );
    assert!(
        session.update_attributes(private, &[Attribute::Sensitive(false)]).is_err(),
        "SENSITIVE was cleared"
    );
    // CKA_VALUE is refused, and the audit agrees.
    let info = session.get_attribute_info(private, &[AttributeType::Value]).unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive | AttributeInfo::Unavailable), "{info:?}");
    let report = keys::inspect(&session, private).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.value_unreadable);
    // The same CKA_ID twice is refused.
    assert!(keys::generate(&session, &token.profile, "k2", b"\x01", KeyPolicy::default()).is_err());

    // SoftHSM2 cannot sign SM2: the signer says so instead of producing ECDSA.
    let err = Pkcs11Signer::open_in(
        token.module,
        SignerConfig {
            module: MODULE.into(),
            token: TokenSelector::Label("locked".into()),
            key_id: vec![1],
            pin: Pin::new("123456"),
            profile: None,
            pinned: None,
            sessions: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    mark_ran();
}

#[test]
fn softhsm_wrong_pin_fails_closed() {
    if !in_child_with_softhsm("softhsm_wrong_pin_fails_closed", "pins") {
        return;
    }
    let token =
        OpenToken::open(Path::new(MODULE), &TokenSelector::Label("pins".into()), None).unwrap();
    assert!(matches!(token.login(&Pin::new("000000"), false), Err(Error::PinIncorrect)));
    assert!(token.login(&Pin::new("123456"), false).is_ok());
    // One module per process (a second C_Initialize fails): look again in the same module.
    assert!(matches!(
        OpenToken::in_module(token.module, &TokenSelector::Serial("no-such-serial".into()), None),
        Err(Error::TokenNotFound(_))
    ));
    mark_ran();
}
