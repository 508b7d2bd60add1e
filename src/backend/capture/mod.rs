//! Row-change capture: the statement-level trigger that turns the rows of an INSERT, UPDATE,
//! DELETE or TRUNCATE (read from its transition tables) into Debezium change events, and the
//! function that makes backfill (`op: "r"`) events. Events join the transaction's pending
//! messages (`pending`), so they reach Kafka if and only if the transaction commits, in order.
//!
//! What to capture is in the trigger's arguments, set by `kafka.capture()` (sql/capture.sql):
//! topic, key attribute numbers, excluded attribute numbers, emit_before, tombstones, schemas. Attribute
//! numbers survive column renames; new and dropped columns are picked up at the next statement
//! (`plan`).

pub mod backfill;
pub mod connect_schema;
pub mod debezium;
pub mod plan;
pub mod relay;

use crate::backend::input::unix_us;
use crate::backend::{pending, txn_metadata};
use crate::error::{KafkaError, SqlResult};
use crate::relation::Open;
use kafka_core::commit_marks::{in_sequence, COMMIT_MARK};
use kafka_core::pack::Parts;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use plan::{Options, Plan};
use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

/// Where events go: the session's transaction ([`pending`]), or WAL capture's decoded
/// transaction (`crate::decoding`).
pub(crate) type Sink = fn(&Parts) -> Result<(), KafkaError>;

fn to_pending(parts: &Parts) -> Result<(), KafkaError> {
    pending::push(parts).map(drop)
}

/// Encodes the events of one statement on one table (or, for WAL capture, of one decoded
/// change).
pub(crate) struct Events {
    plan: Rc<Plan>,
    source: RefCell<String>,
    /// The envelope's end after `op`: `","ts_ms":…,"ts_us":…,"ts_ns":…}` (when the events were
    /// made, microseconds since 1970), the same for every event of the statement.
    tail: RefCell<String>,
    /// With transaction metadata on (`kafka.transaction_topic`, read once per statement): its
    /// topic and the table's `"schema.table"`.
    collection: Option<(String, String)>,
    /// Buffers reused from event to event (value; key and row of an insert): a bulk statement
    /// makes one event per row.
    value: RefCell<String>,
    key_row: RefCell<(String, String)>,
    sink: Sink,
    /// WAL capture: the `source` block of the transaction being decoded, cut where each
    /// change's LSN goes (twice), and what it was made for (commit time, id, last commit's end).
    wal_source: RefCell<Option<(SourceKey, [String; 3])>>,
}

impl Events {
    fn new(plan: Rc<Plan>, snapshot: bool) -> Events {
        let source = source(&plan, snapshot).into();
        let (schema, table) = (&plan.schema, &plan.table); // JSON strings
        let collection = crate::gucs::transaction_topic()
            .filter(|_| !snapshot)
            .map(|topic| (topic, format!("{}.{}", &schema[..schema.len() - 1], &table[1..])));
        let (value, key_row) = Default::default();
        Events {
            plan,
            source,
            tail: tail().into(),
            collection,
            value,
            key_row,
            sink: to_pending,
            wal_source: Default::default(),
        }
    }

    /// The encoder of WAL capture's events of one table: events go to `sink`; each decoded
    /// change sets its `source` block first ([`Events::at_change`]).
    pub(crate) fn for_wal(plan: Rc<Plan>, sink: Sink) -> Events {
        let (value, key_row) = Default::default();
        Events {
            plan,
            source: Default::default(),
            tail: tail().into(),
            collection: None,
            value,
            key_row,
            sink,
            wal_source: Default::default(),
        }
    }

