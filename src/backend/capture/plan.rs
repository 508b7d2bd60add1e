//! What a capture trigger needs to encode a statement's events: its options, the column encoders
//! of key and row, and the JSON of the database, schema and table names; and whether a capture or
//! relay trigger is one `kafka.capture()` / `kafka.capture_outbox()` made. Built the first time a
//! trigger fires in a session and kept until PostgreSQL invalidates a relation or a schema (an
//! ALTER TABLE, a new `kafka.capture()`, a renamed schema, a VACUUM's new statistics...), so that a
//! one-row statement does no catalog lookups.

use crate::backend::capture::connect_schema::Schemas;
use crate::backend::capture::debezium::{string, Columns, RowEnc};
use crate::error::KafkaError;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// The options of a table's capture, as `kafka_internal.capture_args` lists them (and
/// `kafka.capture()` gives them to the table's triggers).
pub struct Options {
    pub topic: String,
    pub key: Vec<i16>,
    pub exclude: Vec<i16>,
    pub emit_before: bool,
    pub tombstones: bool,
    /// Events in Kafka Connect's `{"schema":…,"payload":…}` form.
    pub schemas: bool,
}

impl Options {
    pub fn from_args(args: &[String]) -> Result<Options, KafkaError> {
        let bad = |why: &str| KafkaError::BadTrigger(format!("kafka_internal.capture_changes() {why}"));
        let attnums = |s: &str| -> Result<Vec<i16>, KafkaError> {
            s.split(',')
                .filter(|a| !a.is_empty())
                .map(|a| a.parse().map_err(|_| bad("takes column numbers, separated by commas")))
                .collect()
        };
        // Triggers made before the `schemas` option have 5 arguments.
        match args {
            [topic, key, exclude, before, tombstones, rest @ ..] if rest.len() <= 1 => Ok(Options {
                topic: topic.clone(),
                key: attnums(key)?,
                exclude: attnums(exclude)?,
                emit_before: flag(before),
                tombstones: flag(tombstones),
                schemas: rest.first().is_some_and(|s| flag(s)),
            }),
            _ => Err(bad("takes 6 trigger arguments")),
        }
    }
}

/// A boolean as PostgreSQL writes it (`t`, or `true` from a cast to text).
fn flag(s: &str) -> bool {
    matches!(s, "t" | "true")
}

pub struct Plan {
    pub opts: Options,
    pub key: RowEnc,
    pub row: RowEnc,
    /// With the `schemas` option: the schemas of keys and values.
    pub schemas: Option<Schemas>,
    /// JSON strings of the names, for the `source` block.
    pub db: String,
    pub schema: String,
    pub table: String,
}

impl Plan {
    pub fn new(opts: Options, rel: pg_sys::Relation) -> Plan {
        // SAFETY: `rel` is a relation the caller holds open (the firing trigger's, or backfill's
        // relation_open).
        let desc = unsafe { (*rel).rd_att };
        let json = |name: &CStr| {
            let mut s = String::new();
            string(&mut s, &name.to_string_lossy());
            s
        };
        // SAFETY: inside the caller's transaction, with `rel` open and locked: the database we are
        // connected to and the relation's schema both exist (a schema cannot be dropped under a
        // locked relation), so get_database_name and get_namespace_name return palloc'd
        // NUL-terminated names, never NULL; `relname` is a NUL-terminated NameData. RowEnc::new and
        // Schemas::new read `desc`, the open relation's descriptor.
        unsafe {
            Plan {
                key: RowEnc::new(desc, Columns::Only(&opts.key)),
                row: RowEnc::new(desc, Columns::Except(&opts.exclude)),
                schemas: opts.schemas.then(|| {
                    Schemas::new(desc, Columns::Only(&opts.key), Columns::Except(&opts.exclude), &opts.topic)
                }),
                opts,
                db: json(CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId))),
                schema: json(CStr::from_ptr(pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace))),
                table: json(CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())),
            }
        }
    }
}

thread_local! {
    /// Relay triggers found to match their table's capture (trigger oid), in epoch `PLANS_EPOCH`.
    static RELAYS: RefCell<std::collections::HashSet<Oid>> = RefCell::new(Default::default());
    /// Plans by trigger oid (a trigger's arguments never change; a new capture makes new triggers).
    static PLANS: RefCell<HashMap<Oid, Rc<Plan>>> = RefCell::new(HashMap::new());
    /// Bumped by every invalidation; `PLANS` holds plans made in epoch `PLANS_EPOCH`.
    static EPOCH: Cell<u64> = const { Cell::new(0) };
    static PLANS_EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// The invalidation epoch: bumped by every relcache or schema invalidation (what a cache of
/// plans compares to know it is stale).
pub fn epoch() -> u64 {
    EPOCH.get()
}

/// Registers the invalidation callbacks; called once from `_PG_init`.
pub fn init() {
    // SAFETY: called once per process from _PG_init; the callbacks are 'static functions of the
    // expected signature (the library is never unloaded); a full callback list is raised as an
    // error by PostgreSQL, not overrun.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache), Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(on_namespace),
            Datum::from(0),
        );
    }
}

