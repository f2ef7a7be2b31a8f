//! The state map: an authenticated map from every anchored key to its first value, whose root
//! every block header commits to (`state_root`), so that a certified header proves a key's
//! value — or that the key was never anchored — with a path of at most 256 hashes.
//!
//! It is a sparse Merkle tree over the 256-bit keys (bit 0 is the first byte's high bit), with
//! the usual shortcut: a subtree holding one anchor is that anchor's leaf, placed as high as it
//! is alone, and an empty subtree is 32 zero bytes.
//!
//! ```text
//! leaf  = SM3(0x00 ‖ key:[32] ‖ value:[32] ‖ tx:[32] ‖ height:u64be)
//! inner = SM3(0x01 ‖ left:[32] ‖ right:[32])
//! node(S) = ZERO            when S is empty
//!         = leaf(a)         when S = {a}
//!         = inner(node(S0), node(S1))   otherwise, S0/S1 the keys whose next bit is 0/1
//! ```
//!
//! A proof ([`Path`]) is the siblings from the root's children down to where the key's path
//! ends — at an empty subtree, at the key's own leaf (present: its first value, transaction
//! and height), or at another key's leaf (absent) — and the verifier hashes it back up.
//!
//! **How a node keeps it** (the cost the issue asked to bound): the tree's top [`TOP_DEPTH`]
//! levels are held in memory, densely (`2^(TOP_DEPTH + 1)` nodes of 33 bytes, 277 MB, zeroed
//! pages taken only when written: `Level`); below them, a *bucket* (the keys sharing the first
//! `TOP_DEPTH` bits) is hashed from its anchors, read in key order from the anchors' column
//! family, when a block adds to it. Nothing is written to disk for it while the node runs: at
//! open the top is rebuilt from one scan of the anchors, or read from the [`Checkpoint`] of
//! its buckets that a clean stop wrote (its root checked against the tip's `state_root`). A
//! large block's work is split by the keys' first bits into parts, one thread each
//! ([`Changes::below`], [`Changes::join`]). A block changes only the buckets it adds to and their
//! ancestors, and a subtree of one anchor costs no hash at all, so the cost per anchor is
//! about its leaf, its bucket's few neighbours and the levels where its path meets others
//! (measured in `cargo bench -p vpbox-ledger --bench ledger`). At ten million anchors a
//! bucket holds 2.4 of them, so a block's update reads two or three neighbours per new anchor
//! (ten at the 20 levels kept until 2026-12-06); past that the buckets grow with the ledger
//! (the depth is a constant of this build, not of the format: the root does not depend on it;
//! a checkpoint names the depth it was written at and one of another is refused).

use vpbox_sm::sm3::Digest;

/// The levels kept in memory (0 is the root); a bucket is a subtree at this depth.
pub const TOP_DEPTH: usize = 22;
/// The deepest a leaf can be: two keys differ in at most their last bit.
pub const MAX_DEPTH: usize = 256;
/// An empty subtree's hash.
pub const ZERO: Digest = Digest([0; 32]);

/// One anchor as the tree holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// The anchored key.
    pub key: [u8; 32],
    /// Its first value.
    pub value: [u8; 32],
    /// The transaction that anchored it.
    pub tx: Digest,
    /// The height of the block that anchored it.
    pub height: u64,
}

impl Leaf {
    /// `SM3(0x00 ‖ key ‖ value ‖ tx ‖ height)`.
    pub fn hash(&self) -> Digest {
        vpbox_sm::sm3::hash(self.input())
    }

    /// The hashes of `leaves`, in order, computed side by side in SIMD lanes.
    pub fn hash_each(leaves: &[Self]) -> Vec<Digest> {
        vpbox_sm::sm3::hash_each(&leaves.iter().map(Self::input).collect::<Vec<_>>())
    }

    /// What [`Self::hash`] hashes: `0x00 ‖ key ‖ value ‖ tx ‖ height:u64be`.
    fn input(&self) -> [u8; 105] {
        let mut buf = [0u8; 105];
        buf[1..33].copy_from_slice(&self.key);
        buf[33..65].copy_from_slice(&self.value);
        buf[65..97].copy_from_slice(self.tx.as_bytes());
        buf[97..].copy_from_slice(&self.height.to_be_bytes());
        buf
    }

    /// The encoding a proof carries: `key value tx height:u64be` (104 bytes).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        out.extend_from_slice(self.tx.as_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
    }
}

/// `SM3(0x01 ‖ left ‖ right)`.
pub fn inner_hash(left: &Digest, right: &Digest) -> Digest {
    vpbox_sm::sm3::hash(inner_input(left, right))
}

/// What [`inner_hash`] hashes: `0x01 ‖ left ‖ right`.
fn inner_input(left: &Digest, right: &Digest) -> [u8; 65] {
    let mut buf = [1u8; 65];
    buf[1..33].copy_from_slice(left.as_bytes());
    buf[33..].copy_from_slice(right.as_bytes());
    buf
}

/// A subtree, as far as its parent needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Node {
    /// No anchor under it.
    #[default]
    Empty,
    /// Exactly one anchor under it: that anchor's leaf hash.
    Leaf(Digest),
    /// Two or more.
    Inner(Digest),
}

impl Node {
    /// The hash its parent hashes.
    pub fn hash(&self) -> Digest {
        match self {
            Self::Empty => ZERO,
            Self::Leaf(h) | Self::Inner(h) => *h,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Self::Empty => 0,
            Self::Leaf(_) => 1,
            Self::Inner(_) => 2,
        }
    }
}

/// The node over two sibling subtrees: a lone leaf moves up, two empties stay empty.
pub fn combine(left: Node, right: Node) -> Node {
    unhashed(left, right).unwrap_or_else(|| Node::Inner(inner_hash(&left.hash(), &right.hash())))
}

