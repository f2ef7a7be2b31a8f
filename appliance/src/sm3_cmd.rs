//! `vpbox sm3`: SM3 checksums in the format and with the behaviour of GNU `sha256sum`.

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use vpbox_sm::sm3::{Digest, Sm3};

use crate::Outcome;
use crate::cli::Sm3Args;
use crate::files::{SMALL_FILE_MAX, open_input, read_all};

#[derive(Serialize)]
struct Hashed<'a> {
    file: &'a str,
    sm3: String,
}

#[derive(Serialize)]
struct Checked {
    file: String,
    status: &'static str,
}

pub(crate) fn run(args: &Sm3Args) -> Result<Outcome> {
    let stdin = ["-".to_string()];
    let names = if args.files.is_empty() { &stdin[..] } else { &args.files[..] };
    if args.check { check(names, args) } else { hash_files(names, args.json) }
}

/// Feeds a whole stream into `h`, in 64 KiB pieces (a large file needs no memory).
pub(crate) fn absorb(h: &mut Sm3, mut r: impl Read) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                h.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn hash_file(name: &str) -> Result<Digest> {
    let mut h = Sm3::new();
    absorb(&mut h, open_input(name)?).with_context(|| name.to_string())?;
    Ok(h.finalize())
}

fn hash_files(names: &[String], json: bool) -> Result<Outcome> {
    let mut out = io::stdout().lock();
    let mut results = Vec::new();
    let mut failures = 0usize;
    for name in names {
        match hash_file(name) {
            Ok(d) if json => results.push(Hashed { file: name, sm3: d.to_hex() }),
            Ok(d) => writeln!(out, "{d}  {name}")?,
            Err(e) => {
                failures += 1;
                eprintln!("vpbox: {e:#}");
            }
        }
    }
    if json {
        serde_json::to_writer(&mut out, &results)?;
        writeln!(out)?;
    }
    if failures > 0 {
        bail!("{failures} of {} files could not be read", names.len());
    }
    Ok(Outcome::Ok)
}

/// Parses a `sha256sum`-style line: 64 hex digits, a space, a space or `*`, the name.
fn parse_line(line: &str) -> Option<(Digest, &str)> {
    let (hex, rest) = line.split_at_checked(64)?;
    let digest = Digest::from_hex(hex).filter(|_| !hex.starts_with("0x"))?;
    let name = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *"))?;
    (!name.is_empty()).then_some((digest, name))
}

fn check(lists: &[String], args: &Sm3Args) -> Result<Outcome> {
    let mut out = io::stdout().lock();
    let (mut matched, mut mismatched, mut unreadable, mut malformed) = (0usize, 0, 0, 0);
    let mut results = Vec::new();
    for list in lists {
        let text = read_all(list, SMALL_FILE_MAX)?;
        let text = String::from_utf8(text).with_context(|| format!("{list}: not a text file"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((want, name)) = parse_line(line) else {
                malformed += 1;
                continue;
            };
            let status = match hash_file(name) {
                Ok(got) if got == want => {
                    matched += 1;
                    "OK"
                }
                Ok(_) => {
                    mismatched += 1;
                    "FAILED"
                }
                Err(e) => {
                    unreadable += 1;
                    eprintln!("vpbox: {e:#}");
                    "FAILED open or read"
                }
            };
            if args.json {
                results.push(Checked { file: name.to_owned(), status });
            } else if !(args.quiet && status == "OK") {
                writeln!(out, "{name}: {status}")?;
            }
        }
    }
    if args.json {
        serde_json::to_writer(&mut out, &results)?;
        writeln!(out)?;
    }
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    if malformed > 0 {
        eprintln!(
            "vpbox: WARNING: {malformed} {} improperly formatted",
            plural(malformed, "line is", "lines are")
        );
    }
    if unreadable > 0 {
        eprintln!(
            "vpbox: WARNING: {unreadable} listed {} could not be read",
            plural(unreadable, "file", "files")
        );
    }
    if mismatched > 0 {
        eprintln!(
            "vpbox: WARNING: {mismatched} computed {} did NOT match",
            plural(mismatched, "checksum", "checksums")
        );
    }
    if matched + mismatched + unreadable == 0 {
        eprintln!("vpbox: no properly formatted SM3 checksum lines found");
        return Ok(Outcome::Invalid);
    }
    Ok(if mismatched + unreadable == 0 { Outcome::Ok } else { Outcome::Invalid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_lines() {
        let hex = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0";
        let line = format!("{hex}  a b.txt");
        let (d, name) = parse_line(&line).unwrap();
        assert_eq!((d.to_hex().as_str(), name), (hex, "a b.txt"));
        assert_eq!(parse_line(&format!("{hex} *bin")).unwrap().1, "bin");
        assert!(parse_line(&format!("{hex} x")).is_none());
        assert!(parse_line(&format!("{hex}  ")).is_none());
        assert!(parse_line("abc  x").is_none());
        assert!(parse_line("é").is_none());
    }
}
