//! Scenario tests, named by fault model; each cites the rule it checks (Castro & Liskov, TOCS
//! 2002, "C&L"; Hyperchain's RBFT rules in `pbft.md`, "RBFT").

use vpbox_consensus::Phase;
use vpbox_consensus_sim::{Byzantine, CrashOnSend, CryptoKind, Outcome, SimConfig, World};

use crate::assert_safe_and_live;

fn world(nodes: usize, seed: u64) -> World {
    let mut cfg = SimConfig::new(nodes, seed);
    cfg.fault_ms = 6_000;
    World::new(cfg).unwrap()
}

fn crash_when(w: &mut World, node: usize, victim: usize, phase: Phase, nth: u32) {
    w.crash_on_send(CrashOnSend { node, victim, phase, nth, restart_after_ms: 1_500 });
}

fn run(mut w: World, txs: usize) -> Outcome {
    w.network(0.0, 0.0, (2, 20));
    w.submit(txs, 0, 4_000);
    let o = w.run();
    assert_safe_and_live(&o);
    o
}

/// C&L §4.4: a primary that crashes right after its pre-prepare is replaced; the batch it
/// proposed is either in the O set or re-proposed, and commits once.
#[test]
fn n4f1_primary_crash_in_pre_prepare() {
    let mut w = world(4, 1);
    crash_when(&mut w, 0, 0, Phase::PrePrepare, 2);
    let o = run(w, 40);
    assert_eq!(o.crashes, 1);
    assert!(o.max_view >= 1, "the backups must have changed view");
}

/// C&L §4.4: the primary crashes while backups prepare (on a backup's first prepare); the
/// prepared certificate carries the batch into the next view.
#[test]
fn n4f1_primary_crash_in_prepare() {
    let mut w = world(4, 2);
    crash_when(&mut w, 1, 0, Phase::Prepare, 1);
    let o = run(w, 40);
    assert_eq!(o.crashes, 1);
    assert!(o.max_view >= 1);
}

/// C&L §4.4: the primary crashes after its first commit: some replicas may have committed,
/// the new view must keep exactly that batch.
#[test]
fn n4f1_primary_crash_in_commit() {
    let mut w = world(4, 3);
    crash_when(&mut w, 0, 0, Phase::Commit, 1);
    let o = run(w, 40);
    assert_eq!(o.crashes, 1);
}

/// C&L §4.3: the primary crashes as it sends its first checkpoint.
#[test]
fn n4f1_primary_crash_at_checkpoint() {
    let mut w = world(4, 4);
    crash_when(&mut w, 0, 0, Phase::Checkpoint, 1);
    let o = run(w, 60);
    assert_eq!(o.crashes, 1);
}

/// pbft.md list item 9: a backup crashes right after its prepare with its last WAL write torn;
/// it must restart from the rest of the WAL and never sign a conflicting vote.
#[test]
fn n4f1_backup_crash_with_torn_wal_write() {
    let mut w = world(4, 5);
    w.crash(2, 700, 1_000, true);
    w.crash(3, 1_900, 800, true);
    run(w, 60);
}

/// C&L §4.5.2: cascading view changes when the primaries of views 0 and 1 are both down;
/// timer doubling lets the remaining replicas converge on view 2.
#[test]
fn n7f2_cascading_view_changes() {
    let mut w = world(7, 6);
    w.crash(0, 300, 5_000, false);
    w.crash(1, 300, 5_000, false);
    let o = run(w, 40);
    assert!(o.max_view >= 2, "views 0 and 1 had dead primaries: {o:?}");
}

/// DESIGN §4 / RBFT quorum: with 2 banks × 4 nodes (Q = 6) neither bank alone can commit;
/// after the partition heals everything commits.
#[test]
fn n8f2_bank_partition_then_heal() {
    let mut cfg = SimConfig::new(8, 7);
    cfg.fault_ms = 6_000;
    let mut w = World::new(cfg).unwrap();
    w.partition(&[0, 1, 2, 3], 0, 6_000);
    let o = run(w, 40);
    assert!(o.first_commit_ms.is_some_and(|t| t >= 6_000), "a bank committed alone: {o:?}");
}

