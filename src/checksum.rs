//! Response checksums: what a reply says the object's checksum is, the running checksum of the
//! bytes received, and how the parts' CRCs combine into the whole object's.
//!
//! With `x-amz-checksum-mode: ENABLED`, S3 sends the checksum it stores (`x-amz-checksum-<alg>`,
//! base64 of the big-endian value) on replies that carry the whole object — a plain GET, a range
//! covering every byte, a HEAD — and none on a partial range. A value is of the whole object
//! (`FULL_OBJECT`) or, for a multipart upload, a checksum of its parts' checksums (`COMPOSITE`:
//! `x-amz-checksum-type: COMPOSITE`, or a value ending in `-N`), which no hash of the bytes can
//! match. CRCs of consecutive pieces combine into the CRC of the whole ([`combine`]); SHA digests
//! do not, and are computed over the bytes in order ([`InOrder`]).
//!
//! A composite checksum is verified through the upload's parts ([`UploadParts`]): each part's
//! own checksum (a HEAD with `partNumber`) against its bytes, and the parts' checksums together
//! against the composite value, so a part list that is not the object's cannot pass.
//!
//! Some servers leave a value's type unsaid (no `x-amz-checksum-type`, no `-N`) on a multipart
//! upload's object (ETag `"…-N"`): such a value may be either kind
//! ([`Expected::untyped_upload`]). It is verified as the full-object value or as the composite
//! of the upload's parts, whichever the parts' checksums show it to be; only bytes that agree
//! with neither reading fail. A value of a stated type is held to that type alone.
//!
//! CRCs use `crc-fast` (hardware-accelerated: PCLMULQDQ / PMULL), SHA digests `ring`.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use crc_fast::CrcAlgorithm;

use crate::error::{Error, ErrorKind};

/// A checksum algorithm S3 stores.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// CRC-64/NVME: what S3 stores for a new object whose uploader chose none.
    Crc64Nvme,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-32 (ISO-HDLC, as zlib).
    Crc32,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// Preference when a reply offers several: CRCs first (they combine across parts and cost
/// least), then the digests.
const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Sha256,
    ChecksumAlgorithm::Sha1,
];

impl ChecksumAlgorithm {
    /// The name S3 uses (`CRC64NVME`, `CRC32C`, `CRC32`, `SHA1`, `SHA256`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    /// The response field that carries it.
    fn field(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The `crc-fast` algorithm of a CRC; `None` for a digest.
    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            ChecksumAlgorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            ChecksumAlgorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            ChecksumAlgorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => None,
        }
    }

    /// True for the CRCs, whose values of consecutive pieces [`combine`].
    pub(crate) fn is_crc(self) -> bool {
        self.crc().is_some()
    }

    /// Bytes of a value.
    fn width(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::Crc32 => 4,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an object's bytes were checked, and how.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Every byte was checked against the object's full-object checksum in this algorithm.
    /// A streaming body is checked as it is read: it cannot end without the check passing, and
    /// a mismatch is its last item.
    Verified(ChecksumAlgorithm),
    /// The object has only a composite checksum (a multipart upload's): every byte was checked
    /// against its upload part's checksum in this algorithm, and the parts' checksums against
    /// the composite one. A streaming body is checked as it is read, as for
    /// [`Verified`](Checksum::Verified).
    VerifiedParts(ChecksumAlgorithm),
    /// The bytes were not checked, for this reason.
    NotVerified(NotVerified),
}

impl Checksum {
    /// True when the object's bytes were (or, for a streaming body, are being) verified.
    pub fn is_verified(&self) -> bool {
        matches!(self, Checksum::Verified(_) | Checksum::VerifiedParts(_))
    }
}

/// Why an object's bytes were not checked.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotVerified {
    /// Checksums are off ([`ChecksumMode::Off`](crate::ChecksumMode::Off)).
    Off,
    /// The server sent no checksum for the object.
    NoChecksum,
    /// The server has only a composite checksum (of a multipart upload's parts), which the
    /// object's bytes alone cannot be checked against, and the server did not state its
    /// parts' checksums (a HEAD with `partNumber`) in a way that adds up to the object.
    Composite(ChecksumAlgorithm),
}

/// A checksum's value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    Crc(u64),
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

