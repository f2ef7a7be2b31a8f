//! The read API over a real ledger: the seed's exact answers, slip verification, and a proof
//! that checks offline.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde_json::{Value, json};
use vpbox_ledger::Ledger;
use vpbox_ledger::block::Block;
use vpbox_ledger::merkle::{self, Step};
use vpbox_ledger::slip;
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_node::api::ReadApi;
use vpbox_node::rpc::{RpcError, handle};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, SoftwareSigner};

const SLIP: &str = include_str!("../../../docs/examples/slip.json");

/// Calls `method`; every answer is held to docs/openrpc.json.
fn call(api: &ReadApi, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let answer = handle(api, body.as_bytes()).unwrap();
    crate::openrpc::spec().check_response(method, &answer).unwrap_or_else(|e| panic!("{e}"));
    answer
}

fn hex32(v: &Value) -> [u8; 32] {
    Digest::from_hex(v.as_str().unwrap()).unwrap().0
}

#[test]
fn anchored_slips_are_found_verified_and_proven() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path()).unwrap();
    let s = SoftwareSigner::new(SecretKey::generate().unwrap());
    let (_, anchor) = slip::parse(SLIP.as_bytes()).unwrap();
    let mk = |nonce, payload| {
        TxBody { submitter: s.public_key().fingerprint(), nonce, timestamp_ms: 1, payload }
            .sign(&s)
            .unwrap()
    };
    let txs: Vec<Tx> = vec![
        mk(1, Payload::AnchorPut { key: [1; 32], value: [1; 32] }),
        mk(2, Payload::AnchorPut { key: anchor.key.0, value: anchor.value.0 }),
        mk(3, Payload::AnchorPut { key: [3; 32], value: [3; 32] }),
    ];
    ledger.init_genesis(&Block::genesis(vpbox_sm::sm3::hash(b"api test"), 0)).unwrap();
    let executed = ledger.execute(&[], txs.clone()).unwrap();
    ledger.commit(&executed, &[]).unwrap();
    let block = executed.block;
    let api = ReadApi::new(Arc::new(RwLock::new(ledger)), Arc::from(&b"api test"[..]));

    let got = call(&api, "anchor_get", json!([format!("0x{}", anchor.key.to_hex())]));
    assert_eq!(got["result"]["ok"], true);
    assert_eq!(got["result"]["message"], "Success");
    assert_eq!(got["result"]["value"], format!("0x{}", anchor.value.to_hex()));
    let absent = call(&api, "anchor_get", json!({"key": format!("0x{}", "00".repeat(32))}));
    assert_eq!(
        absent["result"],
        json!({"ok": false, "message": "the key is not exist", "value": format!("0x{}", "00".repeat(32))})
    );
    assert_eq!(
        call(&api, "anchor_get", json!(["0x1234"]))["error"]["code"],
        RpcError::INVALID_PARAMS
    );

    let b64 = base64::engine::general_purpose::STANDARD.encode(SLIP);
    let v = call(&api, "anchor_verify", json!([b64]));
    assert_eq!(
        (v["result"]["anchored"].clone(), v["result"]["match"].clone()),
        (json!(true), json!(true))
    );
    let edited = base64::engine::general_purpose::STANDARD.encode(SLIP.replace("128.00", "928.00"));
    let v = call(&api, "anchor_verify", json!([edited]));
    assert_eq!(
        (v["result"]["anchored"].clone(), v["result"]["match"].clone()),
        (json!(true), json!(false)),
        "same transaction, altered slip"
    );
    assert_eq!(
        call(&api, "anchor_verify", json!(["%%%"]))["error"]["code"],
        RpcError::INVALID_PARAMS
    );

    // The proof checks with nothing but the hashes: transaction → Merkle path → header root.
    let p = call(&api, "anchor_getProof", json!([format!("0x{}", anchor.key.to_hex())]))["result"]
        .clone();
    let tx = Tx::decode(
        &hex::decode(p["transaction"].as_str().unwrap().trim_start_matches("0x")).unwrap(),
    )
    .unwrap();
    let path: Vec<Step> = p["merklePath"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            if let Some(l) = s.get("left") {
                Step::Left(Digest(hex32(l)))
            } else {
                Step::Right(Digest(hex32(&s["right"])))
            }
        })
        .collect();
    assert!(merkle::verify(&tx.hash(), &path, &block.header.tx_root));
    assert!(tx.verify(s.public_key()).is_valid());
    assert_eq!(p["blockHeader"], format!("0x{}", hex::encode(block.header.encode())));

    // State proofs: the anchored key's first value, and a key never anchored, each a path to
    // the last block's state root.
    for (key, anchored) in [(anchor.key.0, true), ([9u8; 32], false)] {
        let r = call(&api, "anchor_getStateProof", json!([format!("0x{}", hex::encode(key))]));
        let r = &r["result"];
        assert_eq!(r["anchored"], json!(anchored), "{r}");
        assert_eq!(r["asOf"], 1);
        let bytes = hex::decode(r["bundle"].as_str().unwrap().trim_start_matches("0x")).unwrap();
        let b = vpbox_proof::bundle::Bundle::decode(&bytes).unwrap();
        let vpbox_proof::bundle::Body::State(st) = b.body else { panic!("a state bundle") };
        assert_eq!(st.evidence.header, block.header);
        let (root, what) = st.path.evaluate(&key).unwrap();
        assert_eq!(root, block.header.state_root);
        match what {
            vpbox_ledger::state::Lookup::Present(l) => {
                assert!(anchored);
                assert_eq!((l.value, l.height), (anchor.value.0, 1));
                assert_eq!(r["value"], format!("0x{}", anchor.value.to_hex()));
            }
            vpbox_ledger::state::Lookup::Absent => assert!(!anchored && r["value"].is_null()),
        }
    }
    assert_eq!(
        call(&api, "anchor_getStateProof", json!(["0x12"]))["error"]["code"],
        RpcError::INVALID_PARAMS
    );

    assert_eq!(call(&api, "block_getChainHeight", json!([]))["result"], 2, "genesis and one");
    let latest = call(&api, "block_latestBlock", json!([]))["result"].clone();
    assert_eq!(latest["txCount"], 3);
    let by_hash =
        call(&api, "block_getBlockByHash", json!([latest["hash"].clone()]))["result"].clone();
    assert_eq!(by_hash, call(&api, "block_getBlockByNumber", json!([1]))["result"]);
    let tx_hash = format!("0x{}", txs[1].hash().to_hex());
    assert_eq!(
        call(&api, "tx_getTransactionByHash", json!([&tx_hash]))["result"]["transactionIndex"],
        1
    );
    let receipt = call(&api, "tx_getTransactionReceipt", json!([tx_hash]))["result"].clone();
    assert_eq!(receipt["results"], json!([{"ok": true, "message": "Success"}]));
    assert_eq!(
        call(&api, "anchor_put", json!([]))["error"]["code"],
        RpcError::METHOD_NOT_FOUND,
        "the read API alone takes no writes (the node's NodeApi does)"
    );
}