/// pbft.md "Partitions … one-way links": the primary hears everyone but nobody hears it.
#[test]
fn n4f1_one_way_partition_of_primary() {
    let mut w = world(4, 8);
    w.block(vec![(0, 1), (0, 2), (0, 3)], 0, 6_000);
    let o = run(w, 30);
    assert!(o.max_view >= 1);
}

/// C&L §4.2: an equivocating primary (two pre-prepares for one slot) cannot get two batches
/// committed at one sequence number; with a forging second double, f = 2 Byzantine.
#[test]
fn n7f2_equivocating_primary() {
    let mut w = world(7, 9);
    w.byzantine(0, Byzantine::Equivocate);
    w.byzantine(3, Byzantine::Forger);
    run(w, 60);
}

/// RBFT: a primary proposing a wrong execution result is caught when replicas execute and
/// compare; they change view and the result that commits is the honest one.
#[test]
fn n4f1_wrong_execution_result_triggers_view_change() {
    let mut w = world(4, 10);
    w.byzantine(0, Byzantine::WrongResult);
    let o = run(w, 30);
    assert!(o.max_view >= 1, "the wrong result must cost the primary its view");
}

/// C&L §4.5.2 (backup request timers): a primary that silently drops some requests is
/// replaced when the oldest waiting request times out.
#[test]
fn n4f1_censoring_primary_caught_by_request_timer() {
    let mut w = world(4, 11);
    w.byzantine(0, Byzantine::Censor);
    let o = run(w, 30);
    assert!(o.max_view >= 1);
}

/// pbft.md Byzantine doubles: a slow primary delays but does not break anything.
#[test]
fn n4f1_slow_primary() {
    let mut w = world(4, 12);
    w.byzantine(0, Byzantine::Slow);
    run(w, 30);
}

/// C&L §4.1 (authenticated messages): votes under forged names and replayed old messages
/// are refused or harmless.
#[test]
fn n7f2_forged_and_replayed_votes() {
    let mut w = world(7, 13);
    w.byzantine(2, Byzantine::Forger);
    w.byzantine(5, Byzantine::Replayer);
    run(w, 60);
}

/// C&L §5.3.2 / RBFT recovery: a replica down for many windows (L = 16) comes back, fetches
/// the stable checkpoint's state with a digest check and the certified entries above it.
#[test]
fn n4f1_far_behind_node_recovers_by_state_transfer() {
    let mut cfg = SimConfig::new(4, 14);
    cfg.fault_ms = 12_000;
    cfg.txs = 400;
    let mut w = World::new(cfg).unwrap();
    w.crash(3, 50, 11_000, false);
    w.network(0.0, 0.0, (2, 20));
    w.submit(400, 0, 10_000);
    let o = w.run();
    assert_safe_and_live(&o);
    assert!(o.batches > 3 * 16, "the node must be more than a window behind: {o:?}");
    assert!(o.state_transfers >= 1, "recovery must go through state transfer: {o:?}");
}

/// pbft.md "whole-cluster restart": every replica crashes at once and recovers from its WAL.
#[test]
fn n4f1_whole_cluster_restart() {
    let mut w = world(4, 15);
    for i in 0..4 {
        w.crash(i, 1_500, 700, false);
    }
    let o = run(w, 40);
    assert_eq!(o.crashes, 4);
}

/// RBFT batching: a batch is cut at its size limit (8 here) or when the batch timeout fires;
/// 20 transactions at once make exactly 3 batches (8 + 8 + 4).
#[test]
fn n5f1_batches_cut_by_size_and_timeout() {
    let mut w = world(5, 16);
    w.network(0.0, 0.0, (2, 20));
    w.submit(20, 0, 1);
    let o = w.run();
    assert_safe_and_live(&o);
    assert_eq!(o.batches, 3, "{o:?}");
}

