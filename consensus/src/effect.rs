//! What goes into the engine and what comes out of it.

use crate::message::{
    Batch, CheckpointProof, CommitCertificate, CommittedEntry, Envelope, Message,
};
use crate::types::{Config, Digest, Member, NodeId, SeqNo, Signature, View};

/// A timer the engine asks the host to run. At most one of each kind runs at a time; setting
/// one again restarts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Timer {
    /// Primary: cut a partial batch.
    Batch,
    /// Backup: a known request waited too long for the primary.
    Request,
    /// Backup: nothing heard from the primary.
    NullRequest,
    /// Primary: send a heartbeat when idle.
    Heartbeat,
    /// A view change did not complete in time.
    NewView,
    /// Re-send the view-change message.
    ViewChangeResend,
    /// Ask peers for committed entries or a checkpoint.
    Fetch,
}

/// What the engine persists. The host appends records in order and must make each durable
/// before carrying out any later effect.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalRecord {
    /// The node entered `view` (normal operation) or started changing to it.
    View {
        /// The view.
        view: View,
        /// Whether the node is still changing to it.
        changing: bool,
    },
    /// The node decided to sign `message`; recorded before the signature is requested so that
    /// it never signs a different vote for the same slot, even after a crash.
    Intent(Message),
    /// A signed message the node accepted into its log (its own included).
    Accepted(Envelope),
    /// A checkpoint became stable.
    Stable(CheckpointProof),
}

/// An input to [`crate::Engine::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A decoded message from a peer (its signature is checked by the engine).
    Message(Envelope),
    /// A client transaction to order, by digest.
    Transaction(Digest),
    /// A timer fired.
    Timeout(Timer),
    /// The signer returned the signature asked for by [`Effect::Sign`].
    Signed {
        /// The request's token.
        token: u64,
        /// The signature over the payload.
        signature: Signature,
    },
    /// The application executed the batch of [`Effect::Execute`].
    Executed {
        /// The sequence number.
        seq: SeqNo,
        /// The token of the request.
        token: u64,
        /// The state digest after the batch.
        result: Digest,
        /// The members that a configuration transaction in the batch named, if one did (the
        /// last such transaction wins). The application decides what a valid configuration
        /// transaction is (e.g. signed by admins of more than two thirds of the banks); the
        /// engine applies the change at the first checkpoint at or after `seq` once the batch
        /// commits.
        members: Option<Vec<Member>>,
    },
    /// The application holds the state of a checkpoint after a [`Effect::FetchState`].
    StateFetched {
        /// The checkpoint.
        seq: SeqNo,
        /// Its state digest, as checked by the host against what it received.
        state: Digest,
        /// Transactions committed in the transferred blocks that the pool may still hold
        /// (the host bounds the list; older ones age out of every pool anyway).
        txs: Vec<Digest>,
        /// The configurations reported by [`Effect::Reconfigured`] that the transferred state
        /// holds, oldest first.
        configs: Vec<Config>,
    },
    /// Restart: the WAL, and the application's durable height and state.
    Restore {
        /// The WAL's records in order (a torn last record already dropped).
        records: Vec<WalRecord>,
        /// The highest committed sequence number the application holds.
        committed: SeqNo,
        /// The state digest at `committed`.
        state: Digest,
        /// The ledger's most recent committed blocks with their certificates (at least those
        /// above the last stable checkpoint, up to one window), so that a restarted replica can
        /// still vote for and serve entries it committed before the crash.
        recent: Vec<CommittedEntry>,
        /// Every configuration [`Effect::Reconfigured`] reported for the committed ledger,
        /// oldest first (empty while the genesis configuration holds). One whose `after` lies
        /// above `committed` is still pending.
        configs: Vec<Config>,
    },
}

/// Something the host must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Send to one peer.
    Send {
        /// The recipient.
        to: NodeId,
        /// The message.
        envelope: Envelope,
    },
    /// Send to every other member.
    Broadcast(Envelope),
    /// Append to the WAL and make it durable before the next effect.
    Persist(WalRecord),
    /// Sign `payload` in the consensus domain; answer with [`Input::Signed`].
    Sign {
        /// Echoed back in the answer.
        token: u64,
        /// The bytes to sign.
        payload: Vec<u8>,
    },
    /// Start or restart a timer.
    SetTimer {
        /// Which.
        timer: Timer,
        /// Fire after this long.
        after_ms: u64,
    },
    /// Stop a timer.
    CancelTimer(Timer),
    /// Execute `batch` on top of the state after `seq − 1`; answer with [`Input::Executed`].
    /// Execution is speculative until [`Effect::Commit`].
    Execute {
        /// Its sequence number.
        seq: SeqNo,
        /// Echoed back in the answer.
        token: u64,
        /// The batch.
        batch: Batch,
    },
    /// Discard speculative execution above `to` (never below a committed block).
    Rollback {
        /// The height to return to.
        to: SeqNo,
    },
    /// The batch at `seq` is final: store it with its certificate.
    Commit {
        /// Its sequence number.
        seq: SeqNo,
        /// The batch.
        batch: Batch,
        /// The state digest after it.
        result: Digest,
        /// `Q` commit signatures over its block digest.
        certificate: CommitCertificate,
    },
    /// Obtain the application state of a stable checkpoint from peers, check its digest, and
    /// answer with [`Input::StateFetched`].
    FetchState {
        /// The checkpoint.
        seq: SeqNo,
        /// Its state digest.
        state: Digest,
    },
    /// A committed configuration transaction made `config` the next epoch's configuration,
    /// applying above `config.after()`. The host stores it with the block (it is part of the
    /// committed state) and hands it back in [`Input::Restore`] and [`Input::StateFetched`].
    /// Reported again, with the same epoch, if a later transaction before the same checkpoint
    /// replaces it: the last report of an epoch stands.
    Reconfigured {
        /// The configuration.
        config: Config,
    },
    /// The node entered a new view.
    ViewChanged {
        /// The view.
        view: View,
        /// Its primary.
        primary: NodeId,
    },
    /// A message from `from` passed its checks: a signed one's signature verified under the
    /// sender's key, or an unsigned fetch from a current member (the host vouches for its
    /// sender: its link's authenticated identity). What a host shows of its peers (alive,
    /// their height) comes from these only, never from a message before it is checked.
    Heard {
        /// Who sent it.
        from: NodeId,
        /// The height it shows the sender has reached (0 if it shows none): a commit's or
        /// checkpoint's sequence number, or what a fetch says the sender has committed.
        height: SeqNo,
    },
}
