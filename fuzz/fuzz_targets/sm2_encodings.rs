//! SM2 keys and signatures from files and certificates: every decoder returns an error or a
//! value, never a panic.
#![no_main]
use vpbox_sm::sm2::{PublicKey, SecretKey, Signature};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = Signature::from_der(data) {
        assert_eq!(Signature::from_der(&sig.to_der()).ok(), Some(sig));
    }
    let _ = Signature::from_raw(data);
    let _ = SecretKey::from_pkcs8_der(data);
    let _ = PublicKey::from_spki_der(data);
    let _ = PublicKey::from_sec1(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SecretKey::from_pem(text);
        let _ = PublicKey::from_pem(text);
    }
});
