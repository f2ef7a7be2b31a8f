//! The read side of the node's JSON-RPC API, over the ledger: what every bank answers the same
//! way because every honest node holds the same blocks. Method names follow the platform the
//! seed used; `docs/jsonrpc.md` and `docs/openrpc.json` document them.
//!
//! Writes (`anchor_put`, `anchor_putBatch`) go through intake and consensus: see
//! [`crate::service::NodeApi`].

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde_json::{Value, json};
use vpbox_ledger::block::Block;
use vpbox_ledger::contract::{self, PutOutcome};
use vpbox_ledger::merkle::{self, Step};
use vpbox_ledger::slip;
use vpbox_ledger::tx::{Payload, Tx};
use vpbox_ledger::{Ledger, Receipt};
use vpbox_sm::sm3::Digest;

use crate::rpc::{Methods, RpcError, bytes32, param};

/// Largest slip accepted by `anchor_verify` (base64 of up to 16 MiB).
pub const SLIP_MAX: usize = 16 << 20;

/// The read API over a ledger the node writes.
pub struct ReadApi {
    ledger: Arc<RwLock<Ledger>>,
    /// The genesis file's bytes, which every proof bundle carries.
    genesis: Arc<[u8]>,
}

impl ReadApi {
    /// Serves `ledger`, founded by the genesis file `genesis`.
    pub fn new(ledger: Arc<RwLock<Ledger>>, genesis: Arc<[u8]>) -> Self {
        Self { ledger, genesis }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Ledger) -> Result<T, vpbox_ledger::Error>,
    ) -> Result<T, RpcError> {
        let ledger = self
            .ledger
            .read()
            .map_err(|_| RpcError::new(RpcError::INTERNAL, "ledger lock poisoned"))?;
        f(&ledger).map_err(|e| RpcError::new(RpcError::INTERNAL, e.to_string()))
    }

    fn anchor_get(&self, params: &Value) -> Result<Value, RpcError> {
        let key = bytes32(params, 0, "key")?;
        let found = self.with(|l| l.anchor(&key))?;
        let (ok, message, value) = contract::get_answer(found.map(|r| r.value));
        let mut out = json!({"ok": ok, "message": message, "value": hex0x(&value)});
        if let (Some(rec), Some(obj)) = (found, out.as_object_mut()) {
            obj.insert("txHash".into(), json!(hex0x(rec.tx.as_bytes())));
            obj.insert("blockNumber".into(), json!(rec.height));
        }
        Ok(out)
    }

    fn anchor_verify(&self, params: &Value) -> Result<Value, RpcError> {
        let b64 = param(params, 0, "slip").and_then(Value::as_str).ok_or_else(|| {
            RpcError::new(RpcError::INVALID_PARAMS, "missing string parameter \"slip\" (base64)")
        })?;
        if b64.len() > SLIP_MAX / 3 * 4 + 4 {
            return Err(RpcError::new(RpcError::TOO_LARGE, "slip larger than 16 MiB"));
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| {
            RpcError::new(RpcError::INVALID_PARAMS, format!("slip is not base64: {e}"))
        })?;
        let (_, anchor) = slip::parse(&bytes)
            .map_err(|e| RpcError::new(RpcError::INVALID_PARAMS, e.to_string()))?;
        let found = self.with(|l| l.anchor(&anchor.key.0))?;
        let matches = found.is_some_and(|r| r.value == anchor.value.0);
        Ok(json!({
            "key": hex0x(anchor.key.as_bytes()),
            "value": hex0x(anchor.value.as_bytes()),
            "anchored": found.is_some(),
            "match": matches,
            "anchoredValue": found.map(|r| hex0x(&r.value)),
            "blockNumber": found.map(|r| r.height),
        }))
    }

    fn anchor_proof(&self, params: &Value) -> Result<Value, RpcError> {
        let key = bytes32(params, 0, "key")?;
        let Some(rec) = self.with(|l| l.anchor(&key))? else {
            return Err(RpcError::new(RpcError::INVALID_PARAMS, contract::KEY_NOT_EXIST));
        };
        let (block, tx) = self.with(|l| Ok((l.block(rec.height)?, l.transaction(&rec.tx)?)))?;
        let (Some(block), Some((_, index, tx))) = (block, tx) else {
            return Err(RpcError::new(
                RpcError::INTERNAL,
                "anchor without its block or transaction",
            ));
        };
        let path = merkle::proof(&block.tx_hashes, index as usize).ok_or_else(|| {
            RpcError::new(RpcError::INTERNAL, "transaction index outside its block")
        })?;
        // No bundle when the ledger holds no enrollment of the submitter (admission off, or a
        // ledger written before enrollments were recorded): the parts stand alone then.
        let bundle = match vpbox_proof::build::bundle(&self.ledger, &self.genesis, &key) {
            Ok(Some(b)) => Some(b),
            Ok(None) => {
                return Err(RpcError::new(RpcError::INVALID_PARAMS, contract::KEY_NOT_EXIST));
            }
            Err(vpbox_proof::build::BuildError::Unprovable(_)) => None,
            Err(e) => return Err(build_error(e)),
        };
        let mut out = json!({
            "key": hex0x(&key),
            "value": hex0x(&rec.value),
            "transaction": hex0x(&tx.encode()),
            "transactionIndex": index,
            "merklePath": path.iter().map(|s| match s {
                Step::Left(d) => json!({"left": hex0x(d.as_bytes())}),
                Step::Right(d) => json!({"right": hex0x(d.as_bytes())}),
            }).collect::<Vec<_>>(),
            "blockHeader": hex0x(&block.header.encode()),
            "commitCertificate": hex0x(&block.certificate),
        });
        if let (Some(b), Some(o)) = (bundle, out.as_object_mut()) {
            o.insert("bundle".into(), json!(hex0x(&b.encode())));
        }
        Ok(out)
    }

    /// A state proof of a key (present or not) against the last committed block.
    fn state_proof(&self, params: &Value) -> Result<Value, RpcError> {
        let key = bytes32(params, 0, "key")?;
        let bundle =
            vpbox_proof::build::state(&self.ledger, &self.genesis, &key).map_err(build_error)?;
        let vpbox_proof::bundle::Body::State(st) = &bundle.body else {
            return Err(RpcError::new(RpcError::INTERNAL, "not a state proof"));
        };
        let found = match st.path.terminal {
            vpbox_ledger::state::Terminal::Leaf(l) if l.key == key => Some(l),
            _ => None,
        };
        Ok(json!({
            "key": hex0x(&key),
            "anchored": found.is_some(),
            "value": found.map(|l| hex0x(&l.value)),
            "blockNumber": found.map(|l| l.height),
            "asOf": st.evidence.header.height,
            "bundle": hex0x(&bundle.encode()),
        }))
    }

    fn consistency_proof(&self, params: &Value) -> Result<Value, RpcError> {
        let height = |i: usize, name: &str| {
            param(params, i, name).and_then(Value::as_u64).ok_or_else(|| {
                RpcError::new(
                    RpcError::INVALID_PARAMS,
                    format!("{name} must be a non-negative integer (a block height)"),
                )
            })
        };
        let (from, to) = (height(0, "from")?, height(1, "to")?);
        let bundle = vpbox_proof::build::consistency(&self.ledger, &self.genesis, from, to)
            .map_err(build_error)?;
        Ok(json!({ "from": from, "to": to, "bundle": hex0x(&bundle.encode()) }))
    }

    fn block(&self, block: Option<Block>) -> Result<Value, RpcError> {
        block
            .map(|b| block_json(&b))
            .ok_or_else(|| RpcError::new(RpcError::INVALID_PARAMS, "no such block"))
    }
}

