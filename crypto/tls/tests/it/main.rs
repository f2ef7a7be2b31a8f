//! vpbox-tls over real sockets: handshakes in both profiles, and each kind of bad peer refused
//! during the handshake with the admission policy's reason.

// The tests play the host, which is where the clock is read.
#![allow(clippy::disallowed_methods)]

mod handshake;
mod interop;
mod pki;
mod signer_key;
mod wire;
