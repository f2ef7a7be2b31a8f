//! What a request body asks for, read without trusting it: a single JSON-RPC request or a batch,
//! and for each request its id, its method and its cost for rate limiting.
//!
//! The proxy forwards a body unchanged, so what it reads here must be what the node will read:
//! the same parser (serde_json, the same version through the workspace's lock file), the same
//! request shape (a duplicated member is refused as the node refuses it), the same rules for
//! ids and names. Anything this module cannot read with certainty is an [`Error`], and the
//! proxy answers it itself instead of forwarding it.
//!
//! Bounds, on memory and time, for a body the caller already limited
//! ([`crate::Limits::body_bytes_max`]):
//! - Nesting is counted on the bytes before anything is parsed, so a body deeper than
//!   [`DEPTH_MAX`] is refused alike at every depth (serde_json's own recursion limit, 128,
//!   would otherwise answer "not JSON" past it).
//! - Members stay raw JSON ([`RawValue`], borrowed from the body) until each is needed; no value
//!   tree of the body or of any params is built.
//! - A batch keeps at most [`BATCH_MAX`] borrowed slices; the rest of a longer one is skipped,
//!   not stored.
//! - Only an `anchor_putBatch` call looks inside its params: its transaction is decoded (at
//!   most [`vpbox_ledger::tx::TX_MAX`] bytes, one at a time) to count its pairs.
//!
//! Cost: a request costs 1; an `anchor_putBatch` costs the pairs its transaction carries, as
//! the ledger's own decoder ([`Tx::decode`]) counts them — the node decodes it with the same
//! decoder, so the count is what it would execute. A transaction the decoder refuses (not
//! hex, truncated, a count that does not match its length, not a batch) costs 1: the node
//! refuses it too and executes nothing.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use vpbox_ledger::tx::{Payload, TX_MAX, Tx};

use crate::error::Error;
use vpbox_api::Method;

/// Arrays and objects nested deeper than this (a batch's array and the request object each
/// counting as one) are refused, as the node refuses them (`rpc::DEPTH_MAX`).
pub const DEPTH_MAX: usize = 32;
/// Most requests in one batch, as the node (`rpc::BATCH_MAX`).
pub const BATCH_MAX: usize = 1000;
/// The longest id accepted, as JSON text (the node's bound).
const ID_MAX: usize = 256;
/// The longest method name accepted, as JSON text, quotes included (the node's bound).
const METHOD_MAX: usize = 130;

/// One request of a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    id: Option<Value>,
    method: Method,
    cost: u32,
}

impl Request {
    /// The id (a string, a number or null); `None` for a notification, which the node runs
    /// but does not answer.
    pub fn id(&self) -> Option<&Value> {
        self.id.as_ref()
    }

    /// The method it calls.
    pub fn method(&self) -> Method {
        self.method
    }

    /// What it costs: 1, or for `anchor_putBatch` the pairs it carries (at most
    /// [`vpbox_ledger::tx::BATCH_MAX`]).
    pub fn cost(&self) -> u32 {
        self.cost
    }
}

/// A body the node would read as JSON-RPC 2.0: one request, or a batch of 1 to [`BATCH_MAX`].
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    batch: bool,
    requests: Vec<Request>,
}

impl Envelope {
    /// Whether the body is a batch (an array, even of one request).
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    /// The requests, in the body's order; never empty.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// The body's cost: the sum of its requests'.
    pub fn cost(&self) -> u64 {
        self.requests.iter().map(|r| u64::from(r.cost)).sum()
    }
}