    /// The plan the events are encoded with.
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Before a decoded change: its `source` block (Debezium's, with what the WAL knows: the
    /// change's LSN, the `sequence` of the last commit's end and this LSN, the commit time and
    /// the transaction id) and the envelope's time (now).
    /// Per change only the LSN is written into a block made once per transaction: a bulk
    /// transaction decodes a million changes. A change of a transaction streamed before it
    /// commits (`at.commit_us` None) gets [`COMMIT_MARK`] where the commit time and the last
    /// commit's end go, filled in when the events are read back ([`kafka_core::commit_marks`]).
    pub(crate) fn at_change(&self, at: &WalPosition) {
        let mut cached = self.wal_source.borrow_mut();
        let made_for = (at.commit_us, at.xid, at.last_commit_end);
        let parts = match &*cached {
            Some((key, parts)) if *key == made_for => parts,
            _ => &cached.insert((made_for, wal_source_parts(&self.plan, at))).1,
        };
        let mut source = self.source.borrow_mut();
        source.clear();
        source.push_str(&parts[0]);
        debezium::push_digits(&mut source, at.lsn as i64, 0);
        source.push_str(&parts[1]);
        debezium::push_digits(&mut source, at.lsn as i64, 0);
        source.push_str(&parts[2]);
        tail_into(&mut self.tail.borrow_mut());
    }

    /// Queues one event: key `key`, value `{"before":…,"after":…,"source":…,"transaction":null,
    /// "op":…,"ts_ms":…,"ts_us":…,"ts_ns":…}` (Debezium's envelope, in its order).
    fn push(
        &self,
        key: Option<&str>,
        before: Option<&str>,
        after: Option<&str>,
        op: char,
    ) -> Result<(), KafkaError> {
        self.push_with(key, before, after, op, None)
    }

    /// [`Events::push`] with a header (Debezium's `__debezium.oldkey`/`newkey` on key changes).
    fn push_with(
        &self,
        key: Option<&str>,
        before: Option<&str>,
        after: Option<&str>,
        op: char,
        header: Option<(&str, &str)>,
    ) -> Result<(), KafkaError> {
        let mut v = self.value.borrow_mut();
        v.clear();
        v.push_str("{\"before\":");
        v.push_str(before.unwrap_or("null"));
        v.push_str(",\"after\":");
        v.push_str(after.unwrap_or("null"));
        v.push_str(",\"source\":");
        v.push_str(&self.source.borrow());
        v.push_str(",\"transaction\":");
        match self.collection.as_ref().map(|(topic, table)| txn_metadata::next_event(topic, table)) {
            Some((block, begin)) => {
                if let Some(begin) = begin {
                    pending::push(&begin.parts())?;
                }
                v.push_str(&block);
            }
            None => v.push_str("null"),
        }
        v.push_str(",\"op\":\"");
        v.push(op);
        v.push_str(&self.tail.borrow());
        let wrapped = self.plan.schemas.as_ref().map(|s| connect_schema::wrap(&s.value, &v));
        let headers = header.map(|(name, value)| [(name.to_owned(), Some(value.to_owned()))]);
        self.queue_with(key, Some(wrapped.as_deref().unwrap_or(&v)), headers.as_ref().map(|h| &h[..]))
    }

    fn queue(&self, key: Option<&str>, value: Option<&str>) -> Result<(), KafkaError> {
        self.queue_with(key, value, None)
    }

    fn queue_with(
        &self,
        key: Option<&str>,
        value: Option<&str>,
        headers: Option<&[(String, Option<String>)]>,
    ) -> Result<(), KafkaError> {
        let key: Option<std::borrow::Cow<str>> = match (&self.plan.schemas, key) {
            (Some(s), Some(k)) => Some(connect_schema::wrap(&s.key, k).into()),
            (_, k) => k.map(Into::into),
        };
        (self.sink)(&Parts {
            topic: &self.plan.opts.topic,
            key: key.as_deref().map(str::as_bytes),
            payload: value.map(str::as_bytes),
            headers,
            ..Default::default()
        })
    }

    /// (key, row) JSON of one tuple; the row only if `with_row`.
    fn encode(&self, t: Tuple, with_row: bool) -> (String, Option<String>) {
        let mut key = String::with_capacity(32);
        // SAFETY: `t` is a row of the relation `self.plan` was built from (a transition table of
        // the firing trigger's relation, or a backfill row deformed with its descriptor), and the
        // plan is rebuilt after any relcache invalidation, so each value has the type its column
        // encoder expects.
        unsafe { self.plan.key.write(&mut key, t.0, t.1) };
        let row = with_row.then(|| {
            let mut row = String::with_capacity(256);
            // SAFETY: as for the key just above: `t` is a row of the descriptor the plan was built
            // from.
            unsafe { self.plan.row.write(&mut row, t.0, t.1) };
            row
        });
        (key, row)
    }

    pub(crate) fn inserted(&self, new: Tuple, op: char) -> Result<(), KafkaError> {
        let mut bufs = self.key_row.borrow_mut();
        let (key, row) = &mut *bufs;
        key.clear();
        row.clear();
        // SAFETY: as in `encode`: `new` is a row of the descriptor the plan was built from.
        unsafe {
            self.plan.key.write(key, new.0, new.1);
            self.plan.row.write(row, new.0, new.1);
        }
        self.push(Some(key), None, Some(row), op)
    }

    pub(crate) fn deleted(&self, old: Tuple) -> Result<(), KafkaError> {
        let (key, before) = self.encode(old, self.plan.opts.emit_before);
        self.push(Some(&key), before.as_deref(), None, 'd')?;
        if self.plan.opts.tombstones {
            self.queue(Some(&key), None)?;
        }
        Ok(())
    }

    /// An UPDATE decoded without its old row (REPLICA IDENTITY DEFAULT and an unchanged key):
    /// `before` is null, as Debezium writes it.
    pub(crate) fn updated_new_only(&self, new: Tuple) -> Result<(), KafkaError> {
        let (key, after) = self.encode(new, true);
        self.push(Some(&key), None, after.as_deref(), 'u')
    }

    /// A TRUNCATE: `op: "t"`, no key, no row.
    pub(crate) fn truncated(&self) -> Result<(), KafkaError> {
        self.push(None, None, None, 't')
    }

    pub(crate) fn updated(&self, old: Tuple, new: Tuple) -> Result<(), KafkaError> {
        let (old_key, before) = self.encode(old, self.plan.opts.emit_before);
        let (new_key, after) = self.encode(new, true);
        if old_key == new_key {
            self.push(Some(&new_key), before.as_deref(), after.as_deref(), 'u')
        } else {
            // The key changed: as Debezium, a delete on the old key (and its tombstone) with the
            // new key in header __debezium.newkey, a create on the new key with the old one in
            // __debezium.oldkey.
            self.push_with(
                Some(&old_key),
                before.as_deref(),
                None,
                'd',
                Some(("__debezium.newkey", &new_key)),
            )?;
            if self.plan.opts.tombstones {
                self.queue(Some(&old_key), None)?;
            }
            self.push_with(Some(&new_key), None, after.as_deref(), 'c', Some(("__debezium.oldkey", &old_key)))
        }
    }
}

/// A deformed tuple: values and nulls by attribute index.
#[derive(Clone, Copy)]
pub(crate) struct Tuple<'a>(pub &'a [Datum], pub &'a [bool]);

/// Trigger of captured tables (created by `kafka.capture()`): AFTER INSERT/UPDATE/DELETE with
/// transition tables, and AFTER TRUNCATE, all FOR EACH STATEMENT.
#[pg_trigger(sql = false)] // declared in sql/tables.sql, in schema kafka_internal
fn capture_changes<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    capture_statement(trigger).unwrap_or_else(|e| e.raise());
    Ok(None)
}