/// [`combine`] when it needs no hash; `None` when the parent is an inner node (two non-empty
/// children, or an inner one beside an empty one).
fn unhashed(left: Node, right: Node) -> Option<Node> {
    match (left, right) {
        (Node::Empty, Node::Empty) => Some(Node::Empty),
        (Node::Leaf(h), Node::Empty) | (Node::Empty, Node::Leaf(h)) => Some(Node::Leaf(h)),
        _ => None,
    }
}

/// Bit `i` of `key` (bit 0 is the high bit of byte 0).
pub fn bit(key: &[u8; 32], i: usize) -> bool {
    key[i / 8] & (0x80 >> (i % 8)) != 0
}

/// The first `depth` bits of `key` as a number (`depth` ≤ 32): a node's index in its level.
pub fn prefix(key: &[u8; 32], depth: usize) -> u32 {
    if depth == 0 {
        return 0;
    }
    u32::from_be_bytes([key[0], key[1], key[2], key[3]]) >> (32 - depth)
}

/// The smallest key under the node `index` of level `depth` (`depth` ≤ 32).
pub fn first_key(depth: usize, index: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    if depth > 0 {
        k[..4].copy_from_slice(&(index << (32 - depth)).to_be_bytes());
    }
    k
}

/// The node over `leaves` (sorted by key, distinct, all sharing their first `depth` bits).
///
/// Keys that are not distinct (a corrupt input: the ledger checks before) never panic: past
/// the last bit the first of them stands for all.
pub fn subtree(leaves: &[([u8; 32], Digest)], depth: usize) -> Node {
    match leaves {
        [] => Node::Empty,
        [(_, h)] => Node::Leaf(*h),
        [(_, h), ..] if depth >= MAX_DEPTH => Node::Leaf(*h),
        _ => {
            let split = leaves.partition_point(|(k, _)| !bit(k, depth));
            combine(subtree(&leaves[..split], depth + 1), subtree(&leaves[split..], depth + 1))
        }
    }
}

/// The largest list [`subtrees`] plans; a larger one is hashed alone by [`subtree`]. A plan
/// holds up to `2 · len · (256 − depth)` nodes (keys sharing all but their last bits make a
/// chain of joins each), so that keys chosen to be close cannot make it large.
const PLANNED_MAX: usize = 256;
/// The nodes after which [`subtrees`] evaluates its plan and starts another: with
/// [`PLANNED_MAX`], a plan stays under a quarter of a million nodes (about 15 MB).
const PLAN_NODES: usize = 1 << 16;

/// [`subtree`] of each of `lists` (each as `subtree` takes it, at `depth`), their inner nodes
/// hashed together height by height, in SIMD lanes: a block's buckets (two or three anchors
/// each at ten million) are many small trees, one hash at a time a chain of waits. Memory is
/// bounded ([`PLANNED_MAX`], [`PLAN_NODES`]) whatever the keys.
pub fn subtrees(lists: &[&[([u8; 32], Digest)]], depth: usize) -> Vec<Node> {
    let mut out = Vec::with_capacity(lists.len());
    let mut plan = Plan::default();
    for list in lists {
        if list.len() > PLANNED_MAX {
            plan.evaluate_into(&mut out);
            out.push(subtree(list, depth));
            continue;
        }
        let (root, _) = plan.node(list, depth);
        plan.roots.push(root);
        if plan.nodes.len() >= PLAN_NODES {
            plan.evaluate_into(&mut out);
        }
    }
    plan.evaluate_into(&mut out);
    out
}

/// What [`subtrees`] computes: every node, the joins of two of them by height above the leaves
/// (a join's operands are of lower heights), and the lists' roots.
#[derive(Default)]
struct Plan {
    nodes: Vec<Node>,
    /// `(out, left, right)`: indices into `nodes`; `joins[h]` are those of height `h + 1`.
    joins: Vec<Vec<(usize, usize, usize)>>,
    roots: Vec<usize>,
}

impl Plan {
    /// The node of `leaves` at `depth`, as [`subtree`] recurses: its index and height.
    fn node(&mut self, leaves: &[([u8; 32], Digest)], depth: usize) -> (usize, usize) {
        let known = match leaves {
            [] => Some(Node::Empty),
            [(_, h)] => Some(Node::Leaf(*h)),
            [(_, h), ..] if depth >= MAX_DEPTH => Some(Node::Leaf(*h)),
            _ => None,
        };
        if let Some(node) = known {
            self.nodes.push(node);
            return (self.nodes.len() - 1, 0);
        }
        let split = leaves.partition_point(|(k, _)| !bit(k, depth));
        let (left, lh) = self.node(&leaves[..split], depth + 1);
        let (right, rh) = self.node(&leaves[split..], depth + 1);
        let height = lh.max(rh) + 1;
        self.nodes.push(Node::Empty);
        let out = self.nodes.len() - 1;
        if self.joins.len() < height {
            self.joins.resize_with(height, Vec::new);
        }
        self.joins[height - 1].push((out, left, right));
        (out, height)
    }

    /// Makes every join, height by height, appends the roots' nodes to `out` and empties the
    /// plan.
    fn evaluate_into(&mut self, out: &mut Vec<Node>) {
        let Self { nodes, joins, roots } = std::mem::take(self);
        let mut nodes = nodes;
        let (mut inputs, mut outs) = (Vec::new(), Vec::new());
        for height in &joins {
            inputs.clear();
            outs.clear();
            for &(at, left, right) in height {
                let (left, right) = (nodes[left], nodes[right]);
                match unhashed(left, right) {
                    Some(node) => nodes[at] = node,
                    None => {
                        outs.push(at);
                        inputs.push(inner_input(&left.hash(), &right.hash()));
                    }
                }
            }
            for (at, h) in outs.iter().zip(vpbox_sm::sm3::hash_each(&inputs)) {
                nodes[*at] = Node::Inner(h);
            }
        }
        out.extend(roots.into_iter().map(|i| nodes[i]));
    }
}