impl Value {
    fn from_bytes(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != algorithm.width() {
            return None;
        }
        Some(match algorithm {
            ChecksumAlgorithm::Sha1 => Value::Sha1(bytes.try_into().ok()?),
            ChecksumAlgorithm::Sha256 => Value::Sha256(bytes.try_into().ok()?),
            _ => Value::Crc(bytes.iter().fold(0, |v, b| v << 8 | u64::from(*b))),
        })
    }

    /// Feeds the value's bytes (big-endian, as S3 concatenates part checksums) to `hasher`.
    fn feed(&self, algorithm: ChecksumAlgorithm, hasher: &mut Hasher) {
        match self {
            Value::Crc(v) => hasher.update(&v.to_be_bytes()[8 - algorithm.width()..]),
            Value::Sha1(d) => hasher.update(d),
            Value::Sha256(d) => hasher.update(d),
        }
    }

    /// Decodes base64 `text` as a value of `algorithm`.
    fn decode(algorithm: ChecksumAlgorithm, text: &[u8]) -> Option<Self> {
        // Decoded on the stack: the longest value (SHA-256) is 32 bytes.
        let mut buf = [0u8; 48];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(text, &mut buf)
            .ok()?;
        Value::from_bytes(algorithm, &buf[..n])
    }

    /// Base64 of the big-endian value, as S3 shows it.
    fn show(&self, algorithm: ChecksumAlgorithm) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Value::Crc(v) => b64.encode(&v.to_be_bytes()[8 - algorithm.width()..]),
            Value::Sha1(d) => b64.encode(d),
            Value::Sha256(d) => b64.encode(d),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Crc(v) => write!(f, "Crc({v:#x})"),
            Value::Sha1(_) | Value::Sha256(_) => f.write_str("Sha(..)"),
        }
    }
}

/// An object's full-object checksum, as the server stated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) algorithm: ChecksumAlgorithm,
    pub(crate) value: Value,
    /// Set when the value's type was not stated (no `x-amz-checksum-type`, no `-N`) and the
    /// object's ETag marks a multipart upload of this many parts: the value may as well be the
    /// composite of the parts' checksums ([`composite_reading`](Self::composite_reading)).
    pub(crate) untyped_upload: Option<u32>,
}

impl Expected {
    /// A full-object value, its type stated or beyond doubt.
    pub(crate) fn full(algorithm: ChecksumAlgorithm, value: Value) -> Self {
        Expected {
            algorithm,
            value,
            untyped_upload: None,
        }
    }

    /// The other reading of a value whose type was not stated, on an object a multipart upload
    /// made: the composite checksum of the upload's parts. `None` for a value of a stated type.
    pub(crate) fn composite_reading(&self) -> Option<Composite> {
        self.untyped_upload.map(|parts| Composite {
            algorithm: self.algorithm,
            value: Some(self.value),
            parts: Some(parts),
        })
    }

    /// Compares what the bytes gave with the stated value.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ChecksumMismatch`], naming the algorithm and both values.
    pub(crate) fn check(&self, got: Value) -> Result<(), Error> {
        self.check_of(got, "the bytes received")
    }

    /// [`check`](Self::check), the bytes named by `what`.
    fn check_of(&self, got: Value, what: &str) -> Result<(), Error> {
        if got == self.value {
            return Ok(());
        }
        let alg = self.algorithm;
        Err(
            Error::new(ErrorKind::ChecksumMismatch).with_message(format!(
                "{alg} of {what} is {}, the server's is {}",
                got.show(alg),
                self.value.show(alg)
            )),
        )
    }
}

/// A composite checksum as a reply stated it: a checksum of a multipart upload's parts'
/// checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Composite {
    pub(crate) algorithm: ChecksumAlgorithm,
    /// The checksum of the parts' checksums, when it decoded.
    pub(crate) value: Option<Value>,
    /// The upload's part count (the `-N`), when stated.
    pub(crate) parts: Option<u32>,
}

/// A multipart upload's parts as the server stated them (one HEAD with `partNumber` each):
/// their lengths and checksums, in order, checked to add up to the object and to its composite
/// checksum.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UploadParts {
    algorithm: ChecksumAlgorithm,
    /// Each part's length and checksum, in order.
    parts: Vec<(u64, Value)>,
}

