//! Fetching from S3: one part of an object end to end, and the small whole-body requests
//! (listings, HEADs) the client sends besides.
//!
//! [`fetch_part`] makes a part's attempts until its bytes are in its leased slabs or it fails
//! for good; [`request_whole`] does the same for a reply read whole into memory. Both run
//! their attempts through one loop's rules (`attempts`) and one way of sending (`exchange`,
//! over `signed`, one signed exchange on a connection), and hold each reply to what the
//! object's earlier replies pinned (`reply`). Stall and body-rate
//! timers are in `stall`; the HEADs that learn a checksum a GET does not state are in
//! `checksum_heads`; the credentials each request is signed with, S3 Express sessions among
//! them, in `session`.
//!
//! Guarantees: every request of an object after the first reply carries `If-Match`, and
//! every reply must agree with the pin, so a body is never a mix of two versions; an attempt
//! resumes only the bytes the pinned ETag vouches for; a part is accepted only with exactly the
//! bytes asked for and, with checksums on, verified.
//!
//! The events of these files carry one `tracing` target, `s3_ordered::fetch`, whichever file
//! they are in.

mod attempts;
mod checksum_heads;
mod exchange;
mod object;
mod part;
mod reply;
mod session;
mod signed;
mod stall;

pub(crate) use attempts::Start;
pub(crate) use checksum_heads::learn_checksum;
pub(crate) use exchange::request_whole;
pub(crate) use object::{ObjectFetch, Rights};
pub(crate) use part::{fetch_part, Connect, Fetched, PartSpec};
pub(crate) use reply::{check_reply, Asked, ObjectPin};
