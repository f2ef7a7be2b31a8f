//! The client identity header as the node reads it from the proxy's connection: parsing never
//! panics, and what parses is canonical (its own encoding gives back the same bytes, so one
//! identity has exactly one header and no field can be smuggled in another's).
#![no_main]
use vpbox_api::Client;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(client) = Client::parse(data) {
        assert_eq!(client.header_value().as_bytes(), data, "a parsed header is canonical");
    }
});
