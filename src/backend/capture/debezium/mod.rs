//! Debezium's JSON encoding of PostgreSQL values and rows (JSON converter, schemas disabled), done
//! natively on Datums: no SQL per row or per value.
//!
//! Following Debezium's PostgreSQL connector defaults: integers and booleans as JSON numbers and
//! booleans; `real`/`double precision` as Java writes them (`100.0`, `1.0E20`); `date` as days
//! since the epoch; `time`/`timestamp` as micro- (precision > 3) or milliseconds; `timestamptz`
//! as an ISO-8601 string in UTC with the column's precision of fraction digits (6 by default),
//! `timetz` likewise without trailing zeros; infinite dates and timestamps as Debezium's
//! sentinel numbers; `interval` as microseconds (a month is 30.4375 days); `bytea` as base64;
//! `bit(1)` as a boolean, other bit strings as Debezium's Bits (base64 of little-endian bytes);
//! `point` as Debezium's Point struct (`{"x":…,"y":…,"wkb":…,"srid":null}`); the hstore
//! extension's `hstore` as a string holding a JSON object (`hstore.handling.mode=json`, in Java's
//! HashMap order); arrays as JSON arrays; everything else (text, enums, uuid, json, jsonb, line,
//! box, ...) as the string of its text form. `numeric` is a string as with
//! `decimal.handling.mode=string` (exact and readable; NaN and infinities as Debezium names them:
//! `"NAN"`, `"POSITIVE_INFINITY"`). Domains are encoded as their base type.
//!
//! Values at the edges of PostgreSQL's ranges are written as Debezium 3.6.1 writes them, or
//! refused (`KafkaError::OutOfDebeziumRange`, SQLSTATE 22008) where Debezium would write a wrong
//! value or stop; no arithmetic here wraps. An `interval` beyond ±2^63 µs is ±(2^63 - 1) (the
//! saturating `(long)` cast of MicroDuration.durationMicros), one of more than 2^31 - 1 hours (or
//! PostgreSQL 17's infinite ones) is refused (PgJDBC's PGInterval cannot read it; Debezium would
//! stop, or write 0 for infinity); a `timestamp` (precision 4–6) after 294247-01-10
//! 04:00:54.775807, whose microseconds since 1970 exceed 64 bits, is refused (Debezium's
//! Conversions.toEpochMicros saturates the seconds and the added microseconds wrap); timestamp(0–3)
//! milliseconds, `timestamptz` (`+294276-12-31T23:59:59.999999Z`, `-4713-11-24T…`), `date` and
//! `money` are exact over PostgreSQL's whole range, as in Debezium.
//!
//! This module reads Datums and picks the encoding of each column when a capture plan is made;
//! the encodings themselves are pure functions over values and bytes, with their unit tests:
//! `json` (strings, base64, numbers as Java prints them), `time`, `special` (bit strings, point,
//! numeric's special values), `hstore` and `java_map` (the key order of Java's HashMap).

mod hstore;
mod java_map;
mod json;
mod special;
mod time;

use crate::error::KafkaError;
use json::{base64, java_float, money};
pub use json::{push_digits, push_int, string};
use pgrx::pg_sys::{self, Datum, Oid};
pub use special::{bit_length, bits_are_boolean};
use std::ffi::CStr;
use time::{
    clock, date_days, interval_micros, iso_utc, timestamp_micros, timestamp_millis, DAY_US,
    TIMESTAMP_TOO_LATE,
};

/// A value Debezium's encoding cannot carry: refused, never written wrong. `value` is the type and
/// the value's text (`timestamp '294276-12-31 23:59:59.999999'`), `why` finishes the sentence.
#[derive(Debug)]
pub struct Unencodable {
    value: String,
    why: &'static str,
}

