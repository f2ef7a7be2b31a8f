//! `vpbox hsm` against a real SoftHSM2 token (no SM2 in SoftHSM: these tests cover key custody —
//! templates, attribute policy, PINs, slots). Each test has its own SoftHSM config and token
//! directory, passed to child processes through `SOFTHSM2_CONF`, so tests run in parallel.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::{Run, Scratch, s, vpbox_env};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

struct SoftHsm {
    dir: Scratch,
    conf: String,
}

impl SoftHsm {
    fn new() -> Self {
        let dir = Scratch::new();
        let tokens = dir.path("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.write(
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                s(&tokens)
            ),
        );
        let conf = s(&conf).to_string();
        Self { dir, conf }
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("SOFTHSM2_CONF", self.conf.as_str())]
    }

    fn util(&self, args: &[&str]) -> String {
        let out = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("softhsm2-util must be installed (apt-get install softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn init_token(&self, label: &str) {
        self.util(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "87654321",
            "--pin",
            "123456",
        ]);
    }

    fn pin_file(&self, name: &str, pin: &str, mode: u32) -> String {
        let p = self.dir.write(name, pin);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        s(&p).to_string()
    }

    fn vpbox(&self, args: &[&str]) -> Run {
        vpbox_env(args, &self.env())
    }

    fn pkcs11_tool(&self, args: &[&str]) -> std::process::Output {
        Command::new("pkcs11-tool")
            .args(["--module", MODULE])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool must be installed (apt-get install opensc)")
    }
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.text()))
}

