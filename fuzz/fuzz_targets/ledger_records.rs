//! The ledger's own records, anchors' and transactions' (local state, but a ledger may be
//! copied from another box): decoding never panics or over-allocates, and a record in the form
//! written today has one encoding, the one decoding gives back.
#![no_main]
use vpbox_ledger::fuzzing::{anchor_record, tx_record};
use vpbox_ledger::inline_anchor_record;
use vpbox_sm::sm3::Digest;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(again) = anchor_record(data) {
        // A 72-byte inline record below 2^49 was written before the LEB128 height: it reads
        // as its bytes say (value, transaction, u64be height), and the shorter form is the
        // canonical one.
        if data.len() == 72 && again.len() < 72 {
            let value: [u8; 32] = data[..32].try_into().unwrap();
            let tx = Digest(data[32..64].try_into().unwrap());
            let height = u64::from_be_bytes(data[64..].try_into().unwrap());
            assert_eq!(again, inline_anchor_record(&value, &tx, height), "read as written");
            assert_eq!(anchor_record(&again).unwrap(), again, "the shorter form is canonical");
        } else {
            assert_eq!(again, data, "decoding is canonical");
        }
    }
    if let Ok(Some(again)) = tx_record(data) {
        assert_eq!(again, data, "decoding is canonical");
    }
});
