//! Sizes on disk: a folder's files (the node's `dataBytes` metric counts its data folder) and
//! a cleanly stopped ledger's (the benchmarks' bytes per anchor).

use std::path::Path;

use crate::Error;
use crate::store::STATE_CHECKPOINT;

/// The bytes of the regular files under `dir`: symbolic links are not followed, and folders
/// more than 16 levels deep are not entered (RocksDB and the node's journals nest two). A
/// folder that cannot be read counts 0.
pub fn tree_bytes(dir: &Path) -> u64 {
    walk(dir).0
}

/// [`tree_bytes`] of `dir`, and the part of it that is RocksDB's text files at its top
/// ([`engine_text`]): one walk serves both.
fn walk(dir: &Path) -> (u64, u64) {
    fn below(dir: &Path, depth: u32, text: &mut u64) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        let mut total = 0u64;
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if meta.is_dir() && depth < 16 {
                total = total.saturating_add(below(&e.path(), depth + 1, text));
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
                if depth == 0 && e.file_name().to_str().is_some_and(engine_text) {
                    *text = text.saturating_add(meta.len());
                }
            }
        }
        total
    }
    let mut text = 0u64;
    let all = below(dir, 0, &mut text);
    (all, text)
}

/// A cleanly stopped ledger's size on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoppedBytes {
    /// Every file of it: the tables, RocksDB's own files, the state map's checkpoint.
    pub all: u64,
    /// The state map's checkpoint alone: 37 bytes per bucket of the map's 2^22 that holds
    /// anchors, so at most [`CHECKPOINT_MAX`](crate::state::CHECKPOINT_MAX) (155 MB) whatever
    /// the ledger's size; the benchmarks give it apart from
    /// the cost per anchor. The first block after the next open removes it.
    pub checkpoint: u64,
    /// RocksDB's text files: its information log (`LOG`, `LOG.old.*`, at most
    /// [`ENGINE_LOG_MAX`](crate::ENGINE_LOG_MAX) bytes each and
    /// [`ENGINE_LOGS_KEPT`](crate::ENGINE_LOGS_KEPT) old ones) and its options files
    /// (`OPTIONS-*`, the two newest kept). Bounded whatever the ledger's size, so given apart
    /// from the cost per anchor, as the checkpoint is.
    pub engine_text: u64,
}

impl StoppedBytes {
    /// What grows with the anchors: every file but the checkpoint and RocksDB's text files.
    pub fn of_records(&self) -> u64 {
        self.all.saturating_sub(self.checkpoint).saturating_sub(self.engine_text)
    }
}

/// Whether the file named `name`, at the top of a ledger's folder, is RocksDB's information
/// log or an options file.
fn engine_text(name: &str) -> bool {
    name == "LOG" || name.starts_with("LOG.old.") || name.starts_with("OPTIONS-")
}

/// The size of the ledger at `dir`, which must have stopped cleanly: without the state map's
/// checkpoint a clean stop leaves (a node killed, not stopped), its newest writes would be
/// counted as write-ahead log rather than tables, and this is an error.
pub fn stopped_bytes(dir: &Path) -> Result<StoppedBytes, Error> {
    let file = dir.join(STATE_CHECKPOINT);
    let checkpoint = std::fs::symlink_metadata(&file)
        .map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "none: the ledger did not stop cleanly".into(),
                _ => e.to_string(),
            };
            Error::Checkpoint(format!("{}: {why}", file.display()))
        })?
        .len();
    // A folder that cannot be read counts 0, as in [`tree_bytes`].
    let (all, engine_text) = walk(dir);
    Ok(StoppedBytes { all, checkpoint, engine_text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_summed_below_folders_and_a_ledger_without_its_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("y"), [0u8; 23]).unwrap();
        assert_eq!(tree_bytes(dir.path()), 123);
        assert!(stopped_bytes(dir.path()).is_err(), "no checkpoint");
        std::fs::write(dir.path().join(STATE_CHECKPOINT), [0u8; 7]).unwrap();
        let both = StoppedBytes { all: 130, checkpoint: 7, engine_text: 0 };
        assert_eq!(stopped_bytes(dir.path()).unwrap(), both);
        assert_eq!(both.of_records(), 123);
        // RocksDB's text files at the top are counted apart; a table, or a LOG in a folder
        // below, is not one of them.
        for (name, len) in
            [("LOG", 5), ("LOG.old.1733", 6), ("OPTIONS-000007", 8), ("000012.sst", 9)]
        {
            std::fs::write(dir.path().join(name), vec![0u8; len]).unwrap();
        }
        std::fs::write(dir.path().join("a/LOG"), [0u8; 11]).unwrap();
        let got = stopped_bytes(dir.path()).unwrap();
        assert_eq!(got, StoppedBytes { all: 130 + 19 + 9 + 11, checkpoint: 7, engine_text: 19 });
        assert_eq!(got.of_records(), 123 + 9 + 11);
    }
}
