//! JSON-RPC 2.0 (<https://www.jsonrpc.org/specification>) with bounds.

use serde_json::value::RawValue;
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
    /// -32007: the method is not allowed for the calling client's role (a POSP calling an
    /// admin's method), or a client identity came from someone other than the box's proxy.
    pub const NOT_ALLOWED: i64 = -32007;

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

    /// `method`'s answer if it is ready at once — no lock another thread holds, no disk
    /// read, no commit to wait for — so that the HTTP server may answer it on its event
    /// loop's thread ([`handle_now`]); `None` (the default) when `call` would have to wait,
    /// and then [`Methods::call`] runs on a thread that may block. When it answers, it
    /// answers as `call` would.
    fn call_now(&self, _method: &str, _params: &Value) -> Option<Result<Value, RpcError>> {
        None
    }

    /// Whether [`Methods::call_now`] may answer `method` (when this says no, it never does):
    /// asked before a request is parsed, so that the others are parsed once, on the thread
    /// that runs them.
    fn ready_now(&self, _method: &str) -> bool {
        false
    }

    /// `method` as a future that waits without holding a thread: the call's own work (its
    /// checks, a signature's verification: tens of microseconds, no lock waited for) is done
    /// here, on the calling thread, and what is left is to await the node's answer (a
    /// transaction's storage or commit). `None` (the default) when `method` is not one of
    /// those ([`Methods::ready_later`] says no), or when it cannot be taken now without a
    /// wait (a lock another thread holds); then [`Methods::call`] runs on a thread that may
    /// block. The future answers as `call` would, except that where `call` would wait for
    /// room to hand the call on, it answers -32004 (retry).
    fn call_later(&self, _method: &str, _params: &Value) -> Option<Later> {
        None
    }

    /// Whether [`Methods::call_later`] takes `method` (when this says no, it never does),
    /// asked before the request is parsed, as [`Methods::ready_now`] is.
    fn ready_later(&self, _method: &str) -> bool {
        false
    }
}

/// An answer still to come ([`Methods::call_later`]).
pub type Later = std::pin::Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;

/// How deep arrays and objects nest in `body`, counted on the bytes (no parsing, no recursion)
/// and given up past `limit`. Brackets inside strings do not count.
///
/// Counting before parsing is what makes every depth answer the same: serde_json refuses
/// documents nested deeper than 128 as not JSON (its recursion limit), so a depth check on the
/// parsed value answered -32700 there and -32600 below it.
fn nesting(body: &[u8], limit: usize) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    outside_strings(body, |b| {
        match b {
            Some(b'[' | b'{') => {
                depth += 1;
                max = max.max(depth);
            }
            Some(b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        max <= limit
    });
    max
}

/// Calls `each` with every byte of `body` outside JSON strings (`Some`) and once for every
/// byte inside one, quotes included (`None`), until it answers `false`.
fn outside_strings(body: &[u8], mut each: impl FnMut(Option<u8>) -> bool) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        let seen = if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            None
        } else if b == b'"' {
            in_string = true;
            None
        } else {
            Some(b)
        };
        if !each(seen) {
            return;
        }
    }
}

/// The answers to one body together may not exceed this: past it, the rest of a batch gets
/// -32005 (split the batch). A body of reads could otherwise ask for gigabytes of blocks.
pub const ANSWERS_MAX: usize = 16 << 20;
/// The longest id accepted (as JSON text): an answer repeats it.
const ID_MAX: usize = 256;
/// The longest method name accepted (as JSON text): an error may repeat it.
const METHOD_MAX: usize = 130;
/// What parsing any part of a request may cost beyond four times its size.
const PARSE_FIXED: usize = 64 << 10;

/// What a request's JSON would cost as a `serde_json::Value` tree, estimated on the bytes
/// (no parsing): 64 bytes for each value (a `Value`, with a vector's spare room), 640 for each
/// object (a B-tree node) and the bytes of every string. An upper bound for the shapes JSON-RPC
/// requests take; `[{"a":0},…]` costs about 100 times its size, a transaction in a string
/// about once.
fn tree_cost(bytes: &[u8]) -> usize {
    let (mut values, mut objects, mut strings) = (1usize, 0usize, 0usize);
    outside_strings(bytes, |b| {
        match b {
            None => strings += 1,
            Some(b'{') => {
                objects += 1;
                values += 1;
            }
            Some(b'[' | b',' | b':') => values += 1,
            Some(_) => {}
        }
        true
    });
    values.saturating_mul(64).saturating_add(objects.saturating_mul(640)).saturating_add(strings)
}