impl UploadParts {
    /// The parts of an object of `size` bytes whose composite checksum is `composite`.
    ///
    /// # Errors
    ///
    /// Why the parts are not the object's: their count, lengths or checksums disagree with
    /// what the object's own reply stated.
    pub(crate) fn new(
        composite: &Composite,
        parts: Vec<(u64, Value)>,
        size: u64,
    ) -> Result<Self, String> {
        let alg = composite.algorithm;
        if composite.parts.is_some_and(|n| n as usize != parts.len()) {
            return Err(format!(
                "{} parts stated, the composite checksum is of {:?}",
                parts.len(),
                composite.parts
            ));
        }
        let total: u64 = parts.iter().map(|(len, _)| len).sum();
        if total != size {
            return Err(format!("the parts hold {total} bytes, the object {size}"));
        }
        let Some(value) = composite.value else {
            return Err("the composite checksum did not decode".to_owned());
        };
        let mut of_parts = Hasher::new(alg);
        for (_, v) in &parts {
            v.feed(alg, &mut of_parts);
        }
        Expected::full(alg, value)
            .check_of(of_parts.finish(), "the parts' checksums")
            .map_err(|e| e.to_string())?;
        Ok(UploadParts {
            algorithm: alg,
            parts,
        })
    }
}

/// Checks bytes given in order — a whole object's, part after part — against a checksum that
/// needs them in order: a full-object digest, or each upload part's checksum.
#[derive(Debug)]
pub(crate) struct InOrder {
    hasher: Hasher,
    against: Against,
}

#[derive(Debug)]
enum Against {
    Whole(Expected),
    Parts {
        parts: Arc<UploadParts>,
        /// The upload part being hashed, its first byte in the object, and its bytes still to come.
        idx: usize,
        start: u64,
        left: u64,
        /// The first part that did not match.
        failed: Option<Error>,
        /// Bytes came after the last part's.
        overflow: bool,
    },
}

impl InOrder {
    /// Against a full-object checksum.
    pub(crate) fn whole(expected: Expected) -> Self {
        InOrder {
            hasher: Hasher::new(expected.algorithm),
            against: Against::Whole(expected),
        }
    }

    /// Against each of `parts`' checksums.
    pub(crate) fn parts(parts: Arc<UploadParts>) -> Self {
        let left = parts.parts.first().map_or(0, |p| p.0);
        let mut check = InOrder {
            hasher: Hasher::new(parts.algorithm),
            against: Against::Parts {
                parts,
                idx: 0,
                start: 0,
                left,
                failed: None,
                overflow: false,
            },
        };
        check.close_empty_parts();
        check
    }

    /// The next bytes of the object.
    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Against::Parts {
                parts,
                idx,
                left,
                overflow,
                ..
            } = &mut self.against
            else {
                self.hasher.update(bytes);
                return;
            };
            if *idx >= parts.parts.len() {
                *overflow = true;
                return;
            }
            let n = bytes
                .len()
                .min(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= n as u64;
            self.hasher.update(&bytes[..n]);
            bytes = &bytes[n..];
            self.close_empty_parts();
        }
    }

    /// Checks every upload part whose bytes are all in (none left), and moves on.
    fn close_empty_parts(&mut self) {
        let Against::Parts {
            parts,
            idx,
            start,
            left,
            failed,
            ..
        } = &mut self.against
        else {
            return;
        };
        while *left == 0 && *idx < parts.parts.len() {
            let (len, value) = parts.parts[*idx];
            let alg = parts.algorithm;
            let got = std::mem::replace(&mut self.hasher, Hasher::new(alg)).finish();
            let expected = Expected::full(alg, value);
            let what = format!(
                "upload part {} of {} (bytes {}..{})",
                *idx + 1,
                parts.parts.len(),
                *start,
                *start + len
            );
            if let Err(e) = expected.check_of(got, &what) {
                failed.get_or_insert(e);
            }
            *idx += 1;
            *start += len;
            *left = parts.parts.get(*idx).map_or(0, |p| p.0);
        }
    }

    /// The verdict once every byte was given.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ChecksumMismatch`] naming the algorithm, the values and (for upload parts)
    /// the first part that did not match; [`ErrorKind::LengthMismatch`] when the bytes given
    /// were not as many as the parts hold.
    pub(crate) fn finish(self) -> Result<(), Error> {
        match self.against {
            Against::Whole(expected) => expected.check(self.hasher.finish()),
            Against::Parts {
                parts,
                idx,
                failed,
                overflow,
                ..
            } => match failed {
                Some(e) => Err(e),
                None if idx == parts.parts.len() && !overflow => Ok(()),
                None => Err(Error::new(ErrorKind::LengthMismatch).with_message(format!(
                    "the bytes received are not the {} bytes of the upload's {} parts",
                    parts.parts.iter().map(|p| p.0).sum::<u64>(),
                    parts.parts.len()
                ))),
            },
        }
    }
}

