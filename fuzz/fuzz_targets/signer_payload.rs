//! What the signer decodes before it signs in the consensus domain (a compromised node may ask
//! for anything): classifying a payload never panics, and a payload it accepts names a kind.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = vpbox_signer::guard::classify(data) {
        assert!(!c.what.is_empty());
    }
});