#[test]
fn keygen_makes_a_locked_key_that_never_leaves_the_token() {
    let hsm = SoftHsm::new();
    hsm.init_token("custody");
    let pin = hsm.pin_file("pin", "123456", 0o400);
    let t = ["--module", MODULE, "--token", "custody", "--pin-file", pin.as_str()];
    let made = hsm.vpbox(
        &[&["hsm", "keygen"], &t[..], &["--label", "node1", "--id", "01", "--json"]].concat(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let key = json(&made);
    assert_eq!(key["problems"], serde_json::json!([]));
    assert_eq!(key["value_unreadable"], true);
    for (attr, want) in [
        ("sensitive", true),
        ("extractable", false),
        ("local", true),
        ("always-sensitive", true),
        ("never-extractable", true),
        ("decrypt", false),
        ("modifiable", false),
    ] {
        assert_eq!(key["attributes"][attr], want, "{attr}");
    }
    // The public key is an SPKI on the SM2 curve that OpenSSL reads.
    let pem = key["public_key_pem"].as_str().unwrap();
    let pubf = hsm.dir.write("pub.pem", pem);
    let text = crate::openssl(&["pkey", "-pubin", "-in", s(&pubf), "-text", "-noout"]);
    assert!(text.text().contains("SM2"), "{}", text.text());

    // pkcs11-tool, independently: the token refuses to change the non-modifiable key.
    let relabel = hsm.pkcs11_tool(&[
        "--token-label",
        "custody",
        "--login",
        "--pin",
        "123456",
        "--set-id",
        "02",
        "--type",
        "privkey",
        "--id",
        "01",
    ]);
    assert!(!relabel.status.success(), "a non-modifiable key was modified");
    assert!(
        String::from_utf8_lossy(&relabel.stderr).contains("(0x1b)"),
        "CKR_ACTION_PROHIBITED (0x1b) expected"
    );

    // The same CKA_ID is refused; inspect and keys agree; SoftHSM cannot sign SM2, and says so.
    let again = hsm.vpbox(&[&["hsm", "keygen"], &t[..], &["--label", "x", "--id", "01"]].concat());
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(hsm.vpbox(&[&["hsm", "inspect"], &t[..], &["--id", "01"]].concat()).code, 0);
    let keys = hsm.vpbox(&[&["hsm", "keys", "--json"], &t[..]].concat());
    assert_eq!(json(&keys).as_array().unwrap().len(), 1);
    let selftest = hsm.vpbox(&[&["hsm", "selftest"], &t[..], &["--id", "01"]].concat());
    assert_eq!(selftest.code, 2);
    assert!(selftest.stderr.contains("no SM2 signature mechanism"), "{}", selftest.stderr);

    // Retire needs --yes, then the key is gone.
    assert_eq!(hsm.vpbox(&[&["hsm", "retire"], &t[..], &["--id", "01"]].concat()).code, 2);
    assert_eq!(hsm.vpbox(&[&["hsm", "retire"], &t[..], &["--id", "01", "--yes"]].concat()).code, 0);
    let keys = hsm.vpbox(&[&["hsm", "keys", "--json"], &t[..]].concat());
    assert_eq!(json(&keys), serde_json::json!([]));
}

#[test]
fn loose_keys_made_elsewhere_are_flagged() {
    let hsm = SoftHsm::new();
    hsm.init_token("loose");
    let made = hsm.pkcs11_tool(&[
        "--token-label",
        "loose",
        "--login",
        "--pin",
        "123456",
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "07",
        "--label",
        "careless",
        "--usage-sign",
        "--usage-decrypt",
        "--extractable",
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let pin = hsm.pin_file("pin", "123456", 0o400);
    let t = ["--module", MODULE, "--token", "loose", "--pin-file", pin.as_str()];
    let inspect = hsm.vpbox(&[&["hsm", "inspect", "--json"], &t[..], &["--id", "07"]].concat());
    assert_eq!(inspect.code, 1, "a weak key is a failed check: {}", inspect.stderr);
    let problems = json(&inspect)["problems"].to_string();
    for p in ["extractable=true", "never-extractable=false"] {
        assert!(problems.contains(p), "{p} not flagged in {problems}");
    }
    assert_eq!(hsm.vpbox(&[&["hsm", "keys"], &t[..]].concat()).code, 1);
}

#[test]
fn pins_fail_closed_and_come_only_from_private_files() {
    let hsm = SoftHsm::new();
    hsm.init_token("pins");
    let bad = hsm.pin_file("bad", "000000", 0o400);
    let run =
        hsm.vpbox(&["hsm", "keys", "--module", MODULE, "--token", "pins", "--pin-file", &bad]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("refused the PIN (not retried)"), "{}", run.stderr);
    let open = hsm.pin_file("open", "123456", 0o644);
    let run =
        hsm.vpbox(&["hsm", "keys", "--module", MODULE, "--token", "pins", "--pin-file", &open]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("chmod 0400"), "{}", run.stderr);
    assert!(!run.stderr.contains("123456"), "the PIN never appears in output");
    // No --pin flag exists: a PIN on the command line is a usage error.
    assert_eq!(
        hsm.vpbox(&["hsm", "keys", "--module", MODULE, "--token", "pins", "--pin", "123456"]).code,
        2
    );
}

#[test]
fn a_reinitialised_token_is_found_again_by_label_under_its_new_slot() {
    let hsm = SoftHsm::new();
    hsm.init_token("moving");
    let slot_of = |hsm: &SoftHsm| -> u64 {
        let tokens = json(&hsm.vpbox(&["hsm", "tokens", "--module", MODULE, "--json"]));
        tokens.as_array().unwrap().iter().find(|t| t["label"] == "moving").unwrap()["slot"]
            .as_u64()
            .unwrap()
    };
    let first = slot_of(&hsm);
    hsm.util(&["--delete-token", "--token", "moving"]);
    hsm.init_token("moving");
    let second = slot_of(&hsm);
    assert_ne!(first, second, "SoftHSM moves a re-initialised token to a new slot");
    let pin = hsm.pin_file("pin", "123456", 0o400);
    let made = hsm.vpbox(&[
        "hsm",
        "keygen",
        "--module",
        MODULE,
        "--token",
        "moving",
        "--pin-file",
        &pin,
        "--label",
        "k",
        "--id",
        "0a",
    ]);
    assert_eq!(made.code, 0, "{}", made.stderr);
}

#[test]
fn unknown_tokens_and_modules_are_clear_errors() {
    let hsm = SoftHsm::new();
    hsm.init_token("present");
    let pin = hsm.pin_file("pin", "123456", 0o400);
    let run =
        hsm.vpbox(&["hsm", "keys", "--module", MODULE, "--token", "absent", "--pin-file", &pin]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no token with label \"absent\""), "{}", run.stderr);
    let run = hsm.vpbox(&["hsm", "tokens", "--module", "/nonexistent/libpkcs11.so"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot load PKCS#11 module"), "{}", run.stderr);
}
