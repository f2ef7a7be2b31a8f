//! Protocol quantities, the configuration and the crypto traits the core calls through.

use core::fmt;

use crate::error::Error;

/// A replica's identity in the configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub u32);

/// A view number; the primary of view `v` is the member at index `v mod N`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct View(pub u64);

/// A sequence number: the height of a batch in the ledger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct SeqNo(pub u64);

impl View {
    /// The next view.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl SeqNo {
    /// The next sequence number.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// A 32-byte digest (SM3 in production, computed through [`Verifier::digest`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

/// The bytes' order (lexicographic, as `[u8; 32]` orders), compared a 64-bit word at a time,
/// inline: the derived order called `memcmp` at every comparison, and the engine's ordered
/// sets of pending, proposed and committed transactions compare digests for every
/// transaction. On the signed path (`perf record -p`, one node of four, 2026-12-07), `memcmp`,
/// `Engine::handle` and `BTreeMap::insert` took 9.7 %, 8.4 % and 2.2 % of the node before;
/// this comparison and `Engine::handle` 3.0 % and 2.8 % after. Ordered sets, not hash sets: a
/// hash set of digests others choose (a primary picks a batch's) needs a keyed hash, and
/// std's SipHash with the table's growth cost about 10 % of the node, more than these.
impl Ord for Digest {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        let word =
            |d: &Self, i: usize| u64::from_be_bytes(core::array::from_fn(|j| d.0[8 * i + j]));
        for i in 0..4 {
            let order = word(self, i).cmp(&word(other, i));
            if order.is_ne() {
                return order;
            }
        }
        core::cmp::Ordering::Equal
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..")
    }
}

/// Longest signature the wire carries (a DER SM2 signature is at most 72 bytes).
pub const SIGNATURE_MAX_LEN: usize = 72;

/// A signature as bytes; its scheme is the [`Verifier`]'s business.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct Signature(pub Vec<u8>);

/// A member's public key as bytes (65-byte uncompressed SEC1 for SM2).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PublicKey(pub Vec<u8>);

/// The outcome of a signature check. Not a `bool`, so that it is never confused with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verification {
    /// The signature is valid for this key and payload.
    Valid,
    /// It is not.
    Invalid,
}

/// Hashing and signature verification, supplied by the host (SM3/SM2 through `vpbox-sm` in
/// production). The core never signs: it asks the host with
/// [`Effect::Sign`](crate::Effect::Sign).
pub trait Verifier {
    /// The digest of `bytes`.
    fn digest(&self, bytes: &[u8]) -> Digest;
    /// Checks `sig` over `payload` (already domain-separated by the caller's scheme) for `key`.
    fn verify(&self, key: &PublicKey, payload: &[u8], sig: &Signature) -> Verification;
}

/// The fault bound for `n` replicas: `f = ⌊(n − 1) / 3⌋`.
pub fn max_faulty(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// Hyperchain's quorum `Q = ⌈(n + f + 1) / 2⌉`. Two quorums intersect in at least `f + 1`
/// replicas, one of them honest, for every `n`, not only `n = 3f + 1`.
pub fn quorum(n: usize) -> usize {
    (n + max_faulty(n) + 1).div_ceil(2)
}

/// A member of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its identity.
    pub id: NodeId,
    /// Its consensus public key.
    pub public_key: PublicKey,
}

/// Timeouts and sizes; the defaults are Hyperchain's, but for `pipeline_depth` (vpbox's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// A batch is cut when it holds this many transactions.
    pub batch_size_max: usize,
    /// ...or when this much time has passed since the first one arrived.
    pub batch_timeout_ms: u64,
    /// How many of the primary's blocks may await commit before a partial batch waits for one
    /// of them (a full batch never waits). At least 1; by default unlimited (the window bounds
    /// it). 1 makes a partial batch follow the previous block's commit, so batches grow with a
    /// steady load instead of the rounds. Measured with 4 nodes on 2 cores (`vpbox bench
    /// anchors --pipeline-depth 1`): at 200 anchors/s, p99 commit latency fell from 73–131 ms
    /// to 43–61 ms; but in 3 of 13 runs a burst of 5,000 signed anchors collapsed to 110–460/s
    /// (a stop-and-wait round stalls while backups fetch bodies still queued for verification),
    /// so it is a choice for steady loads, not the default.
    pub pipeline_depth: u64,
    /// Checkpoint interval `K`.
    pub checkpoint_interval: u64,
    /// Window size `L`: only sequence numbers in `(h, h + L]` are accepted. A multiple of `K`.
    pub window: u64,
    /// How long a backup lets a known request wait before suspecting the primary.
    pub request_timeout_ms: u64,
    /// How long a backup waits to hear anything from the primary.
    pub null_request_timeout_ms: u64,
    /// How often an idle primary sends a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Base wait for a new view; doubles after every view change that fails.
    pub new_view_timeout_ms: u64,
    /// How often a view-change message is re-sent while no new view arrives.
    pub view_change_resend_ms: u64,
    /// How often a node that is behind or waiting asks its peers for committed entries.
    pub fetch_timeout_ms: u64,
    /// Most committed entries sent in one reply to a fetch.
    pub fetch_entries_max: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            batch_size_max: 500,
            batch_timeout_ms: 500,
            pipeline_depth: u64::MAX,
            checkpoint_interval: 10,
            window: 40,
            request_timeout_ms: 6_000,
            null_request_timeout_ms: 9_000,
            heartbeat_interval_ms: 3_000,
            new_view_timeout_ms: 8_000,
            view_change_resend_ms: 10_000,
            fetch_timeout_ms: 5_000,
            fetch_entries_max: 20,
        }
    }
}

