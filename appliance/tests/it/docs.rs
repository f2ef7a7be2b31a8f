//! The commands the documents show exist as written: every `vpbox …` line of a `sh` block in
//! README.md and the operator's documents, and every `ExecStart=` of the units, parses — each
//! subcommand and flag is one `vpbox` has (clap refuses an unknown one before it prints the help
//! that `--help`, appended, asks for). What they do is run for real elsewhere: the cluster test
//! runs the commands `cluster up` suggests, the renewal unit's, the day-end file's, the CA's.

use std::path::Path;

use crate::vpbox;

/// Splits a shell line into words: single and double quotes group, a backslash escapes.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The `vpbox` command lines of `text`'s `sh` blocks, continuation lines joined and comments
/// dropped: each with its optional `[…]` parts left out, and, if it has some, again with them in.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let cut = t.find(" #").map_or(t, |i| &t[..i]).trim_end();
        if !pending.is_empty() {
            pending.push(' ');
            pending.push_str(cut.trim_end_matches('\\').trim());
            if !cut.ends_with('\\') {
                out.push(std::mem::take(&mut pending));
            }
            continue;
        }
        if let Some(rest) = cut.strip_prefix("vpbox ") {
            let rest = rest.trim_end_matches('\\').trim().to_string();
            if cut.ends_with('\\') {
                pending = rest;
            } else {
                out.push(rest);
            }
        }
    }
    let mut all = Vec::new();
    for c in out {
        // `[--dir vpbox-dev]`: an optional part, shown as such.
        let (mut without, mut with) = (String::new(), String::new());
        let mut depth = 0;
        for ch in c.chars() {
            match ch {
                '[' if !without.ends_with('=') => depth += 1,
                ']' if depth > 0 => depth -= 1,
                _ if depth == 0 => {
                    without.push(ch);
                    with.push(ch);
                }
                _ => with.push(ch),
            }
        }
        let optional = with != without;
        all.push(without);
        if optional {
            all.push(with);
        }
    }
    all
}

/// The argument lists a synopsis line stands for: `a && b`, `a | b`, `> f` end it (each
/// `vpbox` command is listed on its own) but `; vpbox …` starts another; a word `x|y|z` (a
/// choice of subcommands or values) is each of them; `…` is a value after a flag, else more of
/// the same (dropped).
fn variants(command: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = words(command);
    loop {
        let end = rest.iter().position(|w| ["&&", "|", ">", ";"].contains(&w.as_str()));
        let (this, next) = match end {
            Some(i) => {
                let next = (rest[i] == ";").then(|| rest[i + 1..].to_vec());
                rest.truncate(i);
                (rest, next)
            }
            None => (rest, None),
        };
        let mut lists: Vec<Vec<String>> = vec![Vec::new()];
        let mut previous = String::new();
        for w in this {
            let flag_before = std::mem::replace(&mut previous, w.clone()).starts_with("--");
            if w == "…" {
                // A flag's value left out (`--url …`) stands for one; anything else for more.
                if flag_before {
                    lists.iter_mut().for_each(|l| l.push("X".into()));
                }
                continue;
            }
            if w.contains('|') && !w.starts_with('-') {
                lists = lists
                    .into_iter()
                    .flat_map(|l| {
                        w.split('|').map(move |alt| [l.clone(), vec![alt.to_string()]].concat())
                    })
                    .collect();
            } else {
                lists.iter_mut().for_each(|l| l.push(w.clone()));
            }
        }
        out.extend(lists);
        match next {
            Some(n) if n.first().is_some_and(|w| w == "vpbox") => rest = n[1..].to_vec(),
            _ => return out,
        }
    }
}

#[test]
fn every_vpbox_command_the_documents_and_units_show_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut check = |source: &str, command: &str| {
        for args in variants(command) {
            let mut args = args;
            args.push("--help".into());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = vpbox(&refs);
            checked += 1;
            if r.code != 0 {
                failures.push(format!("{source}: vpbox {}\n  {}", args.join(" "), r.stderr.trim()));
            }
        }
    };
    for doc in ["README.md", "docs/operations.md", "docs/renewals.md", "docs/jsonrpc.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let found = commands(&text);
        assert!(!found.is_empty() || doc == "docs/jsonrpc.md", "{doc}: no vpbox command found");
        for c in found {
            check(doc, &c);
        }
    }
    for unit in std::fs::read_dir(root.join("systemd")).unwrap() {
        let path = unit.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let Some(cmd) = line.strip_prefix("ExecStart=").or(line.strip_prefix("ExecReload="))
            else {
                continue;
            };
            if let Some(rest) = cmd.strip_prefix("/usr/bin/vpbox ") {
                check(&path.display().to_string(), rest);
            }
        }
    }
    assert!(checked > 40, "only {checked} commands found");
    assert!(failures.is_empty(), "{} of {checked}:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_splitter_reads_quotes_continuations_and_optional_parts() {
    assert_eq!(words("a 'b c' \"d e\" f\\ g ''"), ["a", "b c", "d e", "f g", ""]);
    let text = "x\n```sh\nvpbox a --b c \\\n    --d 'e f'   # note\nvpbox up [--dir x]\nls\n```\nvpbox no\n";
    assert_eq!(commands(text), ["a --b c --d 'e f'", "up ", "up --dir x"]);
    let v = variants("ca a|b --x 1 … ; vpbox c --y … | grep z");
    assert_eq!(
        v,
        [vec!["ca", "a", "--x", "1"], vec!["ca", "b", "--x", "1"], vec!["c", "--y", "X"]]
    );
}
