//! `vpbox anchor`: what a POSP computes and (with the node) puts on the ledger.

use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::Outcome;
use crate::cli::AnchorHashArgs;
use crate::files::{SMALL_FILE_MAX, read_all};
use vpbox_ledger::slip;

#[derive(Serialize)]
struct Hashed<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    value: String,
}

pub(crate) fn hash(args: &AnchorHashArgs) -> Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let mut results = Vec::new();
    let mut failures = 0usize;
    for name in &args.slips {
        let computed = read_all(name, SMALL_FILE_MAX).and_then(|bytes| {
            if args.raw {
                Ok((None, vpbox_sm::sm3::hash(&bytes)))
            } else {
                let (_, a) = slip::parse(&bytes).with_context(|| name.clone())?;
                Ok((Some(a.key), a.value))
            }
        });
        match computed {
            Ok((key, value)) => {
                let key = key.map(|k| format!("0x{k}"));
                let value = format!("0x{value}");
                if !args.json {
                    match &key {
                        Some(k) => writeln!(out, "{k}  {value}  {name}")?,
                        None => writeln!(out, "{value}  {name}")?,
                    }
                }
                results.push(Hashed { file: name, key, value });
            }
            Err(e) => {
                failures += 1;
                eprintln!("vpbox: {e:#}");
            }
        }
    }
    if args.json {
        serde_json::to_writer(&mut out, &results)?;
        writeln!(out)?;
    }
    if failures > 0 {
        bail!("{failures} of {} slips could not be hashed", args.slips.len());
    }
    Ok(Outcome::Ok)
}
