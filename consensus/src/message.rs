//! Consensus messages, the signed envelope and the proofs carried inside view changes.

use crate::types::{Digest, NodeId, SeqNo, Signature, View};

/// An ordered batch of client transaction digests. The empty batch is the null request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Batch {
    /// Transaction digests in proposal order.
    pub txs: Vec<Digest>,
}

/// The primary's proposal for one sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrePrepare {
    /// The view it was proposed in.
    pub view: View,
    /// Its sequence number.
    pub seq: SeqNo,
    /// The batch.
    pub batch: Batch,
    /// The primary's execution result (state digest after the batch). `None` for entries of a
    /// new view's O set, whose result every replica recomputes and certifies in its commit.
    pub result: Option<Digest>,
}

/// A prepare (over the batch digest) or commit (over the block digest) vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNo,
    /// Batch digest for a prepare, block digest for a commit.
    pub digest: Digest,
}

/// A replica's claim of its state after executing `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// A multiple of `K`.
    pub seq: SeqNo,
    /// The state digest after `seq`.
    pub state: Digest,
}

/// `Q` signed [`Checkpoint`]s for one `(seq, state)`; at genesis, no signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointProof {
    /// The checkpoint's sequence number.
    pub seq: SeqNo,
    /// Its state digest.
    pub state: Digest,
    /// The signed checkpoint messages.
    pub signed: Vec<Envelope>,
}

/// A prepared certificate: the pre-prepare and `Q − 1` matching prepares from backups
/// (Castro & Liskov §4.4, the `P` set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedProof {
    /// The signed pre-prepare.
    pub pre_prepare: Envelope,
    /// The signed prepares.
    pub prepares: Vec<Envelope>,
}

/// A replica's request to move to `view`, with what it can prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    /// The view it wants to enter.
    pub view: View,
    /// Its latest stable checkpoint.
    pub checkpoint: CheckpointProof,
    /// For each sequence number above the checkpoint, the prepared certificate of the highest
    /// view it prepared in.
    pub prepared: Vec<PreparedProof>,
}

/// The new primary's announcement: the view changes it used and the O set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView {
    /// The new view.
    pub view: View,
    /// `N − f` signed view-change messages for `view`.
    pub view_changes: Vec<Envelope>,
    /// The O set: signed pre-prepares for every sequence number between the chosen checkpoint
    /// and the highest prepared one, null batches for the gaps.
    pub pre_prepares: Vec<Envelope>,
}

/// A committed block's proof: `Q` commit signatures over its block digest, verifiable by anyone
/// with the members' keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCertificate {
    /// The view the commits were cast in.
    pub view: View,
    /// The block's sequence number.
    pub seq: SeqNo,
    /// `block_digest(seq, batch digest, result)`.
    pub block: Digest,
    /// Distinct signers and their signatures over the commit vote.
    pub signatures: Vec<(NodeId, Signature)>,
}

/// A committed entry as sent to a replica that is catching up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// The batch.
    pub batch: Batch,
    /// The state digest after it.
    pub result: Digest,
    /// The certificate.
    pub certificate: CommitCertificate,
}

/// A reply to [`Message::Fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries {
    /// The responder's stable checkpoint, when the requester is below it.
    pub checkpoint: Option<CheckpointProof>,
    /// Committed entries above the requester's height, in order.
    pub entries: Vec<CommittedEntry>,
}

/// Everything replicas say to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Normal case, phase 1.
    PrePrepare(PrePrepare),
    /// Normal case, phase 2.
    Prepare(Vote),
    /// Normal case, phase 3.
    Commit(Vote),
    /// Checkpoint every `K`.
    Checkpoint(Checkpoint),
    /// View change.
    ViewChange(ViewChange),
    /// New view.
    NewView(NewView),
    /// An idle primary's sign of life (the null request of Hyperchain's RBFT).
    Heartbeat {
        /// The primary's view.
        view: View,
    },
    /// "Send me what you committed above `after`"; also tells the responder my view.
    Fetch {
        /// The requester's committed height.
        after: SeqNo,
        /// The requester's view.
        view: View,
    },
    /// A reply to a fetch.
    Entries(Entries),
}

/// A message, its sender and the sender's signature over [`crate::wire::signing_payload`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The claimed sender.
    pub from: NodeId,
    /// The message.
    pub message: Message,
    /// The signature.
    pub signature: Signature,
}

/// A vote kind, for equivocation bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// A pre-prepare.
    PrePrepare,
    /// A prepare.
    Prepare,
    /// A commit.
    Commit,
    /// A checkpoint.
    Checkpoint,
}

impl Message {
    /// The sequence number a vote or checkpoint is about; `None` for other messages.
    pub fn seq(&self) -> Option<SeqNo> {
        match self {
            Self::PrePrepare(p) => Some(p.seq),
            Self::Prepare(v) | Self::Commit(v) => Some(v.seq),
            Self::Checkpoint(c) => Some(c.seq),
            _ => None,
        }
    }

    /// `(view, seq, phase, digest)` if the message is a vote whose content an honest replica
    /// never changes once signed. Checkpoints use view 0.
    pub fn vote_key(
        &self,
        digest_of_batch: impl Fn(&Batch) -> Digest,
    ) -> Option<(View, SeqNo, Phase, Digest)> {
        match self {
            Self::PrePrepare(p) => {
                Some((p.view, p.seq, Phase::PrePrepare, pre_prepare_key(p, &digest_of_batch)))
            }
            Self::Prepare(v) => Some((v.view, v.seq, Phase::Prepare, v.digest)),
            Self::Commit(v) => Some((v.view, v.seq, Phase::Commit, v.digest)),
            Self::Checkpoint(c) => Some((View(0), c.seq, Phase::Checkpoint, c.state)),
            _ => None,
        }
    }
}

fn pre_prepare_key(p: &PrePrepare, digest_of_batch: &impl Fn(&Batch) -> Digest) -> Digest {
    let mut d = digest_of_batch(&p.batch);
    // Fold the proposed result in, so that a primary proposing one batch with two results
    // counts as equivocating too.
    if let Some(r) = p.result {
        for (a, b) in d.0.iter_mut().zip(r.0) {
            *a ^= b.rotate_left(1);
        }
    }
    d
}
