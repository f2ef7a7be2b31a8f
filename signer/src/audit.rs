//! The signer's audit log on disk: one line per request (the caller's UID and PID, what it
//! asked, the answer), kept as evidence of every signature the box's keys made.
//!
//! The lines go to `DIR/audit.log` (and, as before, to standard error: the journal). Past
//! [`AuditLog::open`]'s size the file is closed, synced and renamed `audit-NNNNNN.log` (numbered
//! from 1, in order), and a new `audit.log` begins with a header line naming the file before
//! it and that file's SM3:
//!
//! ```text
//! {"vpboxAudit":1,"file":42,"previous":"audit-000041.log","previousSm3":"9f3c…"}
//! ```
//!
//! So the files form a chain: a rotated file edited, removed or put out of order breaks it,
//! and [`verify`] (`vpbox signer audit-verify --dir DIR`) says where. The signer never
//! deletes a file: the audit log is evidence, and it is the operator's to archive (to
//! write-once storage, with its chain) and only then to remove; a chain that starts after
//! archived files says which file it follows. A line that cannot be written fails the request
//! (the caller gets an error: no signature leaves before its line is written), so a full disk
//! stops signing loudly rather than losing evidence. The file is synced at each rotation, not at
//! each line (the guard's fsync already paces every vote): a power loss can lose its last lines
//! in the page cache, while their copies in the journal and the guard's synced record stay.
//!
//! Not in the file: successful TLS CertificateVerify signatures. A handshake is signed before
//! its client is authenticated, so anyone who reaches the proxy's listeners could grow a file
//! that is never deleted; they stay events in the journal (which rotates), and the refused ones
//! are in the file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use vpbox_sm::sm3::Digest;

/// The file being written.
pub const CURRENT: &str = "audit.log";

/// The default rotation size (MiB).
pub const ROTATE_MIB_DEFAULT: u64 = 64;

/// The audit log of one signer.
pub struct AuditLog {
    dir: PathBuf,
    rotate_bytes: u64,
    file: File,
    size: u64,
    /// The number of the current file (its rotated name's).
    number: u64,
}

/// The rotated file number `n`'s name.
fn rotated(n: u64) -> String {
    format!("audit-{n:06}.log")
}

/// The numbers of the rotated files in `dir`, in order.
fn rotated_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("audit-").and_then(|r| r.strip_suffix(".log")) {
            if let (6.., Ok(n)) = (n.len(), n.parse::<u64>()) {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// SM3 of a file's bytes, read in pieces.
fn file_sm3(path: &Path) -> std::io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = vpbox_sm::sm3::Sm3::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn header(number: u64, previous: Option<(&str, Digest)>) -> String {
    let mut v = json!({"vpboxAudit": 1, "file": number});
    if let Some((name, sm3)) = previous {
        v["previous"] = name.into();
        v["previousSm3"] = sm3.to_hex().into();
    }
    format!("{v}\n")
}

impl AuditLog {
    /// Opens (or starts) the audit log in `dir` (made 0700 if missing), rotating past
    /// `rotate_bytes`. A signer restarted appends to its `audit.log`.
    pub fn open(dir: &Path, rotate_bytes: u64) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let last = rotated_numbers(dir)?.last().copied();
        let path = dir.join(CURRENT);
        let fresh = !path.exists();
        let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        let mut size = file.metadata()?.len();
        // The current file's number is its header's: the rotated files before it may be
        // archived away. A new one follows the last rotated file.
        let number = if fresh || size == 0 {
            last.map_or(1, |n| n + 1)
        } else {
            read_header(&path).ok().and_then(|h| h["file"].as_u64()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: corrupt: no audit header on its first line", path.display()),
                )
            })?
        };
        if fresh || size == 0 {
            let previous = match last {
                Some(n) => Some((rotated(n), file_sm3(&dir.join(rotated(n)))?)),
                None => None,
            };
            let h = header(number, previous.as_ref().map(|(n, d)| (n.as_str(), *d)));
            file.write_all(h.as_bytes())?;
            file.sync_all()?;
            size = h.len() as u64;
        }
        Ok(Self { dir: dir.to_path_buf(), rotate_bytes: rotate_bytes.max(1), file, size, number })
    }

    /// Appends `line` (one line, without its newline), rotating first if it would take the
    /// file past the rotation size.
    pub fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size + len > self.rotate_bytes && self.size > 0 {
            self.rotate()?;
        }
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.size += len;
        Ok(())
    }

    /// Closes the current file as `audit-NNNNNN.log` and starts the next, chained to it.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        let target = self.dir.join(rotated(self.number));
        if target.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{}: exists already; the audit log will not overwrite it",
                    target.display()
                ),
            ));
        }
        std::fs::rename(self.dir.join(CURRENT), &target)?;
        File::open(&self.dir)?.sync_all()?;
        *self = Self::open(&self.dir, self.rotate_bytes)?;
        Ok(())
    }
}