/// What a reply that carries the whole object says about its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offered {
    /// A full-object checksum to verify against.
    Full(Expected),
    /// Only a composite checksum.
    Composite(Composite),
    /// A composite checksum, and the upload's parts to verify the bytes against.
    Parts(Arc<UploadParts>),
    /// None at all.
    Nothing,
}

impl Offered {
    /// What the reply's fields state; `field` looks one up by lower-case name.
    ///
    /// A value whose type the reply leaves unsaid (no `x-amz-checksum-type`, no `-N`) on an
    /// object whose ETag marks a multipart upload (`"…-N"`) is offered as full-object, marked
    /// as possibly composite ([`Expected::untyped_upload`]): some servers state a composite
    /// value so on a HEAD.
    pub(crate) fn from_fields<'a>(field: impl Fn(&str) -> Option<&'a [u8]>) -> Self {
        let stated_type = field("x-amz-checksum-type");
        let composite_type =
            stated_type.is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"COMPOSITE"));
        let mut composite = None;
        for algorithm in ALGORITHMS {
            let Some(text) = field(algorithm.field()) else {
                continue;
            };
            let text = text.trim_ascii();
            // A composite value is base64 of the checksum of the parts' checksums, then `-N`.
            let split = text.iter().position(|&b| b == b'-');
            if composite_type || split.is_some() {
                let (value, parts) = match split {
                    Some(at) => (&text[..at], std::str::from_utf8(&text[at + 1..]).ok()),
                    None => (text, None),
                };
                composite.get_or_insert(Composite {
                    algorithm,
                    value: Value::decode(algorithm, value),
                    parts: parts.and_then(|n| n.parse().ok()),
                });
                continue;
            }
            if let Some(value) = Value::decode(algorithm, text) {
                let untyped_upload = match stated_type {
                    Some(_) => None,
                    None => field("etag").and_then(upload_part_count),
                };
                return Offered::Full(Expected {
                    algorithm,
                    value,
                    untyped_upload,
                });
            }
        }
        composite.map_or(Offered::Nothing, Offered::Composite)
    }

    /// What a reply for one upload part (a HEAD or GET with `partNumber`) states as the part's
    /// own checksum in `algorithm`: its value, whatever type the reply gives beside it (S3 and
    /// others state the object's, `COMPOSITE`). A value with a `-N` is not a part's, and does
    /// not decode (`-` is not base64).
    pub(crate) fn of_part<'a>(
        algorithm: ChecksumAlgorithm,
        field: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Option<Value> {
        Value::decode(algorithm, field(algorithm.field())?.trim_ascii())
    }

    /// The outcome for an object whose bytes pass (or will pass) the check this offers.
    pub(crate) fn outcome(&self) -> Checksum {
        match self {
            Offered::Full(e) => Checksum::Verified(e.algorithm),
            Offered::Parts(p) => Checksum::VerifiedParts(p.algorithm),
            Offered::Composite(c) => Checksum::NotVerified(NotVerified::Composite(c.algorithm)),
            Offered::Nothing => Checksum::NotVerified(NotVerified::NoChecksum),
        }
    }

    /// The check of the object's bytes in order this offers, if any.
    pub(crate) fn in_order(&self) -> Option<InOrder> {
        match self {
            Offered::Full(e) => Some(InOrder::whole(*e)),
            Offered::Parts(p) => Some(InOrder::parts(Arc::clone(p))),
            Offered::Composite(_) | Offered::Nothing => None,
        }
    }
}

/// The part count of a multipart upload's ETag (`"…-N"`, N from 1 to 10,000); `None` for any
/// other ETag.
fn upload_part_count(etag: &[u8]) -> Option<u32> {
    let etag = etag.trim_ascii();
    let etag = etag.strip_prefix(b"W/").unwrap_or(etag);
    let inner = etag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let at = inner.iter().rposition(|&b| b == b'-')?;
    let digits = &inner[at + 1..];
    // `parse` alone would take a sign ("+4"); an empty or oversized count fails it.
    if at == 0 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (1..=10_000).contains(&n).then_some(n)
}

/// The running checksum of bytes, in one algorithm.
pub(crate) enum Hasher {
    Crc(crc_fast::Digest),
    Sha(ring::digest::Context),
}

