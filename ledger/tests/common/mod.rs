//! Helpers shared by the ledger's integration tests: keys, the test clock, signed transactions.

#![allow(dead_code)] // each test file uses its own subset

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vpbox_ledger::Executed;
use vpbox_ledger::contract::PutOutcome;
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Signer, SoftwareSigner};

pub(crate) fn der(pem: &str) -> Vec<u8> {
    pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
}

pub(crate) fn key() -> SoftwareSigner {
    SoftwareSigner::new(SecretKey::generate().unwrap())
}

/// "Now" for the tests: the certificates' clock and the transactions' timestamps.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

pub(crate) fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A transaction of `payload` signed by `s`, a second after "now".
pub(crate) fn tx(s: &SoftwareSigner, nonce: u64, payload: Payload) -> Tx {
    TxBody {
        submitter: s.public_key().fingerprint(),
        nonce,
        timestamp_ms: ms(now()) + 1_000,
        payload,
    }
    .sign(s)
    .unwrap()
}

pub(crate) fn put(s: &SoftwareSigner, nonce: u64, k: u8) -> Tx {
    tx(s, nonce, Payload::AnchorPut { key: [k; 32], value: [k; 32] })
}

pub(crate) fn outcomes(e: &Executed) -> Vec<Vec<PutOutcome>> {
    e.receipts.iter().map(|(_, r)| r.outcomes.clone()).collect()
}