/// The path of `key` through `leaves` (sorted, distinct, sharing their first `depth` bits):
/// the siblings below `depth` and the terminal index into `leaves`, if the path ends at a leaf.
fn path_below(
    leaves: &[([u8; 32], Digest)],
    key: &[u8; 32],
    mut depth: usize,
    siblings: &mut Vec<Digest>,
) -> Option<usize> {
    let mut lo = 0;
    let mut hi = leaves.len();
    loop {
        match hi - lo {
            0 => return None,
            1 => return Some(lo),
            // Only keys that are not distinct reach past the last bit (see `subtree`).
            _ if depth >= MAX_DEPTH => return Some(lo),
            _ => {}
        }
        let split = lo + leaves[lo..hi].partition_point(|(k, _)| !bit(k, depth));
        let (mine, other) =
            if bit(key, depth) { (split..hi, lo..split) } else { (lo..split, split..hi) };
        siblings.push(subtree(&leaves[other], depth + 1).hash());
        lo = mine.start;
        hi = mine.end;
        depth += 1;
    }
}

/// The tree's top levels, 0 to [`TOP_DEPTH`], as committed.
pub struct Top {
    /// `levels[l]`: level `l`'s nodes, 33 bytes each: its hash then its kind (0 empty,
    /// 1 leaf, 2 inner), so that one look-up touches one cache line or two.
    levels: Vec<Level>,
}

/// One level's nodes ([`SLOT`] bytes each) in an anonymous private mapping of their own: its
/// pages are the system's zero page until written, and go back to the system when it is
/// dropped, whatever the allocator does. (A `calloc`ed `Vec` is not enough: once the allocator
/// has freed a block of a level's size it serves the next from its heap and clears it, writing
/// every page — 277 MB at 22 levels, at every open of every ledger of a process, as the node
/// simulator's are.)
struct Level(memmap2::MmapMut);

/// A node's bytes in a [`Level`].
const SLOT: usize = 33;

/// The size of a transparent huge page on x86-64 and a 4 KiB-page arm64.
const HUGE_PAGE: usize = 2 << 20;

impl Level {
    fn zeroed(nodes: usize) -> Self {
        match memmap2::MmapMut::map_anon(nodes * SLOT) {
            Ok(map) => Self(map),
            // As a failed allocation does.
            Err(e) => panic!("the state map's level of {nodes} nodes: {e}"),
        }
    }

    fn slot(&self, index: u32) -> &[u8] {
        let at = index as usize * SLOT;
        &self.0[at..at + SLOT]
    }

    fn slot_mut(&mut self, index: u32) -> &mut [u8] {
        let at = index as usize * SLOT;
        &mut self.0[at..at + SLOT]
    }
}

impl std::fmt::Debug for Top {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Top").field("root", &self.root()).finish()
    }
}

impl Default for Top {
    fn default() -> Self {
        Self::new()
    }
}

impl Top {
    /// An empty tree (the zeroed pages are taken from the system only when written).
    pub fn new() -> Self {
        Self { levels: (0..=TOP_DEPTH).map(|l| Level::zeroed(1 << l)).collect() }
    }

    /// Takes every page of the levels from the system now (`MADV_POPULATE_WRITE`; the nodes
    /// already written are kept), so that the blocks that follow take none: what a node does
    /// at its start (`Ledger::populate_state`). Without it a fresh ledger's blocks take their
    /// pages one fault at a time as they first write them: CI's 20,000-anchor ledger smoke ran
    /// at 0.19× raw RocksDB with its 98,000 faults in the timed blocks, against 0.53–0.67×
    /// when the `Vec` levels were cleared (taken) at the open.
    ///
    /// The levels of 2 MiB or more are asked for in huge pages first (`MADV_HUGEPAGE`, honoured
    /// where transparent huge pages are `madvise` or `always`, as on Debian 12): a block's
    /// look-ups of siblings land all over 277 MB, and in 4 KiB pages nearly each missed the
    /// TLB. `vpbox bench anchors --nodes 1`, three alternating pairs on 2026-12-07: the batch
    /// path at 223–228 k/s with them, 199–221 k/s without. Only here, where every page is taken
    /// anyway: a ledger that is not populated (tools, the simulator's many ledgers) would take
    /// 2 MiB for every node it writes alone in one.
    pub fn populate(&self) -> std::io::Result<()> {
        for level in &self.levels {
            if level.0.len() >= HUGE_PAGE {
                // Not an error where the kernel has no transparent huge pages: 4 KiB pages then.
                let _ = level.0.advise(memmap2::Advice::HugePage);
            }
            level.0.advise(memmap2::Advice::PopulateWrite)?;
        }
        Ok(())
    }

    /// Node `index` of level `level`.
    pub fn get(&self, level: usize, index: u32) -> Node {
        let slot = self.levels[level].slot(index);
        let mut h = [0u8; 32];
        h.copy_from_slice(&slot[..32]);
        match slot[32] {
            0 => Node::Empty,
            1 => Node::Leaf(Digest(h)),
            _ => Node::Inner(Digest(h)),
        }
    }

    fn set(&mut self, level: usize, index: u32, node: Node) {
        let slot = self.levels[level].slot_mut(index);
        slot[..32].copy_from_slice(node.hash().as_bytes());
        slot[32] = node.tag();
    }

    /// The root.
    pub fn root(&self) -> Digest {
        self.get(0, 0).hash()
    }

    /// Builds the levels above the buckets from `buckets` (each bucket's node at most once,
    /// in any order), on an empty tree: what open does after one scan of the anchors.
    pub fn build(buckets: impl IntoIterator<Item = (u32, Node)>) -> Self {
        let mut top = Self::new();
        let changes = Changes::compute(&top, &[], buckets.into_iter().collect());
        top.apply(&changes);
        top
    }

