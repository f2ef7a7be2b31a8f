//! Connection caps of one listener: how many connections it holds, and how many of them one
//! client identity holds. Pure accounting; the host opens and closes the sockets.
//!
//! A connection is counted in two steps, because its identity is known only after the TLS
//! handshake: [`Connections::open`] when it is accepted (a [`Slot`] against the listener's cap,
//! so connections that never finish a handshake are capped too), then [`Connections::admit`]
//! with the identity its certificate was admitted as (a [`Ticket`] against that client's cap).
//! Each step's refusal means the host closes the connection. A slot or ticket is given back,
//! by value, when the connection closes: neither can be copied, so none is given back twice.
//! They belong to the [`Connections`] that gave them; one given to another miscounts it.
//!
//! Memory: a client is tracked only while it holds a connection, so at most
//! [`ConnectionCaps::listener_max`] clients are.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;

use serde::Deserialize;

/// The caps: a `[proxy.connections]` table of the box's configuration. Each listener (POSP
/// API, admin) has its own [`Connections`] under these caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionCaps {
    /// Connections one listener holds at once, handshakes included. Default 1,024 (the node
    /// itself takes at most 2,048 on its socket).
    pub listener_max: NonZeroU32,
    /// Connections one client identity holds at once on one listener. Default 64.
    pub client_max: NonZeroU32,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        Self {
            listener_max: NonZeroU32::MIN.saturating_add(1_023),
            client_max: NonZeroU32::MIN.saturating_add(63),
        }
    }
}

/// Why a connection was refused: the host closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionRefusal {
    /// The listener holds its cap.
    #[error("the listener holds its {max} connections")]
    ListenerFull {
        /// The cap.
        max: u32,
    },
    /// The client holds its cap.
    #[error("the client holds its {max} connections")]
    ClientFull {
        /// The cap.
        max: u32,
    },
}

/// A connection counted against its listener, its client not known yet.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a slot is given back with Connections::close or Connections::admit"]
pub struct Slot(());

/// A connection counted against its listener and its client.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket is given back with Connections::close_admitted"]
pub struct Ticket<K> {
    client: K,
}

impl<K> Ticket<K> {
    /// The client it counts against.
    pub fn client(&self) -> &K {
        &self.client
    }
}

/// One listener's connections.
#[derive(Debug, Clone)]
pub struct Connections<K> {
    caps: ConnectionCaps,
    open: u32,
    clients: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> Connections<K> {
    /// None open.
    pub fn new(caps: ConnectionCaps) -> Self {
        Self { caps, open: 0, clients: HashMap::new() }
    }

    /// A connection accepted: counted if the listener has room.
    pub fn open(&mut self) -> Result<Slot, ConnectionRefusal> {
        let max = self.caps.listener_max.get();
        if self.open >= max {
            return Err(ConnectionRefusal::ListenerFull { max });
        }
        self.open += 1;
        Ok(Slot(()))
    }

    /// The connection of `slot` was admitted as `client`: counted against it if it has room.
    /// Refused, the slot is given back (the host closes the connection).
    pub fn admit(&mut self, slot: Slot, client: K) -> Result<Ticket<K>, ConnectionRefusal> {
        let max = self.caps.client_max.get();
        let held = self.clients.get(&client).copied().unwrap_or(0);
        if held >= max {
            self.close(slot);
            return Err(ConnectionRefusal::ClientFull { max });
        }
        self.clients.insert(client.clone(), held + 1);
        Ok(Ticket { client })
    }

    /// A connection closed before it was admitted.
    pub fn close(&mut self, slot: Slot) {
        let Slot(()) = slot;
        self.open = self.open.saturating_sub(1);
    }

    /// An admitted connection closed.
    pub fn close_admitted(&mut self, ticket: Ticket<K>) {
        if let Some(held) = self.clients.get_mut(&ticket.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.clients.remove(&ticket.client);
            }
        }
        self.open = self.open.saturating_sub(1);
    }

    /// Connections held, admitted or not.
    pub fn open_count(&self) -> u32 {
        self.open
    }

    /// Connections `client` holds.
    pub fn client_count(&self, client: &K) -> u32 {
        self.clients.get(client).copied().unwrap_or(0)
    }

    /// Clients holding at least one connection.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(listener_max: u32, client_max: u32) -> ConnectionCaps {
        ConnectionCaps {
            listener_max: NonZeroU32::new(listener_max).unwrap(),
            client_max: NonZeroU32::new(client_max).unwrap(),
        }
    }

    #[test]
    fn the_listener_cap_counts_handshakes_and_frees_on_close() {
        let mut c = Connections::<&str>::new(caps(2, 2));
        let a = c.open().unwrap();
        let b = c.open().unwrap();
        assert_eq!(c.open(), Err(ConnectionRefusal::ListenerFull { max: 2 }));
        c.close(a);
        let a = c.open().unwrap();
        let ta = c.admit(a, "posp-1").unwrap();
        assert_eq!(
            c.open(),
            Err(ConnectionRefusal::ListenerFull { max: 2 }),
            "admitted still count"
        );
        c.close_admitted(ta);
        assert_eq!(c.open_count(), 1);
        c.close(b);
        assert_eq!((c.open_count(), c.clients()), (0, 0));
    }

    #[test]
    fn the_client_cap_is_per_identity_and_a_refusal_frees_the_slot() {
        let mut c = Connections::new(caps(10, 2));
        let t1 = admit(&mut c, "a").unwrap();
        let t2 = admit(&mut c, "a").unwrap();
        let slot = c.open().unwrap();
        assert_eq!(c.open_count(), 3);
        assert_eq!(c.admit(slot, "a"), Err(ConnectionRefusal::ClientFull { max: 2 }));
        assert_eq!(c.open_count(), 2, "the refused connection's slot is given back");
        let tb = admit(&mut c, "b").unwrap();
        assert_eq!((c.client_count(&"a"), c.client_count(&"b")), (2, 1));
        assert_eq!(t1.client(), &"a");
        c.close_admitted(t1);
        let t3 = admit(&mut c, "a").unwrap();
        for t in [t2, t3, tb] {
            c.close_admitted(t);
        }
        assert_eq!((c.open_count(), c.clients(), c.client_count(&"a")), (0, 0, 0));
    }

    fn admit<K: Hash + Eq + Clone>(
        c: &mut Connections<K>,
        client: K,
    ) -> Result<Ticket<K>, ConnectionRefusal> {
        let slot = c.open()?;
        c.admit(slot, client)
    }

    #[test]
    fn clients_are_tracked_only_while_connected() {
        let mut c = Connections::new(caps(1000, 1));
        let tickets: Vec<_> = (0..1000u32).map(|i| admit(&mut c, i).unwrap()).collect();
        assert_eq!(c.clients(), 1000);
        assert_eq!(c.open(), Err(ConnectionRefusal::ListenerFull { max: 1000 }));
        for t in tickets {
            c.close_admitted(t);
        }
        assert_eq!((c.clients(), c.open_count()), (0, 0));
    }
}