/// Reads a request body: its requests' ids, methods and costs, or why it is not JSON-RPC the
/// node would run. Never panics; memory and time as the module's bounds say.
pub fn classify(body: &[u8]) -> Result<Envelope, Error> {
    if deeper_than(body, DEPTH_MAX) {
        return Err(Error::TooDeep { max: DEPTH_MAX });
    }
    let top: &RawValue = serde_json::from_slice(body).map_err(|e| Error::NotJson(e.to_string()))?;
    if !top.get().starts_with('[') {
        let request = request(0, top)?;
        return Ok(Envelope { batch: false, requests: vec![request] });
    }
    // The body parsed as JSON above, so reading it again as an array cannot fail on syntax.
    let items: Batch<'_> =
        serde_json::from_str(top.get()).map_err(|e| Error::NotJson(e.to_string()))?;
    if items.over {
        return Err(Error::BatchTooLong { max: BATCH_MAX });
    }
    if items.items.is_empty() {
        return Err(Error::EmptyBatch);
    }
    let requests = items
        .items
        .iter()
        .enumerate()
        .map(|(at, raw)| request(at, raw))
        .collect::<Result<_, _>>()?;
    Ok(Envelope { batch: true, requests })
}

/// Whether arrays and objects in `body` nest deeper than `max`, counted on the bytes (no
/// parsing, no recursion); brackets inside strings do not count. Stops at the first byte past
/// the bound.
fn deeper_than(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
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
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A batch's requests as borrowed raw JSON: at most [`BATCH_MAX`] kept, `over` when more came
/// (those are skipped, not stored).
struct Batch<'a> {
    items: Vec<&'a RawValue>,
    over: bool,
}

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = Batch<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of requests")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while items.len() < BATCH_MAX {
                    match seq.next_element::<&'de RawValue>()? {
                        Some(item) => items.push(item),
                        None => return Ok(Batch { items, over: false }),
                    }
                }
                let mut over = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    over = true;
                }
                Ok(Batch { items, over })
            }
        }
        d.deserialize_seq(Items)
    }
}

/// One request object with its members left raw, as the node reads it: a member given twice
/// is an error, unknown members are ignored.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

fn request(at: usize, raw: &RawValue) -> Result<Request, Error> {
    let text = raw.get();
    if !text.starts_with('{') {
        return Err(Error::NotAnObject { at });
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|_| Error::NotAnObject { at })?;
    if wire.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(Error::NotJsonRpc2 { at });
    }
    let id = wire.id.map(|raw| id(at, raw)).transpose()?;
    let name = wire
        .method
        .filter(|m| m.get().len() <= METHOD_MAX)
        .and_then(|m| serde_json::from_str::<String>(m.get()).ok())
        .ok_or(Error::NoMethod { at })?;
    if wire.params.is_some_and(|p| !p.get().starts_with(['[', '{'])) {
        return Err(Error::ParamsNotStructured { at });
    }
    let method = Method::from_name(&name).ok_or(Error::UnknownMethod { at, name })?;
    let cost = match (method, wire.params) {
        (Method::AnchorPutBatch, Some(params)) => batch_pairs(params.get()).unwrap_or(1),
        _ => 1,
    };
    Ok(Request { id, method, cost })
}

/// An id as the node accepts it: a string, a number or null, at most [`ID_MAX`] bytes of JSON.
fn id(at: usize, raw: &RawValue) -> Result<Value, Error> {
    let text = raw.get();
    if text.len() > ID_MAX || text.starts_with(['{', '[']) {
        return Err(Error::BadId { at });
    }
    match serde_json::from_str(text) {
        Ok(v @ (Value::Null | Value::Number(_) | Value::String(_))) => Ok(v),
        _ => Err(Error::BadId { at }),
    }
}

/// The pairs of the transaction an `anchor_putBatch` call carries in `params` (its first
/// element, or its member `tx`), as the node finds and decodes it: a JSON string of hex, `0x`
/// optional. `None` when the node would refuse it.
fn batch_pairs(params: &str) -> Option<u32> {
    let TxParam(raw) = serde_json::from_str(params).ok()?;
    let raw = raw?;
    // Escapes at most sextuple a character, and the node refuses hex over 2 * TX_MAX: a longer
    // text is not read (it would only be parsed to be refused).
    if raw.get().len() > 12 * TX_MAX + 8 {
        return None;
    }
    let text: String = serde_json::from_str(raw.get()).ok()?;
    let hex = text.strip_prefix("0x").unwrap_or(&text);
    if hex.len() > 2 * TX_MAX {
        return None;
    }
    let bytes = hex::decode(hex).ok()?;
    match Tx::decode(&bytes).ok()?.into_body().payload {
        Payload::AnchorPutBatch(pairs) => u32::try_from(pairs.len()).ok(),
        _ => None,
    }
}