fn capture_statement(trigger: &pgrx::PgTrigger) -> Result<(), KafkaError> {
    let data = trigger.trigger_data();
    check_trigger(data, "kafka_internal.capture_changes()", false)?;
    let events = Events::new(plan::of_trigger(trigger)?, false);
    // SAFETY: PostgreSQL calls a trigger with valid TriggerData whose `tg_relation` is open for the
    // call.
    let desc = unsafe { (*data.tg_relation).rd_att };
    match data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
        // SAFETY: check_trigger verified a statement-level AFTER INSERT trigger with a NEW TABLE,
        // so `tg_newtable` is a live tuplestore of rows of `desc`, the trigger relation's
        // descriptor.
        pg_sys::TRIGGER_EVENT_INSERT => unsafe {
            rows(data.tg_newtable, desc, |new| events.inserted(new, 'c'))
        },
        // SAFETY: check_trigger verified a statement-level AFTER DELETE trigger with an OLD TABLE,
        // so `tg_oldtable` is a live tuplestore of rows of `desc`.
        pg_sys::TRIGGER_EVENT_DELETE => unsafe { rows(data.tg_oldtable, desc, |old| events.deleted(old)) },
        // SAFETY: check_trigger verified a statement-level AFTER UPDATE trigger with both
        // transition tables, so both are live tuplestores of rows of `desc`, in the same order.
        pg_sys::TRIGGER_EVENT_UPDATE => unsafe {
            row_pairs(data.tg_oldtable, data.tg_newtable, desc, |old, new| events.updated(old, new))
        },
        _ => events.truncated(),
    }
}