    /// The buckets (level [`TOP_DEPTH`]) that hold anchors, by index: found from the root
    /// down through the nodes that are not empty, so that an empty subtree's pages are never
    /// read (nor, in a small ledger, taken from the system at all).
    pub fn buckets(&self) -> impl Iterator<Item = (u32, Node)> + '_ {
        // Nodes to visit, the next on top: a node's right child is pushed before its left.
        let mut stack = vec![(0usize, 0u32)];
        std::iter::from_fn(move || {
            while let Some((level, index)) = stack.pop() {
                let node = self.get(level, index);
                if node == Node::Empty {
                    continue;
                }
                if level == TOP_DEPTH {
                    return Some((index, node));
                }
                stack.push((level + 1, 2 * index + 1));
                stack.push((level + 1, 2 * index));
            }
            None
        })
    }

    /// Makes `changes` (a committed block's) part of the tree.
    pub fn apply(&mut self, changes: &Changes) {
        for (level, nodes) in changes.levels.iter().enumerate() {
            for (index, node) in nodes {
                self.set(level, *index, *node);
            }
        }
    }
}

/// The nodes of the top levels one block changed, relative to the tree below it (the committed
/// one and the speculative blocks between): per level, sorted by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    levels: Vec<Vec<(u32, Node)>>,
}

impl Changes {
    /// The root after these changes.
    pub fn root(&self, top: &Top, above: &[&Self]) -> Digest {
        match self.levels.first().and_then(|l| l.first()) {
            Some((_, n)) => n.hash(),
            None => Self::lookup(top, above, 0, 0).hash(),
        }
    }

    fn get(&self, level: usize, index: u32) -> Option<Node> {
        let nodes = self.levels.get(level)?;
        nodes.binary_search_by_key(&index, |(i, _)| *i).ok().map(|at| nodes[at].1)
    }

    /// A node as of the speculative blocks `above` (newest wins) over the committed `top`.
    fn lookup(top: &Top, above: &[&Self], level: usize, index: u32) -> Node {
        above
            .iter()
            .rev()
            .find_map(|c| c.get(level, index))
            .unwrap_or_else(|| top.get(level, index))
    }

    /// The changes that set `buckets` (bucket index → its new node) on top of `top` and
    /// `above` (oldest first), with every ancestor recomputed. Each level's siblings are looked
    /// up in increasing order, so the speculative blocks' changes are walked with one cursor
    /// each rather than searched.
    pub fn compute(top: &Top, above: &[&Self], buckets: Vec<(u32, Node)>) -> Self {
        Self::below(top, above, buckets, 0)
    }

    /// [`Self::compute`] for buckets that all lie under one node of level `depth`: the
    /// levels from [`TOP_DEPTH`] up to `depth` only (the ones above stay empty).
    pub fn below(top: &Top, above: &[&Self], mut buckets: Vec<(u32, Node)>, depth: usize) -> Self {
        let mut levels = vec![Vec::new(); TOP_DEPTH + 1];
        if buckets.is_empty() {
            return Self { levels };
        }
        buckets.sort_unstable_by_key(|(i, _)| *i);
        buckets.dedup_by_key(|(i, _)| *i);
        levels[TOP_DEPTH] = buckets;
        let mut changes = Self { levels };
        changes.up(top, above, TOP_DEPTH, depth);
        changes
    }

    /// Joins the changes of the subtrees under the nodes of level `depth`, each computed by
    /// [`Self::below`] and given in index order, and computes the levels above.
    pub fn join(top: &Top, above: &[&Self], parts: Vec<Self>, depth: usize) -> Self {
        let mut levels = vec![Vec::new(); TOP_DEPTH + 1];
        for part in parts {
            for (all, mine) in levels.iter_mut().zip(part.levels).skip(depth) {
                all.extend(mine);
            }
        }
        let mut changes = Self { levels };
        changes.up(top, above, depth, 0);
        changes
    }

    /// Computes levels `from - 1` up to `to` from level `from`.
    fn up(&mut self, top: &Top, above: &[&Self], from: usize, to: usize) {
        let levels = &mut self.levels;
        let mut cursors = vec![0usize; above.len()];
        for level in (to..from).rev() {
            let children = &levels[level + 1];
            cursors.iter_mut().for_each(|c| *c = 0);
            // The sibling `index` (increasing from call to call within the level).
            let mut sibling = |index: u32| -> Node {
                for (a, c) in above.iter().zip(cursors.iter_mut()).rev() {
                    let list = a.levels.get(level + 1).map_or(&[][..], Vec::as_slice);
                    while list.get(*c).is_some_and(|(i, _)| *i < index) {
                        *c += 1;
                    }
                    if let Some((i, n)) = list.get(*c)
                        && *i == index
                    {
                        return *n;
                    }
                }
                top.get(level + 1, index)
            };
            let mut parents = Vec::with_capacity(children.len());
            // The level's inner nodes are independent: hashed together, in SIMD lanes.
            let mut inputs = Vec::new();
            let mut inner = Vec::new();
            let mut i = 0;
            while i < children.len() {
                let p = children[i].0 >> 1;
                let (left, right);
                if children[i].0 & 1 == 0 {
                    left = children[i].1;
                    if children.get(i + 1).is_some_and(|(j, _)| *j == (p << 1) | 1) {
                        right = children[i + 1].1;
                        i += 1;
                    } else {
                        right = sibling((p << 1) | 1);
                    }
                } else {
                    left = sibling(p << 1);
                    right = children[i].1;
                }
                i += 1;
                match unhashed(left, right) {
                    Some(node) => parents.push((p, node)),
                    None => {
                        inner.push(parents.len());
                        inputs.push(inner_input(&left.hash(), &right.hash()));
                        parents.push((p, Node::Empty));
                    }
                }
            }
            for (at, hash) in inner.into_iter().zip(vpbox_sm::sm3::hash_each(&inputs)) {
                parents[at].1 = Node::Inner(hash);
            }
            levels[level] = parents;
        }
    }
}

