//! Byte sizes on the command line: `1048576`, `512KiB`, `512MiB`, `2GiB`, `1TiB`, and the
//! decimal `kB`/`MB`/`GB`/`TB` (powers of 1000). Case-insensitive units, optional space.

/// Parses a byte size; the error says what was wrong, for clap to print.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
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
