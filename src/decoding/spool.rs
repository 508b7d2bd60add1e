//! Decoded events waiting to be staged: what [`super::plugin`] encoded, in commit order, packed
//! across transactions (a stream of small transactions fills packs as one large one does) and
//! sealed as each pack fills: compressed into the form the outbox stores
//! ([`kafka_core::stored`]) on a thread of the spool's own ([`Sealer`]: plain Rust, nothing of
//! PostgreSQL), while decoding goes on; so the spool holds a twelfth of the events' bytes, and
//! staging writes the sealed packs as they are. Filled while the worker decodes (inside the reorder
//! buffer's own subtransaction, which is always rolled back: nothing can be written to a table
//! there), taken by [`super::stage`] right after.
//!
//! What must stay true: memory stays bounded whatever a transaction's size: past
//! [`SPILL_BYTES`] of sealed packs held in memory, they go to a temporary file (in
//! `base/pgsql_tmp`, which PostgreSQL empties at start), read back in order when staged. Only
//! whole transactions are taken: a transaction is replayed within one decoded record, and the
//! spool is taken between records.

use crate::error::KafkaError;
use kafka_core::commit_marks::Commit;
use kafka_core::pack::{Pack, Parts};
use kafka_core::stored::stored_form;
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};

/// Bytes of sealed packs held in memory before they are spilled to a file.
pub const SPILL_BYTES: usize = 32 << 20;

/// A pack sealed: how many messages, of which topics, and its payload as the outbox stores it;
/// for the events of a transaction streamed before it committed, what fills their commit marks.
pub struct Sealed {
    pub count: i32,
    pub topics: Vec<String>,
    pub stored: Vec<u8>,
    pub commit: Option<Commit>,
}

/// Packs being sealed, and the thread that seals them, in order.
struct Sealer {
    to: SyncSender<Vec<u8>>,
    from: Receiver<Option<Vec<u8>>>,
}

/// Packs handed to the sealer at most before the spool waits for it.
const SEALING: usize = 4;

