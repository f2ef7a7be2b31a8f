//! Blocks from peers: decode never panics, and what decodes re-encodes exactly.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(block) = vpbox_ledger::block::Block::decode(data) {
        assert_eq!(block.encode(), data, "decoding is canonical");
    }
});