/// Refuses to run as anything but a statement-level AFTER trigger with the transition tables its
/// event needs (`insert_only`: only AFTER INSERT), so no SQL can make it read what is not there.
pub(crate) fn check_trigger(
    data: &pg_sys::TriggerData,
    name: &str,
    insert_only: bool,
) -> Result<(), KafkaError> {
    let event = data.tg_event;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    let statement = event & pg_sys::TRIGGER_EVENT_ROW == 0;
    let after = event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_AFTER;
    let tables = match op {
        pg_sys::TRIGGER_EVENT_INSERT => !data.tg_newtable.is_null(),
        pg_sys::TRIGGER_EVENT_DELETE => !data.tg_oldtable.is_null() && !insert_only,
        pg_sys::TRIGGER_EVENT_UPDATE => {
            !data.tg_oldtable.is_null() && !data.tg_newtable.is_null() && !insert_only
        }
        pg_sys::TRIGGER_EVENT_TRUNCATE => !insert_only,
        _ => false,
    };
    if statement && after && tables {
        Ok(())
    } else {
        Err(KafkaError::BadTrigger(format!(
            "{name} must run as a FOR EACH STATEMENT AFTER trigger with the transition tables of its event"
        )))
    }
}

/// Queues an `op: "r"` (snapshot) event for each of `rows`, rows of captured table `rel`, in
/// order; returns how many. Used by `kafka.backfill()`. The caller needs what a backfill needs
/// (SELECT and TRIGGER on the table): the events go to the capture's topic.
#[pg_extern(volatile, parallel_unsafe, schema = "kafka_internal")]
fn backfill_events(rel: pg_sys::Oid, rows: pgrx::AnyArray) -> SqlResult<i64> {
    let options = Spi::get_two_with_args::<Vec<String>, bool>(
        "SELECT kafka_internal.capture_args(c),
                pg_catalog.has_table_privilege(c.relid, 'SELECT') AND pg_catalog.has_table_privilege(c.relid, 'TRIGGER')
           FROM kafka.capture_config c WHERE c.relid = $1 AND c.kind = 'table'",
        &[rel.into()],
    );
    let args = match options {
        Ok((Some(args), Some(true))) => args,
        Ok((Some(_), _)) => return Err(KafkaError::CaptureDenied(relation_name(rel)).into()),
        Ok((None, _)) | Err(pgrx::spi::Error::InvalidPosition) => {
            return Err(KafkaError::NotCaptured(relation_name(rel)).into())
        }
        Err(e) => {
            return Err(KafkaError::Internal(format!("could not read kafka.capture_config: {e}")).into())
        }
    };
    let options = Options::from_args(&args)?;
    // SAFETY: inside the caller's transaction; relation_open raises if `rel` does not exist.
    let opened = unsafe { Open::relation(rel, pg_sys::AccessShareLock as _) }; // lock kept until the end
    let relation = opened.get();
    // SAFETY: inside the caller's transaction, with `relation` open (held by `opened`).
    // pg_detoast_datum gives the plain array of `rows`, whose element type is checked to be the
    // relation's row type before anything is deformed: its elements are composite Datums (varlena
    // HeapTupleHeaders, typlen -1, not by value, 'd' alignment, as deconstruct_array is told).
    // deconstruct_array fills `elems`/`nulls` with `n` entries; each non-null element is detoasted
    // and deformed with the relation's descriptor into `values`/`isnull`, sized `natts`
    // (heap_deform_tuple fills in columns added after a value was made).
    // format_type_be returns a palloc'd NUL-terminated name.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(rows.datum().cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        let elem_type = (*arr).elemtype;
        if elem_type != (*(*relation).rd_rel).reltype {
            let found = CStr::from_ptr(pg_sys::format_type_be(elem_type)).to_string_lossy();
            return Err(KafkaError::NotTableRows(format!("{found}[]")).into());
        }
        let events = Events::new(Rc::new(Plan::new(options, relation)), true);
        let desc = (*relation).rd_att;
        let natts = (*desc).natts as usize;
        let (mut elems, mut nulls, mut n) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(
            arr,
            elem_type,
            -1,
            false,
            pg_sys::TYPALIGN_DOUBLE as _,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        let (mut values, mut isnull) = (vec![Datum::from(0); natts], vec![true; natts]);
        for i in 0..n as usize {
            if *nulls.add(i) {
                continue; // a NULL row: nothing to emit
            }
            let header = pg_sys::pg_detoast_datum((*elems.add(i)).cast_mut_ptr())
                .cast::<pg_sys::HeapTupleHeaderData>();
            let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
            tuple.t_len = pgrx::varlena::varsize_any(header.cast()) as u32;
            tuple.t_data = header;
            pg_sys::heap_deform_tuple(&mut tuple, desc, values.as_mut_ptr(), isnull.as_mut_ptr());
            events.inserted(Tuple(&values, &isnull), 'r')?;
        }
        Ok(n.into())
    }
}

