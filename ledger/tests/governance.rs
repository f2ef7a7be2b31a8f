//! Governance on the ledger: configuration transactions approved by admins of more than two
//! thirds of the member banks change the roots and the nodes, alike at every node, and
//! everything else is refused.

mod common;

use common::{der, key, now, outcomes, put, tx};
use vpbox_ca::cert::{Grant, check_request, issue, random_serial, self_signed_root};
use vpbox_ca::{CertProfile, build_csr};
use vpbox_ledger::block::Block;
use vpbox_ledger::contract::PutOutcome::*;
use vpbox_ledger::governance::{Change, ConfigTx, NodeSpec, Proposal, State};
use vpbox_ledger::tx::{Payload, Tx};
use vpbox_ledger::{Executed, Ledger};
use vpbox_sm::sm3::{Digest, hash};
use vpbox_sm::{Signer, SoftwareSigner};

const CHAIN: Digest = Digest([7; 32]);

/// A bank: its CA, an enrolled admin and a POSP.
struct Bank {
    name: String,
    ca: SoftwareSigner,
    root: String,
    admin: SoftwareSigner,
    posp: SoftwareSigner,
}

impl Bank {
    fn new(name: &str, serial: u8) -> Self {
        let ca = key();
        let root =
            self_signed_root(&ca, name, "CN", random_serial([serial; 16]).unwrap(), now(), 3650)
                .unwrap();
        Self { name: name.into(), ca, root, admin: key(), posp: key() }
    }

    fn root_der(&self) -> Vec<u8> {
        der(&self.root)
    }

    fn issue(&self, who: &SoftwareSigner, cn: &str, profile: CertProfile, serial: u8) -> Vec<u8> {
        let subject = format!("CN={cn},OU={},O={}", profile.name(), self.name);
        let csr = build_csr(who, &subject).unwrap();
        let req = check_request(&csr, profile, &self.name).unwrap();
        let dns_names =
            if profile == CertProfile::VpNode { vec![format!("{cn}.x")] } else { vec![] };
        let grant = Grant {
            profile,
            serial: random_serial([serial; 16]).unwrap(),
            now: now(),
            days: 365,
            dns_names,
        };
        der(&issue(&self.ca, &self.root, &req, grant).unwrap())
    }

    /// The enrollments of the admin and the POSP.
    fn enrollments(&self) -> Vec<Tx> {
        vec![
            tx(
                &self.admin,
                1,
                Payload::Enroll(self.issue(&self.admin, "admin", CertProfile::Admin, 20)),
            ),
            tx(
                &self.posp,
                1,
                Payload::Enroll(self.issue(&self.posp, "posp", CertProfile::Posp, 21)),
            ),
        ]
    }

    fn node(&self, id: u32, name: &str, serial: u8) -> (SoftwareSigner, NodeSpec) {
        let k = key();
        let certificate = self.issue(&k, name, CertProfile::VpNode, serial);
        let spec = NodeSpec {
            id,
            bank: self.name.clone(),
            name: name.into(),
            consensus_key: k.public_key().to_sec1_uncompressed(),
            certificate,
        };
        (k, spec)
    }
}

/// A configuration transaction of `changes` at governance `seq`, approved by `approvers`'
/// admins and submitted by the first.
fn config(seq: u64, changes: Vec<Change>, approvers: &[&Bank], nonce: u64) -> Tx {
    let p = Proposal { chain: CHAIN, seq, changes };
    let approvals = approvers.iter().map(|b| p.approve(&b.admin).unwrap()).collect();
    let c = ConfigTx { proposal: p.encode(), approvals };
    tx(&approvers[0].admin, nonce, Payload::Config(c.encode()))
}

/// Four founding banks, each with one founding node.
struct Consortium {
    banks: Vec<Bank>,
    genesis: State,
}

fn consortium() -> Consortium {
    let banks: Vec<Bank> = ["bank-a", "bank-b", "bank-c", "bank-d"]
        .iter()
        .zip(1..)
        .map(|(n, s)| Bank::new(n, s))
        .collect();
    let nodes = banks
        .iter()
        .zip(1..)
        .map(|(b, i)| b.node(i, &format!("node{i}"), 30 + i as u8).1)
        .collect();
    let genesis = State {
        chain: CHAIN,
        seq: 0,
        roots: banks.iter().map(Bank::root_der).collect(),
        nodes,
        max_node_id: 4,
    };
    Consortium { banks, genesis }
}

fn ledger(dir: &tempfile::TempDir, genesis: &State) -> Ledger {
    let mut l = Ledger::open(dir.path()).unwrap();
    l.set_governance(genesis.clone()).unwrap();
    l.init_genesis(&Block::genesis(CHAIN, 0)).unwrap();
    l
}

fn run(l: &mut Ledger, txs: Vec<Tx>) -> Executed {
    let e = l.execute(&[], txs).unwrap();
    l.commit(&e, b"cert").unwrap();
    e
}

