//! PostgreSQL types Debezium maps to logical types of its own, as its PostgreSQL connector 3.6.1
//! writes them with its defaults: bit strings (`io.debezium.data.Bits`, or a boolean for a length
//! of 1), `point` (`io.debezium.data.geometry.Point`) and the special values of `numeric`
//! (`decimal.handling.mode=string`). Pure Rust over the values' bytes, no PostgreSQL.
//!
//! Must stay true, checked against Debezium's sources (PostgresValueConverter.convertBits and
//! convertPoint, JdbcValueConverters.convertBits and padLittleEndian, Point.buildWKBPoint,
//! SpecialValueDecimal): the bits of `B'0000000100000010'` are the bytes 02 01 (`"AgE="`), and a
//! point's `wkb` is its little-endian WKB.

use super::json::{base64, java_float};

/// Debezium's length of a bit string column (its Bits schema's `length` parameter): n for `bit(n)`
/// and `bit varying(n)`; 2147483647 for `bit varying` without one (PgJDBC's unknown length,
/// `Integer.MAX_VALUE`); the modifier itself, -1, for a `bit` without one (a column made by
/// `CREATE TABLE AS`).
pub fn bit_length(varying: bool, typmod: i32) -> i32 {
    if varying && typmod < 0 {
        i32::MAX
    } else {
        typmod
    }
}

/// Whether Debezium writes a bit string column of `length` (see [`bit_length`]) as a boolean, not
/// as Bits: for a length of 1 or less.
pub fn bits_are_boolean(length: i32) -> bool {
    length <= 1
}

/// Appends a bit string of `bit_len` bits (`data`: PostgreSQL's bytes, the string's first bit the
/// high bit of the first byte) as Debezium writes it.
///
/// As Bits (`boolean` false): the bits as a number, bit i of it the i-th character from the
/// right (Java's BitSet built by PostgresValueConverter), in little-endian bytes without the high
/// zero bytes (BitSet.toByteArray, padded to as many bytes as its highest set bit needs: none),
/// base64. `B'10101'` is 15 (`"FQ=="`), `B'0000000100000010'` the bytes 02 01 (`"AgE="`), all
/// zeros no bytes at all (`""`).
///
/// As a boolean: `Integer.valueOf(bits, 2) != 0`; null where that throws (no bits, or a set bit
/// past the 31st from the right), as Debezium leaves a value it fails to convert (its default
/// `event.converting.failure.handling.mode=warn`).
pub fn bits(out: &mut String, bit_len: usize, data: &[u8], boolean: bool) {
    let bit_len = bit_len.min(data.len() * 8);
    // Bit i from the right is the string's character bit_len - 1 - i.
    let set = |i: usize| {
        let c = bit_len - 1 - i;
        data[c / 8] & (0x80 >> (c % 8)) != 0
    };
    let highest = (0..bit_len).rev().find(|&i| set(i));
    if boolean {
        out.push_str(match highest {
            _ if bit_len == 0 => "null",
            Some(i) if i >= 31 => "null",
            Some(_) => "true",
            None => "false",
        });
        return;
    }
    let mut bytes = vec![0u8; highest.map_or(0, |i| i / 8 + 1)];
    for (i, byte) in bytes.iter_mut().enumerate() {
        for b in 0..8 {
            let bit = i * 8 + b;
            if bit < bit_len && set(bit) {
                *byte |= 1 << b;
            }
        }
    }
    out.push('"');
    base64(out, &bytes);
    out.push('"');
}

/// Appends a point as Debezium's `io.debezium.data.geometry.Point` struct:
/// `{"x":…,"y":…,"wkb":…,"srid":null}`, the coordinates as Java writes doubles, `wkb` the point's
/// WKB (byte order 1, little-endian: type 1, x, y) in base64.
pub fn point(out: &mut String, x: f64, y: f64) {
    let mut wkb = [0u8; 21];
    wkb[0] = 1;
    wkb[1..5].copy_from_slice(&1u32.to_le_bytes());
    wkb[5..13].copy_from_slice(&x.to_le_bytes());
    wkb[13..21].copy_from_slice(&y.to_le_bytes());
    out.push_str("{\"x\":");
    java_float(out, x);
    out.push_str(",\"y\":");
    java_float(out, y);
    out.push_str(",\"wkb\":\"");
    base64(out, &wkb);
    out.push_str("\",\"srid\":null}");
}

