//! Governance's encodings from outside: a configuration transaction's payload from an admin, a
//! proposal file passed between banks (`vpbox gov propose`/`approve`), the state a ledger
//! holds. Decoding never panics or over-allocates, and what decodes encodes to what decodes the
//! same again.
#![no_main]
use vpbox_ledger::governance::{ConfigTx, Proposal, State};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Proposal::decode(data) {
        assert_eq!(Proposal::decode(&p.encode()).ok().as_ref(), Some(&p), "a proposal round-trips");
    }
    if let Ok(c) = ConfigTx::decode(data) {
        assert_eq!(ConfigTx::decode(&c.encode()).ok().as_ref(), Some(&c), "a configuration round-trips");
    }
    if let Ok(s) = State::decode(data) {
        assert_eq!(State::decode(&s.encode()).ok().as_ref(), Some(&s), "a state round-trips");
    }
});
