//! vpbox-sm against independent implementations: libsm (a second Rust implementation) and the
//! `openssl` command (OpenSSL 3). All three must agree on every hash, key and signature.

mod fast_verify;
mod libsm_crosscheck;
mod openssl_interop;
mod properties;