/// A relation's name as `regclass` shows it (its number if there is none).
fn relation_name(rel: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::pg_catalog.regclass::pg_catalog.text", &[rel.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| rel.to_u32().to_string())
}

/// The envelope's end after `op`: `","ts_ms":…,"ts_us":…,"ts_ns":…}`, now.
fn tail() -> String {
    let mut tail = String::new();
    tail_into(&mut tail);
    tail
}

/// [`tail`], written into `tail`.
fn tail_into(tail: &mut String) {
    // SAFETY: GetCurrentTimestamp only reads the system clock; no precondition.
    let us = unix_us(unsafe { pg_sys::GetCurrentTimestamp() });
    tail.clear();
    tail.push_str("\",\"ts_ms\":");
    debezium::push_int(tail, us.div_euclid(1000));
    tail.push_str(",\"ts_us\":");
    debezium::push_int(tail, us);
    tail.push_str(",\"ts_ns\":");
    debezium::push_int(tail, us * 1000);
    tail.push('}');
}

/// The `source` block of the events of the current statement (Debezium's fields, in its order;
/// the time is the statement's, not the commit's, and there is no LSN: docs/guarantees.md, Limits).
fn source(plan: &Plan, snapshot: bool) -> String {
    // SAFETY: plain read of the process-local start time of the current statement.
    let us = unix_us(unsafe { pg_sys::GetCurrentStatementStartTimestamp() });
    // SAFETY: inside the trigger's (or backfill's) transaction; assigns an xid if there is none
    // yet. Where none can be assigned (recovery, parallel mode) PostgreSQL raises, turned into a
    // Rust panic by pgrx's guard.
    let tx_id = unsafe { pg_sys::GetTopFullTransactionId() }.value;
    source_block(plan, us, snapshot, "null", tx_id, "null")
}

