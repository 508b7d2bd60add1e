//! Decoded transactions waiting to be staged: the events [`super::plugin`] encoded, in packs, per
//! transaction, in commit order. Filled while the worker decodes (inside the reorder buffer's
//! own subtransaction, which is always rolled back: nothing can be written to a table there),
//! taken by [`super::stage`] right after.
//!
//! What must stay true: memory stays bounded whatever a transaction's size: past
//! [`SPILL_BYTES`] held in memory, the packs go to a temporary file (in `base/pgsql_tmp`, which
//! PostgreSQL empties at start), read back in order when staged.

use crate::error::KafkaError;
use kafka_core::pack::{Pack, Parts};
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};

/// Bytes of packs held in memory before they are spilled to a file.
pub const SPILL_BYTES: usize = 32 << 20;

/// A decoded transaction with captured events.
pub struct Decoded {
    /// The end LSN of its commit record.
    pub end_lsn: u64,
    /// Spilled packs (earlier than `packs`), in a temporary file, and how many.
    spilled: Option<(BufWriter<File>, String, usize)>,
    packs: Vec<Pack>,
}

#[derive(Default)]
struct Spool {
    done: Vec<Decoded>,
    current: Option<Decoded>,
    /// Bytes of packs in memory.
    bytes: usize,
    /// Failures to encode since the last take.
    failed: Vec<String>,
    spills: u64,
}

thread_local! {
    static SPOOL: RefCell<Spool> = RefCell::new(Spool::default());
}

/// A transaction's replay begins.
pub fn begin() {
    SPOOL.with_borrow_mut(|s| s.current = None);
}

/// Adds an event to the transaction being replayed (the encoder's sink).
pub fn push(parts: &Parts) -> Result<(), KafkaError> {
    SPOOL.with_borrow_mut(|s| {
        let spool = &mut *s;
        let txn =
            spool.current.get_or_insert_with(|| Decoded { end_lsn: 0, spilled: None, packs: Vec::new() });
        if txn.packs.last().is_none_or(|p| !p.has_room()) {
            txn.packs.push(Pack::new(0));
        }
        let (_, size) = txn.packs.last_mut().map(|p| p.push(parts)).unwrap_or_default();
        spool.bytes += size;
        if spool.bytes > SPILL_BYTES {
            spool.spills += 1;
            let spilled = spill(txn, spool.spills)?;
            spool.bytes -= spilled;
        }
        Ok(())
    })
}

/// Writes the transaction's packs but the open one to its temporary file; returns their bytes.
fn spill(txn: &mut Decoded, n: u64) -> Result<usize, KafkaError> {
    let io = |e: std::io::Error| KafkaError::Internal(format!("could not spill decoded events to disk: {e}"));
    if txn.spilled.is_none() {
        std::fs::create_dir_all("base/pgsql_tmp").map_err(io)?;
        // SAFETY: plain read of this process's id.
        let pid = unsafe { pgrx::pg_sys::MyProcPid };
        let path = format!("base/pgsql_tmp/pgsql_tmp_pg_kafka_wal_{pid}_{n}");
        txn.spilled = Some((BufWriter::new(File::create(&path).map_err(io)?), path, 0));
    }
    let Some((file, _, count)) = txn.spilled.as_mut() else { return Ok(0) };
    let open = txn.packs.pop();
    let mut bytes = 0;
    for p in txn.packs.drain(..) {
        file.write_all(&(p.bytes.len() as u64).to_le_bytes()).map_err(io)?;
        file.write_all(&p.bytes).map_err(io)?;
        bytes += p.bytes.len();
        *count += 1;
    }
    txn.packs.extend(open);
    Ok(bytes)
}

/// The transaction being replayed committed at `end_lsn`: it joins the decoded ones if it had
/// events.
pub fn commit(end_lsn: u64) {
    SPOOL.with_borrow_mut(|s| {
        if let Some(mut txn) = s.current.take() {
            txn.end_lsn = end_lsn;
            s.done.push(txn);
        }
    });
}

/// An event that could not be made (why), for the worker to report.
pub fn failed(why: String) {
    SPOOL.with_borrow_mut(|s| s.failed.push(why));
}

/// Bytes of decoded events held in memory.
pub fn bytes() -> usize {
    SPOOL.with_borrow(|s| s.bytes)
}

/// Takes the decoded transactions and the failures since the last take.
pub fn take() -> (Vec<Decoded>, Vec<String>) {
    SPOOL.with_borrow_mut(|s| {
        s.bytes = s.current.as_ref().map_or(0, |t| t.packs.iter().map(|p| p.bytes.len()).sum());
        (std::mem::take(&mut s.done), std::mem::take(&mut s.failed))
    })
}

/// Forgets everything (the decoding context was closed mid-transaction).
pub fn clear() {
    SPOOL.with_borrow_mut(|s| *s = Spool::default());
}

impl Decoded {
    /// Calls `f` with each pack's bytes, in order (spilled ones first); removes the file.
    pub fn each_pack(self, mut f: impl FnMut(&[u8]) -> Result<(), KafkaError>) -> Result<(), KafkaError> {
        let io =
            |e: std::io::Error| KafkaError::Internal(format!("could not read spilled decoded events: {e}"));
        if let Some((file, path, count)) = self.spilled {
            let file = file.into_inner().map_err(|e| io(e.into_error()))?;
            drop(file);
            let read = (|| -> Result<(), KafkaError> {
                let mut r = BufReader::new(File::open(&path).map_err(io)?);
                let mut buf = Vec::new();
                for _ in 0..count {
                    let mut len = [0u8; 8];
                    r.read_exact(&mut len).map_err(io)?;
                    buf.resize(u64::from_le_bytes(len) as usize, 0);
                    r.read_exact(&mut buf).map_err(io)?;
                    f(&buf)?;
                }
                Ok(())
            })();
            std::fs::remove_file(&path).map_err(io)?;
            read?;
        }
        for p in &self.packs {
            f(&p.bytes)?;
        }
        Ok(())
    }
}
