//! The node's JSON-RPC surface as both sides of the box's API share it:
//! - [`Method`]: the node's methods (`docs/openrpc.json`);
//! - [`Role`]: a client's role on the API (its certificate's profile) and what it may call;
//! - [`Client`]: the identity the proxy admitted, carried to the node with each forwarded
//!   request in the [`HEADER`] header;
//! - [`metrics::Histogram`]: the commit latency histogram of `node_getNodes.metrics`.
//!
//! The proxy judges every request with these before it forwards it; the node judges it again
//! (a request that reached it through the proxy carries the client's role), and believes the
//! header only on a connection from the proxy's user (`SO_PEERCRED`).

// House style: no unwrap/expect/panic outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod client;
pub mod metrics;
mod role;

pub use client::{BadClient, Client, HEADER, HEADER_MAX};
pub use role::{Method, Role};