/// How one value is written.
#[derive(Debug, Clone)]
pub enum Enc {
    Int2,
    Int4,
    Int8,
    Oid,
    Bool,
    /// `real` (`double: false`) or `double precision`, written as Java's `Float.toString` /
    /// `Double.toString` would (Debezium's JSON converter); NaN and infinities as strings.
    Float {
        double: bool,
    },
    Text,
    Bytea,
    Date,
    Time {
        millis: bool,
    },
    TimeTz,
    Timestamp {
        millis: bool,
    },
    /// `digits`: the fraction's digits, zero-padded (Debezium's column precision: 6 when the
    /// column has none); 0: as many as the value needs.
    TimestampTz {
        digits: u8,
    },
    Interval,
    /// money, as Debezium's string "-1234.56"
    Money,
    /// numeric: its text, as `decimal.handling.mode=string`; NaN and the infinities by Debezium's
    /// names (`"NAN"`, `"POSITIVE_INFINITY"`, `"NEGATIVE_INFINITY"`).
    Numeric,
    /// `bit` and `bit varying`: a boolean for a column of length 1 (`boolean`), else Debezium's
    /// Bits (`special::bits`).
    Bits {
        boolean: bool,
    },
    /// `point`: Debezium's geometry.Point struct.
    Point,
    /// The hstore extension's `hstore` (its output function: for values in the layout before
    /// PostgreSQL 9.0): Debezium's JSON string.
    Hstore(Oid),
    /// The JSON string of the type's output function's text.
    Output(Oid),
    Array(Box<ArrayEnc>),
}

#[derive(Debug, Clone)]
pub struct ArrayEnc {
    elem_type: Oid,
    len: i16,
    by_val: bool,
    align: std::ffi::c_char,
    elem: Enc,
}

impl Enc {
    /// The encoding of a column of type `typ` with modifier `typmod` (domains resolved).
    pub fn of(typ: Oid, typmod: i32) -> Enc {
        let mut typmod = typmod;
        // SAFETY: catalog cache lookup, called while building a capture plan inside a transaction;
        // `typmod` is a valid out-parameter.
        let base = unsafe { pg_sys::getBaseTypeAndTypmod(typ, &mut typmod) };
        let millis = (0..=3).contains(&typmod);
        match base {
            pg_sys::INT2OID => Enc::Int2,
            pg_sys::INT4OID => Enc::Int4,
            pg_sys::INT8OID => Enc::Int8,
            pg_sys::OIDOID => Enc::Oid,
            pg_sys::BOOLOID => Enc::Bool,
            pg_sys::FLOAT4OID => Enc::Float { double: false },
            pg_sys::FLOAT8OID => Enc::Float { double: true },
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => Enc::Text,
            pg_sys::BYTEAOID => Enc::Bytea,
            pg_sys::DATEOID => Enc::Date,
            pg_sys::TIMEOID => Enc::Time { millis },
            pg_sys::TIMETZOID => Enc::TimeTz,
            pg_sys::TIMESTAMPOID => Enc::Timestamp { millis },
            pg_sys::TIMESTAMPTZOID => {
                Enc::TimestampTz { digits: if typmod < 0 { 6 } else { typmod.min(6) as u8 } }
            }
            pg_sys::INTERVALOID => Enc::Interval,
            pg_sys::MONEYOID => Enc::Money,
            pg_sys::NUMERICOID => Enc::Numeric,
            pg_sys::BITOID | pg_sys::VARBITOID => {
                Enc::Bits { boolean: bits_are_boolean(bit_length(base == pg_sys::VARBITOID, typmod)) }
            }
            pg_sys::POINTOID => Enc::Point,
            _ if is_hstore(base) => Enc::Hstore(output_function(base)),
            _ => {
                // SAFETY: catalog cache lookup of an existing type, inside the capture plan's
                // transaction.
                let elem_type = unsafe { pg_sys::get_element_type(base) };
                if elem_type == pg_sys::InvalidOid {
                    return Enc::Output(output_function(base));
                }
                let (mut len, mut by_val, mut align) = (0, false, 0);
                // SAFETY: `elem_type` is the element type of an existing array type; the
                // out-parameters are locals.
                unsafe { pg_sys::get_typlenbyvalalign(elem_type, &mut len, &mut by_val, &mut align) };
                let elem = Enc::of(elem_type, typmod);
                Enc::Array(Box::new(ArrayEnc { elem_type, len, by_val, align, elem }))
            }
        }
    }