/// Where a key's path ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// An empty subtree: the key is absent.
    Empty,
    /// A leaf: the key's own (present) or another key's (absent).
    Leaf(Leaf),
}

/// A key's path from a state root: the siblings from the root's children down, and where it
/// ends. Encoded `nsib:u16 sibling:[32]*nsib tag:u8 (leaf:[104] if tag = 1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The siblings, from depth 1 down.
    pub siblings: Vec<Digest>,
    /// The end of the path, at depth `siblings.len()`.
    pub terminal: Terminal,
}

/// What a path proves about its key, once its root matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Anchored: its first value, transaction and height.
    Present(Leaf),
    /// Never anchored (as of the root's block).
    Absent,
}

impl Path {
    /// The root this path hashes to for `key`, and what it says of the key; an error names
    /// why it is no path of `key`.
    pub fn evaluate(&self, key: &[u8; 32]) -> Result<(Digest, Lookup), &'static str> {
        let depth = self.siblings.len();
        if depth > MAX_DEPTH {
            return Err("the path is deeper than 256");
        }
        let (mut h, lookup) = match &self.terminal {
            Terminal::Empty => (ZERO, Lookup::Absent),
            Terminal::Leaf(leaf) => {
                if (0..depth).any(|i| bit(&leaf.key, i) != bit(key, i)) {
                    return Err("the leaf is not on the key's path");
                }
                let l = if leaf.key == *key { Lookup::Present(*leaf) } else { Lookup::Absent };
                (leaf.hash(), l)
            }
        };
        for (i, sib) in self.siblings.iter().enumerate().rev() {
            h = if bit(key, i) { inner_hash(sib, &h) } else { inner_hash(&h, sib) };
        }
        Ok((h, lookup))
    }

    /// The canonical encoding.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.siblings.len() as u16).to_be_bytes());
        for s in &self.siblings {
            out.extend_from_slice(s.as_bytes());
        }
        match &self.terminal {
            Terminal::Empty => out.push(0),
            Terminal::Leaf(l) => {
                out.push(1);
                l.encode_into(out);
            }
        }
    }

    /// Decodes a path from untrusted bytes (bounded: at most 256 siblings, checked before
    /// anything is allocated); the error names what is wrong.
    pub fn decode(r: &mut vpbox_wire::Reader<'_>) -> Result<Self, &'static str> {
        const SHORT: &str = "the state path is truncated";
        let n = r.u16().map_err(|_| SHORT)? as usize;
        if n > MAX_DEPTH {
            return Err("the state path is deeper than 256");
        }
        let mut siblings = Vec::with_capacity(n);
        for _ in 0..n {
            siblings.push(Digest(r.array().map_err(|_| SHORT)?));
        }
        let terminal = match r.u8().map_err(|_| SHORT)? {
            0 => Terminal::Empty,
            1 => Terminal::Leaf(Leaf {
                key: r.array().map_err(|_| SHORT)?,
                value: r.array().map_err(|_| SHORT)?,
                tx: Digest(r.array().map_err(|_| SHORT)?),
                height: r.u64().map_err(|_| SHORT)?,
            }),
            _ => return Err("the state path ends with an unknown terminal"),
        };
        Ok(Self { siblings, terminal })
    }

    /// The path of `key` in `top`, reading a bucket's (or a lone leaf's) anchors with
    /// `read(depth, index)`: every anchor whose key starts with the `depth`-bit prefix
    /// `index`, in key order.
    pub fn build<E>(
        top: &Top,
        key: &[u8; 32],
        mut read: impl FnMut(usize, u32) -> Result<Vec<Leaf>, E>,
        corrupt: impl Fn(&'static str) -> E,
    ) -> Result<Self, E> {
        let mut siblings = Vec::new();
        for level in 0..=TOP_DEPTH {
            let index = prefix(key, level);
            match top.get(level, index) {
                Node::Empty => return Ok(Self { siblings, terminal: Terminal::Empty }),
                Node::Leaf(h) => {
                    let leaves = read(level, index)?;
                    return match leaves.as_slice() {
                        [one] if one.hash() == h => {
                            Ok(Self { siblings, terminal: Terminal::Leaf(*one) })
                        }
                        _ => Err(corrupt("a state leaf differs from the anchors under it")),
                    };
                }
                Node::Inner(h) if level == TOP_DEPTH => {
                    let leaves = read(level, index)?;
                    let hashed: Vec<([u8; 32], Digest)> =
                        leaves.iter().map(|l| (l.key, l.hash())).collect();
                    if subtree(&hashed, TOP_DEPTH).hash() != h {
                        return Err(corrupt("a state bucket differs from the anchors in it"));
                    }
                    let end = path_below(&hashed, key, TOP_DEPTH, &mut siblings);
                    let terminal = end.map_or(Terminal::Empty, |i| Terminal::Leaf(leaves[i]));
                    return Ok(Self { siblings, terminal });
                }
                Node::Inner(_) => {
                    siblings.push(top.get(level + 1, prefix(key, level + 1) ^ 1).hash());
                }
            }
        }
        Err(corrupt("a state path below the top levels"))
    }
}

/// The state map's checkpoint: the buckets of [`Top`] as of one block, so that a ledger opens
/// without hashing every anchor again (see `Ledger::open`). Local state, not a proof: whoever
/// loads it builds the levels above the buckets from it and compares the root with the
/// block's certified `state_root`.
///
/// ```text
/// "VPSTMAP1" height:u64be block_hash:[32] depth:u8 count:u32be
///   (index:u32be kind:u8 hash:[32]) * count       kind 1 a lone leaf, 2 inner; indices increasing
/// sm3:[32]                                        of everything before it
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The block it is the state of.
    pub height: u64,
    /// That block's hash.
    pub block: Digest,
    /// The buckets holding anchors, by index.
    pub buckets: Vec<(u32, Node)>,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"VPSTMAP1";
/// Bytes of one bucket in a checkpoint.
const CHECKPOINT_BUCKET: usize = 4 + 1 + 32;
/// Bytes of a checkpoint's head (magic to count).
const CHECKPOINT_HEAD: usize = 8 + 8 + 32 + 1 + 4;
/// The largest checkpoint, whatever the ledger's size: every bucket holding anchors (155 MB).
pub const CHECKPOINT_MAX: usize = CHECKPOINT_HEAD + (1 << TOP_DEPTH) * CHECKPOINT_BUCKET + 32;

impl Checkpoint {
    /// The checkpoint of `top` as of block `height`, whose hash is `block`.
    pub fn of(top: &Top, height: u64, block: Digest) -> Self {
        Self { height, block, buckets: top.buckets().collect() }
    }

    /// Its encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(CHECKPOINT_HEAD + self.buckets.len() * CHECKPOINT_BUCKET + 32);
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(self.block.as_bytes());
        out.push(TOP_DEPTH as u8);
        out.extend_from_slice(&(self.buckets.len() as u32).to_be_bytes());
        for (index, node) in &self.buckets {
            out.extend_from_slice(&index.to_be_bytes());
            out.push(node.tag());
            out.extend_from_slice(node.hash().as_bytes());
        }
        let sum = vpbox_sm::sm3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes a checkpoint (bounded: at most `2^TOP_DEPTH` buckets, the length checked
    /// against the count before the buckets are allocated); the error names what is wrong.
    /// A checkpoint that decodes says nothing of the anchors: see `Ledger::checkpoint_check`.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let Some((body, sum)) = bytes.split_last_chunk::<32>() else {
            return Err("truncated");
        };
        if body.len() < CHECKPOINT_HEAD || &body[..8] != CHECKPOINT_MAGIC {
            return Err("not a state map checkpoint of this version");
        }
        if vpbox_sm::sm3::hash(body).as_bytes() != sum {
            return Err("its checksum does not match (a damaged file)");
        }
        let mut r = vpbox_wire::Reader::new(&body[8..]);
        const SHORT: &str = "truncated";
        let height = r.u64().map_err(|_| SHORT)?;
        let block = Digest(r.array().map_err(|_| SHORT)?);
        if usize::from(r.u8().map_err(|_| SHORT)?) != TOP_DEPTH {
            return Err("written with another number of levels in memory");
        }
        let count = r.u32().map_err(|_| SHORT)? as usize;
        if count > 1 << TOP_DEPTH || body.len() != CHECKPOINT_HEAD + count * CHECKPOINT_BUCKET {
            return Err("its bucket count does not match its length");
        }
        let mut buckets = Vec::with_capacity(count);
        let mut last = None;
        for _ in 0..count {
            let index = r.u32().map_err(|_| SHORT)?;
            if index >= 1 << TOP_DEPTH || last.is_some_and(|l| l >= index) {
                return Err("its buckets are out of order or out of range");
            }
            last = Some(index);
            let kind = r.u8().map_err(|_| SHORT)?;
            let hash = Digest(r.array().map_err(|_| SHORT)?);
            let node = match kind {
                1 => Node::Leaf(hash),
                2 => Node::Inner(hash),
                _ => return Err("a bucket of an unknown kind"),
            };
            buckets.push((index, node));
        }
        r.finish().map_err(|_| "trailing bytes")?;
        Ok(Self { height, block, buckets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vpbox_sm::sm3::hash;

    fn leaf(key: [u8; 32], n: u64) -> Leaf {
        Leaf { key, value: hash(n.to_be_bytes()).0, tx: hash(key), height: n }
    }

    /// The definition, literally: the node of a set of keys at a depth, over all 256 bits.
    fn reference(leaves: &[Leaf], depth: usize) -> Node {
        match leaves {
            [] => Node::Empty,
            [l] => Node::Leaf(l.hash()),
            _ => {
                let (zero, one): (Vec<Leaf>, Vec<Leaf>) =
                    leaves.iter().partition(|l| !bit(&l.key, depth));
                combine(reference(&zero, depth + 1), reference(&one, depth + 1))
            }
        }
    }

    /// Plans are evaluated as they grow (past PLAN_NODES) and a list past PLANNED_MAX is hashed
    /// alone, in the lists' order: keys chosen in pairs that differ in their last bit only (a
    /// chain of 255 joins each), many small lists, and one large list between them.
    #[test]
    fn subtrees_of_many_and_large_lists_are_bounded_and_each_subtree() {
        // `pairs` pairs of keys, each pair differing in its last bit only.
        let list = |seed: u32, pairs: u32| -> Vec<([u8; 32], Digest)> {
            let mut keys: Vec<[u8; 32]> = (0..pairs)
                .flat_map(|i| {
                    let k = hash([seed.to_be_bytes(), i.to_be_bytes()].concat()).0;
                    let mut pair = k;
                    pair[31] ^= 1;
                    [k, pair]
                })
                .collect();
            keys.sort();
            keys.dedup();
            keys.iter().map(|k| (*k, hash(k))).collect()
        };
        let mut sets: Vec<Vec<([u8; 32], Digest)>> = (0..300).map(|s| list(s, 4)).collect();
        sets.insert(150, list(1000, PLANNED_MAX as u32 / 2 + 1));
        assert!(sets[150].len() > PLANNED_MAX);
        let nodes: usize = sets.iter().map(|l| 2 * l.len() * 256).sum();
        assert!(nodes > 4 * PLAN_NODES, "the plan is evaluated several times");
        let refs: Vec<&[([u8; 32], Digest)]> = sets.iter().map(Vec::as_slice).collect();
        let each: Vec<Node> = refs.iter().map(|l| subtree(l, 0)).collect();
        assert_eq!(subtrees(&refs, 0), each);
    }

    /// A tree built block by block (with speculative blocks on top of committed ones) as the
    /// ledger does.
    struct Model {
        top: Top,
        leaves: Vec<Leaf>,
    }

    impl Model {
        fn changes(&self, above: &[(Vec<Leaf>, Changes)], new: &[Leaf]) -> Changes {
            let mut all: Vec<Leaf> = self.leaves.clone();
            all.extend(above.iter().flat_map(|(l, _)| l.iter().copied()));
            all.extend_from_slice(new);
            all.sort_by_key(|l| l.key);
            let mut touched: Vec<u32> = new.iter().map(|l| prefix(&l.key, TOP_DEPTH)).collect();
            touched.sort_unstable();
            touched.dedup();
            let buckets = touched
                .into_iter()
                .map(|b| {
                    let inb: Vec<([u8; 32], Digest)> = all
                        .iter()
                        .filter(|l| prefix(&l.key, TOP_DEPTH) == b)
                        .map(|l| (l.key, l.hash()))
                        .collect();
                    (b, subtree(&inb, TOP_DEPTH))
                })
                .collect();
            let refs: Vec<&Changes> = above.iter().map(|(_, c)| c).collect();
            Changes::compute(&self.top, &refs, buckets)
        }

        fn read(&self, depth: usize, index: u32) -> Result<Vec<Leaf>, &'static str> {
            let mut v: Vec<Leaf> =
                self.leaves.iter().filter(|l| prefix(&l.key, depth) == index).copied().collect();
            v.sort_by_key(|l| l.key);
            Ok(v)
        }
    }

    fn keys_from(seeds: &[(u8, u8, u8)]) -> Vec<[u8; 32]> {
        // Few distinct first bytes so that keys share buckets and long prefixes.
        let mut keys: Vec<[u8; 32]> = seeds
            .iter()
            .map(|&(a, b, c)| {
                let mut k = [0u8; 32];
                k[0] = a % 4;
                k[2] = b % 3;
                k[31] = c;
                k
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Many trees at once, hashed height by height in lanes, are each tree alone: small
        /// and large lists, keys sharing long prefixes (chains of joins over an empty side),
        /// empty lists, and a list whose keys repeat (the first stands for all past the last
        /// bit).
        #[test]
        fn subtrees_at_once_are_each_subtree(
            lists in proptest::collection::vec(
                proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..12),
                0..20,
            ),
            depth in 0usize..3,
        ) {
            let mut sets: Vec<Vec<([u8; 32], Digest)>> = lists
                .iter()
                // Sorted and distinct; their first byte is below 4, so their first `depth`
                // bits are all 0.
                .map(|seeds| keys_from(seeds).iter().map(|k| (*k, hash(k))).collect())
                .collect();
            let repeated = ([0u8; 32], hash(b"a"));
            sets.push(vec![repeated, (repeated.0, hash(b"b"))]);
            let refs: Vec<&[([u8; 32], Digest)]> = sets.iter().map(Vec::as_slice).collect();
            let each: Vec<Node> = refs.iter().map(|l| subtree(l, depth)).collect();
            prop_assert_eq!(subtrees(&refs, depth), each);
        }

        /// The changes computed in parts under the nodes of a level (one thread each in the
        /// ledger) and joined are those computed at once, over a committed tree and a
        /// speculative block.
        #[test]
        fn changes_computed_in_parts_are_the_same(
            keys in proptest::collection::btree_set(any::<[u8; 32]>(), 3..120),
            depth in 1usize..6,
        ) {
            let keys: Vec<[u8; 32]> = keys.into_iter().collect();
            let third = keys.len() / 3;
            let mut m = Model { top: Top::new(), leaves: Vec::new() };
            let committed: Vec<Leaf> = keys[..third].iter().map(|k| leaf(*k, 1)).collect();
            let c = m.changes(&[], &committed);
            m.top.apply(&c);
            m.leaves = committed;
            let spec: Vec<Leaf> = keys[third..2 * third].iter().map(|k| leaf(*k, 2)).collect();
            let above = vec![(spec.clone(), m.changes(&[], &spec))];
            let new: Vec<Leaf> = keys[2 * third..].iter().map(|k| leaf(*k, 3)).collect();
            let whole = m.changes(&above, &new);
            let refs: Vec<&Changes> = above.iter().map(|(_, c)| c).collect();
            let mut all: Vec<Leaf> = m.leaves.iter().chain(&spec).copied().collect();
            let parts = (0..1u32 << depth)
                .map(|j| {
                    let mine: Vec<Leaf> =
                        new.iter().filter(|l| prefix(&l.key, depth) == j).copied().collect();
                    let buckets = m.changes(&above, &mine).levels[TOP_DEPTH].clone();
                    Changes::below(&m.top, &refs, buckets, depth)
                })
                .collect();
            prop_assert_eq!(&Changes::join(&m.top, &refs, parts, depth), &whole);
            all.extend_from_slice(&new);
            prop_assert_eq!(whole.root(&m.top, &refs), reference(&all, 0).hash());
        }

        /// Block by block, with up to two speculative blocks, the incremental root is the
        /// definition's; every key's path (present and absent) evaluates to it and says the
        /// truth; a path for one key never passes for another.
        #[test]
        fn incremental_root_and_paths_match_the_definition(
            seeds in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..40),
            cut in 1usize..5,
        ) {
            let keys = keys_from(&seeds);
            let mut m = Model { top: Top::new(), leaves: Vec::new() };
            let mut above: Vec<(Vec<Leaf>, Changes)> = Vec::new();
            for (n, chunk) in keys.chunks(cut).enumerate() {
                let new: Vec<Leaf> = chunk.iter().map(|k| leaf(*k, n as u64 + 1)).collect();
                let c = m.changes(&above, &new);
                let refs: Vec<&Changes> = above.iter().map(|(_, c)| c).collect();
                let mut all = m.leaves.clone();
                all.extend(above.iter().flat_map(|(l, _)| l.iter().copied()));
                all.extend_from_slice(&new);
                prop_assert_eq!(c.root(&m.top, &refs), reference(&all, 0).hash());
                above.push((new, c));
                if above.len() > 2 {
                    let (l, c) = above.remove(0);
                    m.top.apply(&c);
                    m.leaves.extend(l);
                    prop_assert_eq!(m.top.root(), reference(&m.leaves, 0).hash());
                }
            }
            let root = m.top.root();
            // The non-empty buckets, in index order, as a checkpoint takes them.
            let held: std::collections::BTreeSet<u32> =
                m.leaves.iter().map(|l| prefix(&l.key, TOP_DEPTH)).collect();
            let found: Vec<u32> = m.top.buckets().map(|(b, _)| b).collect();
            prop_assert_eq!(found, held.into_iter().collect::<Vec<_>>());
            let probe = |k: &[u8; 32]| Path::build(&m.top, k, |d, i| m.read(d, i), |e| e);
            for l in &m.leaves {
                let p = probe(&l.key).unwrap();
                prop_assert_eq!(p.evaluate(&l.key).unwrap(), (root, Lookup::Present(*l)));
                let mut other = l.key;
                other[31] ^= 0x55;
                if !m.leaves.iter().any(|x| x.key == other) {
                    let q = probe(&other).unwrap();
                    prop_assert_eq!(q.evaluate(&other).unwrap(), (root, Lookup::Absent));
                    // The present key's path never proves the other present (it may prove it
                    // absent: the key is alone under a prefix the other shares).
                    prop_assert!(!matches!(p.evaluate(&other), Ok((r, Lookup::Present(_))) if r == root));
                }
            }
            prop_assert_eq!(
                Top::build(m.leaves.iter().map(|l| l.key).collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|k| prefix(&k, TOP_DEPTH))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|b| {
                        let v: Vec<([u8; 32], Digest)> = m.read(TOP_DEPTH, b).unwrap()
                            .iter().map(|l| (l.key, l.hash())).collect();
                        (b, subtree(&v, TOP_DEPTH))
                    })).root(),
                root
            );
        }
    }

    #[test]
    fn keys_that_are_not_distinct_do_not_panic() {
        let k = [3u8; 32];
        let (a, b) = (hash(b"a"), hash(b"b"));
        assert_eq!(subtree(&[(k, a), (k, b)], 0), Node::Leaf(a));
        let mut sibs = Vec::new();
        assert_eq!(path_below(&[(k, a), (k, b)], &k, 0, &mut sibs), Some(0));
    }

    #[test]
    fn an_empty_tree_and_a_lone_anchor() {
        let top = Top::new();
        assert_eq!(top.root(), ZERO);
        let k = [7u8; 32];
        let p = Path::build(&top, &k, |_, _| Ok::<_, &str>(vec![]), |e| e).unwrap();
        assert_eq!(p, Path { siblings: vec![], terminal: Terminal::Empty });
        assert_eq!(p.evaluate(&k).unwrap(), (ZERO, Lookup::Absent));
        let l = leaf(k, 1);
        let c = Changes::compute(&top, &[], vec![(prefix(&k, TOP_DEPTH), Node::Leaf(l.hash()))]);
        assert_eq!(c.root(&top, &[]), l.hash(), "one anchor: the root is its leaf");
    }

    #[test]
    fn keys_sharing_255_bits_make_a_path_of_256() {
        let a = [0u8; 32];
        let mut b = a;
        b[31] = 1;
        let la = leaf(a, 1);
        let lb = leaf(b, 1);
        let bucket = subtree(&[(a, la.hash()), (b, lb.hash())], TOP_DEPTH);
        let mut top = Top::new();
        top.apply(&Changes::compute(&top, &[], vec![(0, bucket)]));
        let read = |_: usize, _: u32| Ok::<_, &str>(vec![la, lb]);
        let p = Path::build(&top, &b, read, |e| e).unwrap();
        assert_eq!(p.siblings.len(), MAX_DEPTH);
        assert_eq!(p.evaluate(&b).unwrap(), (top.root(), Lookup::Present(lb)));
        let mut bytes = Vec::new();
        p.encode_into(&mut bytes);
        let mut r = vpbox_wire::Reader::new(&bytes);
        assert_eq!(Path::decode(&mut r).unwrap(), p);
        assert_eq!(r.remaining(), 0);
        // One more sibling than a key has bits is refused before anything is read.
        let mut deep = (257u16).to_be_bytes().to_vec();
        deep.extend(vec![0u8; 257 * 32 + 1]);
        assert!(Path::decode(&mut vpbox_wire::Reader::new(&deep)).is_err());
    }

    #[test]
    fn a_leaf_off_the_keys_path_or_a_changed_byte_is_refused() {
        let keys = keys_from(&[(0, 0, 1), (0, 0, 2), (1, 1, 3), (2, 2, 4)]);
        let leaves: Vec<Leaf> = keys.iter().map(|k| leaf(*k, 1)).collect();
        let m = Model { top: Top::new(), leaves: Vec::new() };
        let c = m.changes(&[], &leaves);
        let mut top = Top::new();
        top.apply(&c);
        let m = Model { top, leaves };
        let root = m.top.root();
        let k = keys[1];
        let p = Path::build(&m.top, &k, |d, i| m.read(d, i), |e| e).unwrap();
        let mut bytes = Vec::new();
        p.encode_into(&mut bytes);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let got = Path::decode(&mut vpbox_wire::Reader::new(&bad))
                .ok()
                .and_then(|q| q.evaluate(&k).ok());
            assert!(
                got.is_none_or(|(r, _)| r != root),
                "byte {i} changed and the path still proves the key"
            );
        }
        // Another key's leaf shown as the end of this key's path (off its prefix).
        let far = Path { siblings: p.siblings.clone(), terminal: Terminal::Leaf(m.leaves[3]) };
        assert!(far.evaluate(&k).is_err());
    }
}
