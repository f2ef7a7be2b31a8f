//! The VP node: the shell around the consensus engine, the ledger and the API.
//!
//! - [`service`]: `vpbox node run`: wires everything together; the write methods of the API.
//! - [`node`]: the driver that owns the engine and carries out its effects; [`host`]: the seams
//!   it reaches the world through (clock, transport, logs, signer), real and simulated.
//! - [`genesis`]: the consortium's founding file (identities, no addresses); [`config`]: the
//!   box's own file (its node, its sockets, its peers' addresses), `vpbox config check`.
//! - [`peer`]: the framed protocol between nodes and the links that carry it; [`link`]: the
//!   handshake that proves which node is at each end of a link; [`blocks`]: the block server
//!   that answers state transfers off the driver's thread.
//! - [`mempool`]: the transactions held for consensus and their re-gossip; [`status`]: what
//!   the node knows of its peers and its signer (`node_getNodes`); [`transfer`]: the state
//!   transfer client (blocks requested in turn, assembled from parts, checked once).
//! - [`inbox`]: the driver's inbox, one bounded queue per source, read in turn.
//! - [`client`]: a JSON-RPC client over the node's socket.
//! - [`api`]: the read methods over the ledger (anchor_get, anchor_verify, anchor_getProof,
//!   block_*, tx_*).
//! - [`rpc`]: the JSON-RPC 2.0 envelope with bounds (body size, nesting depth, batch length)
//!   and the documented error codes; methods are a trait the node implements.
//! - [`http`]: a small HTTP/1.1 server over a Unix socket (the proxy terminates TLS in front of
//!   it): bounded heads and bodies, keep-alive, timeouts, a connection cap.
//! - [`intake`] over [`log`]: the durable queue: a transaction is written and fsynced before the
//!   node acknowledges it, and survives kill -9 until it is committed.

pub mod api;
pub mod blocks;
pub mod client;
pub mod config;
pub use vpbox_proof::genesis;
pub mod host;
pub mod http;
pub mod inbox;
pub mod intake;
pub mod link;
pub mod log;
pub mod mempool;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod rpc;
pub mod service;
pub mod status;
pub mod transfer;
pub mod verified;
