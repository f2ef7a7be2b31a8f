//! Transactions from the network: decode never panics, what decodes re-encodes exactly, and
//! its hash is SM3 of the body's bytes as they came (all but the signature's last 64).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = vpbox_ledger::tx::Tx::decode(data) {
        assert_eq!(tx.encode(), data, "decoding is canonical");
        let body = &data[..data.len() - 64];
        assert_eq!(tx.hash(), vpbox_sm::sm3::hash(body), "the hash is the body's bytes'");
    }
});
