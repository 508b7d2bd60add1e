//! Transactions streamed before they commit: once the reorder buffer holds more than
//! [`super::reader::STREAM_FROM_KB`] (or `logical_decoding_work_mem`), PostgreSQL hands the
//! largest transaction's changes to [`super::plugin`] as they are decoded (while the session
//! still writes), instead of spilling them to disk and replaying them all at COMMIT. Their
//! events are encoded then, with [commit marks](kafka_core::commit_marks) where the commit time
//! and the last commit's end go, and kept here per transaction: packs, past [`MEMORY_BYTES`]
//! sealed (compressed as the outbox stores them) into a temporary file in `base/pgsql_tmp`. At
//! its commit [`take`] gives them back in order, and the plugin hands them to [`super::spool`]
//! sealed, with what fills their marks when they are read from the outbox: nothing is encoded or
//! compressed again after COMMIT. An abort drops them.
//!
//! What must stay true: a rolled-back savepoint's events go with it (each subtransaction's first
//! event is noted, and its abort cuts the transaction's events back to there: everything after
//! it belongs to it or to its children, which abort with it); memory stays bounded per streamed
//! transaction.

use super::spool::{read_sealed, temp_file, write_sealed, PackFile, Sealed};
use crate::error::KafkaError;
use kafka_core::commit_marks::Commit;
use kafka_core::pack::{Pack, Parts};
use kafka_core::stored::{raw_of, stored_form};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};

/// Bytes of a streamed transaction's sealed packs held in memory before they go to its file
/// (about 200 MB of events).
const MEMORY_BYTES: usize = 16 << 20;

/// A streamed transaction's events so far.
#[derive(Default)]
pub struct Streamed {
    /// Packs in its file.
    spilled: Option<Spill>,
    /// Sealed packs in memory, after the spilled ones, and their bytes...
    sealed: Vec<Sealed>,
    bytes: usize,
    /// ...then the pack being filled.
    open: Option<Pack>,
    /// Events before each pack (spilled ones first), and in all.
    starts: Vec<usize>,
    events: usize,
    /// Each subtransaction's first event (by subtransaction id).
    subxacts: Vec<(u32, usize)>,
}

/// A streamed transaction's file: where each pack in it begins, and where it ends.
struct Spill {
    file: BufWriter<File>,
    path: String,
    offsets: Vec<u64>,
    end: u64,
}

thread_local! {
    static STREAMS: RefCell<HashMap<u32, Streamed>> = RefCell::new(HashMap::new());
    /// The transaction being streamed (between stream start and stop), if any.
    static CURRENT: Cell<Option<u32>> = const { Cell::new(None) };
}

fn io(e: std::io::Error) -> KafkaError {
    KafkaError::Internal(format!("could not keep a streamed transaction's events on disk: {e}"))
}

/// A block of transaction `xid`'s changes begins (None: it ended).
pub fn set_current(xid: Option<u32>) {
    CURRENT.set(xid);
}

/// The transaction being streamed, if any: events go to it, not to the spool.
pub fn current() -> Option<u32> {
    CURRENT.get()
}

/// A change of subtransaction `subxid` of the current transaction is decoded: its first one
/// marks where its events begin.
pub fn note_subxact(subxid: u32) {
    let Some(xid) = CURRENT.get() else { return };
    if subxid == xid {
        return;
    }
    STREAMS.with_borrow_mut(|s| {
        let t = s.entry(xid).or_default();
        if !t.subxacts.iter().any(|&(x, _)| x == subxid) {
            let at = t.events;
            t.subxacts.push((subxid, at));
        }
    });
}

/// Adds an event to the current streamed transaction.
pub fn push(xid: u32, parts: &Parts) -> Result<(), KafkaError> {
    STREAMS.with_borrow_mut(|s| {
        let t = s.entry(xid).or_default();
        if t.open.as_ref().is_some_and(|p| !p.has_room()) {
            t.seal_open(xid)?;
        }
        if t.open.is_none() {
            t.starts.push(t.events);
        }
        t.open.get_or_insert_with(|| Pack::new(0)).push(parts);
        t.events += 1;
        Ok(())
    })
}

impl Streamed {
    /// Seals the full open pack (now, while the session that makes the events is still
    /// writing: a bulk transaction's events take a twelfth of their bytes, and they are staged
    /// as they are); past [`MEMORY_BYTES`] the sealed packs go to the file.
    fn seal_open(&mut self, xid: u32) -> Result<(), KafkaError> {
        let Some(p) = self.open.take() else { return Ok(()) };
        let sealed = seal(p)?;
        self.bytes += sealed.stored.len();
        self.sealed.push(sealed);
        if self.bytes > MEMORY_BYTES {
            self.spill(xid)?;
        }
        Ok(())
    }

    /// Writes the sealed packs in memory to the file.
    fn spill(&mut self, xid: u32) -> Result<(), KafkaError> {
        if self.spilled.is_none() {
            let (path, file) = temp_file("stream", u64::from(xid)).map_err(io)?;
            self.spilled = Some(Spill { file, path, offsets: Vec::new(), end: 0 });
        }
        let Some(spill) = self.spilled.as_mut() else { return Ok(()) };
        let mut record = Vec::new();
        for p in self.sealed.drain(..) {
            record.clear();
            write_sealed(&mut record, &p).map_err(io)?;
            spill.offsets.push(spill.end);
            spill.file.write_all(&record).map_err(io)?;
            spill.end += record.len() as u64;
        }
        self.bytes = 0;
        Ok(())
    }

