//! Interoperability with the `openssl` command (OpenSSL 3), both ways. OpenSSL's default SM2
//! ID is empty, so every command passes `distid:1234567812345678` explicitly
//! (docs/reference/sm-tls-x509.md, "OpenSSL traps").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vpbox_sm::sm2::{DEFAULT_ID, PublicKey, SecretKey, Signature};
use vpbox_sm::{Domain, Error, Signer, SoftwareSigner, Verification, sm3, sm4};

const DISTID: &str = "distid:1234567812345678";

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

/// Runs `openssl ARGS`; returns (success, stdout). Panics if openssl is missing: CI installs it,
/// and a skipped interop test would prove nothing.
fn openssl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command must be installed (apt-get install openssl)");
    (out.status.success(), out.stdout)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn sm3_equals_openssl_dgst() {
    let dir = Dir::new();
    let sizes = [0usize, 3, 64, 1000, 3 * 1024 * 1024 + 17];
    for size in sizes {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let file = dir.write("data", &data);
        let (ok, out) = openssl(&["dgst", "-sm3", "-r", p(&file)]);
        assert!(ok);
        let theirs = String::from_utf8(out).unwrap();
        assert_eq!(&theirs[..64], sm3::hash(&data).to_hex(), "size {size}");
    }
}

#[test]
fn openssl_keys_and_signatures_are_accepted() {
    let dir = Dir::new();
    let key = dir.path("key.pem");
    assert!(openssl(&["genpkey", "-algorithm", "SM2", "-out", p(&key)]).0);
    let ours = SecretKey::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();

    let (ok, pub_pem) = openssl(&["pkey", "-in", p(&key), "-pubout"]);
    assert!(ok);
    let public = PublicKey::from_pem(std::str::from_utf8(&pub_pem).unwrap()).unwrap();
    assert_eq!(&public, ours.public_key());

    let msg = dir.write("msg", b"electronic sales slip 0001");
    let sig = dir.path("sig");
    let (ok, _) = openssl(&[
        "pkeyutl",
        "-sign",
        "-rawin",
        "-digest",
        "sm3",
        "-inkey",
        p(&key),
        "-pkeyopt",
        DISTID,
        "-in",
        p(&msg),
        "-out",
        p(&sig),
    ]);
    assert!(ok);
    let sig = Signature::from_der(&std::fs::read(&sig).unwrap()).unwrap();
    assert_eq!(public.verify(DEFAULT_ID, b"electronic sales slip 0001", &sig), Verification::Valid);
    assert_eq!(
        public.verify(DEFAULT_ID, b"electronic sales slip 0002", &sig),
        Verification::Invalid
    );
    assert_eq!(public.verify(b"", b"electronic sales slip 0001", &sig), Verification::Invalid);
}

#[test]
fn our_keys_and_signatures_are_accepted_by_openssl() {
    let dir = Dir::new();
    let key = SecretKey::generate().unwrap();
    let key_pem = dir.write("key.pem", key.to_pkcs8_pem().unwrap().as_bytes());
    let pub_pem = dir.write("pub.pem", key.public_key().to_spki_pem());
    let msg = dir.write("msg", b"anchor me");

    // OpenSSL parses our key and derives the same public key.
    let (ok, derived) = openssl(&["pkey", "-in", p(&key_pem), "-pubout"]);
    assert!(ok);
    assert_eq!(String::from_utf8(derived).unwrap(), key.public_key().to_spki_pem());

    let verify = |sig_file: &Path, msg_file: &Path| {
        openssl(&[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-digest",
            "sm3",
            "-pubin",
            "-inkey",
            p(&pub_pem),
            "-pkeyopt",
            DISTID,
            "-in",
            p(msg_file),
            "-sigfile",
            p(sig_file),
        ])
        .0
    };
    let sig = dir.write("sig", key.sign(DEFAULT_ID, b"anchor me").unwrap().to_der());
    assert!(verify(&sig, &msg), "openssl rejects our signature");
    let other = dir.write("other", b"anchor you");
    assert!(!verify(&sig, &other), "openssl accepts a signature over another message");

    // A signature in a domain is a plain SM2 signature over the framed message.
    let signer = SoftwareSigner::new(key);
    let framed = dir.write("framed", Domain::TX.frame(b"anchor me"));
    let sig = dir.write("dsig", signer.sign(Domain::TX, b"anchor me").unwrap().to_der());
    assert!(verify(&sig, &framed));
    assert!(!verify(&sig, &msg));

    // OpenSSL signs with our PEM key; we verify.
    let osig = dir.path("osig");
    assert!(
        openssl(&[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-digest",
            "sm3",
            "-inkey",
            p(&key_pem),
            "-pkeyopt",
            DISTID,
            "-in",
            p(&msg),
            "-out",
            p(&osig),
        ])
        .0
    );
    let osig = Signature::from_der(&std::fs::read(&osig).unwrap()).unwrap();
    assert!(signer.public_key().verify(DEFAULT_ID, b"anchor me", &osig).is_valid());
}

