//! A second verifier, written in Python from `docs/proof-format.md` alone (SM2 and SM3 from the
//! PyPI `gmssl` package, X.509 by its own DER reader; no vpbox code), accepts and refuses
//! exactly the vectors of `testdata/proofs/` — each valid one with its verdict, each invalid one
//! with its reason. `scripts/deps.sh --test` makes its venv (`/opt/vpbox-pytest`); another
//! Python with gmssl may be named by `VPBOX_PYTHON`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_independent_python_verifier_agrees_with_every_vector() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("../testdata/proofs");
    let python =
        std::env::var("VPBOX_PYTHON").unwrap_or_else(|_| "/opt/vpbox-pytest/bin/python3".into());
    let out = Command::new(&python)
        .arg(root.join("tests/independent_verifier.py"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/deps.sh --test makes the venv)"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let count = |name: &str, list: &str| {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        m[list].as_array().unwrap().len()
    };
    let n = count("valid.json", "valid") + count("invalid.json", "invalid");
    assert!(text.contains(&format!("{n} passed, 0 failed, {n} vectors")), "{text}");
    // One bundle on its own, as a person would run it: a valid one exits 0, an invalid one 1
    // with its reason.
    let hash = {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("valid.json")).unwrap()).unwrap();
        m["genesisHash"].as_str().unwrap().to_string()
    };
    let one = |file: &str| {
        Command::new(&python)
            .arg(root.join("tests/independent_verifier.py"))
            .args(["verify", dir.join(file).to_str().unwrap(), "--genesis-hash", &hash])
            .output()
            .unwrap()
    };
    let ok = one("epoch2.proof");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stdout));
    let bad = one("invalid/below-quorum.proof");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("below-quorum"));
}
