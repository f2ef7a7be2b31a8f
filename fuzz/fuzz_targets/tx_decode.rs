//! Transactions from the network: decode never panics, and what decodes re-encodes exactly.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = vpbox_ledger::tx::Tx::decode(data) {
        assert_eq!(tx.encode(), data, "decoding is canonical");
    }
});