#[test]
fn sec1_keys_from_openssl_ec_are_accepted() {
    let dir = Dir::new();
    let pkcs8 = dir.path("pkcs8.pem");
    assert!(openssl(&["ecparam", "-name", "SM2", "-genkey", "-noout", "-out", p(&pkcs8)]).0);
    let key = dir.path("sec1.pem");
    assert!(openssl(&["ec", "-in", p(&pkcs8), "-out", p(&key)]).0);
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.contains("BEGIN SM2 PRIVATE KEY"), "OpenSSL 3 labels SEC1 SM2 keys so");
    let ours = SecretKey::from_pem(&pem).unwrap();
    let (ok, pub_pem) = openssl(&["pkey", "-in", p(&key), "-pubout"]);
    assert!(ok);
    assert_eq!(ours.public_key().to_spki_pem(), String::from_utf8(pub_pem).unwrap());
}

#[test]
fn other_algorithms_are_refused_by_name() {
    let dir = Dir::new();
    let p256 = dir.path("p256.pem");
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p(&p256)
        ])
        .0
    );
    let err = SecretKey::from_pem(&std::fs::read_to_string(&p256).unwrap()).unwrap_err();
    assert!(matches!(&err, Error::NotSm2 { found } if found.contains("prime256v1")), "{err}");
    let (_, p256_pub) = openssl(&["pkey", "-in", p(&p256), "-pubout"]);
    let err = PublicKey::from_pem(std::str::from_utf8(&p256_pub).unwrap()).unwrap_err();
    assert!(matches!(&err, Error::NotSm2 { .. }), "{err}");

    let rsa = dir.path("rsa.pem");
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            p(&rsa)
        ])
        .0
    );
    let err = SecretKey::from_pem(&std::fs::read_to_string(&rsa).unwrap()).unwrap_err();
    assert!(matches!(&err, Error::NotSm2 { found } if found.contains("rsaEncryption")), "{err}");
}

#[test]
fn sm4_cbc_equals_openssl_enc_both_ways() {
    let dir = Dir::new();
    let key = sm4::Sm4Key::generate().unwrap();
    let iv = [0x0fu8; 16];
    let (k, i) = (hex::encode(key.expose_secret()), hex::encode(iv));
    for len in [0usize, 5, 16, 100_000] {
        let pt: Vec<u8> = (0..len).map(|x| (x % 253) as u8).collect();
        let pt_file = dir.write("pt", &pt);
        let ct_file = dir.path("ct");
        assert!(
            openssl(&[
                "enc",
                "-sm4-cbc",
                "-K",
                &k,
                "-iv",
                &i,
                "-in",
                p(&pt_file),
                "-out",
                p(&ct_file)
            ])
            .0
        );
        let theirs = std::fs::read(&ct_file).unwrap();
        assert_eq!(theirs, sm4::cbc_encrypt(&key, &iv, &pt), "len {len}");
        let ours = dir.write("ours", sm4::cbc_encrypt(&key, &iv, &pt));
        let back = dir.path("back");
        assert!(
            openssl(&[
                "enc",
                "-d",
                "-sm4-cbc",
                "-K",
                &k,
                "-iv",
                &i,
                "-in",
                p(&ours),
                "-out",
                p(&back)
            ])
            .0
        );
        assert_eq!(std::fs::read(&back).unwrap(), pt);
    }
}
