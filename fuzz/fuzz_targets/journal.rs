//! A journal's bytes as read back from disk (the consensus WAL, the node's intake, the signer's
//! double-sign guard): whatever a crash or a bad disk left, parsing never panics or
//! over-allocates; what it keeps re-frames to the bytes it read, and a torn tail is only ever
//! at the end.
#![no_main]
use vpbox_journal::{MAGIC, frame, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Most inputs start with the magic, so that the records are what gets fuzzed.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(data);
    for log in [data, &bytes[..]] {
        if log.len() < MAGIC.len() {
            continue;
        }
        if let Ok(parsed) = parse(log) {
            let mut again = MAGIC.to_vec();
            for r in &parsed.records {
                again.extend_from_slice(&frame(r).expect("a record read is a record"));
            }
            assert_eq!(again.len() as u64, parsed.len, "the records are the log's kept bytes");
            assert_eq!(&again[..], &log[..again.len()], "re-framed as read");
            if let Some(torn) = &parsed.torn {
                assert_eq!(torn.offset, parsed.len);
                assert_eq!(torn.offset + torn.bytes, log.len() as u64, "torn only at the end");
            }
        }
    }
});
