//! One signed exchange on a connection already taken: the request written and signed afresh
//! into the connection's buffer ([`compose`]), sent, and its response head read within the
//! stall timeout — sent once more on a new connection when a reused idle one turns out closed
//! — and the bounded reads of a small reply's body. [`exchange`](super::exchange) builds
//! requests on it; so does the making of a session (`session`), which the requests' own
//! credentials may need first.

use std::sync::atomic::AtomicU64;

use aws_credential_types::Credentials;

use super::stall::{fmt_duration, Stall};
use crate::conn::Conn;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::http1::{self, Http};
use crate::s3::{S3Request, MAX_ERROR_BODY, MAX_REQUEST_FIELDS};
use crate::sign::{Signable, Signer};
use crate::stats::Counters;

/// Writes `req` into `conn` signed with `creds`, sends it, and reads the response head within
/// the stall timeout. Counts the request, and once in `also` if given (a hedge).
pub(super) async fn signed_exchange(
    ctx: &Context,
    mut conn: Conn,
    req: &S3Request<'_>,
    creds: Option<&Credentials>,
    stalls: &mut Stall<'_>,
    mut also: Option<&AtomicU64>,
) -> Result<Conn, Error> {
    loop {
        compose(&mut conn, req, &ctx.signer, creds)?;
        Counters::add(&ctx.counters.requests, 1);
        if let Some(counter) = also.take() {
            Counters::add(counter, 1);
        }
        let exchange = async {
            conn.send(req.method() == http::Method::HEAD).await?;
            conn.read_head().await
        };
        let failed = match stalls.within(exchange).await {
            Some(Ok(())) => return Ok(conn),
            Some(Err(e)) => e,
            None => {
                return Err(Error::new(ErrorKind::Timeout)
                    .with_message(format!("no response within {}", fmt_duration(stalls.stall))))
            }
        };
        // A server may close an idle keep-alive connection just as it is taken for a request:
        // the request is sent again at once on a new connection, spending no attempt, retry
        // budget or backoff. Once only, as the new connection was not idle: a server that
        // closes every connection still fails the request.
        if !(conn.reused() && conn.unanswered() && failed.kind() == ErrorKind::Connection) {
            return Err(failed);
        }
        tracing::debug!(
            target: "s3_ordered::fetch",
            error = %failed,
            "a reused connection was closed before any reply; sending again on a new one",
        );
        Counters::add(&ctx.counters.stale_connections, 1);
        conn = conn
            .close()
            .connect_new(req.origin())
            .await
            .map_err(|(_, e)| e)?;
    }
}

/// Writes `req` into `conn`'s request buffer as HTTP/1.1: its request line and fields, and —
/// with credentials — the SigV4 fields computed over exactly those bytes.
fn compose(
    conn: &mut Http,
    req: &S3Request<'_>,
    signer: &Signer,
    creds: Option<&Credentials>,
) -> Result<(), Error> {
    let (out, scratch, forward) = conn.compose();
    let method = req.method().as_str();
    let origin_len = forward.map_or(0, |f| f.origin.len());
    let target = http1::push_request_line(out, method, |o| {
        if let Some(f) = forward {
            o.extend_from_slice(f.origin.as_bytes());
        }
        req.write_target(o)
    });
    // What is signed is the path and query, without a proxy's absolute-form origin.
    let target = target.start + origin_len..target.end;
    // The request's own fields, kept on the stack for the signer (as many as it can have).
    let mut fields = [("", &b""[..]); MAX_REQUEST_FIELDS];
    let mut count = 0;
    for (slot, field) in fields.iter_mut().zip(req.headers()) {
        http1::push_field(out, field.0, field.1);
        *slot = field;
        count += 1;
    }
    if let Some(creds) = creds {
        let target = std::str::from_utf8(&out[target]).map_err(|_| {
            Error::new(ErrorKind::Internal).with_message("the request target is not ASCII")
        })?;
        let signable = Signable {
            method,
            target,
            headers: &fields[..count],
        };
        let signed = signer.sign(creds, signable, req.region(), req.scope(), scratch)?;
        for (name, value) in signed.fields(creds.session_token()) {
            http1::push_field(out, name, value);
        }
    }
    if let Some(auth) = forward.and_then(|f| f.authorization.as_ref()) {
        http1::push_field(out, "proxy-authorization", auth.as_bytes());
    }
    http1::end_head(out);
    Ok(())
}

/// Reads (a bounded prefix of) an error reply's body; the connection is reused only if the
/// body ended within the bound.
pub(super) async fn read_error_body(mut conn: Conn, stalls: &mut Stall<'_>) -> Vec<u8> {
    let (bytes, complete) = read_limited(&mut conn, MAX_ERROR_BODY, stalls).await;
    if complete {
        conn.release();
    }
    bytes
}

/// Reads at most `limit` bytes of the body on `conn`, each read within the stall timeout;
/// says whether the body ended within the limit (false also when it broke off or stalled).
pub(super) async fn read_limited(
    conn: &mut Conn,
    limit: usize,
    stalls: &mut Stall<'_>,
) -> (Vec<u8>, bool) {
    // Read into the Vec itself (so the future holds no buffer), trimmed to what came.
    let mut out = Vec::new();
    loop {
        let len = out.len();
        let room = (limit - len).min(16 << 10);
        let read = if room == 0 {
            match stalls.within(conn.body_ended()).await {
                Some(Ok(ended)) => return (out, ended),
                _ => return (out, false),
            }
        } else {
            out.resize(len + room, 0);
            let read = stalls.within(conn.read_body(&mut out[len..])).await;
            out.truncate(
                len + read
                    .as_ref()
                    .and_then(|r| r.as_ref().ok())
                    .copied()
                    .unwrap_or(0),
            );
            read
        };
        match read {
            Some(Ok(0)) => return (out, true),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (out, false),
        }
    }
}