/// The firing trigger's oid, and the current epoch, with what an earlier epoch cached thrown away.
fn trigger_and_epoch(data: &pg_sys::TriggerData) -> (Oid, u64) {
    // SAFETY: PostgreSQL calls a trigger with valid TriggerData whose `tg_trigger` lives for the
    // call.
    let tgoid = unsafe { (*data.tg_trigger).tgoid };
    let epoch = EPOCH.get();
    if PLANS_EPOCH.replace(epoch) != epoch {
        PLANS.with_borrow_mut(HashMap::clear);
        RELAYS.with_borrow_mut(|r| r.clear());
    }
    (tgoid, epoch)
}

/// The plan of the firing capture trigger.
pub fn of_trigger(trigger: &pgrx::PgTrigger) -> Result<Rc<Plan>, KafkaError> {
    let data = trigger.trigger_data();
    let (tgoid, epoch) = trigger_and_epoch(data);
    if let Some(plan) = PLANS.with_borrow(|p| p.get(&tgoid).cloned()) {
        return Ok(plan);
    }
    // The options are the capture's, not the trigger's arguments: the same when kafka.capture()
    // made the trigger, but in a restored copy only the capture's follow the columns' new
    // numbers (see capture_config_check).
    let opts = match registered(data.tg_relation)? {
        Some(Registered::Table(args)) => Options::from_args(&args)?,
        _ => return Err(unregistered(data.tg_relation, "kafka_internal.capture_changes()")),
    };
    let plan = Rc::new(Plan::new(opts, data.tg_relation));
    // Building it looked up catalogs, which may have processed invalidations: keep it only if
    // none came meanwhile.
    if EPOCH.get() == epoch {
        PLANS.with_borrow_mut(|p| p.insert(tgoid, plan.clone()));
    }
    Ok(plan)
}

/// Refuses an outbox relay trigger unless `kafka.capture_outbox()` made it: its arguments (topic
/// pattern, whether to delete) are those `kafka.capture_config` holds for its table.
pub fn check_relay(trigger: &pgrx::PgTrigger, pattern: &str, delete: bool) -> Result<(), KafkaError> {
    let data = trigger.trigger_data();
    let (tgoid, epoch) = trigger_and_epoch(data);
    if RELAYS.with_borrow(|r| r.contains(&tgoid)) {
        return Ok(());
    }
    match registered(data.tg_relation)? {
        Some(Registered::Outbox { pattern: p, delete: d }) if p == pattern && d == delete => {}
        _ => return Err(unregistered(data.tg_relation, "kafka_internal.capture_outbox_relay()")),
    }
    if EPOCH.get() == epoch {
        RELAYS.with_borrow_mut(|r| r.insert(tgoid));
    }
    Ok(())
}

/// What `kafka.capture_config` holds for a table.
enum Registered {
    /// A table's capture: its trigger's arguments (`kafka_internal.capture_args`).
    Table(Vec<String>),
    Outbox {
        pattern: String,
        delete: bool,
    },
}

/// The capture of the trigger's table, read as the extension's owner (the inserting role may not
/// read `kafka.capture_config`). A trigger made by hand, on a table nobody captured or with other
/// arguments than its capture's, would let whoever may create it write any topic.
fn registered(rel: pg_sys::Relation) -> Result<Option<Registered>, KafkaError> {
    // SAFETY: `rel` is the firing trigger's relation, open for the call.
    let relid = unsafe { (*rel).rd_id };
    let sql = "SELECT c.kind, kafka_internal.capture_args(c), c.topic, c.delete_after_queue
                 FROM kafka.capture_config c WHERE c.relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1";
    let store = crate::store::owner::store()?;
    crate::store::owner::as_owner(store, || {
        Spi::connect(|client| {
            let rows = client.select(sql, Some(1), &[relid.into()])?;
            let Some(row) = rows.into_iter().next() else { return Ok(None) };
            Ok(Some(match row.get::<String>(1)?.as_deref() {
                Some("table") => Registered::Table(row.get::<Vec<String>>(2)?.unwrap_or_default()),
                _ => Registered::Outbox {
                    pattern: row.get::<String>(3)?.unwrap_or_default(),
                    delete: row.get::<bool>(4)?.unwrap_or(false),
                },
            }))
        })
    })
    .map_err(|e: pgrx::spi::SpiError| {
        KafkaError::Internal(format!("could not read kafka.capture_config: {e}"))
    })
}

fn unregistered(rel: pg_sys::Relation, function: &str) -> KafkaError {
    // SAFETY: `rel` is the firing trigger's relation, open for the call; `relname` is a
    // NUL-terminated NameData.
    let table = unsafe { CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()) }.to_string_lossy();
    KafkaError::BadTrigger(format!(
        "{function} fires only in the triggers kafka.capture() or kafka.capture_outbox() made, and this one on \
         table \"{table}\" is not one of them"
    ))
}

// Invalidation callbacks only bump a counter: they may run in the middle of anything.
#[pg_guard]
unsafe extern "C-unwind" fn on_relcache(_arg: Datum, _relid: Oid) {
    EPOCH.set(EPOCH.get().wrapping_add(1));
}

#[pg_guard]
unsafe extern "C-unwind" fn on_namespace(_arg: Datum, _cacheid: i32, _hash: u32) {
    EPOCH.set(EPOCH.get().wrapping_add(1));
}
