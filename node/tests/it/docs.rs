//! The API documents agree with themselves: every example in `docs/openrpc.json` and in
//! `docs/jsonrpc.md` fits the schemas of `docs/openrpc.json`. (The answers the node actually
//! gives are held to the same schemas where the tests receive them: `api.rs` here, the
//! appliance's cluster tests end to end.)

use serde_json::{Value, json};

use crate::openrpc::spec;

/// Every string in the OpenRPC examples: what an elided value in jsonrpc.md stands for.
fn example_strings() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for m in spec().doc()["methods"].as_array().unwrap() {
        walk(&m["examples"], &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// `v` with each elided string (`0xb4536091…d025a8d9`) replaced by the one example value it
/// abbreviates.
fn unelide(v: &mut Value, full: &[String]) {
    match v {
        Value::String(s) if s.contains('…') => {
            let (head, tail) = s.split_once('…').unwrap();
            let fits: Vec<&String> = full
                .iter()
                .filter(|f| f.starts_with(head) && f.ends_with(tail))
                .filter(|f| f.len() > head.len() + tail.len())
                .collect();
            assert_eq!(fits.len(), 1, "{s:?} abbreviates no single OpenRPC example value");
            *s = fits[0].clone();
        }
        Value::Array(a) => a.iter_mut().for_each(|x| unelide(x, full)),
        Value::Object(o) => o.values_mut().for_each(|x| unelide(x, full)),
        _ => {}
    }
}

/// The method's parameters (content descriptors), in order.
fn params(method: &Value) -> Vec<&Value> {
    method["params"].as_array().unwrap().iter().map(|p| spec().resolve(p)).collect()
}

/// Checks `given` (`[value, …]` by position or `{name: value}` by name) against `method`'s
/// parameters: each known, each fitting its schema, none required missing.
fn check_params(method: &Value, given: &Value) -> Result<(), String> {
    let name = method["name"].as_str().unwrap();
    let list = params(method);
    let named: Vec<(String, Value)> = match given {
        Value::Array(a) => {
            if a.len() > list.len() {
                return Err(format!("{name}: {} params, {} documented", a.len(), list.len()));
            }
            list.iter()
                .zip(a)
                .map(|(p, v)| (p["name"].as_str().unwrap().into(), v.clone()))
                .collect()
        }
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        other => return Err(format!("{name}: params {other} are neither array nor object")),
    };
    for (pname, value) in &named {
        let p = list
            .iter()
            .find(|p| p["name"] == pname.as_str())
            .ok_or_else(|| format!("{name}: no parameter {pname:?}"))?;
        spec().check(&p["schema"], value).map_err(|e| format!("{name} {pname} {value}: {e}"))?;
    }
    for p in list.iter().filter(|p| p["required"] == true) {
        if !named.iter().any(|(n, _)| p["name"] == n.as_str()) {
            return Err(format!("{name}: required parameter {} missing", p["name"]));
        }
    }
    Ok(())
}

#[test]
fn every_openrpc_example_fits_its_method_schemas() {
    let mut checked = 0;
    for m in spec().doc()["methods"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        for ex in m["examples"].as_array().into_iter().flatten() {
            let by_name: serde_json::Map<String, Value> = ex["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["name"].as_str().unwrap().to_string(), p["value"].clone()))
                .collect();
            let what = format!("{name} example {}", ex["name"]);
            check_params(m, &Value::Object(by_name)).unwrap_or_else(|e| panic!("{what}: {e}"));
            spec()
                .check_result(name, &ex["result"]["value"])
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            checked += 1;
        }
        // Every documented error is a code and a message.
        for e in m["errors"].as_array().into_iter().flatten() {
            let e = spec().resolve(e);
            assert!(e["code"].is_i64() && e["message"].is_string(), "{name}: error {e}");
        }
    }
    assert!(checked >= 15, "only {checked} examples: the walk missed some");
}

#[test]
fn the_examples_in_jsonrpc_md_fit_the_openrpc_schemas() {
    let md = include_str!("../../../docs/jsonrpc.md");
    let full = example_strings();
    let mut methods_by_id: Vec<(Value, String)> = Vec::new();
    let (mut requests, mut responses) = (0, 0);
    let mut in_code = false;
    for line in md.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(at) = line.find(r#"{"jsonrpc""#).filter(|_| in_code) else { continue };
        let mut stream = serde_json::Deserializer::from_str(&line[at..]).into_iter::<Value>();
        let mut v = stream.next().unwrap().unwrap_or_else(|e| panic!("{line}: {e}"));
        unelide(&mut v, &full);
        if let Some(method) = v["method"].as_str() {
            let m = spec().method(method).unwrap_or_else(|| panic!("{method} is not documented"));
            check_params(m, &v["params"]).unwrap_or_else(|e| panic!("{line}: {e}"));
            methods_by_id.push((v["id"].clone(), method.to_string()));
            requests += 1;
        } else {
            match methods_by_id.iter().find(|(id, _)| *id == v["id"]) {
                Some((_, method)) => spec().check_response(method, &v),
                // An answer shown without its request: its error is one the document defines.
                None => {
                    let code = v["error"]["code"].as_i64().unwrap_or(0);
                    let defined = spec().doc()["components"]["errors"]
                        .as_object()
                        .unwrap()
                        .values()
                        .any(|e| e["code"] == code);
                    if defined { Ok(()) } else { Err(format!("error {code} is not documented")) }
                }
            }
            .unwrap_or_else(|e| panic!("{line}: {e}"));
            responses += 1;
        }
    }
    assert!(requests >= 2 && responses >= 3, "{requests} requests, {responses} responses found");
}

#[test]
fn the_checker_refuses_what_the_documents_do_not_say() {
    // Each of these would pass a checker that checked nothing.
    let nodes = spec().method("node_getNodes").unwrap()["examples"][0]["result"]["value"].clone();
    spec().check_result("node_getNodes", &nodes).unwrap();
    let mut no_epoch = nodes.clone();
    no_epoch.as_object_mut().unwrap().remove("epoch");
    assert!(spec().check_result("node_getNodes", &no_epoch).is_err(), "epoch is required");
    let mut bad_member = nodes;
    bad_member["nodes"][1]["status"] = json!("asleep");
    assert!(spec().check_result("node_getNodes", &bad_member).is_err(), "through $ref NodeInfo");
    let zero = format!("0x{}", "00".repeat(32));
    let absent = json!({"ok": false, "message": "the key is not exist", "value": zero});
    spec().check_result("anchor_get", &absent).unwrap();
    let short = json!({"ok": false, "message": "the key is not exist", "value": "0x1234"});
    assert!(spec().check_result("anchor_get", &short).is_err());
    let extra = json!({"ok": false, "message": "the key is not exist", "value": zero, "x": 1});
    assert!(spec().check_result("anchor_get", &extra).is_err(), "no undocumented fields");
    assert!(spec().check_result("anchor_put", &json!({"status": "pending"})).is_err());
    assert!(spec().check_result("block_getChainHeight", &json!("1")).is_err());
    assert!(spec().check_result("no_such_method", &json!(1)).is_err());
    spec().check_error("anchor_put", -32001).unwrap();
    spec().check_error("anchor_get", -32601).unwrap();
    assert!(spec().check_error("anchor_get", -32001).is_err(), "not an error anchor_get gives");
    let envelope = json!({"jsonrpc": "2.0", "id": 1, "result": 2});
    spec().check_response("block_getChainHeight", &envelope).unwrap();
    assert!(spec().check_response("block_getChainHeight", &json!({"id": 1})).is_err());
    assert!(check_params(spec().method("anchor_put").unwrap(), &json!(["00", "yes"])).is_err());
}
