//! The tar framing of `cat --format tar`: POSIX (ustar) headers, with a PAX extended header
//! before a member whose key or size does not fit ustar's fields.
//!
//! Each object is one member: its name is the key, its size the object's, its mtime the
//! object's `Last-Modified` (0 when unknown), mode 0644 (a key ending in `/` with no bytes is a
//! directory, 0755), owner 0. A header needs only the size, so a member's bytes are written as
//! they arrive, and then padded to the 512-byte block; [`END`] closes the archive.

/// Tar's block: headers are one, bodies are padded to a multiple.
pub(crate) const BLOCK: usize = 512;

/// The end of an archive: two zero blocks.
pub(crate) const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// The largest size ustar's 11 octal digits hold.
const MAX_USTAR_SIZE: u64 = 0o77_777_777_777;

/// ustar's name field.
const NAME_LEN: usize = 100;

/// The header block(s) of the member for `key`: a PAX header (`x`) first when the key is longer
/// than ustar's name field, is not ASCII, or the size is over 8 GiB.
pub(crate) fn member_header(key: &str, size: u64, mtime: u64) -> Vec<u8> {
    let is_dir = key.ends_with('/') && size == 0;
    let long = key.len() > NAME_LEN || !key.is_ascii();
    let huge = size > MAX_USTAR_SIZE;
    let mut out = Vec::with_capacity(BLOCK * 3);
    if long || huge {
        let mut records = Vec::new();
        if long {
            records.extend(pax_record("path", key));
        }
        if huge {
            records.extend(pax_record("size", &size.to_string()));
        }
        let len = records.len() as u64;
        out.extend(ustar(&pax_name(key), len, mtime, b'x', 0o644));
        out.extend(&records);
        out.resize(out.len() + padding(len), 0);
    }
    let (kind, mode) = if is_dir { (b'5', 0o755) } else { (b'0', 0o644) };
    out.extend(ustar(
        &truncated(key, NAME_LEN),
        size.min(MAX_USTAR_SIZE),
        mtime,
        kind,
        mode,
    ));
    out
}

/// The zero bytes that pad a member of `len` bytes to its last block.
pub(crate) fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

/// One ustar header block.
fn ustar(name: &[u8], size: u64, mtime: u64, kind: u8, mode: u32) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(MAX_USTAR_SIZE));
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is the sum of the header's bytes with its own field as spaces.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h
}

/// `value` in octal, zero-padded, ending in NUL, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// A PAX record, `LEN KEY=VALUE\n`, where LEN counts the whole record, its own digits included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// The name of a PAX header: ASCII, within ustar's name field (readers ignore it).
fn pax_name(key: &str) -> Vec<u8> {
    let ascii: String = key
        .chars()
        .map(|c| if c.is_ascii() && c != '\0' { c } else { '_' })
        .collect();
    let mut name = b"PaxHeaders/".to_vec();
    name.extend(truncated(&ascii, NAME_LEN - name.len()));
    name
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> Vec<u8> {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.as_bytes()[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: &[u8], range: std::ops::Range<usize>) -> String {
        let raw = &h[range];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }

    #[test]
    fn a_short_key_has_one_ustar_header_with_a_valid_checksum() {
        let h = member_header("a/b.txt", 1234, 1_700_000_000);
        assert_eq!(h.len(), BLOCK);
        assert_eq!(field(&h, 0..100), "a/b.txt");
        assert_eq!(u64::from_str_radix(&field(&h, 124..136), 8), Ok(1234));
        assert_eq!(
            u64::from_str_radix(&field(&h, 136..148), 8),
            Ok(1_700_000_000)
        );
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        let stated = u32::from_str_radix(field(&h, 148..156).trim(), 8).unwrap();
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        assert_eq!(stated, sum);
    }

    #[test]
    fn long_or_unicode_keys_and_huge_sizes_get_a_pax_header() {
        let key = format!("{}/é.bin", "d".repeat(120));
        let h = member_header(&key, 20 << 30, 0);
        assert_eq!(h[156], b'x');
        let len = u64::from_str_radix(&field(&h, 124..136), 8).unwrap() as usize;
        let records = String::from_utf8(h[BLOCK..BLOCK + len].to_vec()).unwrap();
        assert_eq!(
            records,
            format!(
                "{} path={key}\n{} size={}\n",
                // The value, `path=`, a space, a newline and 3 digits of length.
                key.len() + 5 + 2 + 3,
                (20u64 << 30).to_string().len() + 5 + 2 + 2,
                20u64 << 30
            )
        );
        let member = &h[h.len() - BLOCK..];
        assert_eq!(member[156], b'0');
        assert_eq!(h.len() % BLOCK, 0);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for value in ["", "x", &"y".repeat(90), &"z".repeat(995)] {
            let r = pax_record("path", value);
            let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{value:?}");
        }
    }

    #[test]
    fn directory_markers_and_padding() {
        assert_eq!(member_header("d/", 0, 0)[156], b'5');
        assert_eq!(member_header("d/", 3, 0)[156], b'0');
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
