//! JSON-RPC bodies from clients: every body gets an answer (or none, for notifications), never a
//! panic, and answers are JSON-RPC 2.0.
#![no_main]
use serde_json::Value;
use vpbox_node::rpc::{Methods, RpcError, bytes32, handle};

struct Probe;
impl Methods for Probe {
    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        bytes32(params, 0, "key")?;
        Err(RpcError::new(RpcError::METHOD_NOT_FOUND, method.to_string()))
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(answer) = handle(&Probe, data) {
        let one = |v: &Value| assert_eq!(v["jsonrpc"], "2.0");
        match &answer {
            Value::Array(all) => all.iter().for_each(one),
            single => one(single),
        }
    }
});