/// What a decoded transaction's `source` block is made of: commit time, id, last commit's end.
type SourceKey = (Option<i64>, u32, u64);

/// Where a decoded change is in the WAL, and its transaction.
pub(crate) struct WalPosition {
    /// The change's LSN.
    pub lsn: u64,
    /// The end LSN of the transaction decoded before this one.
    pub last_commit_end: u64,
    /// The transaction's commit time (microseconds since 1970), None while it is streamed
    /// before its commit; and its id (32 bits, as Debezium).
    pub commit_us: Option<i64>,
    pub xid: u32,
}

/// The `source` block of a decoded change: `lsn`, `sequence` (`["<last commit's end>","<lsn>"]`,
/// a JSON string, as Debezium writes it), commit time, transaction id; cut where the change's
/// LSN goes (in `sequence`, then `lsn`), the same for every change of a transaction.
fn wal_source_parts(plan: &Plan, at: &WalPosition) -> [String; 3] {
    // Made with a NUL where the LSN goes (no name holds one: PostgreSQL's text cannot), and cut there.
    let mark = char::from(COMMIT_MARK).to_string();
    let last_end = match at.commit_us {
        Some(_) => in_sequence(at.last_commit_end),
        None => mark.clone(),
    };
    let sequence = format!("\"[{last_end},\\\"\0\\\"]\"");
    let block = match at.commit_us {
        Some(us) => source_block(plan, us, false, &sequence, u64::from(at.xid), "\0"),
        None => source_block_of(plan, [&mark, &mark, &mark], false, &sequence, u64::from(at.xid), "\0"),
    };
    let mut parts = block.split('\0').map(str::to_owned);
    let mut next = || parts.next().unwrap_or_default();
    [next(), next(), next()]
}

/// Debezium's `source` block, in its field order.
fn source_block(plan: &Plan, us: i64, snapshot: bool, sequence: &str, tx_id: u64, lsn: &str) -> String {
    let (ts_ms, ts_us, ts_ns) = (us.div_euclid(1000).to_string(), us.to_string(), (us * 1000).to_string());
    source_block_of(plan, [&ts_ms, &ts_us, &ts_ns], snapshot, sequence, tx_id, lsn)
}

