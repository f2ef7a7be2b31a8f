//! The driver's inbox: one bounded queue per source (each peer link, and the node's own
//! JSON-RPC handlers and signer thread), read in turn, so that no source can crowd out another.
//!
//! A full queue blocks its sender: a peer that sends faster than the driver takes its events
//! stops being read (its link's socket fills, and its own queue towards this node drops), while
//! the other peers' events still reach the driver, [`Inbox::recv`] taking at most
//! [`Inbox::TURN`] of one source's events before it moves on to the next.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vpbox_consensus::NodeId;

use crate::node::Event;

/// Where events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The node's own threads: JSON-RPC handlers, the signer thread.
    Local,
    /// One peer's authenticated link.
    Peer(NodeId),
}

struct Queue {
    source: Source,
    events: VecDeque<Event>,
    cap: usize,
    senders: usize,
}

#[derive(Default)]
struct State {
    queues: Vec<Queue>,
    next: usize,
    senders: usize,
    /// The driver dropped its end.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when an event arrives (the driver waits on it).
    arrived: Condvar,
    /// Signalled when the driver takes events (full senders wait on it).
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The driver's end.
pub struct Inbox {
    shared: Arc<Shared>,
}

/// A source's end; clones share its queue.
pub struct Outbox {
    shared: Arc<Shared>,
    source: Source,
}

/// The driver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Inbox {
    /// Most events taken from one source before the next source's turn.
    pub const TURN: usize = 256;
    /// Events a peer's queue holds.
    pub const PEER_CAP: usize = 1024;
    /// Events the local queue holds.
    pub const LOCAL_CAP: usize = 65_536;