    /// Packs in the file.
    fn spilled_count(&self) -> usize {
        self.spilled.as_ref().map_or(0, |s| s.offsets.len())
    }

    /// Drops every event from the `keep`th on (a rolled-back subtransaction's and after).
    fn truncate(&mut self, keep: usize) -> Result<(), KafkaError> {
        if keep >= self.events {
            return Ok(());
        }
        let Some(p) = self.starts.iter().rposition(|&s| s <= keep) else {
            *self = Streamed { spilled: self.spilled.take(), ..Default::default() };
            return self.cut_file(0);
        };
        let (spilled, sealed) = (self.spilled_count(), self.sealed.len());
        let mut pack = if p >= spilled + sealed {
            self.open.take().unwrap_or_default()
        } else if p >= spilled {
            self.open = None;
            self.sealed.truncate(p - spilled + 1);
            let last = self.sealed.pop().map(|s| s.stored).unwrap_or_default();
            unsealed(&last)?
        } else {
            // In the file: read it back, and cut the file before it.
            self.open = None;
            self.sealed.clear();
            let pack = self.read_back(p)?;
            self.cut_file(p)?;
            pack
        };
        pack.truncate((keep - self.starts[p]) as i32);
        self.starts.truncate(p + 1);
        self.events = keep;
        self.bytes = self.sealed.iter().map(|s| s.stored.len()).sum();
        self.open = Some(pack);
        // Those that began later were inside the aborted one; one that began where it did may
        // still be open (its first change had no events).
        self.subxacts.retain(|&(_, at)| at <= keep);
        Ok(())
    }

    /// Pack `p` of the file.
    fn read_back(&mut self, p: usize) -> Result<Pack, KafkaError> {
        let Some(spill) = self.spilled.as_mut() else { return Ok(Pack::default()) };
        spill.file.flush().map_err(io)?;
        let mut r = BufReader::new(File::open(&spill.path).map_err(io)?);
        r.seek(SeekFrom::Start(spill.offsets[p])).map_err(io)?;
        unsealed(&read_sealed(&mut r).map_err(io)?.stored)
    }

    /// Keeps the file's first `p` packs.
    fn cut_file(&mut self, p: usize) -> Result<(), KafkaError> {
        let Some(spill) = self.spilled.as_mut() else { return Ok(()) };
        if p >= spill.offsets.len() {
            return Ok(());
        }
        spill.file.flush().map_err(io)?;
        let at = spill.offsets[p];
        spill.file.get_mut().set_len(at).map_err(io)?;
        spill.file.get_mut().seek(SeekFrom::Start(at)).map_err(io)?;
        spill.offsets.truncate(p);
        spill.end = at;
        Ok(())
    }

    /// How many events it holds.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Its packs, sealed, in order: those in its file (the file and how many), then those in
    /// memory; with `commit`, which fills their commit marks.
    pub fn into_sealed(mut self, commit: Commit) -> Result<(Option<PackFile>, Vec<Sealed>), KafkaError> {
        if let Some(p) = self.open.take() {
            self.sealed.push(seal(p)?);
        }
        let file = match self.spilled.take() {
            Some(Spill { file, path, offsets, .. }) => {
                file.into_inner().map_err(|e| io(e.into_error()))?; // flushed, and closed
                Some((path, offsets.len()))
            }
            None => None,
        };
        let sealed = self.sealed.into_iter().map(|s| Sealed { commit: Some(commit), ..s }).collect();
        Ok((file, sealed))
    }
}

/// A pack of a streamed transaction, sealed (its commit marks not filled yet).
fn seal(p: Pack) -> Result<Sealed, KafkaError> {
    let stored = stored_form(&p.bytes)
        .ok_or_else(|| KafkaError::Internal("a pack of decoded events is larger than 1 GB".into()))?;
    Ok(Sealed { count: p.count, topics: p.topics, stored, commit: None })
}

/// A sealed pack, back as it was (to cut it short).
fn unsealed(stored: &[u8]) -> Result<Pack, KafkaError> {
    raw_of(stored)
        .and_then(|raw| Pack::from_packed(0, &raw, Vec::new()))
        .ok_or_else(|| KafkaError::Internal("a streamed transaction's sealed events are malformed".into()))
}

/// Subtransaction `subxid` of `xid` (or `xid` itself, if they are the same) aborted.
pub fn abort(xid: u32, subxid: u32) -> Result<(), KafkaError> {
    STREAMS.with_borrow_mut(|s| {
        if subxid == xid {
            if let Some(t) = s.remove(&xid) {
                t.discard();
            }
            return Ok(());
        }
        let Some(t) = s.get_mut(&xid) else { return Ok(()) };
        match t.subxacts.iter().find(|&&(x, _)| x == subxid) {
            Some(&(_, at)) => t.truncate(at),
            None => Ok(()),
        }
    })
}

impl Streamed {
    /// Drops its events (and removes its file).
    pub fn discard(self) {
        if let Some(spill) = self.spilled {
            let _ = std::fs::remove_file(spill.path);
        }
    }
}

/// Transaction `xid` committed: its events (None if it streamed none).
pub fn take(xid: u32) -> Option<Streamed> {
    STREAMS.with_borrow_mut(|s| s.remove(&xid))
}

/// Forgets every streamed transaction (the decoding context was closed).
pub fn clear() {
    CURRENT.set(None);
    STREAMS.with_borrow_mut(|s| s.drain().for_each(|(_, t)| t.discard()));
}