    /// Appends the JSON of a non-NULL value; Err (with nothing to use in `out`) for a value
    /// Debezium's encoding cannot carry.
    ///
    /// # Safety
    /// `d` must be a valid Datum of the type this encoding was made for.
    pub unsafe fn write(&self, out: &mut String, d: Datum) -> Result<(), Unencodable> {
        let number = push_int;
        // SAFETY: called with the output function of the type of `d` (this method's contract:
        // `d` is a value of the type this encoding was made for, named at each call).
        let text_of = |f: u32| unsafe { output(Oid::from(f), d) };
        let refuse = |type_name: &str, f: u32, why| Unencodable {
            value: format!("{type_name} '{}'", text_of(f)),
            why,
        };
        match self {
            Enc::Int2 => number(out, (d.value() as i16).into()),
            Enc::Int4 => number(out, (d.value() as i32).into()),
            Enc::Int8 => number(out, d.value() as i64),
            Enc::Oid => number(out, (d.value() as u32).into()),
            Enc::Bool => out.push_str(if d.value() != 0 { "true" } else { "false" }),
            // A float4 Datum holds the value's bits in its low 32 bits, a float8 Datum (by value
            // on 64-bit platforms) all 64.
            Enc::Float { double: false } => java_float(out, f32::from_bits(d.value() as u32)),
            Enc::Float { double: true } => java_float(out, f64::from_bits(d.value() as u64)),
            Enc::Text => {
                // SAFETY: `d` is a non-null text, varchar or bpchar value: a varlena (this method's
                // contract).
                let bytes = unsafe { varlena_bytes(d) };
                match std::str::from_utf8(bytes) {
                    Ok(text) => string(out, text),
                    Err(_) => string(out, &String::from_utf8_lossy(bytes)),
                }
            }
            Enc::Bytea => {
                out.push('"');
                // SAFETY: `d` is a non-null bytea value: a varlena (this method's contract).
                base64(out, unsafe { varlena_bytes(d) });
                out.push('"');
            }
            Enc::Date => number(out, date_days(d.value() as i32)),
            Enc::Time { millis } => {
                // 0 to 24:00:00 in microseconds: no arithmetic here can overflow.
                let us = d.value() as i64;
                number(out, if *millis { us / 1000 } else { us });
            }
            Enc::TimeTz => {
                // SAFETY: `d` is a non-null timetz value: a by-reference pointer to an aligned
                // TimeTzADT in a tuple or array that outlives this call.
                let t = unsafe { &*d.cast_mut_ptr::<pg_sys::TimeTzADT>() };
                // At most a day plus 16 hours (PostgreSQL's limits on both): far from overflowing.
                let utc = (t.time + i64::from(t.zone) * 1_000_000).rem_euclid(DAY_US);
                out.push('"');
                clock(out, utc, 0);
                out.push_str("Z\"");
            }
            Enc::Timestamp { millis } => {
                let pg_us = d.value() as i64;
                match if *millis { timestamp_millis(pg_us) } else { timestamp_micros(pg_us) } {
                    Some(n) => number(out, n),
                    None => return Err(refuse("timestamp", pg_sys::F_TIMESTAMP_OUT, TIMESTAMP_TOO_LATE)),
                }
            }
            Enc::TimestampTz { digits } => match d.value() as i64 {
                i64::MIN | i64::MAX => string(out, &text_of(pg_sys::F_TIMESTAMPTZ_OUT)),
                pg_us => {
                    out.push('"');
                    iso_utc(out, pg_us, *digits);
                    out.push_str("Z\"");
                }
            },
            Enc::Money => money(out, d.value() as i64),
            Enc::Interval => {
                // SAFETY: `d` is a non-null interval value: a by-reference pointer to an aligned
                // Interval that outlives this call.
                let i = unsafe { &*d.cast_mut_ptr::<pg_sys::Interval>() };
                match interval_micros(i.month, i.day, i.time) {
                    Ok(us) => number(out, us),
                    Err(why) => return Err(refuse("interval", pg_sys::F_INTERVAL_OUT, why)),
                }
            }
            Enc::Numeric => {
                let text = text_of(pg_sys::F_NUMERIC_OUT);
                string(out, special::numeric_special(&text).unwrap_or(&text));
            }
            Enc::Bits { boolean } => {
                // SAFETY: `d` is a non-null bit or bit varying value: a varlena holding the number
                // of bits (an int32), then the bits (this method's contract).
                let data = unsafe { varlena_bytes(d) };
                let (len, bits) = data.split_at(data.len().min(4));
                let len = len.try_into().map_or(0, i32::from_ne_bytes);
                special::bits(out, usize::try_from(len).unwrap_or(0), bits, *boolean);
            }
            Enc::Point => {
                // SAFETY: `d` is a non-null point: a by-reference pointer to an aligned Point in a
                // tuple or array that outlives this call (this method's contract).
                let p = unsafe { &*d.cast_mut_ptr::<pg_sys::Point>() };
                special::point(out, p.x, p.y);
            }
            Enc::Hstore(f) => {
                // SAFETY: `d` is a non-null hstore value: a varlena (this method's contract).
                match hstore::pairs(unsafe { varlena_bytes(d) }) {
                    Some(pairs) => hstore::write(out, &pairs),
                    // SAFETY: `f` is hstore's output function and `d` an hstore.
                    None => hstore::write(out, &hstore::pairs_of_text(&unsafe { output(*f, d) })),
                }
            }
            // SAFETY: `f` is the output function of the (base) type this encoding was made for, and
            // `d` a value of that type (domain values are values of their base type).
            Enc::Output(f) => string(out, unsafe { &output(*f, d) }),
            // SAFETY: Enc::Array is made only for an array type whose element type is
            // `a.elem_type`, and `d` is a non-null value of that array type.
            Enc::Array(a) => return unsafe { a.write(out, d) },
        }
        Ok(())
    }
}