/// The `tx` parameter of a write, raw: the first element of an array, or the member `tx` of an
/// object (the last one, if given twice, as a parsed object keeps it). Nothing else is kept.
struct TxParam<'a>(Option<&'a RawValue>);

impl<'de> Deserialize<'de> for TxParam<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Find;
        impl<'de> Visitor<'de> for Find {
            type Value = TxParam<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("params, an array or an object")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<&'de RawValue>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TxParam(first))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut tx = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "tx" {
                        tx = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TxParam(tx))
            }
        }
        d.deserialize_any(Find)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vpbox_ledger::tx::TxBody;
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;

    fn signer() -> SoftwareSigner {
        SoftwareSigner::new(SecretKey::generate().unwrap())
    }

    fn tx_hex(s: &SoftwareSigner, payload: Payload) -> String {
        let body =
            TxBody { submitter: s.public_key().fingerprint(), nonce: 7, timestamp_ms: 1, payload };
        hex::encode(body.sign(s).unwrap().encode())
    }

    fn pairs(n: usize) -> Payload {
        Payload::AnchorPutBatch((0..n).map(|i| ([i as u8; 32], [1; 32])).collect())
    }

    fn call(id: u64, method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    fn classify_json(v: &Value) -> Result<Envelope, Error> {
        classify(v.to_string().as_bytes())
    }

    #[test]
    fn a_single_request_is_read_with_its_id_method_and_cost() {
        let env =
            classify(br#" {"jsonrpc":"2.0","id":"a","method":"anchor_get","params":["0x00"]} "#)
                .unwrap();
        assert!(!env.is_batch());
        let [r] = env.requests() else { panic!("one request") };
        assert_eq!((r.id(), r.method(), r.cost()), (Some(&json!("a")), Method::AnchorGet, 1));
        assert_eq!(env.cost(), 1);
    }

    #[test]
    fn notifications_have_no_id_and_still_count() {
        // A null id reads as absent, as the node's request object reads it: a notification.
        for body in [
            br#"{"jsonrpc":"2.0","method":"block_latestBlock"}"#.as_slice(),
            br#"{"jsonrpc":"2.0","method":"block_latestBlock","id":null}"#,
        ] {
            let env = classify(body).unwrap();
            assert_eq!(env.requests()[0].id(), None);
            assert_eq!(env.cost(), 1);
        }
    }

    #[test]
    fn a_batch_of_1000_passes_and_1001_does_not() {
        let batch = |n: u64| {
            Value::Array((0..n).map(|i| call(i, "tx_getTransactionByHash", json!([]))).collect())
        };
        let env = classify_json(&batch(1000)).unwrap();
        assert!(env.is_batch());
        assert_eq!(env.requests().len(), 1000);
        assert_eq!(env.cost(), 1000);
        assert_eq!(env.requests()[999].id(), Some(&json!(999)));
        assert_eq!(classify_json(&batch(1001)), Err(Error::BatchTooLong { max: BATCH_MAX }));
        // A batch of one is still a batch (the node answers it with an array).
        assert!(classify_json(&batch(1)).unwrap().is_batch());
        assert_eq!(classify(b" [ ] "), Err(Error::EmptyBatch));
    }

    #[test]
    fn an_over_long_batch_of_anything_is_refused_whatever_its_items() {
        // Items that are not requests at all: the count is refused before any is read.
        let body = format!("[{}1]", "1,".repeat(5000));
        assert_eq!(classify(body.as_bytes()), Err(Error::BatchTooLong { max: BATCH_MAX }));
    }

    #[test]
    fn nesting_is_bounded_on_the_bytes_at_every_depth() {
        let nested = |depth: usize| {
            let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"anchor_get","params":{inner}}}"#)
        };
        // The request object is depth 1, its params 2, …
        assert!(classify(nested(DEPTH_MAX).as_bytes()).is_ok());
        for depth in [DEPTH_MAX + 1, 129, 10_000] {
            assert_eq!(classify(nested(depth).as_bytes()), Err(Error::TooDeep { max: DEPTH_MAX }));
        }
        // Unbalanced and unterminated: still bounded, never a panic.
        assert_eq!(classify("[".repeat(100_000).as_bytes()), Err(Error::TooDeep { max: 32 }));
        // Brackets inside strings do not count, escaped quotes included.
        let deep_string = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"anchor_get","params":["\"{}"]}}"#,
            "[".repeat(100)
        );
        assert!(classify(deep_string.as_bytes()).is_ok());
    }

    #[test]
    fn bodies_that_are_not_json_are_parse_errors() {
        for body in [&b""[..], b"{", b"nul", b"{\"jsonrpc\":\"2.0\"} x", b"\xff\xfe", b"[1,]"] {
            let e = classify(body).unwrap_err();
            assert!(matches!(e, Error::NotJson(_)), "{body:?}: {e:?}");
            assert_eq!(e.code(), -32700);
        }
    }

    #[test]
    fn wrong_types_and_shapes_are_invalid_requests() {
        let cases: [(&str, Error); 14] = [
            ("1", Error::NotAnObject { at: 0 }),
            (r#""anchor_put""#, Error::NotAnObject { at: 0 }),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"anchor_get"}, 5]"#,
                Error::NotAnObject { at: 1 },
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"anchor_get","method":"gov_submit"}"#,
                Error::NotAnObject { at: 0 },
            ),
            (r#"{"id":1,"method":"anchor_get"}"#, Error::NotJsonRpc2 { at: 0 }),
            (r#"{"jsonrpc":2.0,"id":1,"method":"anchor_get"}"#, Error::NotJsonRpc2 { at: 0 }),
            (r#"{"jsonrpc":"2.0","id":true,"method":"anchor_get"}"#, Error::BadId { at: 0 }),
            (r#"{"jsonrpc":"2.0","id":[1],"method":"anchor_get"}"#, Error::BadId { at: 0 }),
            (r#"{"jsonrpc":"2.0","id":1}"#, Error::NoMethod { at: 0 }),
            (r#"{"jsonrpc":"2.0","id":1,"method":7}"#, Error::NoMethod { at: 0 }),
            (r#"{"jsonrpc":"2.0","id":1,"method":["anchor_get"]}"#, Error::NoMethod { at: 0 }),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"anchor_get","params":"0x00"}"#,
                Error::ParamsNotStructured { at: 0 },
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"anchor_putBatch","params":7}"#,
                Error::ParamsNotStructured { at: 0 },
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"anchor_get","params":null,"params":[]}"#,
                Error::NotAnObject { at: 0 },
            ),
        ];
        for (body, want) in cases {
            let got = classify(body.as_bytes());
            assert_eq!(got.as_ref().err(), Some(&want), "{body}");
            assert_eq!(want.code(), -32600);
        }
        let long_id =
            format!(r#"{{"jsonrpc":"2.0","id":"{}","method":"anchor_get"}}"#, "i".repeat(255));
        assert_eq!(classify(long_id.as_bytes()), Err(Error::BadId { at: 0 }));
        let ok_id =
            format!(r#"{{"jsonrpc":"2.0","id":"{}","method":"anchor_get"}}"#, "i".repeat(254));
        assert!(classify(ok_id.as_bytes()).is_ok());
    }

    #[test]
    fn unknown_methods_are_named_and_long_names_are_not_read() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"admin_everything"}"#;
        let e = classify(body.as_bytes()).unwrap_err();
        assert_eq!(e, Error::UnknownMethod { at: 0, name: "admin_everything".into() });
        assert_eq!(e.code(), -32601);
        let long = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#, "m".repeat(129));
        assert_eq!(classify(long.as_bytes()), Err(Error::NoMethod { at: 0 }));
        // Escapes are read as the node reads them: this is anchor_put.
        let escaped = br#"{"jsonrpc":"2.0","id":1,"method":"anchor\u005fput"}"#;
        assert_eq!(classify(escaped).unwrap().requests()[0].method(), Method::AnchorPut);
    }

    #[test]
    fn an_anchor_put_batch_costs_its_pairs_by_position_or_by_name() {
        let s = signer();
        let tx = tx_hex(&s, pairs(37));
        for params in [
            json!([tx]),
            json!([format!("0x{tx}"), false]),
            json!({"wait": true, "tx": tx}),
            json!({"tx": "00", "tx": tx}),
        ] {
            let env = classify_json(&call(1, "anchor_putBatch", params.clone())).unwrap();
            assert_eq!(env.cost(), 37, "{params}");
        }
        // Duplicate keys built by hand (json! keeps the last one): the last wins, as in a
        // parsed object.
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"anchor_putBatch","params":{{"tx":"{tx}","tx":"00"}}}}"#
        );
        assert_eq!(classify(body.as_bytes()).unwrap().cost(), 1);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"anchor_putBatch","params":{{"tx":"00","tx":"{tx}"}}}}"#
        );
        assert_eq!(classify(body.as_bytes()).unwrap().cost(), 37);
    }

    #[test]
    fn a_transaction_the_node_would_refuse_costs_one() {
        let s = signer();
        let good = tx_hex(&s, pairs(5));
        let single = tx_hex(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] });
        for params in [
            json!([]),
            json!({}),
            json!([5]),
            json!([{"tx": good}]),
            json!({"transaction": good}),
            json!(["zz"]),
            json!([&good[..good.len() - 2]]),
            json!([format!("{good}00")]),
            json!([format!("0X{good}")]),
            json!([single]),
        ] {
            let env = classify_json(&call(1, "anchor_putBatch", params.clone())).unwrap();
            assert_eq!(env.cost(), 1, "{params}");
        }
        // Only anchor_putBatch looks at its transaction.
        let env = classify_json(&call(1, "anchor_put", json!([good]))).unwrap();
        assert_eq!(env.cost(), 1);
    }

    #[test]
    fn a_batch_of_batches_sums_its_pairs() {
        let s = signer();
        let body = Value::Array(vec![
            call(1, "anchor_putBatch", json!([tx_hex(&s, pairs(10_000))])),
            call(
                2,
                "anchor_put",
                json!([tx_hex(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] })]),
            ),
            call(3, "anchor_putBatch", json!({"tx": tx_hex(&s, pairs(2))})),
        ]);
        let env = classify_json(&body).unwrap();
        let costs: Vec<u32> = env.requests().iter().map(Request::cost).collect();
        assert_eq!(costs, [10_000, 1, 2]);
        assert_eq!(env.cost(), 10_003);
    }

    #[test]
    fn a_claimed_count_that_the_bytes_do_not_carry_costs_one() {
        // A header announcing 10,000 pairs over one pair's bytes: the ledger's decoder refuses
        // it before allocating, and the node executes nothing.
        let s = signer();
        let mut bytes = hex::decode(tx_hex(&s, pairs(1))).unwrap();
        bytes[50..54].copy_from_slice(&10_000u32.to_be_bytes());
        let env = classify_json(&call(1, "anchor_putBatch", json!([hex::encode(bytes)]))).unwrap();
        assert_eq!(env.cost(), 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(env) = classify(&bytes) {
                proptest::prop_assert!(!env.requests().is_empty());
                proptest::prop_assert!(env.requests().len() <= BATCH_MAX);
            }
        }

        #[test]
        fn bracket_soup_never_panics(s in "[\\[\\]{}\",:a-z0-9\\\\ ]{0,200}") {
            let _ = classify(s.as_bytes());
        }
    }
}
