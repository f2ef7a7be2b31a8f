use std::os::unix::fs::PermissionsExt;

use crate::{Scratch, openssl, s, vpbox};

const DISTID: &str = "distid:1234567812345678";

fn openssl_verify(public: &std::path::Path, sig: &std::path::Path, data: &std::path::Path) -> bool {
    openssl(&[
        "pkeyutl",
        "-verify",
        "-rawin",
        "-digest",
        "sm3",
        "-pubin",
        "-inkey",
        s(public),
        "-pkeyopt",
        DISTID,
        "-in",
        s(data),
        "-sigfile",
        s(sig),
    ])
    .code
        == 0
}

#[test]
fn keygen_writes_a_private_0600_key_and_never_overwrites() {
    let dir = Scratch::new();
    let key = dir.path("k.pem");
    let pubf = dir.path("k.pub");
    let run = vpbox(&["sm2", "keygen", "--out", s(&key), "--pub-out", s(&pubf), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let info: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(info["public_key_pem"], std::fs::read_to_string(&pubf).unwrap());
    assert!(!run.text().contains("PRIVATE"), "a private key never goes to stdout");

    let before = std::fs::read(&key).unwrap();
    let again = vpbox(&["sm2", "keygen", "--out", s(&key)]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    assert_eq!(std::fs::read(&key).unwrap(), before, "the old key is intact");

    // OpenSSL reads the key and derives the same public key; `vpbox sm2 pub` agrees.
    let derived = openssl(&["pkey", "-in", s(&key), "-pubout"]);
    assert_eq!(derived.stdout, std::fs::read(&pubf).unwrap());
    assert_eq!(vpbox(&["sm2", "pub", "--key", s(&key)]).stdout, derived.stdout);
}

#[test]
fn openssl_verifies_vpbox_signatures_and_vpbox_verifies_openssls() {
    let dir = Scratch::new();
    let key = dir.path("k.pem");
    let pubf = dir.path("k.pub");
    assert_eq!(vpbox(&["sm2", "keygen", "--out", s(&key), "--pub-out", s(&pubf)]).code, 0);
    let data = dir.write("slip.json", br#"{"rrn":"1"}"#);
    let sig = dir.path("slip.sig");
    assert_eq!(vpbox(&["sm2", "sign", "--key", s(&key), "--out", s(&sig), s(&data)]).code, 0);
    assert!(openssl_verify(&pubf, &sig, &data), "openssl rejects vpbox's signature");

    let ok = vpbox(&["sm2", "verify", "--pub", s(&pubf), "--sig", s(&sig), s(&data)]);
    assert_eq!((ok.code, ok.text().as_str()), (0, "Verified OK\n"));

    // OpenSSL signs with vpbox's key; vpbox verifies.
    let osig = dir.path("o.sig");
    let signed = openssl(&[
        "pkeyutl",
        "-sign",
        "-rawin",
        "-digest",
        "sm3",
        "-inkey",
        s(&key),
        "-pkeyopt",
        DISTID,
        "-in",
        s(&data),
        "-out",
        s(&osig),
    ]);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    let ok = vpbox(&["sm2", "verify", "--pub", s(&pubf), "--sig", s(&osig), s(&data)]);
    assert_eq!((ok.code, ok.text().as_str()), (0, "Verified OK\n"));

    // Tampered data, a tampered signature and a wrong ID all fail with exit 1.
    let other = dir.write("other.json", br#"{"rrn":"2"}"#);
    let bad = vpbox(&["sm2", "verify", "--pub", s(&pubf), "--sig", s(&osig), s(&other)]);
    assert_eq!((bad.code, bad.text().as_str()), (1, "Verification failure\n"));
    let wrong_id =
        vpbox(&["sm2", "verify", "--pub", s(&pubf), "--sig", s(&osig), "--id", "x", s(&data)]);
    assert_eq!(wrong_id.code, 1);
    let mut raw_sig = std::fs::read(&osig).unwrap();
    let last = raw_sig.len() - 1;
    raw_sig[last] ^= 1;
    let tsig = dir.write("t.sig", &raw_sig);
    let bad = vpbox(&["sm2", "verify", "--pub", s(&pubf), "--sig", s(&tsig), s(&data)]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
}

#[test]
fn keys_made_by_openssl_work_and_raw_signatures_round_trip() {
    let dir = Scratch::new();
    let key = dir.path("o.pem");
    assert_eq!(openssl(&["genpkey", "-algorithm", "SM2", "-out", s(&key)]).code, 0);
    let data = dir.write("d", b"day-end batch");
    let sig = dir.path("d.sig");
    assert_eq!(
        vpbox(&["sm2", "sign", "--key", s(&key), "--raw", "--out", s(&sig), s(&data)]).code,
        0
    );
    assert_eq!(std::fs::read(&sig).unwrap().len(), 64);
    // A private key works as --pub, as with openssl pkeyutl -inkey.
    let ok = vpbox(&["sm2", "verify", "--pub", s(&key), "--sig", s(&sig), "--raw", s(&data)]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // Without --raw the 64 bytes are not DER: an encoding error (2), with a hint.
    let err = vpbox(&["sm2", "verify", "--pub", s(&key), "--sig", s(&sig), s(&data)]);
    assert_eq!(err.code, 2);
    assert!(err.stderr.contains("--raw"), "{}", err.stderr);
}

#[test]
fn bad_inputs_are_clear_errors_with_exit_2() {
    let dir = Scratch::new();
    let key = dir.path("k.pem");
    let pubf = dir.path("k.pub");
    assert_eq!(vpbox(&["sm2", "keygen", "--out", s(&key), "--pub-out", s(&pubf)]).code, 0);
    let data = dir.write("d", b"data");
    let sig = dir.path("d.sig");
    assert_eq!(vpbox(&["sm2", "sign", "--key", s(&key), "--out", s(&sig), s(&data)]).code, 0);

    let p256 = dir.path("p256.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&p256),
    ]);
    let rsa = dir.path("rsa.pem");
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", s(&rsa)]);
    let der = std::fs::read(&sig).unwrap();
    let truncated = dir.write("trunc.sig", &der[..der.len() - 5]);
    let not_pem = dir.write("junk.pem", b"hello");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sm2", "sign", "--key", "/nonexistent.pem", s(&data)], "No such file"),
        (vec!["sm2", "sign", "--key", s(&p256), s(&data)], "not an SM2 key"),
        (vec!["sm2", "sign", "--key", s(&rsa), s(&data)], "not an SM2 key"),
        (vec!["sm2", "sign", "--key", s(&not_pem), s(&data)], "PEM"),
        (vec!["sm2", "sign", "--key", s(dir.0.path()), s(&data)], "Is a directory"),
        (vec!["sm2", "sign", "--key", s(&key), s(dir.0.path())], "Is a directory"),
        (vec!["sm2", "verify", "--pub", s(&pubf), "--sig", s(&truncated), s(&data)], "signature"),
        (vec!["sm2", "verify", "--pub", s(&p256), "--sig", s(&sig), s(&data)], "not an SM2 key"),
        (
            vec!["sm2", "verify", "--pub", s(&pubf), "--sig", "/nonexistent.sig", s(&data)],
            "No such file",
        ),
        (
            vec!["sm2", "verify", "--pub", s(&pubf), "--sig", s(&sig), "/nonexistent"],
            "No such file",
        ),
        (vec!["sm2", "verify", "--pub", s(&pubf)], "--sig"),
    ];
    for (args, needle) in cases {
        let run = vpbox(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: expected {needle:?} in {}", run.stderr);
        assert!(run.stdout.is_empty() || args.contains(&"--pub"), "{args:?}");
    }
}