impl Hasher {
    pub(crate) fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm.crc() {
            Some(crc) => Hasher::Crc(crc_fast::Digest::new(crc)),
            None if algorithm == ChecksumAlgorithm::Sha1 => Hasher::Sha(
                ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
            ),
            None => Hasher::Sha(ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc(d) => d.update(bytes),
            Hasher::Sha(c) => c.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Value {
        match self {
            Hasher::Crc(d) => Value::Crc(d.finalize()),
            Hasher::Sha(c) => {
                let d = c.finish();
                let d = d.as_ref();
                Value::from_bytes(
                    if d.len() == 20 {
                        ChecksumAlgorithm::Sha1
                    } else {
                        ChecksumAlgorithm::Sha256
                    },
                    d,
                )
                .unwrap_or(Value::Crc(0))
            }
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hasher::Crc(_) => "Hasher::Crc",
            Hasher::Sha(_) => "Hasher::Sha",
        })
    }
}

/// The CRC of `a ‖ b` from the CRCs of `a` and of `b` (`b_len` bytes long); `algorithm` is a
/// CRC (a digest gives `a` back unchanged).
///
/// The three CRCs are reflected, with the same initial value and final xor (all ones), so
/// `crc(a ‖ b) = crc(a) · x^(8·|b|) mod P ⊕ crc(b)` (zlib's `crc32_combine`, in any width):
/// about `log2(|b|)` products of `width` steps each, with the powers `x^(2^k) mod P` computed
/// once per algorithm. (`crc_fast::checksum_combine` squares 64 × 64 matrices per bit of the
/// length: a third of a millisecond for an 8 MiB part, more than computing its CRC.)
pub(crate) fn combine(algorithm: ChecksumAlgorithm, a: u64, b: u64, b_len: u64) -> u64 {
    let Some(field) = Field::of(algorithm) else {
        return a;
    };
    if b_len == 0 {
        return a;
    }
    field.mul(field.x_pow_8n(b_len), a) ^ b
}

/// GF(2)\[x\] modulo a CRC's polynomial, in the reflected bit order of the CRC's values: the
/// top bit of a `width`-bit value is x⁰.
struct Field {
    /// The polynomial, reflected, without its x^width term.
    poly: u64,
    width: u32,
    /// `x^(2^k) mod P` for k in 0..64.
    powers: [u64; 64],
}

impl Field {
    fn of(algorithm: ChecksumAlgorithm) -> Option<&'static Field> {
        use std::sync::OnceLock;
        static CRC64NVME: OnceLock<Field> = OnceLock::new();
        static CRC32C: OnceLock<Field> = OnceLock::new();
        static CRC32: OnceLock<Field> = OnceLock::new();
        let (cell, poly, width) = match algorithm {
            ChecksumAlgorithm::Crc64Nvme => (&CRC64NVME, 0x9A6C_9329_AC4B_C9B5, 64),
            ChecksumAlgorithm::Crc32c => (&CRC32C, 0x82F6_3B78, 32),
            ChecksumAlgorithm::Crc32 => (&CRC32, 0xEDB8_8320, 32),
            ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => return None,
        };
        Some(cell.get_or_init(|| Field::new(poly, width)))
    }

    fn new(poly: u64, width: u32) -> Self {
        let mut f = Field {
            poly,
            width,
            powers: [0; 64],
        };
        // x¹ is the bit below the top one.
        f.powers[0] = 1 << (width - 2);
        for k in 1..64 {
            f.powers[k] = f.mul(f.powers[k - 1], f.powers[k - 1]);
        }
        f
    }

    /// `a · b mod P`.
    fn mul(&self, a: u64, mut b: u64) -> u64 {
        let mut m = 1u64 << (self.width - 1);
        let mut p = 0;
        while m != 0 {
            if a & m != 0 {
                p ^= b;
                if a & (m - 1) == 0 {
                    break;
                }
            }
            m >>= 1;
            b = if b & 1 != 0 {
                (b >> 1) ^ self.poly
            } else {
                b >> 1
            };
        }
        p
    }

    /// `x^(8n) mod P`: the operator that runs a CRC over `n` zero bytes.
    fn x_pow_8n(&self, mut n: u64) -> u64 {
        let mut p = 1u64 << (self.width - 1); // x⁰
        let mut k = 3; // 8n = n · 2³
        while n != 0 {
            if n & 1 != 0 {
                p = self.mul(self.powers[k % 64], p);
            }
            n >>= 1;
            k += 1;
        }
        p
    }
}

