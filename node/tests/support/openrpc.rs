//! `docs/openrpc.json` as a checker of what the node answers: each method's result schema and
//! documented errors, its `$ref`s resolved against the document's own `components`.
//!
//! Shared by the node's tests and the appliance's end-to-end tests (`#[path]`), so every
//! JSON-RPC answer those tests receive is held to the documentation; loaded once per test
//! binary.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own part

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The document and a validator per method's result.
pub struct Spec {
    doc: Value,
    results: HashMap<String, jsonschema::Validator>,
}

/// Codes any method may answer, whatever its own list (the envelope's and the transport's).
const ANY_METHOD: [i64; 4] = [-32700, -32600, -32601, -32005];

/// `docs/openrpc.json`, loaded once.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = include_str!("../../../docs/openrpc.json");
        let doc: Value = serde_json::from_str(text).expect("docs/openrpc.json is JSON");
        let mut spec = Spec { doc, results: HashMap::new() };
        let methods = spec.doc["methods"].as_array().expect("methods").clone();
        for m in &methods {
            let name = m["name"].as_str().expect("a method has a name").to_string();
            let validator = spec.validator(&m["result"]["schema"]);
            spec.results.insert(name, validator);
        }
        spec
    })
}

impl Spec {
    /// The document.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// The method `name`.
    pub fn method(&self, name: &str) -> Option<&Value> {
        self.doc["methods"].as_array()?.iter().find(|m| m["name"] == name)
    }

    /// What an OpenRPC reference object (`{"$ref": "#/components/…"}`: a content descriptor,
    /// an error) stands for; anything else is itself.
    pub fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
                self.doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"))
            }
            None => v,
        }
    }

    /// A validator of `schema` (JSON Schema draft 7, as OpenRPC 1.2.6 uses), whose
    /// `#/components/schemas/…` references resolve inside the document.
    pub fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        jsonschema::draft7::new(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
    }

    /// Whether `value` fits `schema`; the errors, with where in `value`, if not.
    pub fn check(&self, schema: &Value, value: &Value) -> Result<(), String> {
        errors(&self.validator(schema), value)
    }

    /// Whether `result` fits `method`'s result schema.
    pub fn check_result(&self, method: &str, result: &Value) -> Result<(), String> {
        let v = self.results.get(method).ok_or_else(|| format!("no method {method} documented"))?;
        errors(v, result).map_err(|e| format!("{method} result {result}: {e}"))
    }

    /// Whether `code` is an error `method` documents (or any method may answer).
    pub fn check_error(&self, method: &str, code: i64) -> Result<(), String> {
        if ANY_METHOD.contains(&code) {
            return Ok(());
        }
        let m = self.method(method).ok_or_else(|| format!("no method {method} documented"))?;
        let listed: Vec<i64> = m["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| self.resolve(e)["code"].as_i64())
            .collect();
        if listed.contains(&code) {
            Ok(())
        } else {
            Err(format!("{method} answered error {code}, not among its documented {listed:?}"))
        }
    }

    /// Whether a JSON-RPC response to `method` is what the document says: a result of its
    /// schema, or one of its errors.
    pub fn check_response(&self, method: &str, response: &Value) -> Result<(), String> {
        if response["jsonrpc"] != "2.0" {
            return Err(format!("not a JSON-RPC 2.0 response: {response}"));
        }
        match (response.get("result"), response.get("error")) {
            (Some(r), None) => self.check_result(method, r),
            (None, Some(e)) => match (e["code"].as_i64(), e["message"].as_str()) {
                (Some(code), Some(_)) => self.check_error(method, code),
                _ => Err(format!("an error needs a code and a message: {response}")),
            },
            _ => Err(format!("a response has a result or an error: {response}")),
        }
    }
}

fn errors(v: &jsonschema::Validator, value: &Value) -> Result<(), String> {
    let all: Vec<String> =
        v.iter_errors(value).map(|e| format!("at {:?}: {e}", e.instance_path().as_str())).collect();
    if all.is_empty() { Ok(()) } else { Err(all.join("; ")) }
}
