//! The application a simulated replica executes batches on: a deterministic ledger whose state
//! digest chains every executed transaction, with at-most-once execution.

use std::collections::{HashMap, HashSet};

use vpbox_consensus::{Batch, Config, Digest, SeqNo};

/// Configuration transactions: digest → the member identities it names.
pub type ConfigTxs = HashMap<Digest, Vec<usize>>;

/// One executed batch.
#[derive(Clone, Debug)]
pub struct Executed {
    /// The batch's transactions.
    pub batch: Batch,
    /// Transactions that actually executed (first occurrence in the chain).
    pub fresh: Vec<Digest>,
    /// State digest after it.
    pub state: Digest,
}

/// A replica's application: committed blocks (durable) and speculative ones (lost on crash).
#[derive(Clone, Debug)]
pub struct App {
    genesis: Digest,
    chain: Vec<Executed>,
    committed: usize,
    seen: HashSet<Digest>,
    /// Configurations the engine reported (`Effect::Reconfigured`), kept with the committed
    /// state: (height when reported, configuration), the last report of an epoch standing.
    configs: Vec<(SeqNo, Config)>,
}

impl App {
    /// An empty ledger.
    pub fn new(genesis: Digest) -> Self {
        Self { genesis, chain: Vec::new(), committed: 0, seen: HashSet::new(), configs: vec![] }
    }

    /// The state digest after executing a batch on `prev`.
    pub fn next_state(prev: &Digest, seq: SeqNo, fresh: &[Digest]) -> Digest {
        let mut h = vpbox_sm::sm3::Sm3::new();
        h.update(b"sim-state");
        h.update(prev.0);
        h.update(seq.0.to_be_bytes());
        for t in fresh {
            h.update(t.0);
        }
        Digest(h.finalize().0)
    }

    /// Height executed (speculative included).
    pub fn executed(&self) -> SeqNo {
        SeqNo(self.chain.len() as u64)
    }

    /// Height committed.
    pub fn committed(&self) -> SeqNo {
        SeqNo(self.committed as u64)
    }

    /// State digest at `seq` (genesis at 0), if executed.
    pub fn state_at(&self, seq: SeqNo) -> Option<Digest> {
        if seq.0 == 0 {
            return Some(self.genesis);
        }
        self.chain.get(seq.0 as usize - 1).map(|e| e.state)
    }

    /// The committed entries.
    pub fn committed_chain(&self) -> &[Executed] {
        &self.chain[..self.committed]
    }

    /// Whether `tx` executed in the committed chain.
    pub fn committed_tx(&self, tx: &Digest) -> bool {
        self.seen.contains(tx) && self.chain[self.committed..].iter().all(|e| !e.fresh.contains(tx))
    }

    /// Records a configuration the engine reported at the committed height.
    pub fn record_config(&mut self, config: Config) {
        if self.configs.last().is_some_and(|(_, c)| c.epoch() == config.epoch()) {
            self.configs.pop();
        }
        self.configs.push((self.committed(), config));
    }

    /// The recorded configurations, oldest first (for `Input::Restore`).
    pub fn configs(&self) -> Vec<Config> {
        self.configs.iter().map(|(_, c)| c.clone()).collect()
    }

    /// The member list named by the last fresh configuration transaction of the block at
    /// `seq`, if any.
    pub fn members_named(&self, seq: SeqNo, config_txs: &ConfigTxs) -> Option<Vec<usize>> {
        let e = self.chain.get((seq.0 as usize).checked_sub(1)?)?;
        e.fresh.iter().rev().find_map(|t| config_txs.get(t).cloned())
    }

    /// Executes `batch` at `seq`, which must be the next height.
    pub fn execute(&mut self, seq: SeqNo, batch: &Batch) -> Result<Digest, String> {
        if seq.0 != self.chain.len() as u64 + 1 {
            return Err(format!("execution gap: asked {seq:?} at height {}", self.chain.len()));
        }
        let mut fresh = Vec::new();
        for t in &batch.txs {
            if self.seen.insert(*t) {
                fresh.push(*t);
            }
        }
        let prev = self.state_at(SeqNo(seq.0 - 1)).unwrap_or(self.genesis);
        let state = Self::next_state(&prev, seq, &fresh);
        self.chain.push(Executed { batch: batch.clone(), fresh, state });
        Ok(state)
    }

    /// Drops speculative execution above `to`.
    pub fn rollback(&mut self, to: SeqNo) -> Result<(), String> {
        let to = to.0 as usize;
        if to < self.committed {
            return Err(format!("rollback to {to} below committed {}", self.committed));
        }
        while self.chain.len() > to {
            if let Some(e) = self.chain.pop() {
                for t in &e.fresh {
                    self.seen.remove(t);
                }
            }
        }
        Ok(())
    }

    /// Marks `seq` committed; it must be the next height and executed with this batch/result.
    pub fn commit(&mut self, seq: SeqNo, batch: &Batch, result: &Digest) -> Result<(), String> {
        if seq.0 != self.committed as u64 + 1 {
            return Err(format!("commit gap: {seq:?} after {}", self.committed));
        }
        match self.chain.get(self.committed) {
            Some(e) if e.batch == *batch && e.state == *result => {
                self.committed += 1;
                Ok(())
            }
            _ => Err(format!("commit of {seq:?} without matching execution")),
        }
    }

    /// Crash: speculative state is lost.
    pub fn crash(&mut self) {
        let _ = self.rollback(self.committed());
    }

    /// State transfer: take `source`'s committed prefix up to `seq`. Returns the transactions
    /// that became committed here.
    pub fn transfer_from(&mut self, source: &Self, seq: SeqNo) -> Vec<Digest> {
        let n = seq.0 as usize;
        let _ = self.rollback(self.committed());
        let mut txs = Vec::new();
        for e in &source.chain[self.committed.min(n)..n] {
            txs.extend(e.batch.txs.iter().copied());
        }
        self.chain = source.chain[..n].to_vec();
        self.committed = n;
        self.configs = source.configs.iter().filter(|(s, _)| s.0 as usize <= n).cloned().collect();
        self.seen = self.chain.iter().flat_map(|e| e.fresh.iter().copied()).collect();
        txs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_execute_once_and_rollback_forgets_them() {
        let mut a = App::new(Digest::default());
        let t = Digest([1; 32]);
        let b = Batch { txs: vec![t, t] };
        let s1 = a.execute(SeqNo(1), &b).unwrap();
        assert_eq!(a.chain[0].fresh, vec![t]);
        a.execute(SeqNo(2), &b).unwrap();
        assert!(a.chain[1].fresh.is_empty());
        a.rollback(SeqNo(0)).unwrap();
        assert_eq!(a.execute(SeqNo(1), &b).unwrap(), s1);
        a.commit(SeqNo(1), &b, &s1).unwrap();
        assert!(a.rollback(SeqNo(0)).is_err());
        assert!(a.execute(SeqNo(3), &b).is_err());
    }
}
