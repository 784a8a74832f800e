//! Requests on pooled connections: a connection taken and the request sent on it signed
//! ([`send`], through `signed`); a late head hedged with the same request on another
//! connection ([`send_hedged`]); and whole-body requests (listings, HEADs), whose small replies
//! are read into memory, retried through [`Attempts`].

use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::attempts::{Attempts, Start, Then};
use super::object::Rights;
use super::session;
use super::signed::{read_limited, signed_exchange};
use super::stall::{unarmed, Stall};
use crate::conn::{Conn, Unit};
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::s3::{status_error, S3Request, MAX_ERROR_BODY};
use crate::stats::Counters;
use crate::waitlist::Place;

/// Gets a connection for `req` with `unit`, writes `req` into it signed afresh, sends it, and
/// reads the response head within the stall timeout. Counts the request, and once in `also`
/// if given (a hedge). A directory bucket's session, when one must be made first, is made on
/// the same connection (see [`session::wait_or_create`]).
pub(super) async fn send(
    ctx: &Context,
    unit: Unit,
    req: &S3Request<'_>,
    stalls: &mut Stall<'_>,
    fresh: bool,
    also: Option<&AtomicU64>,
) -> Result<Conn, Error> {
    let creds = ctx.signer.credentials_for_request().await?;
    let conn = if fresh {
        unit.connect_new(req.origin()).await
    } else {
        unit.connect(req.origin()).await
    };
    let conn = conn.map_err(|(_, e)| e)?;
    // A directory bucket's request is signed with a session's keys (an anonymous client's
    // with none): a fresh one's at once; else, rarely, once one is made.
    let (creds, conn) = match (req.sessions(), creds) {
        (Some(sessions), Some(base)) => match session::fresh_keys(req, sessions, &base) {
            Some(keys) => (Some(keys), conn),
            None => {
                let waiting = session::wait_or_create(ctx, req, sessions, base, conn, stalls);
                let (keys, conn) = waiting.await?;
                (Some(keys), conn)
            }
        },
        (_, creds) => (creds, conn),
    };
    signed_exchange(ctx, conn, req, creds.as_ref(), stalls, also).await
}