/// [`source_block`] with its times (`ts_ms`, `ts_us`, `ts_ns`) as they are written.
fn source_block_of(
    plan: &Plan,
    [ts_ms, us, ts_ns]: [&str; 3],
    snapshot: bool,
    sequence: &str,
    tx_id: u64,
    lsn: &str,
) -> String {
    let Plan { db, schema, table, .. } = plan;
    format!(
        "{{\"version\":\"pg_kafka-{}\",\"connector\":\"postgresql\",\"name\":{db},\"ts_ms\":{ts_ms},\
         \"snapshot\":\"{snapshot}\",\"db\":{db},\"sequence\":{sequence},\"ts_us\":{us},\"ts_ns\":{ts_ns},\
         \"schema\":{schema},\"table\":{table},\"txId\":{tx_id},\"lsn\":{lsn},\"xmin\":null,\
         \"origin\":null,\"origin_lsn\":null}}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A read position of its own on a transition table (other triggers may be reading it too).
struct Reader {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
    pointer: i32,
    /// Where tuples read back from disk are allocated: the slot frees each one when it takes the
    /// next, so they must outlive the per-row context.
    context: pg_sys::MemoryContext,
}

impl Reader {
    unsafe fn new(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Reader {
        // SAFETY: `store` is a live transition tuplestore of rows of `desc` (this function's
        // contract). It was created with EXEC_FLAG_REWIND, so a new read pointer with that flag is
        // allowed at any time; the slot is made for `desc` with minimal-tuple ops, as tuplestores
        // hold minimal tuples, and dropped in Drop. CurrentMemoryContext is the trigger call's,
        // which outlives the Reader.
        unsafe {
            let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
            pg_sys::tuplestore_select_read_pointer(store, pointer);
            pg_sys::tuplestore_rescan(store);
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
            Reader { store, slot, pointer, context: pg_sys::CurrentMemoryContext }
        }
    }

    /// The next row, deformed; valid until the next call.
    unsafe fn next(&mut self) -> Option<Tuple<'_>> {
        // SAFETY: `store`, `pointer`, `slot` and `context` were set up in `new` and stay valid
        // while the Reader lives (within one trigger call). Tuples read back from disk are
        // allocated in `context`; slot_getallattrs fills `tts_nvalid` (the descriptor's natts)
        // values and nulls, valid until the next fetch, which the returned borrow of `self`
        // enforces.
        unsafe {
            pg_sys::tuplestore_select_read_pointer(self.store, self.pointer);
            let row_context = pg_sys::MemoryContextSwitchTo(self.context);
            let found = pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot);
            pg_sys::MemoryContextSwitchTo(row_context);
            if !found {
                return None;
            }
            pg_sys::slot_getallattrs(self.slot);
            let n = (*self.slot).tts_nvalid as usize;
            Some(Tuple(
                std::slice::from_raw_parts((*self.slot).tts_values, n),
                std::slice::from_raw_parts((*self.slot).tts_isnull, n),
            ))
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // SAFETY: the slot was made by MakeSingleTupleTableSlot in `new` and is dropped only here,
        // once.
        unsafe { pg_sys::ExecDropSingleTupleTableSlot(self.slot) };
    }
}

/// Calls `f` for each row of a transition table, in a memory context reset after each row.
pub(crate) unsafe fn rows(
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    mut f: impl FnMut(Tuple) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    // SAFETY: forwarded contract of `rows`: `store` is a live transition tuplestore of rows of
    // `desc`.
    let mut reader = unsafe { Reader::new(store, desc) };
    // SAFETY: `reader` was made just above; each Tuple is used by `f` before the next fetch.
    per_row(|| unsafe { reader.next() }.map(&mut f).transpose().map(|r| r.is_some()))
}

/// Calls `f` for each (old, new) pair of an UPDATE's transition tables (same order in both).
unsafe fn row_pairs(
    old: *mut pg_sys::Tuplestorestate,
    new: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    mut f: impl FnMut(Tuple, Tuple) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    // SAFETY: forwarded contract of `row_pairs`: both tuplestores are live and hold rows of `desc`.
    let (mut old, mut new) = unsafe { (Reader::new(old, desc), Reader::new(new, desc)) };
    // SAFETY: both readers were made just above; the tuples are used by `f` before the next fetch.
    per_row(|| match unsafe { (old.next(), new.next()) } {
        (Some(o), Some(n)) => f(o, n).map(|()| true),
        _ => Ok(false),
    })
}

/// Runs `step` until it returns false, each time in a fresh short-lived memory context (detoasted
/// values and output strings do not pile up over a million-row statement).
fn per_row(mut step: impl FnMut() -> Result<bool, KafkaError>) -> Result<(), KafkaError> {
    let mut ctx = PgMemoryContexts::new("pg_kafka capture row");
    // SAFETY: `ctx` is a memory context created just above (a child of the current one); switch_to
    // restores the previous context when `step` returns or unwinds.
    while unsafe { ctx.switch_to(|_| step()) }? {
        // SAFETY: nothing allocated in `ctx` outlives its step: tuples are read into the Reader's
        // own context, and what a step keeps (event strings, packs) is Rust-owned.
        unsafe { ctx.reset() };
    }
    Ok(())
}
