//! JSON-RPC 2.0 (<https://www.jsonrpc.org/specification>) with bounds.

use serde_json::{Map, Value, json};

/// Arrays and objects nested deeper than this (the request object counting as one) are
/// refused, -32600, before the body is parsed.
pub const DEPTH_MAX: usize = 32;
/// Requests in one batch.
pub const BATCH_MAX: usize = 1000;

/// A JSON-RPC error with one of the documented codes (`docs/` lists them).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// A short message.
    pub message: String,
    /// Optional detail.
    pub data: Option<Value>,
}

impl RpcError {
    /// -32700: the body is not JSON.
    pub const PARSE: i64 = -32700;
    /// -32600: not a valid request object (or too deep, or a batch too long).
    pub const INVALID_REQUEST: i64 = -32600;
    /// -32601: no such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// -32602: wrong parameters (a key that is not 32 bytes, bad hex, …).
    pub const INVALID_PARAMS: i64 = -32602;
    /// -32603: the node failed.
    pub const INTERNAL: i64 = -32603;
    /// -32001: a transaction's signature does not verify.
    pub const BAD_SIGNATURE: i64 = -32001;
    /// -32002: the submitter is not admitted.
    pub const UNKNOWN_SUBMITTER: i64 = -32002;
    /// -32003: the transaction is outside the acceptance window (too old or in the future).
    pub const STALE: i64 = -32003;
    /// -32004: the node cannot take more now (intake full, disk full); retry later.
    pub const BUSY: i64 = -32004;
    /// -32005: the request body is larger than the node accepts.
    pub const TOO_LARGE: i64 = -32005;
    /// A configuration transaction governance would refuse (approvals, quorum, the change).
    pub const CONFIG_REFUSED: i64 = -32006;

    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let (Some(d), Some(obj)) = (&self.data, e.as_object_mut()) {
            obj.insert("data".into(), d.clone());
        }
        e
    }
}

/// What the node implements: one call, with the request's `params` (array or object).
pub trait Methods: Send + Sync {
    /// Runs `method`.
    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError>;
}

/// How deep arrays and objects nest in `body`, counted on the bytes (no parsing, no recursion)
/// and given up past `limit`. Brackets inside strings do not count.
///
/// Counting before parsing is what makes every depth answer the same: serde_json refuses
/// documents nested deeper than 128 as not JSON (its recursion limit), so a depth check on the
/// parsed value answered -32700 there and -32600 below it.
fn nesting(body: &[u8], limit: usize) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    break;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
    }
}

fn one(methods: &dyn Methods, req: &Value) -> Option<Value> {
    let Some(obj) = req.as_object() else {
        return Some(response(
            Value::Null,
            Err(RpcError::new(RpcError::INVALID_REQUEST, "a request is an object")),
        ));
    };
    let id = obj.get("id").cloned();
    let valid_id = matches!(id, None | Some(Value::Null | Value::Number(_) | Value::String(_)));
    let reply_id = if valid_id { id.clone().unwrap_or(Value::Null) } else { Value::Null };
    let method = obj.get("method").and_then(Value::as_str);
    let params = obj.get("params").cloned().unwrap_or(Value::Array(vec![]));
    let result = if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) || !valid_id {
        Err(RpcError::new(
            RpcError::INVALID_REQUEST,
            "need \"jsonrpc\": \"2.0\" and a string, number or null id",
        ))
    } else if let Some(method) = method {
        if params.is_array() || params.is_object() {
            methods.call(method, &params)
        } else {
            Err(RpcError::new(RpcError::INVALID_REQUEST, "params must be an array or an object"))
        }
    } else {
        Err(RpcError::new(RpcError::INVALID_REQUEST, "missing method"))
    };
    // A notification (no id) gets no answer, per the specification.
    id.is_some().then(|| response(reply_id, result))
}

/// Answers a request body: a single request, or a batch. `None` when only notifications came.
pub fn handle(methods: &dyn Methods, body: &[u8]) -> Option<Value> {
    if nesting(body, DEPTH_MAX) > DEPTH_MAX {
        return Some(response(
            Value::Null,
            Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                format!("arrays and objects nested deeper than {DEPTH_MAX}"),
            )),
        ));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(response(
                Value::Null,
                Err(RpcError::new(RpcError::PARSE, format!("not JSON: {e}"))),
            ));
        }
    };
    match &value {
        Value::Array(batch) if batch.is_empty() => Some(response(
            Value::Null,
            Err(RpcError::new(RpcError::INVALID_REQUEST, "empty batch")),
        )),
        Value::Array(batch) if batch.len() > BATCH_MAX => Some(response(
            Value::Null,
            Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                format!("a batch holds at most {BATCH_MAX} requests"),
            )),
        )),
        Value::Array(batch) => {
            let answers: Vec<Value> = batch.iter().filter_map(|r| one(methods, r)).collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        single => one(methods, single),
    }
}

/// A parameter by position or name, for methods that accept both.
pub fn param<'a>(params: &'a Value, index: usize, name: &str) -> Option<&'a Value> {
    match params {
        Value::Array(a) => a.get(index),
        Value::Object(o) => o.get(name),
        _ => None,
    }
}