/// [`send`], and — when the response head is later than the hedging threshold and a hedge
/// may be sent — the same request again on another connection: the first head to arrive
/// wins, and the other exchange is dropped, closing its connection. A hedge needs the
/// adaptive limit at its ceiling, a token of the budget, a right of the request (the next
/// one freed) and a slot and connection (at the front of the queue, before new work);
/// until it has them the first reply may still come and is taken.
pub(super) async fn send_hedged(
    ctx: &Context,
    rights: &Rights,
    unit: Unit,
    req: &S3Request<'_>,
    stalls: &mut Stall<'_>,
    fresh: bool,
) -> Result<Conn, Error> {
    let hedging = &ctx.hedging;
    let threshold = hedging.threshold();
    let stall = stalls.stall;
    let started = Instant::now();
    let mut first = pin!(send(ctx, unit, req, stalls, fresh, None));
    let taken = |r: Result<Conn, Error>| {
        if r.is_ok() {
            hedging.record(started.elapsed());
        }
        r
    };
    let Some(threshold) = threshold else {
        return taken(first.await);
    };
    tokio::select! {
        biased;
        r = &mut first => return taken(r),
        () = tokio::time::sleep_until(started + threshold) => {}
    }
    // Until a hedge may go, the reply may still come; looked at again every so often.
    let recheck = (threshold / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let right = loop {
        if may_hedge(ctx) {
            // The next right the request frees, ahead of all but the one admission that
            // may be waiting already: the hedge comes before new work.
            let acquire = Arc::clone(rights).acquire_owned();
            let permit = tokio::select! {
                biased;
                r = &mut first => return taken(r),
                p = acquire => p.ok(),
            };
            if let Some(right) = permit.filter(|_| hedging.take()) {
                break right;
            }
        }
        tokio::select! {
            biased;
            r = &mut first => return taken(r),
            () = tokio::time::sleep(recheck) => {}
        }
    };
    let (slot, hedge_unit) = tokio::select! {
        biased;
        r = &mut first => return taken(r),
        t = ctx.ticket(Place::Front) => t,
    };
    tracing::debug!(
        target: "s3_ordered::fetch",
        after_ms = threshold.as_millis() as u64,
        "response head late; sending the same request on another connection"
    );
    let timer = pin!(unarmed(ctx));
    let mut hedge_stalls = Stall::new(timer, stall);
    // Counted as a hedge once written, as every request is: a hedge whose first reply
    // came while it was still connecting was never sent.
    let hedges = Some(&ctx.counters.hedges_sent);
    let mut second = pin!(send(ctx, hedge_unit, req, &mut hedge_stalls, false, hedges));
    let won = |r: Result<Conn, Error>| {
        if r.is_ok() {
            Counters::add(&ctx.counters.hedges_won, 1);
            tracing::debug!(
                target: "s3_ordered::fetch",
                "the hedge's response head came first; the first request closed",
            );
        }
        r
    };
    let out = tokio::select! {
        r = &mut first => match r {
            Ok(conn) => {
                tracing::debug!(
                    target: "s3_ordered::fetch",
                    "the first response head came first; the hedge closed",
                );
                Ok(conn)
            }
            // The hedge may still answer.
            Err(e) => won(second.await).map_err(|_| e),
        },
        r = &mut second => match r {
            Ok(conn) => won(Ok(conn)),
            Err(_) => first.await,
        },
    };
    drop((slot, right));
    taken(out)
}

/// Whether a hedge may be sent now, given a right of the request: the adaptive limit is at
/// its ceiling (a throttling server gets no more requests) and the budget has a token.
fn may_hedge(ctx: &Context) -> bool {
    let limiter = &ctx.limiter;
    limiter.limit() >= limiter.max() && ctx.hedging.has_token()
}

/// Signs `req`, sends it on a pooled connection and reads the whole reply body (at most
/// `limit` bytes): for listings and HEAD, whose replies are small. Retried like a GET.
///
/// # Errors
///
/// A typed error for a non-success status (parsed from the S3 error body), a connection
/// failure or stall, or [`ErrorKind::InvalidResponse`] for a body over `limit`.
pub(crate) async fn request_whole(
    ctx: &Context,
    req: S3Request<'_>,
    limit: usize,
) -> Result<(http::HeaderMap, Vec<u8>), Error> {
    request_whole_from(ctx, req, limit, Start::Queue(Place::Back)).await
}

/// [`request_whole`], its first attempt started as `start` says.
pub(super) async fn request_whole_from(
    ctx: &Context,
    mut req: S3Request<'_>,
    limit: usize,
    start: Start,
) -> Result<(http::HeaderMap, Vec<u8>), Error> {
    let mut attempts = Attempts::new(ctx, start);
    loop {
        let (slot, unit) = attempts.next().await;
        tracing::debug!(target: "s3_ordered::fetch", method = %req.method(), "request sent");
        match whole_once(ctx, unit, &req, limit).await {
            Ok(ok) => {
                tracing::debug!(target: "s3_ordered::fetch", bytes = ok.1.len(), "request done");
                attempts.succeeded(slot);
                return Ok(ok);
            }
            Err(e) => {
                if attempts.failed(slot, e, req.target()).await? == Then::Rerouted {
                    req.reroute();
                }
            }
        }
    }
}

async fn whole_once(
    ctx: &Context,
    unit: Unit,
    req: &S3Request<'_>,
    limit: usize,
) -> Result<(http::HeaderMap, Vec<u8>), Error> {
    let timer = pin!(unarmed(ctx));
    let mut stalls = Stall::new(timer, ctx.config.stall_timeout);
    let mut conn = send(ctx, unit, req, &mut stalls, false, None).await?;
    let status = conn.head().status();
    let headers = conn.head().to_header_map();
    let limit = if status.is_success() {
        limit
    } else {
        MAX_ERROR_BODY
    };
    let (bytes, complete) = read_limited(&mut conn, limit, &mut stalls).await;
    if complete {
        conn.release();
    }
    if !status.is_success() {
        let region = headers.get("x-amz-bucket-region").map(|v| v.as_bytes());
        let e = status_error(status, &bytes, region);
        return Err(e.signed_with_session(req.session_signed()));
    }
    if !complete && bytes.len() >= limit {
        return Err(Error::new(ErrorKind::InvalidResponse)
            .with_status(status)
            .with_message(format!("reply body larger than {limit} bytes")));
    }
    if !complete {
        return Err(Error::new(ErrorKind::Connection)
            .with_status(status)
            .with_message("reply body broke off"));
    }
    Ok((headers, bytes))
}