/// Debezium's string for a special `numeric` value (SpecialValueDecimal's names, as
/// `decimal.handling.mode=string` writes them); None for a number, written as PostgreSQL's text.
pub fn numeric_special(text: &str) -> Option<&'static str> {
    match text {
        "NaN" => Some("NAN"),
        "Infinity" => Some("POSITIVE_INFINITY"),
        "-Infinity" => Some("NEGATIVE_INFINITY"),
        _ => None,
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    /// A bit string as PostgreSQL stores it: its length and its bytes, first bit the highest.
    fn pg_bits(s: &str) -> (usize, Vec<u8>) {
        let mut data = vec![0u8; s.len().div_ceil(8)];
        for (c, ch) in s.chars().enumerate() {
            if ch == '1' {
                data[c / 8] |= 0x80 >> (c % 8);
            }
        }
        (s.len(), data)
    }

    fn written(s: &str, boolean: bool) -> String {
        let (len, data) = pg_bits(s);
        let mut out = String::new();
        bits(&mut out, len, &data, boolean);
        out
    }

    #[test]
    fn bits_are_little_endian_bytes_of_the_number() {
        // The issue's examples, from Debezium's own records.
        assert_eq!(written("10101", false), "\"FQ==\"");
        assert_eq!(written("1010101010101010", false), "\"qqo=\"");
        // Asymmetric, to pin the byte order: 0x0102 little-endian.
        assert_eq!(written("0000000100000010", false), "\"AgE=\"");
        assert_eq!(written("100000000", false), "\"AAE=\"");
        // High zero bytes dropped (BitSet.toByteArray), however long the column.
        assert_eq!(written("000000000000000000001", false), "\"AQ==\"");
        assert_eq!(written("00000000", false), "\"\"");
        assert_eq!(written("", false), "\"\"");
        assert_eq!(written("11111111111111111", false), "\"//8B\"");
    }

    #[test]
    fn one_bit_columns_are_booleans() {
        assert_eq!(written("1", true), "true");
        assert_eq!(written("0", true), "false");
        // bit varying(1) may hold no bits: Integer.valueOf("", 2) throws, Debezium writes null.
        assert_eq!(written("", true), "null");
        // A `bit` column without a length: the value as an int, null past 31 bits.
        assert_eq!(written("101", true), "true");
        assert_eq!(written(&"1".repeat(31), true), "true");
        assert_eq!(written(&format!("1{}", "0".repeat(31)), true), "null");
        assert_eq!(written(&format!("{}1", "0".repeat(40)), true), "true");
        assert!(bits_are_boolean(bit_length(false, 1)));
        assert!(bits_are_boolean(bit_length(true, 1)));
        assert!(bits_are_boolean(bit_length(false, -1)));
        assert!(!bits_are_boolean(bit_length(true, -1)));
        assert_eq!(bit_length(true, -1), 2_147_483_647);
        assert_eq!(bit_length(false, 5), 5);
    }

    #[test]
    fn points_are_debeziums_struct_with_wkb() {
        let mut out = String::new();
        point(&mut out, 1.5, -2.0);
        assert_eq!(out, r#"{"x":1.5,"y":-2.0,"wkb":"AQEAAAAAAAAAAAD4PwAAAAAAAADA","srid":null}"#);
        out.clear();
        point(&mut out, -0.0, 1e20);
        assert_eq!(out, r#"{"x":-0.0,"y":1.0E20,"wkb":"AQEAAAAAAAAAAAAAgECMtXgdrxVE","srid":null}"#);
    }

    #[test]
    fn numeric_special_values_are_debeziums_names() {
        assert_eq!(numeric_special("NaN"), Some("NAN"));
        assert_eq!(numeric_special("Infinity"), Some("POSITIVE_INFINITY"));
        assert_eq!(numeric_special("-Infinity"), Some("NEGATIVE_INFINITY"));
        assert_eq!(numeric_special("-1234.567"), None);
    }
}
