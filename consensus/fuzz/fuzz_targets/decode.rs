//! Untrusted bytes into the wire and WAL decoders: never a panic, never unbounded allocation,
//! and whatever decodes re-encodes to the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpbox_consensus::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = wire::decode(data) {
        assert_eq!(wire::encode(&env), data);
    }
    if let Ok(rec) = wire::decode_record(data) {
        assert_eq!(wire::encode_record(&rec), data);
    }
});
