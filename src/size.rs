//! Byte sizes as people write them in flags and settings: `1048576`, `512KiB`, `512MiB`,
//! `2GiB`, `1TiB`, and the decimal `kB`/`MB`/`GB`/`TB` (powers of 1000). Units are
//! case-insensitive, with an optional space before them.

/// Parses a byte size such as `"512MiB"`, for front ends that take sizes as text (the CLI's
/// `--max-bytes`, the Python package's `max_bytes`).
///
/// # Errors
///
/// A message saying what is wrong with `text`: no digits, an unknown unit, or a size over
/// `u64::MAX`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size; expected e.g. 1048576, 512MiB or 2GiB"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
            "{text:?} has an unknown unit {other:?}; use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"
        ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn parses_plain_binary_and_decimal_sizes() {
        let cases = [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512MiB", 512 << 20),
            ("512 mib", 512 << 20),
            ("2GiB", 2 << 30),
            ("64k", 64 << 10),
            ("1TiB", 1 << 40),
            ("10MB", 10_000_000),
            ("3kB", 3_000),
            ("7B", 7),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_bad_sizes() {
        for text in [
            "",
            "MiB",
            "-1",
            "1.5GiB",
            "12 parsecs",
            "99999999999999999999",
            "20000000TiB",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} was accepted");
        }
    }
}
