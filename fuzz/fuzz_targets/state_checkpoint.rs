//! The state map's checkpoint file (local, but it may come with a ledger copied from another
//! box): decode never panics or over-allocates, and what decodes re-encodes exactly. The input
//! gets its SM3 appended, so that the fuzzer reaches past the checksum into the buckets.
#![no_main]
use vpbox_ledger::state::Checkpoint;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut file = data.to_vec();
    file.extend_from_slice(vpbox_sm::sm3::hash(data).as_bytes());
    if let Ok(c) = Checkpoint::decode(&file) {
        assert_eq!(c.encode(), file, "decoding is canonical");
    }
    let _ = Checkpoint::decode(data);
});
