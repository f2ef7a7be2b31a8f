//! Slips handed to `anchor_verify`: parsing never panics; a parsed slip's value is the SM3 of
//! its bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((_, anchor)) = vpbox_ledger::slip::parse(data) {
        assert_eq!(anchor.value, vpbox_sm::sm3::hash(data));
    }
});
