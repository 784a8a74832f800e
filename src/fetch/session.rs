//! The credentials a request is signed with, and S3 Express sessions: a directory bucket's
//! requests are signed with the keys of a session its [`SessionCache`] holds, made by a
//! `CreateSession` request (itself signed with the client's credentials) on first use and again
//! before it expires.
//!
//! A session is made on the connection of the request that needs it, which then goes on that
//! connection: making one takes no slot or connection beyond those the request holds, so
//! requests that wait for the session while holding theirs cannot starve it. A failed
//! `CreateSession` fails the request that sent it, and each request that waited on it, with its
//! error; each is then retried (or not) as its own attempts say.
//!
//! [`SessionCache`]: crate::express::SessionCache

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use aws_credential_types::Credentials;

use super::signed::{read_limited, signed_exchange};
use super::stall::Stall;
use crate::conn::Conn;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::express::{parse_create_session, Session, SessionCache, MAX_SESSION_REPLY};
use crate::s3::{status_error, BucketTarget, S3Request};
use crate::stats::Counters;

/// The keys of the fresh session of `sessions` made with the client's credentials `base`, to
/// sign `req`, a directory bucket's request, with: what most such requests take, without
/// waiting. `None` when there is none (see [`wait_or_create`]).
#[inline]
pub(super) fn fresh_keys(
    req: &S3Request<'_>,
    sessions: &SessionCache,
    base: &Credentials,
) -> Option<Credentials> {
    let (session, generation) = sessions.fresh(SystemTime::now(), base)?;
    req.signed_with(generation);
    Some(session.keys)
}

/// A future of the keys to sign with and the connection to send on; boxed, as it is rare and
/// a GET's future should not carry it.
type Waiting<'a> = Pin<Box<dyn Future<Output = Result<(Credentials, Conn), Error>> + Send + 'a>>;

/// The keys to sign `req` with when no session is fresh (see [`fresh_keys`]), and the
/// connection to send it on: those of the session another request is making, or of one made
/// now on `conn`, which the request then goes on.
///
/// # Errors
///
/// The `CreateSession` request's error, naming the bucket, when no session could be made.
pub(super) fn wait_or_create<'a>(
    ctx: &'a Context,
    req: &'a S3Request<'_>,
    sessions: &'a SessionCache,
    base: Credentials,
    conn: Conn,
    stalls: &'a mut Stall<'_>,
) -> Waiting<'a> {
    Box::pin(waited_or_made(ctx, req, sessions, base, conn, stalls))
}

async fn waited_or_made(
    ctx: &Context,
    req: &S3Request<'_>,
    sessions: &SessionCache,
    base: Credentials,
    conn: Conn,
    stalls: &mut Stall<'_>,
) -> Result<(Credentials, Conn), Error> {
    let base = &base;
    let mut held = Some(conn);
    let target = req.target();
    let slot = &mut held;
    let (session, generation) = sessions
        .get(SystemTime::now, base, move || {
            create(ctx, target, base.clone(), slot, stalls)
        })
        .await?;
    req.signed_with(generation);
    let conn = held.ok_or_else(|| {
        Error::new(ErrorKind::Internal).with_message("a session was made, its connection lost")
    })?;
    Ok((session.keys, conn))
}

/// Sends `CreateSession` for `target`'s bucket with the client's credentials `base` on the
/// connection in `held`, which is put back ready for the next request (a new one if the
/// server closed it). Runs inside [`wait_or_create`]'s boxed future.
async fn create(
    ctx: &Context,
    target: &BucketTarget,
    base: Credentials,
    held: &mut Option<Conn>,
    stalls: &mut Stall<'_>,
) -> Result<Session, Error> {
    let context = format!(
        "could not create an S3 Express session for bucket {:?}",
        target.bucket()
    );
    let made = async {
        let conn = held.take().ok_or_else(|| Error::new(ErrorKind::Internal))?;
        let req = target.create_session();
        let mut conn = signed_exchange(ctx, conn, &req, Some(&base), stalls, None).await?;
        let status = conn.head().status();
        let region = conn.head().get("x-amz-bucket-region").map(<[u8]>::to_vec);
        let (body, complete) = read_limited(&mut conn, MAX_SESSION_REPLY, stalls).await;
        if !status.is_success() {
            return Err(status_error(status, &body, region.as_deref()));
        }
        if !complete {
            return Err(Error::new(ErrorKind::InvalidResponse)
                .with_status(status)
                .with_message("the reply broke off or is too large"));
        }
        let keys = parse_create_session(&body)?;
        let conn = if conn.reusable() {
            conn
        } else {
            let origin = req.origin();
            conn.close().connect_new(origin).await.map_err(|(_, e)| e)?
        };
        *held = Some(conn);
        Ok(keys)
    };
    let keys = made.await.map_err(|e: Error| e.with_context(&context))?;
    Counters::add(&ctx.counters.sessions_created, 1);
    let life = keys
        .expiry()
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    tracing::debug!(
        target: "s3_ordered::fetch",
        bucket = target.bucket(),
        expires_in_s = life.as_secs(),
        "S3 Express session created",
    );
    Ok(Session::new(keys, base))
}