/// A required 32-byte hex parameter (`0x` optional), as anchor keys and hashes are.
pub fn bytes32(params: &Value, index: usize, name: &str) -> Result<[u8; 32], RpcError> {
    let v = param(params, index, name).and_then(Value::as_str).ok_or_else(|| {
        RpcError::new(RpcError::INVALID_PARAMS, format!("missing string parameter {name:?}"))
    })?;
    vpbox_sm::Digest::from_hex(v).map(|d| d.0).ok_or_else(|| {
        RpcError::new(
            RpcError::INVALID_PARAMS,
            format!("{name} must be 32 bytes as 64 hex digits (0x optional)"),
        )
    })
}

/// An empty object, for methods that return nothing in particular.
pub fn ok_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Methods for Echo {
        fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
            match method {
                "echo" => Ok(params.clone()),
                "key" => bytes32(params, 0, "key").map(|k| json!(hex::encode(k))),
                _ => Err(RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {method}"))),
            }
        }
    }

    fn code(v: &Value) -> i64 {
        v["error"]["code"].as_i64().unwrap()
    }

    #[test]
    fn the_specifications_cases() {
        let r =
            handle(&Echo, br#"{"jsonrpc":"2.0","method":"echo","params":[1,2],"id":7}"#).unwrap();
        assert_eq!(r, json!({"jsonrpc":"2.0","id":7,"result":[1,2]}));
        assert_eq!(code(&handle(&Echo, b"{not json").unwrap()), RpcError::PARSE);
        assert_eq!(
            code(&handle(&Echo, br#"{"jsonrpc":"2.0","method":"nope","id":1}"#).unwrap()),
            RpcError::METHOD_NOT_FOUND
        );
        assert_eq!(
            code(&handle(&Echo, br#"{"jsonrpc":"1.0","method":"echo","id":1}"#).unwrap()),
            RpcError::INVALID_REQUEST
        );
        assert_eq!(
            code(
                &handle(&Echo, br#"{"jsonrpc":"2.0","method":"echo","params":3,"id":1}"#).unwrap()
            ),
            RpcError::INVALID_REQUEST
        );
        assert_eq!(code(&handle(&Echo, b"[]").unwrap()), RpcError::INVALID_REQUEST);
        assert!(
            handle(&Echo, br#"{"jsonrpc":"2.0","method":"echo"}"#).is_none(),
            "notifications get no answer"
        );
        let batch = handle(
            &Echo,
            br#"[{"jsonrpc":"2.0","method":"echo","id":1},{"jsonrpc":"2.0","method":"echo"},5]"#,
        )
        .unwrap();
        assert_eq!(batch.as_array().unwrap().len(), 2);
        assert_eq!(code(&batch[1]), RpcError::INVALID_REQUEST);
    }

    /// A request whose params nest so that the whole body is `depth` arrays and objects deep.
    fn nested(depth: usize) -> String {
        let inner = depth - 2; // the request object and the params array
        let params = format!(r#"[{}"x]}}"{}]"#, "[".repeat(inner), "]".repeat(inner));
        format!(r#"{{"jsonrpc":"2.0","method":"echo","params":{params},"id":1}}"#)
    }

    #[test]
    fn nesting_is_refused_as_an_invalid_request_at_every_depth() {
        // Depth 32 is served; beyond it -32600, also past serde_json's own limit (128), where
        // it used to be -32700 "not JSON".
        let ok = handle(&Echo, nested(DEPTH_MAX).as_bytes()).unwrap();
        assert!(ok.get("result").is_some(), "{ok}");
        for depth in [33, 127, 128, 129, 200, 100_000] {
            let r = handle(&Echo, nested(depth).as_bytes()).unwrap();
            assert_eq!(code(&r), RpcError::INVALID_REQUEST, "depth {depth}: {r}");
        }
        let objects = format!("{}{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(code(&handle(&Echo, objects.as_bytes()).unwrap()), RpcError::INVALID_REQUEST);
        // Brackets in strings (escaped quotes included) are not nesting.
        let text = format!(
            r#"{{"jsonrpc":"2.0","method":"echo","params":["\"{}"],"id":1}}"#,
            "[".repeat(300)
        );
        assert!(handle(&Echo, text.as_bytes()).unwrap().get("result").is_some());
        // Shallow junk is still not JSON.
        assert_eq!(code(&handle(&Echo, b"[[1,]]").unwrap()), RpcError::PARSE);
    }

    #[test]
    fn bounds_and_parameters() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let body = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":{deep},"id":1}}"#);
        assert_eq!(code(&handle(&Echo, body.as_bytes()).unwrap()), RpcError::INVALID_REQUEST);
        let short =
            handle(&Echo, br#"{"jsonrpc":"2.0","method":"key","params":["0x1234"],"id":1}"#)
                .unwrap();
        assert_eq!(code(&short), RpcError::INVALID_PARAMS);
        let good = format!(
            r#"{{"jsonrpc":"2.0","method":"key","params":{{"key":"0x{}"}},"id":"a"}}"#,
            "ab".repeat(32)
        );
        assert_eq!(handle(&Echo, good.as_bytes()).unwrap()["result"], json!("ab".repeat(32)));
    }
}
