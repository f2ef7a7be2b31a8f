//! The VP node's shells: JSON-RPC 2.0 over HTTP/1.1 on a Unix socket, and the durable intake of
//! acknowledged transactions.
//!
//! - [`api`]: the read methods over the ledger (anchor_get, anchor_verify, anchor_getProof,
//!   block_*, tx_*).
//! - [`rpc`]: the JSON-RPC 2.0 envelope with bounds (body size, nesting depth, batch length)
//!   and the documented error codes; methods are a trait the node implements.
//! - [`http`]: a small HTTP/1.1 server over a Unix socket (the proxy terminates TLS in front of
//!   it): bounded heads and bodies, keep-alive, timeouts, a connection cap.
//! - [`intake`]: the durable queue: a transaction is written and fsynced before the node
//!   acknowledges it, and survives kill -9 until it is committed.

pub mod api;
pub mod http;
pub mod intake;
pub mod rpc;