#[test]
fn a_new_bank_needs_more_than_two_thirds_of_the_banks_and_then_its_members_are_admitted() {
    let c = consortium();
    let [a, b, cc, d] = [&c.banks[0], &c.banks[1], &c.banks[2], &c.banks[3]];
    let e_bank = Bank::new("bank-e", 9);
    let add_e = || vec![Change::AddRoot(e_bank.root_der())];
    // The blocks, made once (signatures are randomized) and run on two ledgers.
    let founders: Vec<Tx> = c.banks.iter().flat_map(Bank::enrollments).collect();
    // Bank E is not a member yet: its POSP cannot enroll.
    let too_early = e_bank.enrollments();
    let no_admin = ConfigTx {
        proposal: Proposal { chain: CHAIN, seq: 0, changes: add_e() }.encode(),
        approvals: vec![],
    };
    // A forged approval (another key claiming D's admin) refuses the whole transaction.
    let p = Proposal { chain: CHAIN, seq: 0, changes: add_e() };
    let mut forged = p.approve(&key()).unwrap();
    forged.admin = d.admin.public_key().fingerprint();
    let mut approvals: Vec<_> = [a, b, cc].iter().map(|x| p.approve(&x.admin).unwrap()).collect();
    approvals.push(forged);
    let refused = vec![
        config(0, add_e(), &[a, b], 2),     // 2 of 4: not more than 2/3
        config(0, add_e(), &[a, a, b], 3),  // a bank counts once
        config(1, add_e(), &[a, b, cc], 4), // written for another state
        tx(&a.posp, 2, Payload::Config(no_admin.encode())), // a POSP is no admin
        tx(&a.admin, 5, Payload::Config(ConfigTx { proposal: p.encode(), approvals }.encode())),
    ];
    // Three of four approve: bank E is a member from the next transaction on, in the same
    // block (a refused transaction is never executed again: the POSP enrolls anew).
    let cert = e_bank.issue(&e_bank.posp, "posp", CertProfile::Posp, 22);
    let accepted = vec![
        config(0, add_e(), &[a, b, cc], 6),
        tx(&e_bank.posp, 2, Payload::Enroll(cert)),
        put(&e_bank.posp, 3, 9),
    ];
    let replay = vec![config(0, add_e(), &[a, b, cc], 7)];

    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut tips = Vec::new();
    for dir in [&d1, &d2] {
        let mut l = ledger(dir, &c.genesis);
        assert!(outcomes(&run(&mut l, founders.clone())).iter().all(|o| o == &vec![Success]));
        assert_eq!(outcomes(&run(&mut l, too_early.clone())), vec![vec![NotAdmitted]; 2]);
        for t in &refused {
            assert!(l.check_config(t).is_err());
        }
        assert!(l.check_config(&refused[0]).unwrap_err().contains("2 of 4"));
        assert!(l.check_config(&refused[3]).unwrap_err().contains("not admitted as an admin"));
        assert!(l.check_config(&refused[4]).unwrap_err().contains("does not verify"));
        let e = run(&mut l, refused.clone());
        assert_eq!(outcomes(&e), vec![vec![ConfigRefused]; 5]);
        assert!(e.governance.is_none());
        assert_eq!(l.governance().unwrap().seq, 0);
        assert_eq!(e.block.header.gov_seq, 0, "refused changes are not counted");
        assert_eq!(l.trust_changes().count(), 0, "refused changes change no trust state");

        let done = run(&mut l, accepted.clone());
        assert_eq!(l.trust_changes().count(), 1, "a new bank's root changes the trust state");
        assert_eq!(outcomes(&done), vec![vec![Success], vec![Success], vec![Success]]);
        let state = done.governance.clone().unwrap();
        assert_eq!(state.seq, 1);
        assert_eq!(done.block.header.gov_seq, 1, "the header counts the applied change");
        assert!(state.banks().contains("bank-e"));
        assert!(done.node_change(&c.genesis).is_none(), "no node changed");
        assert_eq!(outcomes(&run(&mut l, replay.clone())), vec![vec![ConfigRefused]]);
        tips.push(l.tip().unwrap().hash());
    }
    assert_eq!(tips[0], tips[1], "both nodes built the same chain");

    // The state survives a restart: the stored state wins over the genesis one.
    let mut l = Ledger::open(d1.path()).unwrap();
    l.set_governance(c.genesis.clone()).unwrap();
    assert_eq!(l.governance().unwrap().seq, 1);
    let e = l.execute(&[], vec![put(&e_bank.posp, 4, 10)]).unwrap();
    assert_eq!(outcomes(&e), vec![vec![Success]]);
}