impl ArrayEnc {
    /// Elements in storage order (multi-dimensional arrays flattened), NULLs as null; Err as
    /// [`Enc::write`]'s, for the first element Debezium's encoding cannot carry.
    unsafe fn write(&self, out: &mut String, d: Datum) -> Result<(), Unencodable> {
        // SAFETY: `d` is a non-null array varlena (this method's contract); pg_detoast_datum
        // returns it plain, possibly as a copy in the current memory context.
        let arr = unsafe { pg_sys::pg_detoast_datum(d.cast_mut_ptr()) }.cast::<pg_sys::ArrayType>();
        let (mut elems, mut nulls, mut n) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
        // SAFETY: `arr` is a plain array of `self.elem_type`, whose length, by-value flag and
        // alignment were read from the catalog when the encoder was made; the out-parameters are
        // locals, filled with `n` palloc'd entries.
        unsafe {
            pg_sys::deconstruct_array(
                arr,
                self.elem_type,
                self.len.into(),
                self.by_val,
                self.align,
                &mut elems,
                &mut nulls,
                &mut n,
            )
        };
        out.push('[');
        for i in 0..n as usize {
            if i > 0 {
                out.push(',');
            }
            // SAFETY: `i < n`, and deconstruct_array filled `nulls` with `n` entries.
            if unsafe { *nulls.add(i) } {
                out.push_str("null");
            } else {
                // SAFETY: `i < n`, the element is not null, and it is a value of `self.elem_type`,
                // the type `self.elem` was made for.
                unsafe { self.elem.write(out, *elems.add(i)) }?;
            }
        }
        out.push(']');
        Ok(())
    }
}