/// A proof the node cannot make: a span asked for wrongly is the caller's (-32602), a proof
/// above the format's limits is too large (-32005, prove a shorter span), anything else the
/// node's (-32603).
fn build_error(e: vpbox_proof::build::BuildError) -> RpcError {
    use vpbox_proof::build::BuildError;
    match e {
        BuildError::Span(why) => RpcError::new(RpcError::INVALID_PARAMS, why),
        BuildError::TooLarge(why) => RpcError::new(RpcError::TOO_LARGE, why),
        e => RpcError::new(RpcError::INTERNAL, e.to_string()),
    }
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn block_json(b: &Block) -> Value {
    let h = &b.header;
    json!({
        "number": h.height,
        "hash": hex0x(h.hash().as_bytes()),
        "parentHash": hex0x(h.parent.as_bytes()),
        "merkleRoot": hex0x(h.tx_root.as_bytes()),
        "stateRoot": hex0x(h.state_root.as_bytes()),
        "txCount": h.tx_count,
        "timestamp": h.timestamp_ms,
        "resultsRoot": hex0x(h.results_root.as_bytes()),
        "view": vpbox_consensus::wire::decode_certificate(&b.certificate).ok().map(|c| c.view.0),
        "transactions": b.tx_hashes.iter().map(|t| hex0x(t.as_bytes())).collect::<Vec<_>>(),
        "commitCertificate": hex0x(&b.certificate),
    })
}

/// `tx_getTransactionReceipt`'s answer: one `{ok, message}` per anchor put.
pub(crate) fn receipt_json(hash: &Digest, r: &Receipt) -> Value {
    json!({
        "txHash": hex0x(hash.as_bytes()),
        "blockNumber": r.height,
        "transactionIndex": r.index,
        "results": results_json(r),
    })
}

/// A receipt's outcomes, one `{"ok", "message"}` per put, in order.
pub(crate) fn results_json(r: &Receipt) -> Vec<Value> {
    r.outcomes
        .iter()
        .map(|o: &PutOutcome| {
            let (ok, message) = o.answer();
            json!({"ok": ok, "message": message})
        })
        .collect()
}

fn tx_json(height: u64, index: u32, tx: &Tx) -> Value {
    let payload = match &tx.body().payload {
        Payload::AnchorPut { key, value } => {
            json!({"type": "anchor_put", "key": hex0x(key), "value": hex0x(value)})
        }
        Payload::AnchorPutBatch(pairs) => json!({"type": "anchor_putBatch", "pairs": pairs.len()}),
        Payload::Config(bytes) => json!({"type": "config", "bytes": bytes.len()}),
        Payload::Enroll(der) => json!({"type": "cert_enroll", "certificate": hex0x(der)}),
        Payload::Crl(der) => json!({"type": "cert_publishCrl", "crl": hex0x(der)}),
    };
    json!({
        "hash": hex0x(tx.hash().as_bytes()),
        "blockNumber": height,
        "transactionIndex": index,
        "submitter": hex0x(tx.body().submitter.as_bytes()),
        "nonce": tx.body().nonce,
        "timestamp": tx.body().timestamp_ms,
        "payload": payload,
        "signature": hex0x(&tx.signature().to_raw()),
    })
}

impl Methods for ReadApi {
    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        match method {
            "anchor_get" => self.anchor_get(params),
            "anchor_verify" => self.anchor_verify(params),
            "anchor_getProof" => self.anchor_proof(params),
            "anchor_getStateProof" => self.state_proof(params),
            "block_getConsistencyProof" => self.consistency_proof(params),
            "block_getChainHeight" => self.with(|l| Ok(json!(l.height()))),
            "block_latestBlock" => {
                let tip = self.with(|l| match l.tip() {
                    Some(t) => l.block(t.height),
                    None => Ok(None),
                })?;
                self.block(tip)
            }
            "block_getBlockByNumber" => {
                let n = param(params, 0, "number").and_then(Value::as_u64).ok_or_else(|| {
                    RpcError::new(RpcError::INVALID_PARAMS, "number must be a non-negative integer")
                })?;
                let b = self.with(|l| l.block(n))?;
                self.block(b)
            }
            "block_getBlockByHash" => {
                let h = Digest(bytes32(params, 0, "hash")?);
                let b = self.with(|l| l.block_by_hash(&h))?;
                self.block(b)
            }
            "tx_getTransactionByHash" => {
                let h = Digest(bytes32(params, 0, "hash")?);
                match self.with(|l| l.transaction(&h))? {
                    Some((height, index, tx)) => Ok(tx_json(height, index, &tx)),
                    None => Err(RpcError::new(RpcError::INVALID_PARAMS, "no such transaction")),
                }
            }
            "tx_getTransactionReceipt" => {
                let h = Digest(bytes32(params, 0, "hash")?);
                match self.with(|l| l.receipt(&h))? {
                    Some(r) => Ok(receipt_json(&h, &r)),
                    None => Err(RpcError::new(
                        RpcError::INVALID_PARAMS,
                        "no receipt: unknown or not committed yet",
                    )),
                }
            }
            _ => Err(RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {method:?}"))),
        }
    }

    /// The chain's height (in memory), while no commit holds the ledger. (Reads of RocksDB
    /// are not ready at once: one may wait for the disk. A read that RocksDB has in memory
    /// could be, with its `ReadTier::BlockCache`, which the `rocksdb` crate's version in use
    /// does not export.)
    fn call_now(&self, method: &str, _: &Value) -> Option<Result<Value, RpcError>> {
        if !self.ready_now(method) {
            return None;
        }
        // A commit holds the lock for its synced write: not ready (and a poisoned lock is
        // reported by `call`).
        let ledger = self.ledger.try_read().ok()?;
        Some(Ok(json!(ledger.height())))
    }

    fn ready_now(&self, method: &str) -> bool {
        method == "block_getChainHeight"
    }
}
