//! Kafka Connect schemas of capture events, for `kafka.capture(..., schemas => true)`: the
//! `{"schema": ..., "payload": ...}` form Kafka Connect's JsonConverter writes with
//! `schemas.enable=true`, which Connect sinks (the JDBC sink, ...) need. The schemas follow the
//! value encoding of `debezium` type by type (Debezium's names: `io.debezium.time.Date`, ...,
//! `io.debezium.data.Bits` with its `length`, `io.debezium.data.geometry.Point`, hstore as
//! `io.debezium.data.Json`), as Kafka Connect's JsonConverter writes them (`type`, `fields` or
//! `items`, `optional`, `name`, `version`, `doc`, `parameters`, then the struct's `field`), and
//! are built once per table and session with the capture plan (`plan`).

use crate::backend::capture::debezium::{
    attributes, bit_length, bits_are_boolean, is_hstore, string, Columns,
};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use std::ffi::CStr;

/// Debezium's `source` block schema (PostgreSQL connector), as JsonConverter writes it.
const SOURCE: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"},{"type":"string","optional":true,"field":"origin"},{"type":"int64","optional":true,"field":"origin_lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"}"#;
/// The fields of Debezium's `io.debezium.data.geometry.Point` (Point.builder()).
const POINT_FIELDS: &str = r#"{"type":"double","optional":false,"field":"x"},{"type":"double","optional":false,"field":"y"},{"type":"bytes","optional":true,"field":"wkb"},{"type":"int32","optional":true,"field":"srid"}"#;
/// The envelope's fields after `source`.
const TAIL: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}"#;

/// The schemas of a captured table's keys and values.
pub struct Schemas {
    pub key: String,
    pub value: String,
}

impl Schemas {
    /// For the columns of `desc` of the key and of the row (as the encoders have them); `name`
    /// (the topic, as Debezium's `<prefix>.<schema>.<table>`) names the Key, Value and Envelope
    /// structs.
    pub fn new(desc: pg_sys::TupleDesc, in_key: Columns, in_row: Columns, name: &str) -> Schemas {
        let mut quoted = String::new();
        string(&mut quoted, name);
        let name = &quoted[1..quoted.len() - 1];
        let row = fields(desc, in_row);
        let value_struct = |field: &str| {
            format!(
                r#"{{"type":"struct","fields":[{row}],"optional":true,"name":"{name}.Value","field":"{field}"}}"#
            )
        };
        Schemas {
            key: format!(
                r#"{{"type":"struct","fields":[{}],"optional":false,"name":"{name}.Key"}}"#,
                fields(desc, in_key)
            ),
            value: format!(
                r#"{{"type":"struct","fields":[{},{},{SOURCE},{TAIL}],"optional":false,"name":"{name}.Envelope","version":2}}"#,
                value_struct("before"),
                value_struct("after")
            ),
        }
    }
}

/// `{"schema":schema,"payload":payload}`.
pub fn wrap(schema: &str, payload: &str) -> String {
    let mut out = String::with_capacity(schema.len() + payload.len() + 24);
    out.push_str("{\"schema\":");
    out.push_str(schema);
    out.push_str(",\"payload\":");
    out.push_str(payload);
    out.push('}');
    out
}

/// The field schemas of the columns, comma-separated, in the encoders' order.
fn fields(desc: pg_sys::TupleDesc, which: Columns) -> String {
    let mut out = Vec::new();
    for (_, a) in attributes(desc, which) {
        let mut s = schema(a.atttypid, a.atttypmod, !a.attnotnull);
        s.pop(); // the closing brace: the field's name goes last
        s.push_str(",\"field\":");
        // SAFETY: `attname` is a NameData, always NUL-terminated.
        string(&mut s, &unsafe { CStr::from_ptr(a.attname.data.as_ptr()) }.to_string_lossy());
        s.push('}');
        out.push(s);
    }
    out.join(",")
}