/// How many elements the top-level array of `body` has (0 if it is not an array), counted on
/// the bytes: a batch too long is refused before a vector of it is built.
fn batch_len(body: &[u8]) -> usize {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return 0;
    }
    let (mut depth, mut commas, mut any) = (0usize, 0usize, false);
    outside_strings(body, |b| {
        match b {
            None => any |= depth == 1,
            Some(b'[' | b'{') => {
                depth += 1;
                any |= depth == 2;
            }
            Some(b']' | b'}') => depth = depth.saturating_sub(1),
            Some(b',') if depth == 1 => commas += 1,
            Some(b' ' | b'\t' | b'\r' | b'\n') => {}
            Some(_) => any |= depth == 1,
        }
        true
    });
    if any { commas + 1 } else { 0 }
}

fn response(id: &Value, result: Result<Value, RpcError>) -> Vec<u8> {
    let v = match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

fn invalid(message: &str) -> Vec<u8> {
    response(&Value::Null, Err(RpcError::new(RpcError::INVALID_REQUEST, message)))
}

/// One request object, its members left as raw JSON until each is needed.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// A request object as read: the id its answer carries (none for a notification) and the
/// call it asks for, or why it is not a valid call.
struct Request {
    /// The id as sent (`None`: a notification, which gets no answer).
    id: Option<Value>,
    /// The id the answer carries (null for an invalid one).
    reply_id: Value,
    /// The method and its params.
    call: Result<(String, Value), RpcError>,
}

impl Request {
    /// Reads `raw`; `Err` is the answer to what is not a request object at all.
    fn read(raw: &RawValue) -> Result<Self, Vec<u8>> {
        let text = raw.get();
        if !text.starts_with('{') {
            return Err(invalid("a request is an object"));
        }
        let env: Envelope<'_> = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => return Err(invalid(&format!("not a request object: {e}"))),
        };
        // An id is a string, a number or null, of at most ID_MAX bytes: anything else is
        // invalid and is not parsed (nor echoed three times in the answer).
        let id: Option<Value> = match env.id.map(RawValue::get) {
            None => None,
            Some(t) if t.starts_with(['{', '[']) || t.len() > ID_MAX => Some(Value::Bool(false)),
            Some(t) => Some(serde_json::from_str(t).unwrap_or(Value::Bool(false))),
        };
        let valid_id = matches!(id, None | Some(Value::Null | Value::Number(_) | Value::String(_)));
        let reply_id = if valid_id { id.clone().unwrap_or(Value::Null) } else { Value::Null };
        let method = env
            .method
            .filter(|m| m.get().len() <= METHOD_MAX)
            .and_then(|m| serde_json::from_str::<String>(m.get()).ok());
        let call = if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") || !valid_id {
            Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                "need \"jsonrpc\": \"2.0\" and a string, number or null id",
            ))
        } else if let Some(method) = method {
            params(env.params).map(|p| (method, p))
        } else {
            Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                "missing method, or a name over 128 bytes",
            ))
        };
        Ok(Self { id, reply_id, call })
    }

    /// The answer to send for `result` (none for a notification, per the specification).
    fn answer(&self, result: Result<Value, RpcError>) -> Option<Vec<u8>> {
        self.id.is_some().then(|| response(&self.reply_id, result))
    }
}

fn one(methods: &dyn Methods, raw: &RawValue) -> Option<Vec<u8>> {
    let request = match Request::read(raw) {
        Ok(r) => r,
        Err(answer) => return Some(answer),
    };
    let result = match &request.call {
        Ok((method, params)) => methods.call(method, params),
        Err(e) => Err(e.clone()),
    };
    request.answer(result)
}