#[test]
fn nodes_are_added_and_removed_by_certificate_and_never_below_four() {
    let c = consortium();
    let [a, b, cc, _] = [&c.banks[0], &c.banks[1], &c.banks[2], &c.banks[3]];
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir, &c.genesis);
    run(&mut l, c.banks.iter().flat_map(Bank::enrollments).collect());
    let q = [a, b, cc];

    let (_, node5) = a.node(5, "node5", 50);
    let mut wrong_key = node5.clone();
    wrong_key.consensus_key = key().public_key().to_sec1_uncompressed();
    let mut reused_id = node5.clone();
    reused_id.id = 3;
    let mut foreign = node5.clone();
    foreign.bank = "bank-b".into(); // certified by bank A
    let mut posp_cert = node5.clone();
    posp_cert.certificate = a.issue(&key(), "node5", CertProfile::Posp, 51);
    let e = run(
        &mut l,
        vec![
            config(0, vec![Change::AddNode(wrong_key)], &q, 2),
            config(0, vec![Change::AddNode(reused_id)], &q, 3),
            config(0, vec![Change::AddNode(foreign)], &q, 4),
            config(0, vec![Change::AddNode(posp_cert)], &q, 5),
            config(0, vec![Change::RemoveNode(1)], &q, 6), // 3 would remain
            config(0, vec![Change::RemoveBank("bank-d".into())], &q, 7), // node 4 is bank D's
        ],
    );
    assert_eq!(outcomes(&e), vec![vec![ConfigRefused]; 6]);
    for t in &e.txs {
        let why = l.check_config(t).unwrap_err();
        assert!(!why.is_empty());
    }
    assert!(l.check_config(&e.txs[4]).unwrap_err().contains("at least 4"));
    assert!(l.check_config(&e.txs[0]).unwrap_err().contains("another key"));

    // Add node 5, then remove node 1 and bank D's node and bank D in one proposal.
    let add = config(0, vec![Change::AddNode(node5)], &q, 8);
    assert_eq!(l.check_config(&add).unwrap().nodes.len(), 5);
    let e = run(&mut l, vec![add]);
    assert_eq!(outcomes(&e), vec![vec![Success]]);
    let members = e.node_change(&c.genesis).unwrap();
    assert_eq!(members.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let (_, node6) = b.node(6, "node6", 60);
    let e = run(
        &mut l,
        vec![config(
            1,
            vec![
                Change::RemoveNode(1),
                Change::RemoveNode(4),
                Change::RemoveBank("bank-d".into()),
                Change::AddNode(node6),
            ],
            &q,
            9,
        )],
    );
    assert_eq!(outcomes(&e), vec![vec![Success]]);
    let state = l.governance().unwrap().clone();
    assert_eq!(state.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![2, 3, 5, 6]);
    assert!(!state.banks().contains("bank-d"));
    let changes = l.node_changes().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].0 + 1, changes[1].0);
    assert_eq!(changes[1].1.iter().map(|m| m.0).collect::<Vec<_>>(), vec![2, 3, 5, 6]);

    // Bank D is gone: its POSP's anchors are refused, and with three banks left two of them
    // are not enough for the next change, all three are.
    let d = &c.banks[3];
    let e = run(&mut l, vec![put(&d.posp, 2, 1), put(&a.posp, 2, 2)]);
    assert_eq!(outcomes(&e), vec![vec![NotAdmitted], vec![Success]]);
    let root_c = hash(cc.root_der());
    let two = config(2, vec![Change::RemoveRoot(root_c)], &[a, b], 10);
    assert!(l.check_config(&two).unwrap_err().contains("2 of 3"));
    // Removing bank C's only root would leave node 3 without its bank.
    let three = config(2, vec![Change::RemoveRoot(root_c)], &q, 11);
    assert!(l.check_config(&three).unwrap_err().contains("would not be a member"));
}

/// A block executed on top of a change of roots not yet committed (a speculative block of the
/// consensus pipeline) is judged by the new roots, as it is once that change is committed:
/// every node computes the same block whenever it commits the blocks below.
#[test]
fn a_block_above_a_change_of_roots_is_judged_by_the_new_roots_committed_or_not() {
    let c = consortium();
    let [a, b, cc] = [&c.banks[0], &c.banks[1], &c.banks[2]];
    let e_bank = Bank::new("bank-e", 9);
    let founders: Vec<Tx> = c.banks.iter().flat_map(Bank::enrollments).collect();
    let change = vec![config(0, vec![Change::AddRoot(e_bank.root_der())], &[a, b, cc], 6)];
    let cert = e_bank.issue(&e_bank.posp, "posp", CertProfile::Posp, 22);
    let above = vec![tx(&e_bank.posp, 2, Payload::Enroll(cert)), put(&e_bank.posp, 3, 9)];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // The change committed, then the block above it executed.
    let mut l = ledger(&d1, &c.genesis);
    run(&mut l, founders.clone());
    run(&mut l, change.clone());
    let want = l.execute(&[], above.clone()).unwrap();
    assert_eq!(outcomes(&want), vec![vec![Success], vec![Success]], "bank E is a member");

    // Executed on top of the change before it is committed.
    let mut l = ledger(&d2, &c.genesis);
    run(&mut l, founders);
    let changed = l.execute(&[], change).unwrap();
    assert!(changed.governance.is_some());
    let ahead = l.execute(std::slice::from_ref(&changed), above).unwrap();
    assert_eq!(ahead.block.header, want.block.header);
    assert_eq!(outcomes(&ahead), outcomes(&want));
    // And committed in turn, each on the last.
    l.commit(&changed, b"cert").unwrap();
    l.commit(&ahead, b"cert").unwrap();
    assert_eq!(l.tip().unwrap().hash(), want.block.header.hash());
}
