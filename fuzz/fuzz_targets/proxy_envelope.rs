//! Request bodies from clients, as the proxy reads them: classification never panics, stays
//! within its bounds, and agrees with the node. Whatever the proxy lets through, the node runs
//! no method the proxy did not see, in the same order, and an `anchor_putBatch` carries the
//! pairs the proxy charged for (the node finding its `tx` its own way, on a parsed value).
#![no_main]
use std::sync::Mutex;

use serde_json::Value;
use vpbox_ledger::tx::{Payload, Tx};
use vpbox_node::rpc::{Methods, RpcError, handle, param};
use vpbox_proxy::{BATCH_MAX, classify};

/// What the node called, with the pairs of each call's transaction as the node would find
/// them (1 when it would refuse it).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u32)>>);

impl Methods for Recorder {
    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        let pairs = param(params, 0, "tx")
            .and_then(Value::as_str)
            .map(|t| t.strip_prefix("0x").unwrap_or(t))
            .and_then(|t| hex::decode(t).ok())
            .and_then(|b| Tx::decode(&b).ok())
            .and_then(|tx| match tx.into_body().payload {
                Payload::AnchorPutBatch(p) => u32::try_from(p.len()).ok(),
                _ => None,
            })
            .unwrap_or(1);
        if let Ok(mut calls) = self.0.lock() {
            calls.push((method.to_string(), pairs));
        }
        Err(RpcError::new(RpcError::METHOD_NOT_FOUND, "recorded"))
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = classify(data) else { return };
    let requests = envelope.requests();
    assert!(!requests.is_empty() && requests.len() <= BATCH_MAX);
    assert!(envelope.is_batch() || requests.len() == 1);
    assert!(envelope.cost() >= requests.len() as u64);

    let node = Recorder::default();
    let _ = handle(&node, data);
    let called = node.0.into_inner().unwrap_or_default();
    if called.len() == requests.len() {
        for ((method, pairs), r) in called.iter().zip(requests) {
            assert_eq!(method, r.method().name(), "the node ran another method than the proxy saw");
            let cost = if method == "anchor_putBatch" { *pairs } else { 1 };
            assert_eq!(r.cost(), cost, "{method}: the proxy charged other than the node runs");
        }
    } else {
        // The node refused some request the proxy read (params too complex to parse): it may
        // run fewer, never one the proxy did not see.
        let mut seen = requests.iter();
        for (method, _) in &called {
            assert!(
                seen.any(|r| r.method().name() == method),
                "the node ran {method}, which the proxy did not see (or not in this order)"
            );
        }
    }
});
