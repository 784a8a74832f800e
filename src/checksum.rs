//! Whole-object checksums S3 sends with `x-amz-checksum-mode: ENABLED`: CRC32C and CRC32,
//! base64 of the big-endian value. Composite checksums of multipart uploads (`…-N`) describe the
//! parts, not the object, and are not checked.

use base64::Engine as _;

/// Which CRC the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Crc32c,
    Crc32,
}

/// The checksum a response announced for the whole object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) algorithm: Algorithm,
    pub(crate) value: u32,
}

impl Expected {
    /// The full-object checksum among the reply's header fields (`field` looks one up by
    /// name), CRC32C preferred; `None` when there is none this crate can verify.
    pub(crate) fn from_headers<'a>(field: impl Fn(&str) -> Option<&'a [u8]>) -> Option<Self> {
        [
            ("x-amz-checksum-crc32c", Algorithm::Crc32c),
            ("x-amz-checksum-crc32", Algorithm::Crc32),
        ]
        .into_iter()
        .find_map(|(name, algorithm)| {
            let text = std::str::from_utf8(field(name)?).ok()?;
            Some(Expected {
                algorithm,
                value: decode(text)?,
            })
        })
    }

    /// The checksum of `chunks`, in this one's algorithm.
    pub(crate) fn compute<'a>(&self, chunks: impl Iterator<Item = &'a [u8]>) -> u32 {
        match self.algorithm {
            Algorithm::Crc32c => chunks.fold(0, crc32c::crc32c_append),
            Algorithm::Crc32 => {
                let mut h = crc32fast::Hasher::new();
                chunks.for_each(|c| h.update(c));
                h.finalize()
            }
        }
    }
}

/// Base64 of a 4-byte big-endian value; `None` for composite (`…-N`) or malformed values.
fn decode(text: &str) -> Option<u32> {
    if text.contains('-') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Expected::from_headers` over these fields.
    fn from(pairs: &[(&str, &str)]) -> Option<Expected> {
        Expected::from_headers(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        })
    }

    #[test]
    fn known_values() {
        // "123456789" is the standard check input: CRC32C 0xE3069283, CRC32 0xCBF43926.
        let c = from(&[("x-amz-checksum-crc32c", "4waSgw==")]).unwrap();
        assert_eq!(
            c,
            Expected {
                algorithm: Algorithm::Crc32c,
                value: 0xE306_9283
            }
        );
        assert_eq!(c.compute([&b"1234"[..], b"56789"].into_iter()), 0xE306_9283);
        let c = from(&[("x-amz-checksum-crc32", "y/Q5Jg==")]).unwrap();
        assert_eq!(c.value, 0xCBF4_3926);
        assert_eq!(c.compute([&b"123456789"[..]].into_iter()), 0xCBF4_3926);
    }

    #[test]
    fn prefers_crc32c_and_skips_what_it_cannot_check() {
        let both = &[
            ("x-amz-checksum-crc32", "y/Q5Jg=="),
            ("x-amz-checksum-crc32c", "4waSgw=="),
        ];
        assert_eq!(from(both).unwrap().algorithm, Algorithm::Crc32c);
        for bad in ["4waSgw==-3", "not base64!", "AAAAAAAA", ""] {
            assert_eq!(from(&[("x-amz-checksum-crc32c", bad)]), None, "{bad}");
        }
        assert_eq!(from(&[("x-amz-checksum-sha256", "abc=")]), None);
    }
}
