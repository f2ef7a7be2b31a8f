//! Frames on the signer's socket (a compromised node may send anything): requests and
//! responses decode without panics, and requests re-encode exactly.
#![no_main]
use vpbox_signer::protocol::{Request, Response};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        assert_eq!(req.encode(), data, "decoding is canonical");
    }
    let _ = Response::decode(data, &Request::Health);
    let _ = vpbox_signer::protocol::read_frame(&mut &data[..]);
});