    /// An empty inbox.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                arrived: Condvar::new(),
                taken: Condvar::new(),
            }),
        }
    }

    /// A sender for `source` (its queue is made on first use, and dropped with its last
    /// sender once empty).
    pub fn outbox(&self, source: Source) -> Outbox {
        Self::outbox_of(&self.shared, source)
    }

    fn outbox_of(shared: &Arc<Shared>, source: Source) -> Outbox {
        let mut s = shared.lock();
        s.senders += 1;
        match s.queues.iter_mut().find(|q| q.source == source) {
            Some(q) => q.senders += 1,
            None => {
                let cap = match source {
                    Source::Local => Self::LOCAL_CAP,
                    Source::Peer(_) => Self::PEER_CAP,
                };
                s.queues.push(Queue { source, events: VecDeque::new(), cap, senders: 1 });
            }
        }
        Outbox { shared: Arc::clone(shared), source }
    }

    /// Waits up to `wait` for events, then takes up to `max`, each source in turn; `Err` once
    /// every sender is gone and nothing is left.
    pub fn recv(&self, wait: Duration, max: usize) -> Result<Vec<Event>, Closed> {
        let deadline = Instant::now() + wait;
        let mut s = self.shared.lock();
        loop {
            if s.queues.iter().any(|q| !q.events.is_empty()) {
                break;
            }
            if s.senders == 0 {
                return Err(Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            s = self
                .shared
                .arrived
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let mut out = Vec::new();
        let n = s.queues.len();
        let mut idle = 0;
        while out.len() < max && idle < n {
            let i = s.next % n;
            s.next = s.next.wrapping_add(1);
            let q = &mut s.queues[i];
            let take = q.events.len().min(Self::TURN).min(max - out.len());
            if take == 0 {
                idle += 1;
                continue;
            }
            idle = 0;
            out.extend(q.events.drain(..take));
        }
        s.queues.retain(|q| q.senders > 0 || !q.events.is_empty());
        drop(s);
        self.shared.taken.notify_all();
        Ok(out)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.closed = true;
        s.queues.clear();
        drop(s);
        self.shared.taken.notify_all();
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// A sender for another source of the same inbox.
    pub fn for_source(&self, source: Source) -> Self {
        Inbox::outbox_of(&self.shared, source)
    }

    /// Queues `event`, waiting while the source's queue is full; `Err` if the driver is gone.
    pub fn send(&self, event: Event) -> Result<(), Closed> {
        let mut s = self.shared.lock();
        loop {
            if s.closed {
                return Err(Closed);
            }
            let Some(q) = s.queues.iter_mut().find(|q| q.source == self.source) else {
                return Err(Closed);
            };
            if q.events.len() < q.cap {
                q.events.push_back(event);
                drop(s);
                self.shared.arrived.notify_one();
                return Ok(());
            }
            s = self.shared.taken.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Outbox {
    /// Queues `event` unless the source's queue is full or the driver is gone (then drops
    /// it): for a wake-up the driver can do without.
    pub fn try_send(&self, event: Event) -> bool {
        self.offer(event) == Ok(true)
    }

    /// Queues `event` without waiting: `Ok(false)` (and the event dropped) when the source's
    /// queue is full, `Err` if the driver is gone. For a sender that must not block (the RPC
    /// server's event loop), which tells its client to retry instead.
    pub fn offer(&self, event: Event) -> Result<bool, Closed> {
        let mut s = self.shared.lock();
        if s.closed {
            return Err(Closed);
        }
        let Some(q) = s.queues.iter_mut().find(|q| q.source == self.source) else {
            return Err(Closed);
        };
        if q.events.len() >= q.cap {
            return Ok(false);
        }
        q.events.push_back(event);
        drop(s);
        self.shared.arrived.notify_one();
        Ok(true)
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        let mut s = self.shared.lock();
        s.senders += 1;
        if let Some(q) = s.queues.iter_mut().find(|q| q.source == self.source) {
            q.senders += 1;
        }
        Self { shared: Arc::clone(&self.shared), source: self.source }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders = s.senders.saturating_sub(1);
        if let Some(q) = s.queues.iter_mut().find(|q| q.source == self.source) {
            q.senders = q.senders.saturating_sub(1);
        }
        drop(s);
        self.shared.arrived.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event::Signed(n, None)
    }

    fn tokens(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .map(|e| match e {
                Event::Signed(n, _) => *n,
                _ => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn sources_take_turns_and_a_flood_does_not_starve_the_others() {
        let inbox = Inbox::new();
        let flood = inbox.outbox(Source::Peer(NodeId(1)));
        let honest = inbox.outbox(Source::Peer(NodeId(2)));
        for i in 0..1000 {
            flood.send(ev(i)).unwrap();
        }
        honest.send(ev(5000)).unwrap();
        // A turn of the flood, then the honest peer's event.
        let first = inbox.recv(Duration::from_secs(1), Inbox::TURN + 1).unwrap();
        assert_eq!(first.len(), Inbox::TURN + 1);
        assert_eq!(tokens(&first)[Inbox::TURN], 5000);
    }

    #[test]
    fn a_full_queue_blocks_its_sender_only() {
        let inbox = Inbox::new();
        let flood = inbox.outbox(Source::Peer(NodeId(1)));
        let local = inbox.outbox(Source::Local);
        for i in 0..Inbox::PEER_CAP as u64 {
            flood.send(ev(i)).unwrap();
        }
        let blocked = std::thread::spawn(move || flood.send(ev(99_999)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!blocked.is_finished(), "the flood waits for room");
        local.send(ev(7)).unwrap();
        let got = inbox.recv(Duration::from_secs(1), 10_000).unwrap();
        assert!(tokens(&got).contains(&7));
        blocked.join().unwrap().unwrap();
        assert_eq!(tokens(&inbox.recv(Duration::from_secs(1), 10).unwrap()), vec![99_999]);
    }

    #[test]
    fn closes_when_every_sender_is_gone() {
        let inbox = Inbox::new();
        let a = inbox.outbox(Source::Local);
        a.send(ev(1)).unwrap();
        drop(a);
        assert_eq!(inbox.recv(Duration::from_secs(1), 10).unwrap().len(), 1);
        assert!(matches!(inbox.recv(Duration::from_secs(1), 10), Err(Closed)));
        let b = inbox.outbox(Source::Local);
        assert!(inbox.recv(Duration::from_millis(10), 10).unwrap().is_empty());
        drop(inbox);
        assert_eq!(b.send(ev(2)), Err(Closed));
    }
}
