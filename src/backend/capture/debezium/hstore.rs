//! `hstore` (the contrib extension's type) as Debezium writes it by default
//! (`hstore.handling.mode=json`, schema `io.debezium.data.Json`): a string holding a JSON object,
//! `"a"=>"1", "b"=>NULL` as `"{\"a\":\"1\",\"b\":null}"`.
//!
//! Debezium reads hstore_out's text into PgJDBC's `HStoreConverter.fromString`, a `HashMap`, and
//! writes its entries with Jackson: so the pairs come in Java's HashMap order (`java_map`, fed in
//! hstore's own order, by key length then bytes), escaped as Jackson escapes (`\u001F`, upper
//! case). The pairs are read from hstore's binary form, no output function called; a value in the
//! layout of hstore before PostgreSQL 9.0 (never rewritten since) is read from hstore_out's text.
//!
//! Must stay true: the binary reader returns None, never reads out of bounds, for bytes it does
//! not recognise; the JSON is Jackson's to the byte for every key and value.

use super::java_map;
use super::json::string;
use std::borrow::Cow;

/// hstore.h: the flag of the current layout in `size_`, the pair count under it, and an entry's
/// flags and end offset.
const HS_FLAG_NEWVERSION: u32 = 0x8000_0000;
const HS_COUNT_MASK: u32 = 0x0FFF_FFFF;
const HENTRY_ISFIRST: u32 = 0x8000_0000;
const HENTRY_ISNULL: u32 = 0x4000_0000;
const HENTRY_POSMASK: u32 = 0x3FFF_FFFF;

/// A key and its value (None for NULL).
pub type Pair<'a> = (Cow<'a, str>, Option<Cow<'a, str>>);

/// The pairs of an hstore's binary form (`data`: the bytes after the varlena header: `size_`,
/// then two entries per pair, then the strings), in hstore's order. None for the layout before
/// PostgreSQL 9.0 or bytes that do not hold together: the caller reads the text form instead.
pub fn pairs(data: &[u8]) -> Option<Vec<Pair<'_>>> {
    let word =
        |at: usize| -> Option<u32> { Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?)) };
    let size = word(0)?;
    if size == 0 {
        return Some(Vec::new()); // empty, in either layout
    }
    if size & HS_FLAG_NEWVERSION == 0 {
        return None;
    }
    let count = (size & HS_COUNT_MASK) as usize;
    let strings = data.get(count.checked_mul(8)?.checked_add(4)?..)?;
    let mut out = Vec::with_capacity(count);
    let mut end = 0;
    let mut next = |i: usize| -> Option<(&[u8], bool)> {
        let entry = word(4 + 4 * i)?;
        let start = if entry & HENTRY_ISFIRST != 0 { 0 } else { end };
        end = (entry & HENTRY_POSMASK) as usize;
        Some((strings.get(start..end)?, entry & HENTRY_ISNULL != 0))
    };
    for i in 0..count {
        let (key, _) = next(2 * i)?;
        let (value, null) = next(2 * i + 1)?;
        out.push((String::from_utf8_lossy(key), (!null).then(|| String::from_utf8_lossy(value))));
    }
    Some(out)
}

/// The pairs of hstore_out's text (`"a"=>"1", "b"=>NULL`, `"` and `\` escaped with `\`), read as
/// PgJDBC's HStoreConverter.fromString reads it.
pub fn pairs_of_text(text: &str) -> Vec<Pair<'static>> {
    let mut chars = text.chars().peekable();
    let mut out = Vec::new();
    // A quoted string, its opening quote already read.
    let quoted = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => s.extend(chars.next()),
                c => s.push(c),
            }
        }
        s
    };
    while chars.by_ref().any(|c| c == '"') {
        let key = quoted(&mut chars);
        // `=>`, then NULL or a quoted value.
        while chars.next_if(|&c| c != '"' && c != 'N').is_some() {}
        let value = match chars.next() {
            Some('N') => None,
            Some('"') => Some(Cow::Owned(quoted(&mut chars))),
            _ => break,
        };
        out.push((Cow::Owned(key), value));
    }
    out
}

