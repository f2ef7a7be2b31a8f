//! The proxy's policy: who may call which JSON-RPC method, what a request body costs,
//! per-client rate limits, connection caps and limits (sans-IO).
//!
//! `vpbox proxy` is the box's only process with a network: it carries the node's peer links to
//! the other boxes over mutual TLS, and (to come) terminates mutual TLS for POSP and admin
//! clients and forwards their JSON-RPC (HTTP/1.1 `POST`) to the node's Unix socket.
//!
//! The cores are sans-IO: no sockets, no files, no clock (time is the caller's, an argument of
//! every call that needs it):
//! - [`p2p`]: which TLS peer is a current member, and whether its link claims to be it;
//! - [`trust`]: the ledger's governance state turned into a trust store and a membership;
//! - the API policy below.
//!
//! [`net`] is the thin tokio shell that carries their decisions out (`vpbox proxy run`): the
//! P2P listener, the egress sockets, the trust wait, the API listener and the admin listener
//! (`/metrics` and `/health`, rendered by [`metrics`]).
//!
//! The API policy (its listener comes next):
//!
//! - [`Role`] and [`Method`]: a client's role is its admitted certificate's profile; a POSP
//!   may anchor and read, an admin may call everything, any other certificate nothing.
//! - [`classify`]: a request body read without trusting it, bounded in memory and time — a
//!   single request or a batch of 1 to [`BATCH_MAX`], nesting at most [`DEPTH_MAX`], each
//!   request's id, [`Method`] and cost (1, or the pairs of an `anchor_putBatch`).
//! - [`RateLimiter`]: a token bucket per client identity, at most
//!   [`RateConfig::clients_max`] tracked (least recently seen forgotten first); a refusal says
//!   when to retry.
//! - [`Connections`]: caps per listener and per client identity.
//! - [`Gate`]: the steps above for one body, with the answer to send when it is refused.
//! - [`Limits`]: sizes, deadlines, caps and rates with their defaults: the `[proxy]` table of
//!   the box's configuration.
//!
//! # Error codes
//! The proxy answers with the node's codes where the fault is the same (-32700 not JSON,
//! -32600 invalid request, -32601 no such method, -32005 too large; see [`code`]) and adds two
//! of its own:
//!
//! | code | HTTP | meaning | `data` |
//! |---|---|---|---|
//! | -32007 | 403 | the method is not allowed for the client's role (or its certificate has no API role); nothing in the body was run | `{"role", "method", "at"}` (or `{"profile"}`) |
//! | -32008 | 429 | rate limited: the client's bucket does not hold the body's cost; retry after `Retry-After` seconds | `{"retryAfterMs"}` |
//!
//! A body whose cost exceeds the whole bucket ([`RateConfig::burst`]) is -32005 with HTTP 413
//! and `data` `{"cost", "burst"}`: waiting never cures it, splitting does.

// House style: no unwrap/expect/panic in the core outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod admin;
pub mod alarms;
mod api;
pub mod bench;
mod conn;
mod envelope;
mod error;
mod gate;
mod limits;
pub mod metrics;
pub mod net;
pub mod p2p;
mod pending;
mod rate;
pub mod refusals;
pub mod status_page;
pub mod trust;
mod upstream;

pub use conn::{ConnectionCaps, ConnectionRefusal, Connections, Slot, Ticket};
pub use envelope::{BATCH_MAX, DEPTH_MAX, Envelope, Request, classify};
pub use error::Error;
pub use gate::{Gate, Refusal, Verdict};
pub use limits::Limits;
pub use pending::Handshakes;
pub use rate::{RateConfig, RateLimiter, RateRefusal};
pub use refusals::Refusals;
pub use vpbox_api::{Method, Role};

/// The JSON-RPC error codes the proxy answers with.
pub mod code {
    /// -32700: the body is not JSON (as the node).
    pub const PARSE: i64 = -32700;
    /// -32600: not a valid request, too deep, or a batch empty or too long (as the node).
    pub const INVALID_REQUEST: i64 = -32600;
    /// -32601: no such method (as the node).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// -32005: too large: a body above the body limit, or costing more than a client's whole
    /// bucket (as the node's code for a body it will not take).
    pub const TOO_LARGE: i64 = -32005;
    /// -32007: the method is not allowed for the client's role, or its certificate has no API
    /// role. The proxy's own code.
    pub const NOT_ALLOWED: i64 = -32007;
    /// -32008: rate limited; retry after the answer's `Retry-After` (seconds) or
    /// `data.retryAfterMs`. The proxy's own code.
    pub const RATE_LIMITED: i64 = -32008;
}
