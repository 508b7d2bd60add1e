//! A packed payload in the form PostgreSQL stores a `bytea` value inline: a 4-byte varlena
//! header, then the bytes as they are, or (from [`COMPRESS_FROM`] bytes, when it saves more than
//! two bytes, as `toast_compress_datum` decides) lz4-compressed behind a compressed varlena
//! header and its `tcinfo` word (raw size, method lz4). Made without PostgreSQL, so that WAL
//! capture compresses its packs on a thread of its own (nothing of PostgreSQL may run there);
//! PostgreSQL reads the value back as if it had compressed it itself, and [`raw_of`] does too
//! (a streamed transaction's pack, when a savepoint rolls some of it back). Little-endian layout
//! (`varatt.h`/`postgres.h`: x86-64, arm64).

/// Payloads from this size on are compressed (as `store::append` has PostgreSQL do).
pub const COMPRESS_FROM: usize = 256;
/// `TOAST_LZ4_COMPRESSION_ID`, in the two top bits of `tcinfo`.
const LZ4_METHOD: u32 = 1 << 30;
/// `VARHDRSZ` and `VARHDRSZ_COMPRESSED`.
const HEADER: usize = 4;
const COMPRESSED_HEADER: usize = 8;
/// The largest varlena (1 GB - 1): a header holds 30 bits of size.
const MAX_SIZE: usize = (1 << 30) - 1;

/// `raw` as PostgreSQL stores a bytea of it inline; None if it is too large for a varlena.
pub fn stored_form(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() >= COMPRESS_FROM {
        let packed = lz4_flex::block::compress(raw);
        // lz4_compress_datum gives up when the output is larger than the input, and
        // toast_compress_datum keeps the result only if it is smaller by more than 2 bytes.
        if packed.len() <= raw.len() && packed.len() + COMPRESSED_HEADER + 2 < raw.len() {
            let size = packed.len() + COMPRESSED_HEADER;
            let mut out = Vec::with_capacity(size);
            out.extend_from_slice(&(((size as u32) << 2) | 0x02).to_le_bytes()); // SET_VARSIZE_COMPRESSED
            out.extend_from_slice(&(raw.len() as u32 | LZ4_METHOD).to_le_bytes()); // tcinfo
            out.extend_from_slice(&packed);
            return Some(out);
        }
    }
    let size = raw.len() + HEADER;
    if size > MAX_SIZE {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&((size as u32) << 2).to_le_bytes()); // SET_VARSIZE
    out.extend_from_slice(raw);
    Some(out)
}

/// What [`stored_form`] made, back as it was; None if it is not that.
pub fn raw_of(stored: &[u8]) -> Option<Vec<u8>> {
    let word = |at: usize| Some(u32::from_le_bytes(stored.get(at..at + 4)?.try_into().ok()?));
    let header = word(0)?;
    if (header >> 2) as usize != stored.len() {
        return None;
    }
    match header & 0x03 {
        0x00 => Some(stored[HEADER..].to_vec()),
        0x02 => {
            let tcinfo = word(HEADER)?;
            if tcinfo & !((1 << 30) - 1) != LZ4_METHOD {
                return None;
            }
            let raw = (tcinfo & ((1 << 30) - 1)) as usize;
            lz4_flex::block::decompress(&stored[COMPRESSED_HEADER..], raw).ok().filter(|r| r.len() == raw)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    #[test]
    fn small_payloads_are_plain_varlenas() {
        let raw = b"a short pack";
        let s = stored_form(raw).unwrap();
        assert_eq!(word(&s) & 0x03, 0, "a 4-byte uncompressed header");
        assert_eq!((word(&s) >> 2) as usize, raw.len() + 4);
        assert_eq!(&s[4..], raw);
    }

    #[test]
    fn large_payloads_are_lz4_as_postgresql_reads_them() {
        let raw: Vec<u8> =
            (0..5000).flat_map(|i| format!("{{\"id\":{i},\"name\":\"name {i}\"}}").into_bytes()).collect();
        let s = stored_form(&raw).unwrap();
        assert_eq!(word(&s) & 0x03, 0x02, "a 4-byte compressed header");
        assert_eq!((word(&s) >> 2) as usize, s.len(), "its size covers the whole value");
        let tcinfo = word(&s[4..]);
        assert_eq!(tcinfo >> 30, 1, "method lz4");
        assert_eq!((tcinfo & ((1 << 30) - 1)) as usize, raw.len(), "the raw size");
        assert!(s.len() < raw.len() / 2, "JSON events compress well");
        // What PostgreSQL does: LZ4_decompress_safe of the block into the raw size.
        assert_eq!(lz4_flex::block::decompress(&s[8..], raw.len()).unwrap(), raw);
    }

    #[test]
    fn stored_forms_come_back_as_they_were() {
        let large: Vec<u8> = (0..3000).flat_map(|i| format!("{{\"n\":{i}}}").into_bytes()).collect();
        for raw in [&b"short"[..], &large, &[]] {
            let s = stored_form(raw).unwrap();
            assert_eq!(raw_of(&s).as_deref(), Some(raw));
            assert!(raw_of(&s[..s.len() - 1]).is_none(), "cut short");
        }
        assert!(raw_of(&[1, 2]).is_none());
    }

    #[test]
    fn incompressible_payloads_stay_plain() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let raw: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let s = stored_form(&raw).unwrap();
        assert_eq!(word(&s) & 0x03, 0);
        assert_eq!(&s[4..], &raw[..]);
    }
}