/// Appends Debezium's string of an hstore: the JSON object of `pairs` (given in hstore's order)
/// in Java's HashMap order, as Jackson writes it, as a JSON string.
pub fn write(out: &mut String, pairs: &[Pair]) {
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
    let mut json = String::with_capacity(
        pairs.iter().map(|(k, v)| k.len() + v.as_ref().map_or(4, |v| v.len()) + 6).sum::<usize>() + 2,
    );
    json.push('{');
    for (n, i) in java_map::iteration_order(&keys).into_iter().enumerate() {
        if n > 0 {
            json.push(',');
        }
        let (key, value) = &pairs[i];
        jackson(&mut json, key);
        json.push(':');
        match value {
            Some(v) => jackson(&mut json, v),
            None => json.push_str("null"),
        }
    }
    json.push('}');
    string(out, &json);
}

/// Appends `s` as a JSON string as Jackson's generator writes it by default: `"` and `\`
/// escaped, `\b \t \n \f \r`, other control characters as `\u00XX` in upper case, everything else
/// as it is.
fn jackson(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod unit {
    use super::*;

    /// An hstore's bytes after the varlena header, laid out as hstore's hstorePairs does (pairs
    /// given in its order: by key length, then bytes).
    fn binary(pairs: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut strings = Vec::new();
        for (k, v) in pairs {
            for (s, null) in [(Some(*k), false), (*v, v.is_none())] {
                strings.extend_from_slice(s.unwrap_or("").as_bytes());
                let first = if entries.is_empty() { HENTRY_ISFIRST } else { 0 };
                let null = if null { HENTRY_ISNULL } else { 0 };
                entries.push(strings.len() as u32 | first | null);
            }
        }
        let mut data = (pairs.len() as u32 | HS_FLAG_NEWVERSION).to_ne_bytes().to_vec();
        entries.iter().for_each(|e| data.extend_from_slice(&e.to_ne_bytes()));
        data.extend_from_slice(&strings);
        data
    }

    fn json(pairs: &[Pair]) -> String {
        let mut out = String::new();
        write(&mut out, pairs);
        out
    }

    fn owned(pairs: &[(&str, Option<&str>)]) -> Vec<Pair<'static>> {
        pairs.iter().map(|(k, v)| (Cow::Owned(k.to_string()), v.map(|v| Cow::Owned(v.to_string())))).collect()
    }

    #[test]
    fn binary_and_text_forms_read_alike() {
        let want = [("b", None), ("aa", Some("x\"y\\z")), ("key", Some("")), ("日本", Some("é"))];
        let data = binary(&want);
        assert_eq!(pairs(&data), Some(owned(&want)));
        let text = r#""b"=>NULL, "aa"=>"x\"y\\z", "key"=>"", "日本"=>"é""#;
        assert_eq!(pairs_of_text(text), owned(&want));
        assert_eq!(pairs(&binary(&[])), Some(vec![]));
        assert_eq!(pairs(&0u32.to_ne_bytes()), Some(vec![]));
        assert_eq!(pairs_of_text(""), vec![]);
        // Not the current layout, or cut short: left to the text form.
        assert_eq!(pairs(&2u32.to_ne_bytes()), None);
        assert_eq!(pairs(&data[..data.len() - 1]), None);
        assert_eq!(pairs(&data[..10]), None);
        assert_eq!(pairs(&[]), None);
    }

    #[test]
    fn objects_are_in_javas_order_with_jacksons_escapes() {
        // The issue's example.
        assert_eq!(json(&owned(&[("a", Some("1")), ("b", None)])), r#""{\"a\":\"1\",\"b\":null}""#);
        assert_eq!(json(&[]), r#""{}""#);
        // HashMap order (printed by a JDK for these keys put in hstore's order), not hstore's.
        let pairs = owned(&[
            ("id", Some("7")),
            ("name", Some("x")),
            ("tags", None),
            ("color", Some("red")),
            ("weight", Some("1.5")),
        ]);
        assert_eq!(
            json(&pairs),
            r#""{\"color\":\"red\",\"name\":\"x\",\"weight\":\"1.5\",\"id\":\"7\",\"tags\":null}""#
        );
        let mut s = String::new();
        jackson(&mut s, "q\"b\\\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}é/");
        assert_eq!(s, r#""q\"b\\\b\t\n\f\r\u0001\u001F"#.to_string() + "\u{7f}é/\"");
    }
}