impl Sealer {
    fn start() -> Option<Sealer> {
        let (to, packs) = sync_channel::<Vec<u8>>(SEALING);
        let (done, from) = channel();
        std::thread::Builder::new()
            .name("pg_kafka seal".into())
            .spawn(move || {
                for raw in packs {
                    if done.send(stored_form(&raw)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Sealer { to, from })
    }
}

/// The events of the transactions decoded since the last take.
pub struct Spooled {
    /// The end LSN of the commit record of the last transaction with events.
    pub end_lsn: u64,
    /// How many transactions had events.
    pub transactions: usize,
    /// Spilled packs (earlier than `packs`), in temporary files, in order.
    files: Vec<Spilled>,
    packs: Vec<Sealed>,
}

/// A temporary file of sealed packs (as [`write_sealed`] writes them), and how many it holds.
pub type PackFile = (String, usize);

/// Sealed packs in a temporary file (removed when it is dropped): the spool's own (which takes
/// more while `writer` is set), or a streamed transaction's, whose packs `commit` fills.
struct Spilled {
    path: String,
    count: usize,
    writer: Option<BufWriter<File>>,
    commit: Option<Commit>,
}

impl Drop for Spilled {
    fn drop(&mut self) {
        drop(self.writer.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Default)]
struct Spool {
    /// What committed transactions spooled, but the open pack (None: nothing since the take).
    done: Option<Spooled>,
    /// The pack being filled, shared by the transactions replayed one after the other.
    open: Option<Pack>,
    /// Whether the transaction being replayed pushed an event.
    in_txn: bool,
    /// Bytes held in memory: sealed packs and the open one.
    bytes: usize,
    /// Failures to encode since the last take.
    failed: Vec<String>,
    spills: u64,
    sealer: Option<Sealer>,
    /// Packs of `done` whose seal is on its way from the sealer, in order: their raw sizes and
    /// places in `done.packs` (none is spilled before they are all back).
    sealing: std::collections::VecDeque<(usize, usize)>,
}

thread_local! {
    static SPOOL: RefCell<Spool> = RefCell::new(Spool::default());
}

impl Spool {
    fn done(&mut self) -> &mut Spooled {
        self.done.get_or_insert_with(|| Spooled {
            end_lsn: 0,
            transactions: 0,
            files: Vec::new(),
            packs: Vec::new(),
        })
    }

    /// Seals the open pack (on the sealer's thread, if it runs), and spills the sealed ones if
    /// memory holds too many.
    fn seal(&mut self) -> Result<(), KafkaError> {
        let Some(pack) = self.open.take() else { return Ok(()) };
        if self.sealer.is_none() {
            self.sealer = Sealer::start();
        }
        let raw = pack.bytes.len();
        let (count, topics) = (pack.count, pack.topics);
        // With the sealer's queue full, this thread seals too rather than wait for it (after a
        // bulk transaction's COMMIT both cores are free).
        self.collect(false)?;
        let stored = match &self.sealer {
            Some(sealer) if self.sealing.len() < SEALING => match sealer.to.send(pack.bytes) {
                Ok(()) => None,
                Err(e) => Some(sealed_here(&e.0)?), // the thread is gone: seal here
            },
            _ => Some(sealed_here(&pack.bytes)?),
        };
        let at = self.done().packs.len();
        match stored {
            None => self.sealing.push_back((raw, at)),
            Some(ref sealed) => self.bytes = self.bytes - raw + sealed.len(),
        }
        self.done().packs.push(Sealed { count, topics, stored: stored.unwrap_or_default(), commit: None });
        self.spill_past_limit()
    }

    /// Spills the sealed packs held in memory once they pass [`SPILL_BYTES`].
    fn spill_past_limit(&mut self) -> Result<(), KafkaError> {
        if self.bytes > SPILL_BYTES {
            self.collect(true)?;
            self.spills += 1;
            let n = self.spills;
            self.bytes -= spill(self.done(), n)?;
        }
        Ok(())
    }

    /// Takes the seals the sealer finished (with `all`, waits for every one on its way).
    fn collect(&mut self, all: bool) -> Result<(), KafkaError> {
        while let Some(&(raw, at)) = self.sealing.front() {
            let Some(sealer) = &self.sealer else { break };
            let next = if all { sealer.from.recv().ok() } else { sealer.from.try_recv().ok() };
            let Some(stored) = next else {
                if all {
                    return Err(KafkaError::Internal("the thread sealing decoded events stopped".into()));
                }
                break;
            };
            let stored = stored.ok_or_else(too_large)?;
            self.sealing.pop_front();
            self.bytes = self.bytes - raw + stored.len();
            self.done().packs[at].stored = stored;
        }
        Ok(())
    }
}

fn too_large() -> KafkaError {
    KafkaError::Internal("a pack of decoded events is larger than 1 GB".into())
}

/// Seals `raw` on this thread.
fn sealed_here(raw: &[u8]) -> Result<Vec<u8>, KafkaError> {
    stored_form(raw).ok_or_else(too_large)
}

/// A transaction's replay begins.
pub fn begin() {
    SPOOL.with_borrow_mut(|s| s.in_txn = false);
}

/// Adds an event to the transaction being replayed (the encoder's sink), or to the one being
/// streamed ([`super::stream`]).
pub fn push(parts: &Parts) -> Result<(), KafkaError> {
    if let Some(xid) = super::stream::current() {
        return super::stream::push(xid, parts);
    }
    SPOOL.with_borrow_mut(|s| {
        if s.open.as_ref().is_some_and(|p| !p.has_room()) {
            s.seal()?;
        }
        let (_, size) = s.open.get_or_insert_with(|| Pack::new(0)).push(parts);
        s.bytes += size;
        s.in_txn = true;
        Ok(())
    })
}

/// Adds a streamed transaction's sealed packs (those in `file`, the temporary file and how many
/// it holds, then `packs`), whose commit marks `commit` fills, to the transaction being
/// replayed, after its events so far. The file is taken as it is, not copied.
pub fn push_streamed(
    file: Option<(String, usize)>,
    packs: Vec<Sealed>,
    commit: Commit,
) -> Result<(), KafkaError> {
    SPOOL.with_borrow_mut(|s| {
        s.seal()?;
        s.in_txn = true;
        if let Some((path, count)) = file {
            let taken = Spilled { path, count, writer: None, commit: Some(commit) };
            // Every pack before it goes to a file before it.
            if !s.done().packs.is_empty() {
                s.collect(true)?;
                s.spills += 1;
                let n = s.spills;
                s.bytes -= spill(s.done(), n)?;
            }
            let done = s.done();
            if let Some(own) = done.files.last_mut() {
                if let Some(w) = own.writer.take() {
                    w.into_inner().map_err(|e| spill_failed(e.into_error()))?;
                }
            }
            done.files.push(taken);
        }
        for p in packs {
            s.bytes += p.stored.len();
            s.done().packs.push(p);
        }
        s.spill_past_limit()
    })
}

/// A new temporary file `pgsql_tmp_pg_kafka_<what>_<pid>_<n>` in `base/pgsql_tmp` (which
/// PostgreSQL empties at start), and its path.
pub(super) fn temp_file(what: &str, n: u64) -> std::io::Result<(String, BufWriter<File>)> {
    std::fs::create_dir_all("base/pgsql_tmp")?;
    // SAFETY: plain read of this process's id.
    let pid = unsafe { pgrx::pg_sys::MyProcPid };
    let path = format!("base/pgsql_tmp/pgsql_tmp_pg_kafka_{what}_{pid}_{n}");
    let file = BufWriter::new(File::create(&path)?);
    Ok((path, file))
}

fn spill_failed(e: std::io::Error) -> KafkaError {
    KafkaError::Internal(format!("could not spill decoded events to disk: {e}"))
}

/// Writes the sealed packs held in memory to the spool's own temporary file; returns their
/// bytes.
fn spill(done: &mut Spooled, n: u64) -> Result<usize, KafkaError> {
    let io = spill_failed;
    if done.files.last().is_none_or(|f| f.writer.is_none()) {
        let (path, writer) = temp_file("wal", n).map_err(io)?;
        done.files.push(Spilled { path, count: 0, writer: Some(writer), commit: None });
    }
    let Some(Spilled { writer: Some(file), count, .. }) = done.files.last_mut() else { return Ok(0) };
    let mut bytes = 0;
    for p in done.packs.drain(..) {
        write_sealed(file, &p).map_err(io)?;
        bytes += p.stored.len();
        *count += 1;
    }
    Ok(bytes)
}

/// One sealed pack, as [`read_sealed`] reads it back.
pub(super) fn write_sealed(w: &mut impl Write, p: &Sealed) -> std::io::Result<()> {
    w.write_all(&p.count.to_le_bytes())?;
    match p.commit {
        Some(c) => {
            w.write_all(&[1])?;
            w.write_all(&c.commit_us.to_le_bytes())?;
            w.write_all(&c.last_commit_end.to_le_bytes())?;
        }
        None => w.write_all(&[0])?,
    }
    w.write_all(&(p.topics.len() as u32).to_le_bytes())?;
    for t in &p.topics {
        w.write_all(&(t.len() as u32).to_le_bytes())?;
        w.write_all(t.as_bytes())?;
    }
    w.write_all(&(p.stored.len() as u64).to_le_bytes())?;
    w.write_all(&p.stored)
}

/// The transaction being replayed committed at `end_lsn`: its events are done.
pub fn commit(end_lsn: u64) {
    SPOOL.with_borrow_mut(|s| {
        if std::mem::take(&mut s.in_txn) {
            let done = s.done();
            done.end_lsn = end_lsn;
            done.transactions += 1;
        }
    });
}

/// An event that could not be made (why): warned about now, and kept for the worker to report.
pub fn failed(why: String) {
    pgrx::warning!("{why}");
    SPOOL.with_borrow_mut(|s| s.failed.push(why));
}

/// Bytes of decoded events held in memory.
pub fn bytes() -> usize {
    SPOOL.with_borrow(|s| s.bytes)
}

/// Takes what the transactions decoded since the last take spooled (None: no events), and the
/// failures since then. Between transactions only (every event is a committed one's).
pub fn take() -> Result<(Option<Spooled>, Vec<String>), KafkaError> {
    SPOOL.with_borrow_mut(|s| {
        s.seal()?;
        s.collect(true)?;
        s.bytes = 0;
        Ok((s.done.take(), std::mem::take(&mut s.failed)))
    })
}

/// Forgets everything (the decoding context was closed), streamed transactions too.
pub fn clear() {
    SPOOL.with_borrow_mut(|s| *s = Spool::default());
    super::stream::clear();
}

impl Spooled {
    /// Calls `f` with each sealed pack, in order (spilled ones first); removes the files.
    pub fn each_pack(self, mut f: impl FnMut(Sealed) -> Result<(), KafkaError>) -> Result<(), KafkaError> {
        let io =
            |e: std::io::Error| KafkaError::Internal(format!("could not read spilled decoded events: {e}"));
        for mut spilled in self.files {
            if let Some(w) = spilled.writer.take() {
                w.into_inner().map_err(|e| io(e.into_error()))?;
            }
            let mut r = BufReader::new(File::open(&spilled.path).map_err(io)?);
            for _ in 0..spilled.count {
                let p = read_sealed(&mut r).map_err(io)?;
                f(Sealed { commit: p.commit.or(spilled.commit), ..p })?;
            }
        }
        for p in self.packs {
            f(p)?;
        }
        Ok(())
    }
}

/// One sealed pack as [`write_sealed`] wrote it.
pub(super) fn read_sealed(r: &mut impl Read) -> std::io::Result<Sealed> {
    fn u32_of(r: &mut impl Read) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn bytes_of(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b)?;
        Ok(b)
    }
    fn u64_of(r: &mut impl Read) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    let count = u32_of(r)? as i32;
    let mut flag = [0u8];
    r.read_exact(&mut flag)?;
    let commit = match flag[0] {
        0 => None,
        _ => Some(Commit { commit_us: u64_of(r)? as i64, last_commit_end: u64_of(r)? }),
    };
    let mut topics = Vec::new();
    for _ in 0..u32_of(r)? {
        let n = u32_of(r)? as usize;
        let topic = String::from_utf8(bytes_of(r, n)?).map_err(std::io::Error::other)?;
        topics.push(topic);
    }
    let len = u64_of(r)? as usize;
    let stored = bytes_of(r, len)?;
    Ok(Sealed { count, topics, stored, commit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_packs_read_back_as_they_were() {
        let packs = [
            Sealed {
                count: 3,
                topics: vec!["a".into(), "bé".into()],
                stored: vec![1, 2, 3, 4, 5],
                commit: None,
            },
            Sealed {
                count: 512,
                topics: vec![],
                stored: vec![],
                commit: Some(Commit { commit_us: -7, last_commit_end: u64::MAX }),
            },
        ];
        let mut file = Vec::new();
        for p in &packs {
            write_sealed(&mut file, p).unwrap();
        }
        let mut r = &file[..];
        for p in &packs {
            let back = read_sealed(&mut r).unwrap();
            assert_eq!(
                (back.count, &back.topics, &back.stored, back.commit),
                (p.count, &p.topics, &p.stored, p.commit)
            );
        }
        assert!(r.is_empty());
        assert!(read_sealed(&mut r).is_err(), "nothing more");
    }
}