/// The schema of a value of type `typ` (domains resolved), as Debezium maps it with its
/// defaults and `decimal.handling.mode=string` (matching [`debezium::Enc`](crate::backend::capture::debezium::Enc)).
fn schema(typ: Oid, typmod: i32, optional: bool) -> String {
    let mut typmod = typmod;
    // SAFETY: catalog cache lookup, called while building a capture plan inside a transaction;
    // `typmod` is a valid out-parameter. A missing type is raised by PostgreSQL, as a Rust panic.
    let base = unsafe { pg_sys::getBaseTypeAndTypmod(typ, &mut typmod) };
    let millis = (0..=3).contains(&typmod);
    let named = |t: &str, name: &str| {
        format!(r#"{{"type":"{t}","optional":{optional},"name":"{name}","version":1}}"#)
    };
    let plain = |t: &str| format!(r#"{{"type":"{t}","optional":{optional}}}"#);
    match base {
        pg_sys::INT2OID => plain("int16"),
        pg_sys::INT4OID => plain("int32"),
        pg_sys::INT8OID | pg_sys::OIDOID => plain("int64"),
        pg_sys::BOOLOID => plain("boolean"),
        pg_sys::FLOAT4OID => plain("float"),
        pg_sys::FLOAT8OID => plain("double"),
        pg_sys::BYTEAOID => plain("bytes"),
        pg_sys::DATEOID => named("int32", "io.debezium.time.Date"),
        pg_sys::TIMEOID if millis => named("int32", "io.debezium.time.Time"),
        pg_sys::TIMEOID => named("int64", "io.debezium.time.MicroTime"),
        pg_sys::TIMETZOID => named("string", "io.debezium.time.ZonedTime"),
        pg_sys::TIMESTAMPOID if millis => named("int64", "io.debezium.time.Timestamp"),
        pg_sys::TIMESTAMPOID => named("int64", "io.debezium.time.MicroTimestamp"),
        pg_sys::TIMESTAMPTZOID => named("string", "io.debezium.time.ZonedTimestamp"),
        pg_sys::INTERVALOID => named("int64", "io.debezium.time.MicroDuration"),
        pg_sys::UUIDOID => named("string", "io.debezium.data.Uuid"),
        pg_sys::JSONOID | pg_sys::JSONBOID => named("string", "io.debezium.data.Json"),
        pg_sys::XMLOID => named("string", "io.debezium.data.Xml"),
        pg_sys::BITOID | pg_sys::VARBITOID => match bit_length(base == pg_sys::VARBITOID, typmod) {
            length if bits_are_boolean(length) => plain("boolean"),
            length => format!(
                r#"{{"type":"bytes","optional":{optional},"name":"io.debezium.data.Bits","version":1,"parameters":{{"length":"{length}"}}}}"#
            ),
        },
        pg_sys::POINTOID => format!(
            r#"{{"type":"struct","fields":[{POINT_FIELDS}],"optional":{optional},"name":"io.debezium.data.geometry.Point","version":1,"doc":"Geometry (POINT)"}}"#
        ),
        _ if is_hstore(base) => named("string", "io.debezium.data.Json"),
        // SAFETY: catalog cache lookup of an existing type, inside the capture plan's transaction.
        _ if unsafe { pg_sys::get_typtype(base) } == b'e' as std::ffi::c_char => {
            let mut allowed = String::new();
            string(&mut allowed, &enum_labels(base));
            format!(
                r#"{{"type":"string","optional":{optional},"name":"io.debezium.data.Enum","version":1,"parameters":{{"allowed":{allowed}}}}}"#
            )
        }
        // SAFETY: catalog cache lookup of an existing type, inside the capture plan's transaction.
        _ => match unsafe { pg_sys::get_element_type(base) } {
            elem if elem != pg_sys::InvalidOid => {
                format!(r#"{{"type":"array","items":{},"optional":{optional}}}"#, schema(elem, typmod, true))
            }
            _ => plain("string"), // numeric, money, text, inet, ...: their text form
        },
    }
}

/// An enum's labels in their order, comma-separated (Debezium's `allowed` parameter).
fn enum_labels(typ: Oid) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.string_agg(e.enumlabel::pg_catalog.text, ',' ORDER BY e.enumsortorder)
           FROM pg_catalog.pg_enum e WHERE e.enumtypid OPERATOR(pg_catalog.=) $1",
        &[typ.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}