/// A request's params as a value, parsed only if that costs at most four times their size.
fn params(raw: Option<&RawValue>) -> Result<Value, RpcError> {
    let Some(raw) = raw else { return Ok(Value::Array(vec![])) };
    let text = raw.get();
    if !text.starts_with(['[', '{']) {
        return Err(RpcError::new(
            RpcError::INVALID_REQUEST,
            "params must be an array or an object",
        ));
    }
    if tree_cost(text.as_bytes()) > 4 * text.len() + PARSE_FIXED {
        return Err(RpcError::new(
            RpcError::INVALID_REQUEST,
            "params too complex: no method takes that many values",
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| RpcError::new(RpcError::INVALID_REQUEST, format!("params: {e}")))
}

/// Answers a request body: a single request, or a batch. `None` when only notifications came.
/// Parsed as a value tree only where that costs at most four times the bytes in question.
pub fn handle(methods: &dyn Methods, body: &[u8]) -> Option<Value> {
    handle_bytes(methods, body).and_then(|b| serde_json::from_slice(&b).ok())
}

/// As [`handle`], answering with the serialised bytes: what the HTTP server sends. The memory
/// it needs beyond the body is at most four times the body (plus 64 KiB) while it parses, and
/// the answers (at most [`ANSWERS_MAX`] in all).
pub fn handle_bytes(methods: &dyn Methods, body: &[u8]) -> Option<Vec<u8>> {
    if nesting(body, DEPTH_MAX) > DEPTH_MAX {
        return Some(invalid(&format!("arrays and objects nested deeper than {DEPTH_MAX}")));
    }
    let batch = batch_len(body);
    if batch > BATCH_MAX {
        return Some(invalid(&format!("a batch holds at most {BATCH_MAX} requests")));
    }
    let parse_error = |e: serde_json::Error| {
        Some(response(&Value::Null, Err(RpcError::new(RpcError::PARSE, format!("not JSON: {e}")))))
    };
    let top: &RawValue = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return parse_error(e),
    };
    if !top.get().starts_with('[') {
        return one(methods, top);
    }
    let items: Vec<&RawValue> = match serde_json::from_str(top.get()) {
        Ok(v) => v,
        Err(e) => return parse_error(e),
    };
    if items.is_empty() {
        return Some(invalid("empty batch"));
    }
    let mut out = b"[".to_vec();
    let mut answered = false;
    for item in items {
        let answer = if out.len() > ANSWERS_MAX {
            // The request is still looked at for its id (a notification gets nothing).
            one(&TooMuch, item)
        } else {
            one(methods, item)
        };
        if let Some(a) = answer {
            if answered {
                out.push(b',');
            }
            out.extend_from_slice(&a);
            answered = true;
        }
    }
    out.push(b']');
    answered.then_some(out)
}

/// The largest body [`handle_now`] takes: a single call of a few parameters (`anchor_get` is
/// about 130 bytes), whose parsing on an event loop's thread costs a few microseconds.
pub const NOW_MAX: usize = 4096;

/// The method a single request (not a batch) of at most [`NOW_MAX`] bytes names, read alone
/// (the rest skipped, not built); `None` for a larger body, a batch, or one whose method cannot
/// be read (the usual way answers why).
fn single_method(body: &[u8]) -> Option<&str> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if body.len() > NOW_MAX || first != Some(&b'{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct MethodOf<'a> {
        #[serde(borrow)]
        method: Option<&'a str>,
    }
    serde_json::from_slice::<MethodOf<'_>>(body).ok()?.method
}

/// As [`handle_bytes`], for a single request (not a batch) of at most [`NOW_MAX`] bytes whose
/// answer is ready at once ([`Methods::call_now`]); `None` otherwise, and then
/// [`handle_bytes`] answers it on a thread that may block. (Each hand-off to such a thread
/// cost the node's HTTP server about two thirds of a small read's CPU: two thread wake-ups.)
pub fn handle_now(methods: &dyn Methods, body: &[u8]) -> Option<Option<Vec<u8>>> {
    if !methods.ready_now(single_method(body)?) {
        return None;
    }
    let now = Now { methods, declined: std::sync::atomic::AtomicBool::new(false) };
    let answer = handle_bytes(&now, body);
    (!now.declined.load(std::sync::atomic::Ordering::Relaxed)).then_some(answer)
}

/// As [`handle_bytes`], for a single request (not a batch) of at most [`NOW_MAX`] bytes whose
/// method waits without a thread ([`Methods::call_later`]): its checks run here, and the future
/// awaits the rest. `None` otherwise (a batch, a larger body, another method, or a request
/// that is not valid), and then [`handle_bytes`] answers it on a thread that may block. (The
/// hand-off to such a thread, and that thread's own wake-up when the node answered, cost
/// about two thread switches a transaction: on the signed path, where a box takes thousands
/// a second, they were a large part of the kernel's time.)
pub fn handle_later(methods: &dyn Methods, body: &[u8]) -> Option<LaterAnswer> {
    if !methods.ready_later(single_method(body)?) || nesting(body, DEPTH_MAX) > DEPTH_MAX {
        return None;
    }
    let top: &RawValue = serde_json::from_slice(body).ok()?;
    let request = Request::read(top).ok()?;
    let Ok((method, params)) = &request.call else { return None };
    let later = methods.call_later(method, params)?;
    Some(Box::pin(async move { request.answer(later.await) }))
}

/// The bytes [`handle_later`] answers with, to come (`None`: a notification's).
pub type LaterAnswer = std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// [`Methods::call_now`] as a [`Methods`]: a call not ready at once is marked declined.
struct Now<'a> {
    methods: &'a dyn Methods,
    declined: std::sync::atomic::AtomicBool,
}