/// RBFT heartbeats: an idle primary's heartbeats keep backups from suspecting it.
#[test]
fn n4f1_idle_primary_heartbeats_prevent_view_change() {
    let mut cfg = SimConfig::new(4, 17);
    cfg.fault_ms = 30_000;
    let w = World::new(cfg).unwrap();
    let o = w.run();
    assert_safe_and_live(&o);
    assert_eq!(o.max_view, 0, "{o:?}");
    assert!(o.end_ms >= 30_000);
}

/// Safety with f Byzantine replicas at N = 16 (f = 5, Q = 11), mixed doubles, plus loss.
#[test]
fn n16f5_byzantine_mix_is_safe_and_live() {
    let mut w = world(16, 18);
    for (i, k) in [0usize, 1, 5, 9, 13].into_iter().zip(vpbox_consensus_sim::Byzantine::ALL) {
        w.byzantine(i, k);
    }
    let mut w2 = w;
    w2.network(0.02, 0.02, (2, 40));
    w2.submit(40, 0, 4_000);
    let o = w2.run();
    assert_safe_and_live(&o);
}

/// The normal case, a primary crash and the view change with real SM2 signatures through
/// `vpbox-sm` (every vote, certificate and proof verified with SM2).
#[test]
fn n4f1_real_sm2_primary_crash_in_commit() {
    let mut cfg = SimConfig::new(4, 19);
    cfg.crypto = CryptoKind::Sm2;
    cfg.fault_ms = 3_000;
    let mut w = World::new(cfg).unwrap();
    crash_when(&mut w, 0, 0, Phase::Commit, 1);
    w.network(0.0, 0.0, (2, 20));
    w.submit(12, 0, 1_000);
    let o = w.run();
    assert_safe_and_live(&o);
    assert!(o.max_view >= 1);
}

/// Twins (DiemBFT's method; pbft.md "twins"): the primary runs as two honest-code processes
/// with one key, each talking to a different part of the cluster — equivocation by
/// construction, which quorum intersection (RBFT's Q) must absorb.
#[test]
fn n4f1_twin_primary_split_brain() {
    let mut w = world(4, 20);
    w.byzantine(0, Byzantine::Twin);
    run(w, 40);
}

/// Twins plus a forger: f = 2 Byzantine identities at N = 7 (Q = 5).
#[test]
fn n7f2_twins_and_forger() {
    let mut w = world(7, 21);
    w.byzantine(0, Byzantine::Twin);
    w.byzantine(1, Byzantine::Forger);
    run(w, 40);
}

/// pbft.md "recovering … from forged responses": a replica far behind catches up while a
/// Byzantine peer answers its fetches with forged entries and checkpoint proofs.
#[test]
fn n4f1_recovery_ignores_forged_catch_up_responses() {
    let mut cfg = SimConfig::new(4, 22);
    cfg.fault_ms = 12_000;
    let mut w = World::new(cfg).unwrap();
    w.byzantine(1, Byzantine::Liar);
    w.crash(3, 50, 11_000, false);
    w.network(0.0, 0.0, (2, 20));
    w.submit(300, 0, 10_000);
    let o = w.run();
    assert_safe_and_live(&o);
    assert!(o.state_transfers >= 1, "{o:?}");
}

/// RBFT membership (pbft.md "Membership": a configuration transaction applied at a
/// checkpoint): a fifth node is added while clients submit. It joins from a member's snapshot,
/// and from the checkpoint on every certificate needs Q = 4 of the five (checked by the world
/// against the configurations it derives from the ledger on its own).
#[test]
fn n4f1_add_node_at_checkpoint() {
    let mut w = world(4, 30);
    w.reconfigure(1_000, vec![0, 1, 2, 3, 4]);
    w.join(4, 1_000);
    let o = run(w, 60);
    assert_eq!(o.epoch, 1, "{o:?}");
}

