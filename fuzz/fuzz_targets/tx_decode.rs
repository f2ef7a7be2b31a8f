//! Transactions from the network: decode never panics, what decodes re-encodes exactly, and
//! the hash taken at decoding is the body's.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = vpbox_ledger::tx::Tx::decode(data) {
        assert_eq!(tx.encode(), data, "decoding is canonical");
        assert_eq!(tx.hash(), tx.body().hash(), "the hash is the body's");
    }
});
