//! Debezium's JSON encoding of PostgreSQL values and rows (JSON converter, schemas disabled), done
//! natively on Datums: no SQL per row or per value.
//!
//! Following Debezium's PostgreSQL connector defaults: integers and booleans as JSON numbers and
//! booleans; `real`/`double precision` as Java writes them (`100.0`, `1.0E20`); `date` as days
//! since the epoch; `time`/`timestamp` as micro- (precision > 3) or milliseconds; `timestamptz`
//! as an ISO-8601 string in UTC with the column's precision of fraction digits (6 by default),
//! `timetz` likewise without trailing zeros; infinite dates and timestamps as Debezium's
//! sentinel numbers; `interval` as microseconds (a month is 30.4375 days); `bytea` as base64;
//! arrays as JSON arrays; everything else (text, enums, uuid, json, jsonb, ...) as the string of
//! its text form. `numeric` is a string as with `decimal.handling.mode=string` (exact and
//! readable). Domains are encoded as their base type.
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

use crate::error::KafkaError;
use pgrx::pg_sys::{self, Datum, Oid};
use std::ffi::CStr;
use std::fmt::Write;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
use crate::backend::input::PG_EPOCH_UNIX_US as PG_EPOCH_US;
const PG_EPOCH_DAYS: i32 = 10_957;
const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;
/// Debezium's month for intervals: 30.4375 days.
const MONTH_US: i64 = 2_629_800_000_000;
/// What Debezium writes for `timestamp` 'infinity' and '-infinity', in microseconds (PgJDBC's
/// `DATE_POSITIVE_INFINITY` and `DATE_NEGATIVE_INFINITY`).
const TIMESTAMP_INFINITY_US: [i64; 2] = [9_223_372_036_825_200_000, -9_223_372_036_832_400_000];
/// What Debezium writes for `date` 'infinity' and '-infinity' (the days of -5877611-06-21 and
/// -5877611-06-22, its stand-ins for them).
const DATE_INFINITY_DAYS: [i64; 2] = [-2_147_472_692, -2_147_472_691];

/// A value Debezium's encoding cannot carry: refused, never written wrong. `value` is the type and
/// the value's text (`timestamp '294276-12-31 23:59:59.999999'`), `why` finishes the sentence.
#[derive(Debug)]
pub struct Unencodable {
    value: String,
    why: &'static str,
}

const TIMESTAMP_TOO_LATE: &str = "is after 294247-01-10 04:00:54.775807, the last timestamp whose \
    microseconds since 1970 fit in 64 bits (Debezium's MicroTimestamp; Debezium would write a wrong \
    number)";
const INTERVAL_TOO_MANY_HOURS: &str = "has 2^31 hours or more, which Debezium cannot read (PgJDBC's \
    PGInterval holds hours in 32 bits; Debezium's connector would stop)";
const INTERVAL_INFINITE: &str = "has no Debezium encoding (Debezium would write 0)";

/// Debezium's `timestamp` of precision 4–6: microseconds since 1970 (infinities as its
/// sentinels). None after 294247-01-10 04:00:54.775807, where they no longer fit in an i64:
/// there Debezium's `Conversions.toEpochMicros` (`TimeUnit.SECONDS.toMicros(s)`, which saturates
/// at Long.MAX_VALUE, plus the second's microseconds, which then wrap) writes garbage.
fn timestamp_micros(pg_us: i64) -> Option<i64> {
    match pg_us {
        i64::MAX => Some(TIMESTAMP_INFINITY_US[0]),
        i64::MIN => Some(TIMESTAMP_INFINITY_US[1]),
        us => us.checked_add(PG_EPOCH_US),
    }
}

/// Debezium's `timestamp` of precision 0–3: milliseconds since 1970, rounded down (Java's
/// `Instant.toEpochMilli`), exact over PostgreSQL's whole range (infinities: its sentinels in
/// milliseconds). None only for a value no PostgreSQL timestamp has.
fn timestamp_millis(pg_us: i64) -> Option<i64> {
    match pg_us {
        i64::MAX => Some(TIMESTAMP_INFINITY_US[0].div_euclid(1000)),
        i64::MIN => Some(TIMESTAMP_INFINITY_US[1].div_euclid(1000)),
        // PG_EPOCH_US is whole milliseconds, so flooring before adding it floors the sum.
        us => us.div_euclid(1000).checked_add(PG_EPOCH_US / 1000),
    }
}

