//! Anchors committed per second through `Ledger::execute` + `Ledger::commit` (write-once checks, receipts, one
//! synced batch per block) against raw RocksDB writing the same anchor records in the same
//! synced batches: the ceiling. Also bytes on disk per anchor.
//!
//! `cargo bench -p vpbox-ledger --bench ledger`; `VPBOX_BENCH_ANCHORS=20000` for a smoke run.
//! Transactions are signed once up front (signing and verification are not ledger work).

use std::time::Instant;

use vpbox_ledger::Ledger;
use vpbox_ledger::block::Block;
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::sm3::hash;
use vpbox_sm::{Signer, SoftwareSigner};

fn main() {
    let anchors: u64 =
        std::env::var("VPBOX_BENCH_ANCHORS").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let batch: u64 = 1000; // pairs per transaction (the day-end path)
    let txs_per_block: u64 = 10;
    let signer = SoftwareSigner::new(SecretKey::generate().expect("random source"));
    let key = |i: u64| hash(i.to_be_bytes()).0;
    let txs: Vec<Tx> = (0..anchors / batch)
        .map(|t| {
            let pairs = (t * batch..(t + 1) * batch).map(|i| (key(i), hash(key(i)).0)).collect();
            TxBody {
                submitter: signer.public_key().fingerprint(),
                nonce: t,
                timestamp_ms: 1,
                payload: Payload::AnchorPutBatch(pairs),
            }
            .sign(&signer)
            .expect("sign")
        })
        .collect();

    // The ledger.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger::open(dir.path()).expect("open");
    // As a node does at its start (`vpbox node run`): the state map's memory taken before
    // the blocks, not by them. A kernel without MADV_POPULATE_WRITE (before 5.14) runs the
    // bench as a node runs: the blocks take the pages, which the line below says.
    let populated = match ledger.populate_state() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("the state map's memory is taken by the blocks (slower): {e}");
            false
        }
    };
    ledger.init_genesis(&Block::genesis(hash(b"bench"), 0)).expect("genesis");
    let start = Instant::now();
    for chunk in txs.chunks(txs_per_block as usize) {
        let executed = ledger.execute(&[], chunk.to_vec()).expect("execute");
        ledger.commit(&executed, &[0; 300]).expect("commit");
    }
    let ledger_secs = start.elapsed().as_secs_f64();
    // Stopped as a node stops (tables flushed, the state map's checkpoint written): the bytes
    // per anchor are the ledger's without that checkpoint and RocksDB's text files, bounded
    // sizes (`StoppedBytes::of_records`).
    ledger.save_state().expect("save state");
    drop(ledger);
    let stopped = vpbox_ledger::disk::stopped_bytes(dir.path()).expect("a stopped ledger");
    let bytes = stopped.of_records();

    // Raw RocksDB: the same anchor records (key → value ‖ the batch's number: 1,000 pairs are
    // over the threshold from which a ledger numbers a transaction), same batches, synced.
    // RocksDB's performance counters off, as the ledger runs it (`without_perf_counters`).
    vpbox_ledger::without_perf_counters();
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = rocksdb::DB::open_default(raw_dir.path()).expect("open raw");
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let start = Instant::now();
    let mut number = 0u64;
    for chunk in txs.chunks(txs_per_block as usize) {
        let mut wb = rocksdb::WriteBatch::default();
        for tx in chunk {
            if let Payload::AnchorPutBatch(pairs) = &tx.body().payload {
                for (k, v) in pairs {
                    wb.put(k, vpbox_ledger::numbered_anchor_record(v, number));
                }
            }
            number += 1;
        }
        db.write_opt(wb, &wo).expect("write");
    }
    let raw_secs = start.elapsed().as_secs_f64();
    drop(db);

    let n = (txs.len() as u64 * batch) as f64;
    let (ledger_rate, raw_rate) = (n / ledger_secs, n / raw_secs);
    println!("{:<48} {:>12}", "path", "anchors/s");
    println!("{:<48} {:>12.0}", "ledger apply (checks, receipts, synced blocks)", ledger_rate);
    println!("{:<48} {:>12.0}", "raw RocksDB, same records and batches", raw_rate);
    println!(
        "bytes on disk per anchor (ledger, stopped, without its {} byte state checkpoint and \
         {} bytes of RocksDB's log and options files): {:.1}",
        stopped.checkpoint,
        stopped.engine_text,
        bytes as f64 / n
    );
    println!(
        "{{\"bench\":\"ledger\",\"anchors\":{n},\"ledger_per_s\":{ledger_rate:.0},\
         \"raw_rocksdb_per_s\":{raw_rate:.0},\"ratio\":{:.2},\"bytes_per_anchor\":{:.1},\
         \"populated\":{populated}}}",
        ledger_rate / raw_rate,
        bytes as f64 / n
    );
    println!(
        "summary: ledger {:.0} anchors/s = {:.0}% of raw RocksDB",
        ledger_rate,
        100.0 * ledger_rate / raw_rate
    );
}