/// A row's columns as a JSON object: `{"name":value,...}`.
#[derive(Debug, Clone, Default)]
pub struct RowEnc {
    /// (attribute index, name, `"name":` already escaped, encoding, whether a varlena)
    columns: Vec<(usize, String, String, Enc, bool)>,
}

/// The live columns of `desc` (index, attribute): with `Columns::Except` all but those, in
/// column order; with `Columns::Only` those, in the order given (a key's order: Debezium's key
/// follows the primary key's, or the order `key_columns` names them in).
pub fn attributes(desc: pg_sys::TupleDesc, which: Columns) -> Vec<(usize, pg_sys::FormData_pg_attribute)> {
    // SAFETY: `desc` is the descriptor of the relation Plan::new's caller holds open.
    let natts = unsafe { (*desc).natts } as usize;
    // SAFETY: `desc` outlives `attrs` (as above).
    let attrs = unsafe { crate::relation::attributes(desc) };
    let live = |i: usize| attrs.get(i).filter(|a| !a.attisdropped).map(|a| (i, *a));
    match which {
        Columns::Only(attnums) => {
            attnums.iter().filter_map(|&n| live(usize::try_from(n - 1).ok()?)).collect()
        }
        Columns::Except(attnums) => {
            (0..natts).filter_map(live).filter(|(_, a)| !attnums.contains(&a.attnum)).collect()
        }
    }
}

/// Which columns (attribute numbers) `attributes` returns.
#[derive(Clone, Copy)]
pub enum Columns<'a> {
    Only(&'a [i16]),
    Except(&'a [i16]),
}

impl RowEnc {
    /// The encoders of `attributes(desc, which)`.
    pub fn new(desc: pg_sys::TupleDesc, which: Columns) -> RowEnc {
        let columns = attributes(desc, which)
            .into_iter()
            .map(|(i, a)| {
                // SAFETY: `attname` is a NameData, always NUL-terminated.
                let name = unsafe { CStr::from_ptr(a.attname.data.as_ptr()) }.to_string_lossy();
                let mut prefix = String::new();
                string(&mut prefix, &name);
                prefix.push(':');
                (i, name.into_owned(), prefix, Enc::of(a.atttypid, a.atttypmod), a.attlen == -1)
            })
            .collect();
        RowEnc { columns }
    }

    /// Appends the JSON object of one row (`values`/`nulls` indexed by attribute); raises
    /// [`KafkaError::OutOfDebeziumRange`] (as [`RowEnc::try_write`] returns it) for a value
    /// Debezium's encoding cannot carry.
    ///
    /// # Safety
    /// The values must come from a tuple of the descriptor this was made from.
    pub unsafe fn write(&self, out: &mut String, values: &[Datum], nulls: &[bool]) {
        // SAFETY: this method's contract is try_write's.
        if let Err(e) = unsafe { self.try_write(out, values, nulls) } {
            e.raise()
        }
    }

    /// [`RowEnc::write`], returning the error: a value Debezium's encoding cannot carry (the
    /// column, the value, why), `out` then holding part of the row.
    ///
    /// # Safety
    /// The values must come from a tuple of the descriptor this was made from.
    pub unsafe fn try_write(
        &self,
        out: &mut String,
        values: &[Datum],
        nulls: &[bool],
    ) -> Result<(), KafkaError> {
        out.push('{');
        for (n, (i, name, prefix, enc, varlena)) in self.columns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(prefix);
            if nulls[*i] {
                out.push_str("null");
            } else if *varlena && unavailable(values[*i]) {
                out.push_str(UNAVAILABLE);
            } else {
                // SAFETY: `values` come from a tuple of the descriptor this encoder was made from
                // (this method's contract), so non-null attribute `i` has the type `enc` was made
                // for.
                unsafe { enc.write(out, values[*i]) }.map_err(|Unencodable { value, why }| {
                    KafkaError::OutOfDebeziumRange { column: name.clone(), value, why: why.into() }
                })?;
            }
        }
        out.push('}');
        Ok(())
    }
}

