//! Consensus signing payloads for the guard's tests (this crate's and the appliance's, which
//! run the real signer process): one message of every kind and a conflicting twin of each.

use vpbox_consensus::wire::signing_payload;
use vpbox_consensus::{
    Batch, Checkpoint, CheckpointProof, Digest, Entries, Envelope, Message, NewView, NodeId,
    PrePrepare, SeqNo, Signature, View, ViewChange, Vote,
};

/// The signing payload of `message` from `from` in `epoch`.
pub fn payload(epoch: u64, from: u32, message: &Message) -> Vec<u8> {
    signing_payload(epoch, NodeId(from), message)
}

/// For each kind the guard keys on: its name, a message, and a different message at the same
/// position. `at` shifts the positions, so one guard can take several rounds.
pub fn guarded_pairs(at: u64) -> Vec<(&'static str, Message, Message)> {
    let (view, seq) = (View(at + 1), SeqNo(10 * at + 7));
    let d = |b: u8| Digest([b; 32]);
    let vote = |b| Vote { view, seq, digest: d(b) };
    let pp = |b, result| PrePrepare { view, seq, batch: Batch { txs: vec![d(b)] }, result };
    let cp = |b| CheckpointProof { seq: SeqNo(10 * at), state: d(b), signed: vec![] };
    vec![
        ("pre-prepare", Message::PrePrepare(pp(1, Some(d(2)))), Message::PrePrepare(pp(1, None))),
        ("prepare", Message::Prepare(vote(1)), Message::Prepare(vote(2))),
        ("commit", Message::Commit(vote(1)), Message::Commit(vote(2))),
        (
            "checkpoint",
            Message::Checkpoint(Checkpoint { seq: SeqNo(10 * at + 10), state: d(1) }),
            Message::Checkpoint(Checkpoint { seq: SeqNo(10 * at + 10), state: d(2) }),
        ),
        (
            "view-change",
            Message::ViewChange(ViewChange { view, checkpoint: cp(1), prepared: vec![] }),
            Message::ViewChange(ViewChange { view, checkpoint: cp(2), prepared: vec![] }),
        ),
        (
            "new-view",
            Message::NewView(NewView { view, view_changes: vec![], pre_prepares: vec![] }),
            Message::NewView(NewView {
                view,
                view_changes: vec![],
                // An O set entry, signed by nobody: the signer does not verify what it carries.
                pre_prepares: vec![Envelope {
                    from: NodeId(0),
                    message: Message::PrePrepare(pp(3, None)),
                    signature: Signature(vec![0; 64]),
                }],
            }),
        ),
    ]
}

/// Messages that cannot conflict, each with a different one of its kind: both are signed.
pub fn unguarded_pairs() -> Vec<(&'static str, Message, Message)> {
    vec![
        ("heartbeat", Message::Heartbeat { view: View(1) }, Message::Heartbeat { view: View(2) }),
        (
            "fetch",
            Message::Fetch { after: SeqNo(1), view: View(1) },
            Message::Fetch { after: SeqNo(2), view: View(1) },
        ),
        (
            "entries",
            Message::Entries(Entries { checkpoint: None, entries: vec![] }),
            Message::Entries(Entries {
                checkpoint: Some(CheckpointProof {
                    seq: SeqNo(0),
                    state: Digest([0; 32]),
                    signed: vec![],
                }),
                entries: vec![],
            }),
        ),
    ]
}
