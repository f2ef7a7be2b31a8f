//! Connections in their TLS handshake on one listener, oldest first, at most a fixed number:
//! one more evicts the oldest. Pure accounting; the host cancels the evicted handshake.
//!
//! Why evict rather than refuse: a stranger who opens connections and never finishes a
//! handshake (idle sockets, a byte-a-second ClientHello) would otherwise hold every slot for
//! the handshake deadline and keep honest clients out. With eviction an honest client, whose
//! handshake takes a few milliseconds, is cut only if more than the cap of new connections
//! arrive during it, while each hostile connection lives only until the cap's worth of newer
//! ones push it out. (The per-source cap and the box's firewall bound the rest.)

use std::collections::VecDeque;

/// The handshakes in progress.
#[derive(Debug)]
pub struct Handshakes {
    max: usize,
    queue: VecDeque<u64>,
    next: u64,
}

impl Handshakes {
    /// At most `max` (at least one) at once.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), queue: VecDeque::new(), next: 0 }
    }

    /// A new handshake: its id, and the id of the oldest, evicted to make room, if the cap
    /// was reached.
    pub fn begin(&mut self) -> (u64, Option<u64>) {
        let evicted = if self.queue.len() >= self.max { self.queue.pop_front() } else { None };
        let id = self.next;
        self.next += 1;
        self.queue.push_back(id);
        (id, evicted)
    }

    /// Handshake `id` ended (done, failed or evicted): forgotten. Ending one twice, or one
    /// already evicted, does nothing.
    pub fn end(&mut self, id: u64) {
        if let Some(i) = self.queue.iter().position(|x| *x == id) {
            self.queue.remove(i);
        }
    }

    /// How many are in progress.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_is_evicted_and_ended_ones_free_room() {
        let mut h = Handshakes::new(3);
        let ids: Vec<u64> = (0..3)
            .map(|_| h.begin())
            .map(|(id, ev)| {
                assert_eq!(ev, None);
                id
            })
            .collect();
        let (d, evicted) = h.begin();
        assert_eq!(evicted, Some(ids[0]), "the oldest goes");
        h.end(ids[0]); // the evicted one's own end changes nothing
        assert_eq!(h.len(), 3);
        h.end(ids[2]); // a handshake in the middle finishes
        let (_, evicted) = h.begin();
        assert_eq!(evicted, None, "room was freed");
        let (_, evicted) = h.begin();
        assert_eq!(evicted, Some(ids[1]));
        h.end(d);
        h.end(d);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut h = Handshakes::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (id, _) = h.begin();
            assert!(seen.insert(id));
        }
        assert_eq!(h.len(), 1);
        assert!(!h.is_empty());
    }
}