/// Membership: the primary of view 0 is removed. From the checkpoint on, the view's primary
/// is another member (the view number stays; the member list changed), the removed node falls
/// silent (the world checks it never signs in an epoch it is not a member of), and clients'
/// transactions keep committing.
#[test]
fn n5f1_remove_the_primary_at_checkpoint() {
    let mut w = world(5, 31);
    w.reconfigure(800, vec![1, 2, 3, 4]);
    let o = run(w, 60);
    assert_eq!(o.epoch, 1, "{o:?}");
}

/// Membership under faults: a node is added and then the Byzantine (equivocating) primary is
/// removed, with loss and duplication on the network and a backup crash in between.
#[test]
fn n7f2_add_node_then_remove_the_byzantine_primary() {
    let mut w = world(7, 32);
    w.byzantine(0, Byzantine::Equivocate);
    w.reconfigure(500, (0..8).collect());
    w.join(7, 500);
    w.reconfigure(2_500, (1..8).collect());
    w.crash(3, 1_500, 1_000, false);
    let mut w2 = w;
    w2.network(0.03, 0.03, (2, 40));
    w2.submit(60, 0, 4_000);
    let o = w2.run();
    assert_safe_and_live(&o);
    assert_eq!(o.epoch, 2, "{o:?}");
}

/// Recovery across a membership change (RBFT recovery + membership): a replica is down while
/// a node is added and many windows pass. It cannot verify the new epoch's checkpoints with
/// the members it knows, so peers send it the epoch's starting checkpoint (signed by the old
/// members); it transfers that state, learns the new members from it, and catches up.
#[test]
fn n4f1_node_down_across_a_membership_change_catches_up() {
    let mut cfg = SimConfig::new(4, 33);
    cfg.fault_ms = 12_000;
    let mut w = World::new(cfg).unwrap();
    w.crash(3, 300, 11_000, false);
    w.reconfigure(1_000, vec![0, 1, 2, 3, 4]);
    w.join(4, 1_000);
    w.network(0.0, 0.0, (2, 20));
    w.submit(400, 0, 10_000);
    let o = w.run();
    assert_safe_and_live(&o);
    assert_eq!(o.epoch, 1, "{o:?}");
    assert!(o.batches > 3 * 16, "the node must be more than a window behind: {o:?}");
    assert!(o.state_transfers >= 1, "{o:?}");
}

/// A primary crash under a backlog of 400 requests, with each batch taking `exec_ms` to
/// execute; its original primary comes back 1.5 s later.
fn backlog_with_primary_crash(seed: u64, exec_ms: u64) -> Outcome {
    let mut cfg = SimConfig::new(4, seed);
    cfg.fault_ms = 6_000;
    cfg.exec_ms = exec_ms;
    let mut w = World::new(cfg).unwrap();
    crash_when(&mut w, 0, 0, Phase::Commit, 3);
    w.network(0.0, 0.0, (2, 20));
    w.submit(400, 0, 2_000);
    let o = w.run();
    assert_safe_and_live(&o);
    o
}

/// C&L §4.5.2 (the doubled timeout): entering a view rolls speculative execution back and
/// runs the O set again; when a batch takes 1.2 s to execute, the first request of the new
/// view commits later than the 2 s request timeout. With a fixed timeout every view change
/// caused the next (47 views without a commit); doubling it per fruitless view change lets
/// the new view commit, here after at most two view changes.
#[test]
fn n4f1_slow_ledger_new_view_does_not_livelock() {
    for seed in [40, 41] {
        let o = backlog_with_primary_crash(seed, 1_200);
        assert!(o.max_view <= 3, "seed {seed}: view {}", o.max_view);
    }
}

/// C&L §4.4: links reorder, so the new primary's pre-prepares and the other backups' votes
/// can arrive before a backup has the new-view message; they are kept and replayed when it
/// enters the view. Dropped, they left gaps that only the next view change filled: one
/// primary crash cost 3 or 4 views in half of these seeds.
#[test]
fn n4f1_messages_of_a_new_view_arriving_before_it_are_kept() {
    for seed in 40..56 {
        let o = backlog_with_primary_crash(seed, 0);
        assert!(o.max_view <= 2, "seed {seed}: view {}", o.max_view);
    }
}