/// Debezium's `date`: days since 1970 (infinities as its stand-ins); exact over PostgreSQL's
/// whole range (4713 BC to 5874897 AD), as Debezium's `(int) LocalDate.toEpochDay()`.
fn date_days(pg_days: i32) -> i64 {
    match pg_days {
        i32::MAX => DATE_INFINITY_DAYS[0],
        i32::MIN => DATE_INFINITY_DAYS[1],
        // Widened: the sum of two i32 cannot overflow an i64.
        days => i64::from(days) + i64::from(PG_EPOCH_DAYS),
    }
}

/// Debezium's `interval` (MicroDuration, `interval.handling.mode=numeric`): microseconds, a
/// month 30.4375 days. Exact where that fits in an i64, else i64::MAX / i64::MIN, as the
/// `(long)` cast that ends Debezium's `durationMicros` saturates. Err where Debezium cannot
/// read the value: more than 2^31 - 1 hours in its time part (PostgreSQL writes the time as
/// `HHHH:MM:SS`, and PgJDBC's PGInterval parses the hours with `Integer.parseInt`), or
/// PostgreSQL 17's infinite intervals (which PGInterval reads as 0).
fn interval_micros(month: i32, day: i32, time: i64) -> Result<i64, &'static str> {
    let infinite = (month, day, time) == (i32::MAX, i32::MAX, i64::MAX)
        || (month, day, time) == (i32::MIN, i32::MIN, i64::MIN);
    if infinite && cfg!(any(feature = "pg17", feature = "pg18")) {
        return Err(INTERVAL_INFINITE);
    }
    // PostgreSQL's interval2itm: hours truncated toward zero, written without their sign.
    if (time / HOUR_US).unsigned_abs() > i32::MAX as u64 {
        return Err(INTERVAL_TOO_MANY_HOURS);
    }
    // In i128 (at most about 5.7e21 in magnitude), then saturated into an i64.
    let exact =
        i128::from(month) * i128::from(MONTH_US) + i128::from(day) * i128::from(DAY_US) + i128::from(time);
    Ok(i64::try_from(exact).unwrap_or(if exact > 0 { i64::MAX } else { i64::MIN }))
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
    /// (attribute index, name, `"name":` already escaped, encoding)
    columns: Vec<(usize, String, String, Enc)>,
}

/// The live columns of `desc` (index, attribute): with `Columns::Except` all but those, in
/// column order; with `Columns::Only` those, in the order given (a key's order: Debezium's key
/// follows the primary key's, or the order `key_columns` names them in).
pub fn attributes(desc: pg_sys::TupleDesc, which: Columns) -> Vec<(usize, pg_sys::FormData_pg_attribute)> {
    // SAFETY: `desc` is the descriptor of the relation Plan::new's caller holds open.
    let natts = unsafe { (*desc).natts } as usize;
    // SAFETY: a TupleDesc's `attrs` flexible array holds `natts` entries.
    let attrs = unsafe { (*desc).attrs.as_slice(natts) };
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
                (i, name.into_owned(), prefix, Enc::of(a.atttypid, a.atttypmod))
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
        for (n, (i, name, prefix, enc)) in self.columns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(prefix);
            if nulls[*i] {
                out.push_str("null");
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

/// Appends `s` as a JSON string, escaped like PostgreSQL's `to_json`.
pub fn string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs that need no escape are copied whole; every byte that does is ASCII, so a char
    // boundary (the bytes of a multi-byte character are all 0x80 or above).
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        match escaped {
            "" => {
                let _ = write!(out, "\\u{b:04x}");
            }
            e => out.push_str(e),
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

fn base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// `HH:MM:SS[.ffffff]` of microseconds since midnight: with `digits` (1 to 6) exactly that many
/// fraction digits, zero-padded (Java's `appendFraction(NANO_OF_SECOND, n, n, true)`), with 0 as
/// many as the value needs, trailing zeros trimmed (`DateTimeFormatter.ISO_*_TIME`).
fn clock(out: &mut String, us: i64, digits: u8) {
    let secs = us / 1_000_000;
    push_digits(out, secs / 3600, 2);
    out.push(':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(':');
    push_digits(out, secs % 60, 2);
    let mut frac = us % 1_000_000;
    if digits > 0 {
        out.push('.');
        let cut = 6 - u32::from(digits.min(6));
        push_digits(out, frac / 10_i64.pow(cut), usize::from(digits.min(6)));
    } else if frac != 0 {
        let mut digits = 6;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        out.push('.');
        push_digits(out, frac, digits);
    }
}

/// Appends a finite float as Java's `Double.toString` / `Float.toString` write it (what
/// Debezium's JSON converter sends): the shortest digits that read back as the same value, in
/// plain notation with at least one fraction digit for 10^-3 <= |v| < 10^7 (`100.0`, `0.001`),
/// else as `d.dddE±n` (`1.0E20`, `1.5E-5`); NaN and infinities as the strings Debezium uses.
fn java_float<F: Copy + std::fmt::LowerExp + Into<f64>>(out: &mut String, v: F) {
    let x: f64 = v.into();
    if x.is_nan() {
        return out.push_str("\"NaN\"");
    }
    if x.is_infinite() {
        return out.push_str(if x > 0.0 { "\"Infinity\"" } else { "\"-Infinity\"" });
    }
    // `{:e}` gives the shortest round-trip digits of the value's own type: "-1.2345e6".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if x == 0.0 {
        out.push_str("0.0");
    } else if (-3..7).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            let padded = format!("{digits:0<int_len$}");
            let (int, frac) = padded.split_at(int_len);
            out.push_str(int);
            out.push('.');
            out.push_str(if frac.is_empty() { "0" } else { frac });
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if digits.len() > 1 { &digits[1..] } else { "0" });
        let _ = write!(out, "E{exp}");
    }
}

/// Appends an integer in decimal (what `write!(out, "{n}")` does, without the formatting
/// machinery: events write several numbers per row).
pub fn push_int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_digits(out, n.unsigned_abs() as i64, 1);
}