/// What Debezium writes for a value the WAL does not hold: an unchanged TOASTed column of an
/// UPDATE (the new row keeps a pointer to the old value, and the old row is logged only under
/// REPLICA IDENTITY FULL).
const UNAVAILABLE: &str = "\"__debezium_unavailable_value\"";

/// Whether a varlena value is a pointer to TOAST data while a decoded change is encoded: logical
/// decoding rebuilds only the TOAST values its transaction wrote, so such a pointer's data is
/// not there to read (in a session, transition tables' pointers are read as usual).
fn unavailable(d: Datum) -> bool {
    let header = d.cast_mut_ptr::<u8>();
    // SAFETY: `d` is a non-null varlena Datum (the caller checked the column's length is -1):
    // its first byte is readable; a 1-byte header of 0x01 marks an external pointer, whose tag
    // byte follows (VARTAG_ONDISK for a pointer to a TOAST table). HistoricSnapshotActive only
    // reads a static.
    unsafe {
        *header == 0x01
            && *header.add(1) == pg_sys::vartag_external::VARTAG_ONDISK as u8
            && pg_sys::HistoricSnapshotActive()
    }
}

/// The text of a value from its type's output function.
unsafe fn output(function: Oid, d: Datum) -> String {
    // SAFETY: `function` is the output function of `d`'s type (this function's contract), called
    // inside the caller's transaction; it returns a palloc'd C string.
    let p = unsafe { pg_sys::OidOutputFunctionCall(function, d) };
    // SAFETY: `p` is the NUL-terminated string the output function returned.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: `p` was palloc'd by the output function and is not used after this copy.
    unsafe { pg_sys::pfree(p.cast()) };
    s
}

/// The output function of type `typ`.
fn output_function(typ: Oid) -> Oid {
    let (mut f, mut varlena) = (pg_sys::InvalidOid, false);
    // SAFETY: catalog cache lookup of an existing type, inside the capture plan's transaction; the
    // out-parameters are locals.
    unsafe { pg_sys::getTypeOutputInfo(typ, &mut f, &mut varlena) };
    f
}

/// The bytes of a varlena value (detoasted if need be; a copy is left to the memory context).
unsafe fn varlena_bytes<'a>(d: Datum) -> &'a [u8] {
    // SAFETY: `d` is a non-null varlena Datum (this function's contract). pg_detoast_datum_packed
    // returns a plain or short-header varlena, which varlena_to_byte_slice reads either way; the
    // bytes live in the tuple or the current memory context, and callers use the slice at once.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(v)
    }
}

/// Whether `typ` is the `hstore` of the hstore extension (a contrib type: its oid is not fixed).
/// Looked up when a capture plan is made, never per value.
pub fn is_hstore(typ: Oid) -> bool {
    if u32::from(typ) < pg_sys::FirstNormalObjectId {
        return false;
    }
    // SAFETY: catalog lookups inside the capture plan's transaction, with a NUL-terminated literal
    // name; TYPEOID is keyed by an oid Datum and its tuple's data is a FormData_pg_type, whose
    // `typname` is a NUL-terminated NameData; the reference is released before the tuple is
    // dropped.
    unsafe {
        let extension = pg_sys::get_extension_oid(c"hstore".as_ptr(), true);
        if extension == pg_sys::InvalidOid
            || pg_sys::getExtensionOfObject(pg_sys::TypeRelationId, typ) != extension
        {
            return false;
        }
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::TYPEOID as _, typ.into());
        if tuple.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_type>();
        let named = CStr::from_ptr((*form).typname.data.as_ptr()) == c"hstore";
        pg_sys::ReleaseSysCache(tuple);
        named
    }
}
