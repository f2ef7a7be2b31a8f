//! What a node reads from its peer socket: the handshake's messages (before anything is
//! proved), link proofs the signer decodes, and frames after it. None panics; a frame that
//! decodes encodes back to the same bytes; a read never holds more than its cap.
#![no_main]
use std::sync::Arc;

use vpbox_node::link::{Acceptor, Dialer, Identity, Members, Prover};
use vpbox_node::peer::{PeerMsg, read_frame};

struct NoKey;

impl Prover for NoKey {
    fn prove(&self, _: &[u8]) -> Result<[u8; 64], String> {
        Err("no key in the fuzzer".into())
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PeerMsg::decode(data) {
        assert_eq!(m.encode(), data);
    }
    let mut r = data;
    while let Ok(Some(body)) = read_frame(&mut r, 1024) {
        assert!(body.len() <= 1024);
    }
    let _ = vpbox_signer::link::LinkProof::decode(data);
    let me = Identity { chain: [0; 32], id: vpbox_consensus::NodeId(1), prover: Arc::new(NoKey) };
    let members = Members::default();
    let (acceptor, _) = Acceptor::start(me.clone(), [7; 32]);
    let _ = acceptor.finish(&members, data);
    if let Ok(key) = vpbox_sm::sm2::SecretKey::from_bytes(&[3; 32]) {
        let _ = Dialer::answer(&me, vpbox_consensus::NodeId(2), key.public_key().clone(), [9; 32], data);
    }
});