/// What [`verify`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Files checked (the rotated ones and the current one).
    pub files: usize,
    /// Lines, headers excluded.
    pub lines: u64,
    /// The archived file the chain starts after, if its first file has a predecessor.
    pub follows: Option<String>,
}

/// The header of `path`, as JSON.
fn read_header(path: &Path) -> Result<Value, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut first = String::new();
    BufReader::new(f.take(4096))
        .read_line(&mut first)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(first.trim_end())
        .map_err(|_| format!("{}: no audit header on its first line", path.display()))?;
    if v["vpboxAudit"] != json!(1) {
        return Err(format!("{}: no audit header on its first line", path.display()));
    }
    Ok(v)
}

fn lines_of(path: &Path) -> Result<u64, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0u64;
    for line in BufReader::new(f).lines() {
        line.map_err(|e| format!("{}: {e}", path.display()))?;
        n += 1;
    }
    Ok(n.saturating_sub(1))
}

/// Checks the chain of the audit log in `dir`: each file's header names the file before it
/// with that file's SM3, the numbers follow each other (a rotated file's name its header's),
/// and the current file comes last. Every break is an error naming the file.
pub fn verify(dir: &Path) -> Result<Verified, Vec<String>> {
    let numbers = rotated_numbers(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut names: Vec<(String, Option<u64>)> =
        numbers.iter().map(|n| (rotated(*n), Some(*n))).collect();
    if dir.join(CURRENT).exists() {
        names.push((CURRENT.into(), None));
    }
    let (mut errors, mut lines, mut follows) = (Vec::new(), 0u64, None);
    let mut before: Option<(&str, u64)> = None;
    for (name, named) in &names {
        let path = dir.join(name);
        let h = match read_header(&path) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                before = None;
                continue;
            }
        };
        match lines_of(&path) {
            Ok(n) => lines += n,
            Err(e) => errors.push(e),
        }
        let Some(number) = h["file"].as_u64() else {
            errors.push(format!("{name}: its header has no file number"));
            continue;
        };
        if named.is_some_and(|n| n != number) {
            errors.push(format!("{name}: its header says file {number}"));
        }
        let previous = h["previous"].as_str();
        match before {
            None if number > 1 => match previous {
                Some(p) => follows = Some(p.to_string()),
                None => errors.push(format!("{name}: file {number} names no previous file")),
            },
            None => {}
            Some((b, n)) => {
                if number != n + 1 {
                    errors.push(format!(
                        "{name}: file {number} comes after file {n} ({b}): a file is missing"
                    ));
                } else if previous != Some(b) {
                    errors.push(format!("{name}: its header names {previous:?}, not {b}"));
                } else {
                    match file_sm3(&dir.join(b)) {
                        Ok(d) if Some(d.to_hex().as_str()) == h["previousSm3"].as_str() => {}
                        Ok(_) => errors.push(format!(
                            "{b}: its SM3 is not what {name} recorded: it was changed after it \
                             was closed"
                        )),
                        Err(e) => errors.push(format!("{b}: {e}")),
                    }
                }
            }
        }
        before = Some((name, number));
    }
    if names.is_empty() {
        errors.push(format!("no audit file ({CURRENT} or audit-NNNNNN.log) here"));
    }
    if errors.is_empty() {
        Ok(Verified { files: names.len(), lines, follows })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_lines(log: &mut AuditLog, from: u32, n: u32) {
        for i in from..from + n {
            log.write(&format!(
                "2026-12-04T12:00:00.000Z uid=952 pid=7 op=sign n={i:05} result=ok"
            ))
            .unwrap();
        }
    }

    /// Past the size the file rotates; the files chain by name and SM3; a restart goes on
    /// appending; every line is kept.
    #[test]
    fn the_log_rotates_into_a_chain_that_verifies_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("audit");
        let mut log = AuditLog::open(&d, 1000).unwrap();
        write_lines(&mut log, 0, 30);
        drop(log);
        let mut log = AuditLog::open(&d, 1000).unwrap();
        write_lines(&mut log, 30, 30);
        drop(log);
        let rotated = rotated_numbers(&d).unwrap();
        assert!(rotated.len() >= 4, "{rotated:?}");
        assert_eq!(rotated, (1..=rotated.len() as u64).collect::<Vec<_>>());
        for n in &rotated {
            let len = std::fs::metadata(d.join(super::rotated(*n))).unwrap().len();
            assert!(len <= 1000, "file {n}: {len} bytes");
        }
        let v = verify(&d).unwrap();
        assert_eq!(v, Verified { files: rotated.len() + 1, lines: 60, follows: None });
        let all: String = rotated
            .iter()
            .map(|n| super::rotated(*n))
            .chain([CURRENT.to_string()])
            .map(|f| std::fs::read_to_string(d.join(f)).unwrap())
            .collect();
        for i in 0..60 {
            assert_eq!(all.matches(&format!("n={i:05} ")).count(), 1, "line {i}");
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.join(CURRENT)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    /// An edited rotated file, a removed one, and one archived away at the start: each is
    /// named.
    #[test]
    fn a_changed_or_missing_file_breaks_the_chain_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut log = AuditLog::open(d, 600).unwrap();
        write_lines(&mut log, 0, 40);
        drop(log);
        assert!(rotated_numbers(d).unwrap().len() >= 4);
        let second = d.join("audit-000002.log");
        let text = std::fs::read_to_string(&second).unwrap();
        std::fs::write(&second, text.replacen("result=ok", "result=no", 1)).unwrap();
        let e = verify(d).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("audit-000002.log: its SM3 is not what audit-000003.log"),
            "{e:?}"
        );
        std::fs::write(&second, text).unwrap();
        assert!(verify(d).is_ok());
        // The first file archived (moved away): the chain says what it follows.
        std::fs::remove_file(d.join("audit-000001.log")).unwrap();
        assert_eq!(verify(d).unwrap().follows.as_deref(), Some("audit-000001.log"));
        // Every rotated file archived, then a restart: the current file keeps its number, and
        // its next rotation follows it (no second audit-000001.log).
        let current_number = read_header(&d.join(CURRENT)).unwrap()["file"].as_u64().unwrap();
        let archive = tempfile::tempdir().unwrap();
        for n in rotated_numbers(d).unwrap() {
            std::fs::rename(d.join(super::rotated(n)), archive.path().join(super::rotated(n)))
                .unwrap();
        }
        let mut log = AuditLog::open(d, 600).unwrap();
        write_lines(&mut log, 100, 10);
        drop(log);
        assert_eq!(rotated_numbers(d).unwrap()[0], current_number, "numbering goes on");
        assert!(verify(d).unwrap().follows.is_some());
        for n in rotated_numbers(archive.path()).unwrap() {
            std::fs::rename(archive.path().join(super::rotated(n)), d.join(super::rotated(n)))
                .unwrap();
        }
        assert!(verify(d).is_ok(), "{:?}", verify(d));
        // An empty folder is no chain.
        assert!(verify(archive.path()).is_err());
        // A file in the middle removed: the next one's header names it.
        std::fs::remove_file(d.join("audit-000003.log")).unwrap();
        let e = verify(d).unwrap_err();
        assert!(e.iter().any(|e| e.contains("a file is missing")), "{e:?}");
    }
}