impl Methods for Now<'_> {
    fn ready_now(&self, method: &str) -> bool {
        self.methods.ready_now(method)
    }

    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        self.methods.call_now(method, params).unwrap_or_else(|| {
            self.declined.store(true, std::sync::atomic::Ordering::Relaxed);
            Err(RpcError::new(RpcError::INTERNAL, "not ready at once"))
        })
    }
}

/// What the rest of a batch gets once its answers are too large.
struct TooMuch;

impl Methods for TooMuch {
    fn call(&self, _: &str, _: &Value) -> Result<Value, RpcError> {
        Err(RpcError::new(
            RpcError::TOO_LARGE,
            format!("the answers to this batch exceed {ANSWERS_MAX} bytes; split it"),
        ))
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

    /// `echo` is ready at once, `key` is not.
    struct EchoNow;
    impl Methods for EchoNow {
        fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
            Echo.call(method, params)
        }
        fn call_now(&self, method: &str, params: &Value) -> Option<Result<Value, RpcError>> {
            self.ready_now(method).then(|| Echo.call(method, params))
        }
        fn ready_now(&self, method: &str) -> bool {
            method == "echo"
        }
    }

    #[test]
    fn a_single_call_ready_at_once_is_answered_as_on_a_blocking_thread() {
        let echo = br#"{"jsonrpc":"2.0","method":"echo","params":[1,{"a":2}],"id":"x"}"#;
        let now = handle_now(&EchoNow, echo).expect("ready at once");
        assert_eq!(now, handle_bytes(&EchoNow, echo));
        // A bad request to a ready method is answered at once too, as `handle_bytes` does; a
        // body whose method cannot be read goes the usual way, which says why.
        let old = br#"{"jsonrpc":"1.0","method":"echo","id":1}"#;
        assert_eq!(handle_now(&EchoNow, old), Some(handle_bytes(&EchoNow, old)));
        for body in [&b"{not json"[..], br#"{"jsonrpc":"2.0","id":1}"#, br#"{"method":7}"#] {
            assert_eq!(handle_now(&EchoNow, body), None);
        }
        // A notification: ready, and no answer.
        assert_eq!(handle_now(&EchoNow, br#"{"jsonrpc":"2.0","method":"echo"}"#), Some(None));
        // Declined: a method that is not ready, one without `call_now`, a batch, a large body.
        let key = format!(
            r#"{{"jsonrpc":"2.0","method":"key","params":["{}"],"id":1}}"#,
            "ab".repeat(32)
        );
        assert_eq!(handle_now(&EchoNow, key.as_bytes()), None);
        assert_eq!(handle_now(&Echo, echo), None);
        assert_eq!(handle_now(&EchoNow, &[b" [".as_slice(), echo, b"]"].concat()), None);
        let large = format!(
            r#"{{"jsonrpc":"2.0","method":"echo","params":["{}"],"id":1}}"#,
            "a".repeat(NOW_MAX)
        );
        assert_eq!(handle_now(&EchoNow, large.as_bytes()), None);
    }

    /// `echo` answers later (after its own checks, here), `key` on a blocking thread.
    struct EchoLater;
    impl Methods for EchoLater {
        fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
            Echo.call(method, params)
        }
        fn call_later(&self, method: &str, params: &Value) -> Option<Later> {
            let answer = Echo.call(method, params);
            self.ready_later(method).then(|| Box::pin(async move { answer }) as Later)
        }
        fn ready_later(&self, method: &str) -> bool {
            method == "echo"
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn a_single_call_answered_later_is_answered_as_on_a_blocking_thread() {
        let echo = br#"{"jsonrpc":"2.0","method":"echo","params":[1,{"a":2}],"id":"x"}"#;
        let later = handle_later(&EchoLater, echo).expect("taken");
        assert_eq!(run(later), handle_bytes(&EchoLater, echo));
        // A notification: taken, and no answer.
        let note = br#"{"jsonrpc":"2.0","method":"echo","params":[]}"#;
        assert_eq!(run(handle_later(&EchoLater, note).expect("taken")), None);
        // Left to the blocking thread, which answers why (or runs it): a request that is not
        // valid, a body whose method cannot be read, too deep or too complex a body, a method
        // not taken later, a batch, a large body, methods without `call_later`.
        let key = format!(
            r#"{{"jsonrpc":"2.0","method":"key","params":["{}"],"id":1}}"#,
            "ab".repeat(32)
        );
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"echo","params":{}1{},"id":1}}"#,
            "[".repeat(DEPTH_MAX),
            "]".repeat(DEPTH_MAX)
        );
        let complex = format!(
            r#"{{"jsonrpc":"2.0","method":"echo","params":[{}],"id":1}}"#,
            vec![r#"{"a":0}"#; 480].join(",")
        );
        assert!(complex.len() <= NOW_MAX);
        let large = format!(
            r#"{{"jsonrpc":"2.0","method":"echo","params":["{}"],"id":1}}"#,
            "a".repeat(NOW_MAX)
        );
        let batch = [b" [".as_slice(), echo, b"]"].concat();
        for body in [
            &br#"{"jsonrpc":"1.0","method":"echo","id":1}"#[..],
            br#"{"jsonrpc":"2.0","method":"echo","id":{"a":1}}"#,
            br#"{"jsonrpc":"2.0","method":"echo","params":7,"id":1}"#,
            b"{not json",
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"method":7}"#,
            deep.as_bytes(),
            complex.as_bytes(),
            key.as_bytes(),
            &batch,
            large.as_bytes(),
        ] {
            assert!(handle_later(&EchoLater, body).is_none(), "{}", String::from_utf8_lossy(body));
        }
        assert!(handle_later(&Echo, echo).is_none());
        assert!(handle_later(&EchoNow, echo).is_none());
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
    fn shapes_are_read_off_the_bytes() {
        assert_eq!(batch_len(br#"[1, "a,b]", {"x":[1,2]}, []]"#), 4);
        assert_eq!(batch_len(b"[ ]"), 0);
        assert_eq!(batch_len(br#"{"a":[1,2,3]}"#), 0);
        assert_eq!(batch_len(br#"["\"],[", 2]"#), 2);
        // A transaction in a string costs about its size; tiny objects a hundred times theirs.
        let tx = format!(r#"{{"tx":"{}","wait":true}}"#, "ab".repeat(1000));
        assert!(tree_cost(tx.as_bytes()) < 2 * tx.len() + 1024);
        let tiny = "[".to_string() + &vec![r#"{"a":0}"#; 1000].join(",") + "]";
        assert!(tree_cost(tiny.as_bytes()) > 50 * tiny.len());
        // The whole batch is answered as one array, requests in order.
        let body = br#"[{"jsonrpc":"2.0","method":"echo","id":1},{"jsonrpc":"2.0","method":"echo","params":[{"a":0}],"id":"x"}]"#;
        let answers = handle(&Echo, body).unwrap();
        assert_eq!(answers[0]["id"], 1);
        assert_eq!(answers[1]["id"], "x");
    }

    #[test]
    fn params_too_complex_to_parse_are_refused_before_parsing() {
        let params = "[".to_string() + &vec![r#"{"a":0}"#; 100_000].join(",") + "]";
        let body = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":{params},"id":1}}"#);
        let answer = handle(&Echo, body.as_bytes()).unwrap();
        assert_eq!(answer["error"]["code"], RpcError::INVALID_REQUEST, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("too complex"));
        // A batch longer than the limit is refused before a vector of it is built.
        let batch = "[".to_string() + &vec!["1"; BATCH_MAX + 1].join(",") + "]";
        let answer = handle(&Echo, batch.as_bytes()).unwrap();
        assert_eq!(answer["error"]["code"], RpcError::INVALID_REQUEST, "{answer}");
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