/// The replica set, its keys and the genesis state, for one *epoch*: the sequence numbers
/// above [`Config::after`] up to the next configuration's `after`.
///
/// Membership changes (pbft.md, "Membership"): a configuration transaction committed at `s`
/// yields the next epoch's configuration, which applies to every sequence number above the
/// first checkpoint `c ≥ s`. The epoch number is part of every signed payload, so a vote of
/// one epoch is never valid in another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    members: Vec<Member>,
    genesis_state: Digest,
    epoch: u64,
    after: SeqNo,
}

impl Config {
    /// A configuration of `members` (sorted by id, ids distinct) starting from `genesis_state`.
    pub fn new(mut members: Vec<Member>, genesis_state: Digest) -> Result<Self, Error> {
        if members.is_empty() {
            return Err(Error::Config("no members"));
        }
        members.sort_by_key(|m| m.id);
        if members.windows(2).any(|w| w[0].id == w[1].id) {
            return Err(Error::Config("duplicate member id"));
        }
        Ok(Self { members, genesis_state, epoch: 0, after: SeqNo(0) })
    }

    /// The next epoch's configuration: `members`, applying to sequence numbers above `after`.
    pub fn successor(&self, members: Vec<Member>, after: SeqNo) -> Result<Self, Error> {
        let mut next = Self::new(members, self.genesis_state)?;
        next.epoch = self.epoch.saturating_add(1);
        next.after = after;
        Ok(next)
    }

    /// The epoch: 0 at genesis, one more at every membership change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration applies to sequence numbers above this one (a checkpoint).
    pub fn after(&self) -> SeqNo {
        self.after
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// `N`.
    pub fn n(&self) -> usize {
        self.members.len()
    }

    /// `f`.
    pub fn f(&self) -> usize {
        max_faulty(self.n())
    }

    /// `Q`.
    pub fn quorum(&self) -> usize {
        quorum(self.n())
    }

    /// The state digest before the first batch.
    pub fn genesis_state(&self) -> Digest {
        self.genesis_state
    }

    /// The primary of `view`.
    pub fn primary(&self, view: View) -> NodeId {
        let n = self.members.len() as u64;
        // `members` is never empty (checked in `new`), so the index is in range.
        let idx = (view.0 % n.max(1)) as usize;
        self.members.get(idx).map_or(NodeId(0), |m| m.id)
    }

    /// The member's key, if `id` is a member.
    pub fn key(&self, id: NodeId) -> Option<&PublicKey> {
        self.members.iter().find(|m| m.id == id).map(|m| &m.public_key)
    }

    /// Whether `id` is a member.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.key(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperchain_quorum_for_common_sizes() {
        // pbft.md, Hyperchain's rule: Q = ⌈(N+f+1)/2⌉.
        assert_eq!((max_faulty(4), quorum(4)), (1, 3));
        assert_eq!((max_faulty(5), quorum(5)), (1, 4));
        assert_eq!((max_faulty(7), quorum(7)), (2, 5));
        assert_eq!((max_faulty(8), quorum(8)), (2, 6));
        assert_eq!((max_faulty(16), quorum(16)), (5, 11));
    }

    #[test]
    fn two_quorums_share_an_honest_replica_and_honest_nodes_form_a_quorum() {
        for n in 1..=64 {
            let (f, q) = (max_faulty(n), quorum(n));
            assert!(2 * q > n + f, "n={n}");
            assert!(n - f >= q, "liveness needs N - f >= Q at n={n}");
        }
    }

    #[test]
    fn primary_rotates_through_sorted_members() {
        let m = |i| Member { id: NodeId(i), public_key: PublicKey(vec![i as u8]) };
        let c = Config::new(vec![m(7), m(3), m(5)], Digest::default()).unwrap();
        assert_eq!(c.primary(View(0)), NodeId(3));
        assert_eq!(c.primary(View(4)), NodeId(5));
        assert!(Config::new(vec![m(1), m(1)], Digest::default()).is_err());
    }

    /// Digests order as their bytes do: random pairs, and pairs alike up to each byte (the
    /// word where they differ, and the byte within it, both matter).
    #[test]
    fn digests_order_as_their_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for _ in 0..2000 {
            let a: [u8; 32] = core::array::from_fn(|_| byte());
            let b: [u8; 32] = core::array::from_fn(|_| byte());
            assert_eq!(Digest(a).cmp(&Digest(b)), a.cmp(&b));
            for at in 0..32 {
                let mut c = a;
                c[at] = byte();
                c[at + 1..].fill(byte());
                assert_eq!(Digest(a).cmp(&Digest(c)), a.cmp(&c), "alike up to byte {at}");
                assert_eq!(Digest(c).partial_cmp(&Digest(a)), Some(c.cmp(&a)));
            }
            assert_eq!(Digest(a).cmp(&Digest(a)), core::cmp::Ordering::Equal);
        }
    }
}