/// Appends `n` (not negative; `i64::MIN`'s magnitude is handled as u64) in decimal, zero-padded
/// to at least `width` digits.
fn push_digits(out: &mut String, n: i64, width: usize) {
    let mut n = n as u64;
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    // The buffer holds ASCII digits only.
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or_default());
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` in UTC of a PostgreSQL timestamptz (microseconds since
/// 2000-01-01 UTC; `digits`: see `clock`); years past 9999 as `+YYYYY`, before year 0 as `-YYYY`,
/// as Java's ISO formats write them. Days and time of day are taken apart before the epochs are
/// shifted, so the whole range of PostgreSQL (4713 BC to 294276 AD) is written exactly.
fn iso_utc(out: &mut String, pg_us: i64, digits: u8) {
    // A day count of at most about 1.1e8: widening keeps the sum far from overflowing.
    let (y, m, d) = civil_from_days(pg_us.div_euclid(DAY_US) + i64::from(PG_EPOCH_DAYS));
    if y > 9999 {
        out.push('+');
    } else if y < 0 {
        out.push('-');
    }
    push_digits(out, y.abs(), 4);
    out.push('-');
    push_digits(out, m.into(), 2);
    out.push('-');
    push_digits(out, d.into(), 2);
    out.push('T');
    clock(out, pg_us.rem_euclid(DAY_US), digits);
}

/// money as Debezium's string: the amount in units, without currency sign or separators (money
/// counts cents: 2 fraction digits, as with the C and most locales), exact for every value
/// (Debezium's BigDecimal `toPlainString`).
fn money(out: &mut String, cents: i64) {
    let sign = if cents < 0 { "-" } else { "" };
    // unsigned_abs: i64::MIN's magnitude too.
    let abs = cents.unsigned_abs();
    let _ = write!(out, "\"{sign}{}.{:02}\"", abs / 100, abs % 100);
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn strings_are_escaped_like_to_json() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        for (raw, json) in
            [("", r#""""#), ("\"", r#""\"""#), ("日\u{1f}\t", r#""日\u001f\t""#), ("x\u{7f}", "\"x\u{7f}\"")]
        {
            s.clear();
            string(&mut s, raw);
            assert_eq!(s, json, "{raw:?}");
        }
    }

    #[test]
    fn base64_pads() {
        for (raw, want) in [(&b""[..], ""), (b"\x00\xff\x80", "AP+A"), (b"ab", "YWI="), (b"a", "YQ==")] {
            let mut s = String::new();
            base64(&mut s, raw);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn integers_are_written_like_display() {
        for n in [0, 7, -5, 10, 1_000_000, i64::MAX, i64::MIN, -9_223_372_036_854_775_807] {
            let mut s = String::from("x");
            push_int(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        let mut s = String::new();
        // The day before year 1 (iso_utc takes microseconds since 2000).
        iso_utc(&mut s, -62_135_596_800_000_000 - 86_400_000_000 - PG_EPOCH_US, 0);
        assert_eq!(s, "0000-12-31T00:00:00");
    }

    #[test]
    fn utc_timestamps_and_clocks() {
        // From microseconds since 1970, for readable expectations.
        let iso = |us: i64, digits| {
            let mut s = String::new();
            iso_utc(&mut s, us - PG_EPOCH_US, digits);
            s
        };
        assert_eq!(iso(1_612_317_906_789_000, 0), "2021-02-03T02:05:06.789");
        assert_eq!(iso(1_612_317_906_789_000, 6), "2021-02-03T02:05:06.789000");
        assert_eq!(iso(1_612_317_906_000_000, 6), "2021-02-03T02:05:06.000000");
        assert_eq!(iso(1_612_317_906_789_000, 3), "2021-02-03T02:05:06.789");
        assert_eq!(iso(1_612_317_906_700_000, 2), "2021-02-03T02:05:06.70");
        assert_eq!(iso(-1, 0), "1969-12-31T23:59:59.999999");
        // Debezium's own expectations (AbstractRecordsProducerTest): years past 9999 and BC.
        assert_eq!(iso(601_060_287_090_000_000, 6), "+21016-11-04T06:51:30.000000");
        assert_eq!(iso(-210_863_520_000_000_001, 6), "-4713-12-31T23:59:59.999999");
        let mut s = String::new();
        clock(&mut s, 7_506_000_000, 0);
        assert_eq!(s, "02:05:06");
    }

    /// PostgreSQL's last and first timestamps, in microseconds since 2000: 294276-12-31
    /// 23:59:59.999999 (END_TIMESTAMP - 1) and 4714-11-24 00:00:00 BC (MIN_TIMESTAMP).
    const PG_LAST_US: i64 = 9_223_371_331_200_000_000 - 1;
    const PG_FIRST_US: i64 = -211_813_488_000_000_000;

    #[test]
    fn intervals_saturate_as_debeziums_long_cast() {
        // The issue's example: 178000000 years used to wrap to -9004142481413242880; Debezium's
        // (long) of a double beyond 2^63 is Long.MAX_VALUE.
        assert_eq!(interval_micros(178_000_000 * 12, 0, 0), Ok(i64::MAX));
        assert_eq!(interval_micros(-178_000_000 * 12, 0, 0), Ok(i64::MIN));
        assert_eq!(interval_micros(i32::MAX, 0, 0), Ok(i64::MAX));
        assert_eq!(interval_micros(i32::MIN, i32::MIN, 0), Ok(i64::MIN));
        assert_eq!(interval_micros(0, i32::MAX, 0), Ok(i64::MAX));
        assert_eq!(interval_micros(0, 106_751_991, 0), Ok(106_751_991 * DAY_US)); // the most days that fit
                                                                                  // Debezium's reference records (types.sql).
        assert_eq!(interval_micros(14, 3, 14_706_789_012), Ok(37_091_106_789_012));
        assert_eq!(interval_micros(0, -1, -1), Ok(-86_400_000_001));
        // Exact up to i64::MAX itself, saturated one past it.
        let months = 567_508; // 1.49e18 µs, leaving a time part under 2^31 hours
        let time = i64::MAX - months as i64 * MONTH_US;
        assert_eq!(interval_micros(months, 0, time - 1), Ok(i64::MAX - 1));
        assert_eq!(interval_micros(months, 0, time), Ok(i64::MAX));
        assert_eq!(interval_micros(months, 1, time), Ok(i64::MAX));
        assert_eq!(interval_micros(-months, 0, -time - 1), Ok(i64::MIN));
        assert_eq!(interval_micros(-months, -1, -time), Ok(i64::MIN));
        // Hours: PgJDBC reads at most 2147483647 of them, whatever the sign.
        let most = i64::from(i32::MAX) * HOUR_US + HOUR_US - 1; // 2147483647:59:59.999999
        assert_eq!(interval_micros(0, 0, most), Ok(most));
        assert_eq!(interval_micros(0, 0, -most), Ok(-most));
        assert_eq!(interval_micros(i32::MAX, i32::MAX, most), Ok(i64::MAX));
        for time in [most + 1, -most - 1, i64::MAX, i64::MIN] {
            assert_eq!(interval_micros(0, 0, time), Err(INTERVAL_TOO_MANY_HOURS), "{time}");
        }
        // 'infinity' (PostgreSQL 17): refused either way.
        assert!(interval_micros(i32::MAX, i32::MAX, i64::MAX).is_err());
        assert!(interval_micros(i32::MIN, i32::MIN, i64::MIN).is_err());
    }

    #[test]
    fn timestamps_are_exact_or_refused() {
        assert_eq!(timestamp_micros(0), Some(PG_EPOCH_US));
        assert_eq!(timestamp_micros(PG_FIRST_US), Some(-210_866_803_200_000_000));
        // Microseconds since 1970 fit in an i64 up to 294247-01-10 04:00:54.775807; after it
        // Debezium writes garbage (its example: Long.MAX_VALUE + 999999, wrapped), so: refused.
        assert_eq!(timestamp_micros(i64::MAX - 1 - PG_EPOCH_US), Some(i64::MAX - 1));
        assert_eq!(timestamp_micros(i64::MAX - PG_EPOCH_US), Some(i64::MAX));
        assert_eq!(timestamp_micros(i64::MAX - PG_EPOCH_US + 1), None);
        assert_eq!(timestamp_micros(PG_LAST_US), None);
        // Infinities as today: Debezium's sentinels.
        assert_eq!(timestamp_micros(i64::MAX), Some(9_223_372_036_825_200_000));
        assert_eq!(timestamp_micros(i64::MIN), Some(-9_223_372_036_832_400_000));
        // Milliseconds (timestamp(0) to (3)) hold the whole range, rounded down as
        // Instant.toEpochMilli.
        assert_eq!(timestamp_millis(PG_LAST_US), Some(9_224_318_015_999_999));
        assert_eq!(timestamp_millis(PG_FIRST_US), Some(-210_866_803_200_000));
        assert_eq!(timestamp_millis(-PG_EPOCH_US - 1), Some(-1));
        assert_eq!(timestamp_millis(i64::MAX), Some(9_223_372_036_825_200));
        assert_eq!(timestamp_millis(i64::MIN), Some(-9_223_372_036_832_400));
        // timestamptz: the issue's example used to come out as year -290278.
        let iso = |pg_us, digits| {
            let mut s = String::new();
            iso_utc(&mut s, pg_us, digits);
            s
        };
        assert_eq!(iso(PG_LAST_US, 6), "+294276-12-31T23:59:59.999999");
        assert_eq!(iso(PG_LAST_US, 0), "+294276-12-31T23:59:59.999999");
        assert_eq!(iso(PG_LAST_US - 999_999, 3), "+294276-12-31T23:59:59.000");
        assert_eq!(iso(PG_FIRST_US, 6), "-4713-11-24T00:00:00.000000");
        assert_eq!(iso(PG_FIRST_US, 0), "-4713-11-24T00:00:00");
        assert_eq!(iso(0, 0), "2000-01-01T00:00:00");
        assert_eq!(iso(-1, 6), "1999-12-31T23:59:59.999999");
    }

    #[test]
    fn dates_and_money_are_exact_at_their_limits() {
        // 5874897-12-31 and 4714-11-24 BC, PostgreSQL's last and first dates.
        assert_eq!(date_days(2_145_031_948), 2_145_042_905);
        assert_eq!(date_days(-2_451_545), -2_440_588);
        assert_eq!(date_days(0), 10_957);
        assert_eq!(date_days(i32::MAX), DATE_INFINITY_DAYS[0]);
        assert_eq!(date_days(i32::MIN), DATE_INFINITY_DAYS[1]);
        for (cents, want) in [
            (i64::MIN, "\"-92233720368547758.08\""),
            (i64::MAX, "\"92233720368547758.07\""),
            (-123_456, "\"-1234.56\""),
            (-1, "\"-0.01\""),
            (0, "\"0.00\""),
        ] {
            let mut s = String::new();
            money(&mut s, cents);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn floats_are_written_as_java_does() {
        let java = |v: f64| {
            let mut s = String::new();
            java_float(&mut s, v);
            s
        };
        for (v, want) in [
            (100.0, "100.0"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1234567.0, "1234567.0"),
            (12345678.0, "1.2345678E7"),
            (1e20, "1.0E20"),
            (1.7976931348623157e308, "1.7976931348623157E308"),
            (std::f64::consts::PI, "3.141592653589793"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::NAN, "\"NaN\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ] {
            assert_eq!(java(v), want, "{v:e}");
        }
        let mut s = String::new();
        java_float(&mut s, 0.1_f32);
        assert_eq!(s, "0.1", "a real is written with a real's shortest digits");
        s.clear();
        java_float(&mut s, 1.0e10_f32);
        assert_eq!(s, "1.0E10");
    }
}
