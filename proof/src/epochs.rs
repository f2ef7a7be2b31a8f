//! Which members certify which blocks: the consensus configurations that node changes lead
//! to, derived the same way by the node (to check a block it fetches) and by a proof's
//! verifier (to check a block it is shown).
//!
//! The engine's rule (`Effect::Reconfigured`): a node change committed in block `s` applies
//! above the first checkpoint `c ≥ s` (`c = ⌈s / K⌉ · K`, `K` the genesis's
//! `checkpoint_interval`) as the next epoch; another change at or before `c` replaces it in
//! that same epoch. Block `h` is certified by the last configuration whose `after` is below
//! `h`, else by the genesis's (epoch 0).

use vpbox_consensus::{Config, Member, NodeId, PublicKey as CKey, SeqNo};
use vpbox_ledger::governance::Member as LMember;

/// The configurations node changes lead to, oldest first, the last of each epoch: `changes`
/// are the heights of committed blocks and the member lists they named, oldest first; `k` is
/// the checkpoint interval.
pub fn derive_configs(genesis: Config, changes: &[(u64, Vec<LMember>)], k: u64) -> Vec<Config> {
    let mut out: Vec<Config> = Vec::new();
    let mut current = genesis;
    for (s, members) in changes {
        // A pending configuration switched at its checkpoint if that lies below this change.
        if let Some(last) = out.last() {
            if last.after().0 < *s && last.epoch() > current.epoch() {
                current = last.clone();
            }
        }
        let after = SeqNo(s.div_ceil(k.max(1)).saturating_mul(k.max(1)));
        let members = members
            .iter()
            .map(|(id, key)| Member { id: NodeId(*id), public_key: CKey(key.to_vec()) })
            .collect();
        let Ok(next) = current.successor(members, after) else { continue };
        if out.last().is_some_and(|l| l.epoch() == next.epoch()) {
            out.pop();
        }
        out.push(next);
    }
    out
}

/// The configuration that certifies block `height`: the last of `configs` (as
/// [`derive_configs`] returns them) whose `after` is below it, else `genesis`.
pub fn config_for<'a>(genesis: &'a Config, configs: &'a [Config], height: u64) -> &'a Config {
    configs.iter().rev().find(|c| c.after().0 < height).unwrap_or(genesis)
}

#[cfg(test)]
mod tests {
    use vpbox_consensus::Digest as CDigest;

    use super::*;

    fn members(ids: &[u32]) -> Vec<LMember> {
        ids.iter().map(|i| (*i, [*i as u8; 65])).collect()
    }

    fn ids(c: &Config) -> Vec<u32> {
        c.members().iter().map(|m| m.id.0).collect()
    }

    #[test]
    fn configurations_follow_the_engines_rule_for_node_changes() {
        let genesis = Config::new(
            (1..=4)
                .map(|i| Member { id: NodeId(i), public_key: CKey(vec![i as u8; 65]) })
                .collect(),
            CDigest([0; 32]),
        )
        .unwrap();
        // K = 10. Changes at 3, 7 and 10 all fall before the switch at 10: one epoch, the last
        // list. A change at 11 is the next epoch, from 20; one at 25 the third, from 30.
        let changes = vec![
            (3, members(&[1, 2, 3, 4, 5])),
            (7, members(&[1, 2, 3, 4, 6])),
            (10, members(&[1, 2, 3, 4, 7])),
            (11, members(&[2, 3, 4, 7])),
            (25, members(&[2, 3, 4, 7, 8])),
        ];
        let got = derive_configs(genesis.clone(), &changes, 10);
        let summary: Vec<(u64, u64, Vec<u32>)> =
            got.iter().map(|c| (c.epoch(), c.after().0, ids(c))).collect();
        assert_eq!(
            summary,
            vec![
                (1, 10, vec![1, 2, 3, 4, 7]),
                (2, 20, vec![2, 3, 4, 7]),
                (3, 30, vec![2, 3, 4, 7, 8]),
            ]
        );
        // Block 10 is still certified by the genesis members; 11 by epoch 1; 21 by epoch 2.
        let epoch = |h| config_for(&genesis, &got, h).epoch();
        assert_eq!(
            [epoch(1), epoch(10), epoch(11), epoch(20), epoch(21), epoch(31)],
            [0, 0, 1, 1, 2, 3]
        );
        assert!(derive_configs(genesis, &[], 10).is_empty());
    }
}