/// The CRC of the empty string, where a combination starts.
pub(crate) fn empty_crc(algorithm: ChecksumAlgorithm) -> u64 {
    match algorithm.crc() {
        Some(crc) => crc_fast::Digest::new(crc).finalize(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `Offered::from_fields` over these fields.
    fn from(pairs: &[(&str, &str)]) -> Offered {
        Offered::from_fields(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        })
    }

    fn of(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> Value {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The standard check values over "123456789", and the stated values decoded the same.
    #[test]
    fn known_values() {
        use ChecksumAlgorithm::*;
        let check = b"123456789";
        let cases = [
            (Crc64Nvme, "x-amz-checksum-crc64nvme", "rosUhgp5mIg="),
            (Crc32c, "x-amz-checksum-crc32c", "4waSgw=="),
            (Crc32, "x-amz-checksum-crc32", "y/Q5Jg=="),
            (Sha1, "x-amz-checksum-sha1", "98O8HYCOBHMq32eZZczDTKeuNEE="),
            (
                Sha256,
                "x-amz-checksum-sha256",
                "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=",
            ),
        ];
        for (algorithm, field, text) in cases {
            let Offered::Full(e) = from(&[(field, text)]) else {
                panic!("{algorithm}: not a full checksum");
            };
            assert_eq!(e.algorithm, algorithm);
            assert!(e.check(of(algorithm, check)).is_ok(), "{algorithm}");
            // Split anywhere, the running value is the same.
            let mut h = Hasher::new(algorithm);
            h.update(&check[..4]);
            h.update(&check[4..]);
            assert_eq!(h.finish(), e.value, "{algorithm}");
            assert_eq!(e.value.show(algorithm), text);
        }
        assert_eq!(of(Crc64Nvme, check), Value::Crc(0xAE8B_1486_0A79_9888));
    }

    #[test]
    fn a_mismatch_names_the_algorithm_and_both_values() {
        let Offered::Full(e) = from(&[("x-amz-checksum-crc32c", "4waSgw==")]) else {
            panic!("not full");
        };
        let err = e
            .check(of(ChecksumAlgorithm::Crc32c, b"12345678X"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ChecksumMismatch);
        let text = err.to_string();
        assert!(
            text.contains("CRC32C") && text.contains("4waSgw=="),
            "{text}"
        );
    }

    #[test]
    fn preference_composites_and_what_cannot_be_checked() {
        use ChecksumAlgorithm::*;
        let all = [
            ("x-amz-checksum-sha1", "98O8HYCOBHMq32eZZczDTKeuNEE="),
            ("x-amz-checksum-crc32", "y/Q5Jg=="),
            ("x-amz-checksum-crc32c", "4waSgw=="),
            ("x-amz-checksum-crc64nvme", "rosUhgp5mIg="),
        ];
        let Offered::Full(e) = from(&all) else {
            panic!("not full")
        };
        assert_eq!(e.algorithm, Crc64Nvme);
        let Offered::Full(e) = from(&all[..2]) else {
            panic!("not full")
        };
        assert_eq!(e.algorithm, Crc32);
        // Composite by its suffix or by the type field, even where the value has no suffix.
        assert_eq!(
            from(&[("x-amz-checksum-crc32c", "4waSgw==-3")]),
            Offered::Composite(Composite {
                algorithm: Crc32c,
                value: Some(Value::Crc(0xe306_9283)),
                parts: Some(3)
            })
        );
        assert_eq!(
            from(&[
                ("x-amz-checksum-crc32", "y/Q5Jg=="),
                ("x-amz-checksum-type", "COMPOSITE")
            ]),
            Offered::Composite(Composite {
                algorithm: Crc32,
                value: Some(Value::Crc(0xcbf4_3926)),
                parts: None
            })
        );
        assert_eq!(
            from(&[("x-amz-checksum-sha1", "junk-x")]),
            Offered::Composite(Composite {
                algorithm: Sha1,
                value: None,
                parts: None
            })
        );
        // A full value wins over a composite one.
        assert!(matches!(
            from(&[
                ("x-amz-checksum-crc32c", "4waSgw==-3"),
                ("x-amz-checksum-crc32", "y/Q5Jg==")
            ]),
            Offered::Full(Expected {
                algorithm: Crc32,
                ..
            })
        ));
        for bad in ["not base64!", "AAAAAAAA", ""] {
            assert_eq!(
                from(&[("x-amz-checksum-crc32c", bad)]),
                Offered::Nothing,
                "{bad}"
            );
        }
        assert_eq!(from(&[("x-amz-checksum-sha256", "abc=")]), Offered::Nothing);
        assert_eq!(from(&[]), Offered::Nothing);
    }

    #[test]
    fn an_untyped_value_on_a_multipart_upload_may_be_either_kind() {
        use ChecksumAlgorithm::Crc32c;
        let crc = ("x-amz-checksum-crc32c", "4waSgw==");
        let untyped = |etag: &str| match from(&[crc, ("etag", etag)]) {
            Offered::Full(e) => e.untyped_upload,
            other => panic!("{etag}: {other:?}"),
        };
        assert_eq!(untyped("\"3858f62230ac3c915f300c664312c11f-4\""), Some(4));
        assert_eq!(untyped("W/\"abc-10000\""), Some(10_000));
        // Not a multipart upload's ETag: a full-object value beyond doubt.
        for etag in [
            "\"3858f62230ac3c915f300c664312c11f\"",
            "\"abc-0\"",
            "\"abc-10001\"",
            "\"abc-\"",
            "\"-4\"",
            "abc-4",
            "\"abc-4x\"",
            "\"abc-+4\"",
            "\"abc-99999999999\"",
        ] {
            assert_eq!(untyped(etag), None, "{etag}");
        }
        // A stated type keeps the strict rule: full is full, composite is composite.
        let typed = from(&[
            crc,
            ("etag", "\"abc-4\""),
            ("x-amz-checksum-type", "FULL_OBJECT"),
        ]);
        assert!(matches!(
            typed,
            Offered::Full(Expected {
                untyped_upload: None,
                ..
            })
        ));
        let composite = from(&[
            crc,
            ("etag", "\"abc-4\""),
            ("x-amz-checksum-type", "COMPOSITE"),
        ]);
        assert!(matches!(composite, Offered::Composite(_)));
        // The other reading is the composite of that many parts, of the same value.
        let Offered::Full(e) = from(&[crc, ("etag", "\"abc-4\"")]) else {
            panic!("not full");
        };
        assert_eq!(
            e.composite_reading(),
            Some(Composite {
                algorithm: Crc32c,
                value: Some(e.value),
                parts: Some(4)
            })
        );
        assert_eq!(Expected::full(Crc32c, e.value).composite_reading(), None);
    }

    #[test]
    fn a_part_reply_states_the_parts_own_checksum_whatever_type_it_gives() {
        use ChecksumAlgorithm::{Crc32, Crc32c};
        let of = |pairs: &[(&str, &str)], alg| {
            Offered::of_part(alg, |name| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_bytes())
            })
        };
        let part = [
            ("x-amz-checksum-crc32c", "4waSgw=="),
            ("x-amz-checksum-type", "COMPOSITE"),
        ];
        let own = Value::decode(Crc32c, b"4waSgw==").expect("a CRC32C");
        assert_eq!(of(&part, Crc32c), Some(own), "the part's own value");
        assert_eq!(of(&part, Crc32), None, "another algorithm");
        assert_eq!(of(&[("x-amz-checksum-crc32c", "4waSgw==-3")], Crc32c), None);
        assert_eq!(of(&[("x-amz-checksum-crc32c", "junk")], Crc32c), None);
    }

    /// `data` as a multipart upload cut at `cuts` (sorted): its composite checksum and parts.
    fn upload(
        algorithm: ChecksumAlgorithm,
        data: &[u8],
        cuts: &[usize],
    ) -> (Composite, Vec<(u64, Value)>) {
        let mut parts = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([data.len()]) {
            parts.push(((end - start) as u64, of(algorithm, &data[start..end])));
            start = end;
        }
        let mut h = Hasher::new(algorithm);
        parts.iter().for_each(|(_, v)| v.feed(algorithm, &mut h));
        let composite = Composite {
            algorithm,
            value: Some(h.finish()),
            parts: Some(parts.len() as u32),
        };
        (composite, parts)
    }

    #[test]
    fn upload_parts_must_be_the_objects() {
        let data = b"0123456789abcdef";
        for algorithm in ALGORITHMS {
            let (composite, parts) = upload(algorithm, data, &[5, 10]);
            assert!(UploadParts::new(&composite, parts.clone(), 16).is_ok());
            // Another size, another count, another part's checksum, no composite value.
            assert!(UploadParts::new(&composite, parts.clone(), 17)
                .unwrap_err()
                .contains("16 bytes"));
            let fewer = Composite {
                parts: Some(2),
                ..composite
            };
            assert!(UploadParts::new(&fewer, parts.clone(), 16).is_err());
            let (_, swapped) = upload(algorithm, b"0123456789xbcdef", &[5, 10]);
            assert!(
                UploadParts::new(&composite, swapped, 16).is_err(),
                "{algorithm}"
            );
            let unknown = Composite {
                value: None,
                ..composite
            };
            assert!(UploadParts::new(&unknown, parts, 16).is_err());
        }
    }

    proptest! {
        /// Bytes given in any pieces pass against their upload's parts cut anywhere (empty
        /// parts included); one byte changed fails, naming the part that holds it.
        #[test]
        fn upload_parts_check_the_bytes_in_any_pieces(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            pieces in proptest::collection::vec(any::<usize>(), 0..8),
            flip in any::<usize>(),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces: Vec<usize> = pieces.into_iter().map(|c| c % (data.len() + 1)).collect();
            pieces.sort_unstable();
            let feed = |check: &mut InOrder, bytes: &[u8]| {
                let mut start = 0;
                for end in pieces.iter().copied().chain([bytes.len()]) {
                    check.update(&bytes[start..end]);
                    start = end;
                }
            };
            for algorithm in [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Sha256] {
                let (composite, parts) = upload(algorithm, &data, &cuts);
                let parts = Arc::new(UploadParts::new(&composite, parts, data.len() as u64).unwrap());
                let mut check = InOrder::parts(Arc::clone(&parts));
                feed(&mut check, &data);
                prop_assert!(check.finish().is_ok());
                if data.is_empty() {
                    continue;
                }
                let at = flip % data.len();
                let mut bad = data.clone();
                bad[at] ^= 1;
                let mut check = InOrder::parts(Arc::clone(&parts));
                feed(&mut check, &bad);
                let e = check.finish().unwrap_err();
                // Part k holds byte `at` when k cuts lie at or before it (empty parts before it
                // included).
                let k = cuts.iter().filter(|&&c| c <= at).count() + 1;
                let want = format!("upload part {k} of {}", cuts.len() + 1);
                prop_assert_eq!(e.kind(), ErrorKind::ChecksumMismatch);
                prop_assert!(e.to_string().contains(&want), "{} / {}", e, want);
                // Too few bytes, or too many, is a length error.
                let mut short = InOrder::parts(Arc::clone(&parts));
                short.update(&data[..data.len() - 1]);
                prop_assert_eq!(short.finish().unwrap_err().kind(), ErrorKind::LengthMismatch);
                let mut long = InOrder::parts(Arc::clone(&parts));
                long.update(&data);
                long.update(b"x");
                prop_assert_eq!(long.finish().unwrap_err().kind(), ErrorKind::LengthMismatch);
            }
        }

        /// Combining the CRCs of the pieces of any split, in order, gives the CRC of the whole.
        #[test]
        fn part_crcs_combine_into_the_whole(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort_unstable();
            for algorithm in [ChecksumAlgorithm::Crc64Nvme, ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc32] {
                let mut acc = empty_crc(algorithm);
                let mut start = 0;
                for end in cuts.iter().copied().chain([data.len()]) {
                    let Value::Crc(piece) = of(algorithm, &data[start..end]) else { unreachable!() };
                    acc = combine(algorithm, acc, piece, (end - start) as u64);
                    start = end;
                }
                prop_assert_eq!(Value::Crc(acc), of(algorithm, &data), "{}", algorithm);
            }
        }

        /// The same as `crc-fast`'s own combination, for any values and lengths.
        #[test]
        fn combine_agrees_with_crc_fast(a in any::<u64>(), b in any::<u64>(), len in 1u64..1 << 40) {
            for algorithm in [ChecksumAlgorithm::Crc64Nvme, ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc32] {
                let mask = if algorithm == ChecksumAlgorithm::Crc64Nvme { u64::MAX } else { u32::MAX.into() };
                let (a, b) = (a & mask, b & mask);
                let theirs = crc_fast::checksum_combine(algorithm.crc().unwrap(), a, b, len);
                prop_assert_eq!(combine(algorithm, a, b, len), theirs, "{}", algorithm);
            }
        }
    }
}
