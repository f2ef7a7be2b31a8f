//! Proof bundles from anyone (a dispute's other side): decoding never panics and what decodes
//! re-encodes exactly; verifying never panics, whatever the bundle holds.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = vpbox_proof::bundle::Bundle::decode(data) {
        assert_eq!(bundle.encode(), data, "decoding is canonical");
        // Trust the bundle's own genesis, so that verification goes past the trust anchor.
        let anchor = vpbox_proof::verify::TrustAnchor::GenesisHash(vpbox_sm::sm3::hash(&bundle.genesis));
        let _ = vpbox_proof::verify::verify(&bundle, &anchor, None);
    }
});
