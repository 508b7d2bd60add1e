//! JSON text as Debezium's JSON converter (Kafka Connect's JsonConverter, Jackson) writes it:
//! strings escaped like PostgreSQL's `to_json`, bytes as base64, integers, floats as Java prints
//! them, money. Pure Rust, no PostgreSQL; everything here appends to the event being built.
//!
//! Must stay true: the output parses as the same JSON value as Debezium's (escapes may differ in
//! spelling, `\u001f` for Jackson's `\u001F`, never in meaning).

use std::fmt::Write;

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

pub fn base64(out: &mut String, bytes: &[u8]) {
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

/// Appends a finite float as Java's `Double.toString` / `Float.toString` write it (what
/// Debezium's JSON converter sends): the shortest digits that read back as the same value, in
/// plain notation with at least one fraction digit for 10^-3 <= |v| < 10^7 (`100.0`, `0.001`),
/// else as `d.dddE±n` (`1.0E20`, `1.5E-5`); NaN and infinities as the strings Debezium uses.
pub fn java_float<F: Copy + std::fmt::LowerExp + Into<f64>>(out: &mut String, v: F) {
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
pub fn push_digits(out: &mut String, n: i64, width: usize) {
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
    // SAFETY: the buffer holds ASCII digits only, which are UTF-8 (a checked conversion here
    // took a tenth of a bulk transaction's decoding).
    out.push_str(unsafe { std::str::from_utf8_unchecked(&buf[start..]) });
}

/// money as Debezium's string: the amount in units, without currency sign or separators (money
/// counts cents: 2 fraction digits, as with the C and most locales), exact for every value
/// (Debezium's BigDecimal `toPlainString`).
pub fn money(out: &mut String, cents: i64) {
    let sign = if cents < 0 { "-" } else { "" };
    // unsigned_abs: i64::MIN's magnitude too.
    let abs = cents.unsigned_abs();
    let _ = write!(out, "\"{sign}{}.{:02}\"", abs / 100, abs % 100);
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
    }

    #[test]
    fn money_is_exact_at_its_limits() {
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
