//! `vpbox sm2`: software SM2 keys and signatures, interoperable with `openssl pkeyutl -rawin
//! -digest sm3 -pkeyopt distid:…`.

use anyhow::{Context, Result};
use serde::Serialize;
use vpbox_sm::Verification;
use vpbox_sm::sm2::{PublicKey, SecretKey, Signature};
use vpbox_sm::sm3::{Digest, Sm3};

use crate::Outcome;
use crate::cli::{KeygenArgs, PubArgs, SignArgs, VerifyArgs};
use crate::files::{open_input, read_all, read_pem, write_output};

#[derive(Serialize)]
struct KeyInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key_file: Option<String>,
    public_key_pem: String,
    public_key_sec1: String,
    fingerprint_sm3: String,
}

impl KeyInfo {
    fn of(public: &PublicKey) -> Self {
        Self {
            private_key_file: None,
            public_key_file: None,
            public_key_pem: public.to_spki_pem(),
            public_key_sec1: hex::encode(public.to_sec1_uncompressed()),
            fingerprint_sm3: public.fingerprint().to_hex(),
        }
    }
}

pub(crate) fn keygen(args: &KeygenArgs) -> Result<Outcome> {
    let key = SecretKey::generate()?;
    let pem = key.to_pkcs8_pem()?;
    write_output(Some(&args.out), pem.as_bytes(), true)
        .context("refusing to overwrite or failed to create the key file")?;
    let public = key.public_key();
    if let Some(p) = &args.pub_out {
        write_output(Some(p), public.to_spki_pem().as_bytes(), false)?;
    }
    if args.json {
        let mut info = KeyInfo::of(public);
        info.private_key_file = Some(args.out.display().to_string());
        info.public_key_file = args.pub_out.as_ref().map(|p| p.display().to_string());
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!("wrote {} (SM2, PKCS#8, mode 0600)", args.out.display());
        if let Some(p) = &args.pub_out {
            println!("wrote {}", p.display());
        }
        println!("fingerprint sm3:{}", public.fingerprint());
    }
    Ok(Outcome::Ok)
}

pub(crate) fn public(args: &PubArgs) -> Result<Outcome> {
    let key = load_secret(&args.key)?;
    let public = key.public_key();
    if args.json {
        println!("{}", serde_json::to_string(&KeyInfo::of(public))?);
    } else {
        write_output(args.out.as_deref(), public.to_spki_pem().as_bytes(), false)?;
    }
    Ok(Outcome::Ok)
}

pub(crate) fn sign(args: &SignArgs) -> Result<Outcome> {
    let key = load_secret(&args.key)?;
    let e = digest_input(key.public_key(), args.id.as_bytes(), args.file.as_deref())?;
    let sig = key.sign_digest(&e)?;
    let bytes = if args.raw { sig.to_raw().to_vec() } else { sig.to_der() };
    write_output(args.out.as_deref(), &bytes, false)?;
    Ok(Outcome::Ok)
}

pub(crate) fn verify(args: &VerifyArgs) -> Result<Outcome> {
    let public = load_public(&args.public)?;
    let sig_bytes = read_all(&args.sig, 4096)?;
    let sig =
        if args.raw { Signature::from_raw(&sig_bytes) } else { Signature::from_der(&sig_bytes) }
            .with_context(|| {
                let hint = if args.raw { "" } else { " (use --raw for 64-byte r‖s)" };
                format!("{}{hint}", args.sig)
            })?;
    let e = digest_input(&public, args.id.as_bytes(), args.file.as_deref())?;
    match public.verify_digest(&e, &sig) {
        Verification::Valid => {
            println!("Verified OK");
            Ok(Outcome::Ok)
        }
        Verification::Invalid => {
            println!("Verification failure");
            Ok(Outcome::Invalid)
        }
    }
}

/// `e = SM3(Z ‖ M)` over a file or stdin, streamed so a large file needs no memory.
fn digest_input(public: &PublicKey, id: &[u8], file: Option<&str>) -> Result<Digest> {
    let name = file.unwrap_or("-");
    let mut h = Sm3::new();
    h.update(public.z(id)?);
    crate::sm3_cmd::absorb(&mut h, open_input(name)?).with_context(|| name.to_string())?;
    Ok(h.finalize())
}

fn load_secret(path: &str) -> Result<SecretKey> {
    SecretKey::from_pem(&read_pem(path)?).with_context(|| path.to_string())
}

/// A public key from an SPKI PEM, or derived from a private key PEM (as `openssl pkeyutl
/// -inkey` allows).
fn load_public(path: &str) -> Result<PublicKey> {
    let pem = read_pem(path)?;
    if pem.contains("PRIVATE KEY-----") {
        let key = SecretKey::from_pem(&pem).with_context(|| path.to_string())?;
        return Ok(key.public_key().clone());
    }
    PublicKey::from_pem(&pem).with_context(|| path.to_string())
}
