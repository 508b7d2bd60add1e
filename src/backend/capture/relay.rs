//! The relay of a user's own outbox table (`kafka.capture_outbox()`, Debezium's Outbox Event
//! Router shape): one native statement-level trigger that turns each inserted row into one
//! message, queued like `produce()` in the inserting transaction. It runs with the rights of the
//! session that inserted (no SECURITY DEFINER, no generated code): the message goes to
//! `<pattern with %s replaced by aggregatetype>`, key `aggregateid`, value `payload`, headers
//! `id` and `type`. With `delete_after_queue`, the queued rows are deleted again by the same
//! session, as Debezium's docs suggest for an outbox that should stay empty.

use crate::backend::capture::{check_trigger, rows, Tuple};
use crate::backend::pending;
use crate::error::KafkaError;
use kafka_core::pack::Parts;
use pgrx::prelude::*;
use std::ffi::CStr;

/// The columns of an outbox table the relay reads, in this order.
const COLUMNS: [&str; 5] = ["id", "aggregatetype", "aggregateid", "type", "payload"];

/// Trigger of relayed outbox tables: AFTER INSERT FOR EACH STATEMENT with a NEW TABLE; arguments
/// are the topic pattern and whether to delete the rows once queued.
#[pg_trigger(sql = false)] // declared in sql/tables.sql, in schema kafka_internal
fn capture_outbox_relay<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    relay_statement(trigger).unwrap_or_else(|e| e.raise());
    Ok(None)
}

fn relay_statement(trigger: &pgrx::PgTrigger) -> Result<(), KafkaError> {
    let data = trigger.trigger_data();
    check_trigger(data, "kafka_internal.capture_outbox_relay()", true)?;
    let bad =
        || KafkaError::BadTrigger("kafka_internal.capture_outbox_relay() takes 2 trigger arguments".into());
    let args = trigger.extra_args().map_err(|_| bad())?;
    let [pattern, delete] = args.as_slice() else {
        return Err(bad());
    };
    let delete = matches!(delete.as_str(), "t" | "true");
    crate::backend::capture::plan::check_relay(trigger, pattern, delete)?;
    // SAFETY: PostgreSQL calls a trigger with valid TriggerData whose `tg_relation` is open for the
    // call.
    let desc = unsafe { (*data.tg_relation).rd_att };
    // SAFETY: `desc` is the descriptor of the open trigger relation.
    let columns = unsafe { column_outputs(desc) }?;
    let mut ids = Vec::new();
    // SAFETY: check_trigger verified a statement-level AFTER INSERT trigger with a NEW TABLE, so
    // `tg_newtable` is a live tuplestore of rows of `desc`; `columns` were found in that same
    // descriptor, so each Column::text reads a value of the type its output function is for.
    unsafe {
        rows(data.tg_newtable, desc, |row| {
            let [id, aggregatetype, aggregateid, kind, payload] = columns.map(|c| c.text(row));
            let aggregatetype = aggregatetype.unwrap_or_default();
            let topic = pattern.replace("%s", &aggregatetype);
            crate::backend::input::check_topic(Some(&topic))?;
            crate::backend::topics::check_writable(&topic, crate::backend::topics::Writer::Producer)?;
            let headers = [("id".to_owned(), id.clone()), ("type".to_owned(), kind)];
            pending::push(&Parts {
                topic: &topic,
                key: aggregateid.as_deref().map(str::as_bytes),
                payload: payload.as_deref().map(str::as_bytes),
                headers: Some(&headers),
                ..Default::default()
            })?;
            if delete {
                ids.extend(id);
            }
            Ok(())
        })?;
    }
    if delete && !ids.is_empty() {
        // SAFETY: inside the trigger's transaction, with the relation open and locked by the
        // INSERT: its schema exists, so get_namespace_name returns a NUL-terminated name; `relname`
        // is a NUL-terminated NameData; quote_qualified_identifier returns a palloc'd
        // NUL-terminated string.
        let name = unsafe {
            let rel = data.tg_relation;
            let nsp = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
            CStr::from_ptr(pg_sys::quote_qualified_identifier(nsp, (*(*rel).rd_rel).relname.data.as_ptr()))
                .to_string_lossy()
                .into_owned()
        };
        // As the inserting session, with its privileges; only pg_catalog's operator, and the id's
        // type's output function (no cast the table's owner could define).
        let sql = format!(
            "DELETE FROM {name} t WHERE pg_catalog.format('%s', t.id) OPERATOR(pg_catalog.=) ANY($1::pg_catalog.text[])"
        );
        Spi::run_with_args(&sql, &[ids.into()])
            .map_err(|e| KafkaError::Internal(format!("could not delete relayed rows: {e}")))?;
    }
    Ok(())
}

/// One column of the outbox table and its type's output function.
#[derive(Clone, Copy)]
struct Column {
    index: usize,
    output: pg_sys::Oid,
}

impl Column {
    /// The column's value as text, NULL as None.
    unsafe fn text(self, row: Tuple) -> Option<String> {
        if row.1[self.index] {
            return None;
        }
        // SAFETY: `row` comes from the descriptor column_outputs read (this method's contract), the
        // value is not null, and `self.output` is the output function of that column's type.
        let out = unsafe { pg_sys::OidOutputFunctionCall(self.output, row.0[self.index]) };
        // SAFETY: `out` is the palloc'd NUL-terminated string the output function returned.
        Some(unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned())
    }
}

/// Finds the relay's columns by name; refuses a table that lacks one.
unsafe fn column_outputs(desc: pg_sys::TupleDesc) -> Result<[Column; 5], KafkaError> {
    // SAFETY: `desc` is the descriptor of the open trigger relation, which outlives `attrs`
    // (this function's contract).
    let attrs = unsafe { crate::relation::attributes(desc) };
    let find = |name: &str| {
        attrs.iter().position(|a| {
            !a.attisdropped
                // SAFETY: `attname` is a NameData, always NUL-terminated.
                && unsafe { CStr::from_ptr(a.attname.data.as_ptr()) }.to_bytes() == name.as_bytes()
        })
    };
    let mut found = [Column { index: 0, output: pg_sys::InvalidOid }; 5];
    for (slot, name) in found.iter_mut().zip(COLUMNS) {
        let index = find(name).ok_or_else(|| {
            KafkaError::BadTrigger(format!("a relayed outbox table needs a column \"{name}\""))
        })?;
        let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
        // SAFETY: catalog cache lookup of the column's existing type, inside the trigger's
        // transaction; the out-parameters are locals.
        unsafe { pg_sys::getTypeOutputInfo(attrs[index].atttypid, &mut output, &mut varlena) };
        *slot = Column { index, output };
    }
    Ok(found)
}
