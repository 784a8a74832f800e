//! Stand-ins on 127.0.0.1 for the places AWS compute serves credentials from, so that the
//! credential chain is tested without ever leaving the loopback: an IMDSv2 server (a session
//! token is required; a GET without it is refused), a container-credentials endpoint (with its
//! authorization token), STS (`AssumeRoleWithWebIdentity`, `AssumeRole`) and the IAM Identity
//! Center portal (`GetRoleCredentials`, for SSO profiles). Each source hands
//! out the same keys with a session token of its own (`token-from-<source>`), so a test can tell
//! from a request's `x-amz-security-token` which source signed it. Every request is logged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

use crate::s3_server::serve;

/// The IMDSv2 session token the stand-in hands out.
pub const IMDS_TOKEN: &str = "imds-session-token";
/// The role name the instance metadata lists.
pub const IMDS_ROLE: &str = "pipeline-role";
/// The `Authorization` the container endpoint wants.
pub const CONTAINER_TOKEN: &str = "container-auth-token";
/// The path of the container credentials.
pub const CONTAINER_PATH: &str = "/v2/credentials/task";
/// The access token the SSO portal stand-in wants (`x-amz-sso_bearer_token`).
pub const SSO_TOKEN: &str = "sso-access-token";

/// The session token a source hands out.
pub fn token_of(source: &str) -> String {
    format!("token-from-{source}")
}

struct State {
    access_key: String,
    secret_key: String,
    region: String,
    lifetime: Mutex<Duration>,
    log: Mutex<Vec<String>>,
}

/// The stand-ins, on one port.
pub struct Standins {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Standins {
    /// Serves `access_key` / `secret_key`; the metadata service says the instance is in
    /// `region`. Credentials expire an hour after they are handed out.
    pub async fn start(access_key: &str, secret_key: &str, region: &str) -> Self {
        let state = Arc::new(State {
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: region.to_owned(),
            lifetime: Mutex::new(Duration::from_secs(3600)),
            log: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let s = state.clone();
        serve(listener, move |req| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(handle(&s, req).await) }
        });
        Standins { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Credentials handed out from now on expire this long after.
    pub fn set_lifetime(&self, lifetime: Duration) {
        *self.state.lifetime.lock().expect("lifetime") = lifetime;
    }

    /// What was asked so far, one line a request (`imds PUT token`, `sts AssumeRole by KEY`, …).
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().expect("log").clone()
    }
}

async fn handle(
    s: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = parts.uri.path().to_owned();
    let log = |line: String| s.log.lock().expect("log").push(line);
    let reply = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    let expiry = rfc3339(SystemTime::now() + *s.lifetime.lock().expect("lifetime"));
    let json = |source: &str| {
        format!(
            r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{expiry}"}}"#,
            s.access_key,
            s.secret_key,
            token_of(source)
        )
    };

    if path == "/latest/api/token" {
        if parts.method != hyper::Method::PUT
            || header("x-aws-ec2-metadata-token-ttl-seconds").is_none()
        {
            log(format!("imds refused {} token", parts.method));
            return reply(400, String::new());
        }
        log("imds PUT token".into());
        let mut r = reply(200, IMDS_TOKEN.into());
        r.headers_mut().insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            hyper::header::HeaderValue::from_static("21600"),
        );
        return r;
    }
    if let Some(rest) = path.strip_prefix("/latest/meta-data/") {
        if header("x-aws-ec2-metadata-token").as_deref() != Some(IMDS_TOKEN) {
            log(format!("imds refused GET {path} without the token"));
            return reply(401, String::new());
        }
        log(format!("imds GET {path}"));
        return match rest {
            "placement/region" => reply(200, s.region.clone()),
            "iam/security-credentials/" => reply(200, IMDS_ROLE.into()),
            r if r == format!("iam/security-credentials/{IMDS_ROLE}") => reply(200, json("imds")),
            _ => reply(404, String::new()),
        };
    }
    if path == CONTAINER_PATH {
        if header("authorization").as_deref() != Some(CONTAINER_TOKEN) {
            log("container refused".into());
            return reply(401, r#"{"message":"no"}"#.into());
        }
        log("container GET".into());
        return reply(200, json("container"));
    }
    if path == "/federation/credentials" {
        // IAM Identity Center's GetRoleCredentials.
        let query = parts.uri.query().unwrap_or_default().to_owned();
        if header("x-amz-sso_bearer_token").as_deref() != Some(SSO_TOKEN) {
            log("sso refused".into());
            return reply(401, r#"{"message":"bad token"}"#.into());
        }
        log(format!("sso GET {query}"));
        let expires_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
            + s.lifetime.lock().expect("lifetime").as_millis() as u64;
        return reply(
            200,
            format!(
                r#"{{"roleCredentials":{{"accessKeyId":"{}","secretAccessKey":"{}","sessionToken":"{}","expiration":{expires_ms}}}}}"#,
                s.access_key,
                s.secret_key,
                token_of("sso")
            ),
        );
    }
    if parts.method == hyper::Method::POST && path == "/" {
        let form = String::from_utf8_lossy(&body).into_owned();
        let field = |name: &str| {
            form.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
        };
        let action = field("Action").unwrap_or_default();
        // AssumeRole is signed by the source credentials: say whose.
        let by = header("authorization")
            .and_then(|a| {
                a.split("Credential=")
                    .nth(1)
                    .and_then(|c| c.split('/').next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "nobody".into());
        let role = field("RoleArn").unwrap_or_default();
        log(format!("sts {action} of {role} by {by}"));
        let source = match action.as_str() {
            "AssumeRoleWithWebIdentity" => {
                if field("WebIdentityToken").as_deref() != Some("web-identity-jwt") {
                    return reply(400, sts_error("InvalidIdentityToken"));
                }
                "web-identity"
            }
            "AssumeRole" => "assume-role",
            _ => return reply(400, sts_error("InvalidAction")),
        };
        let body = format!(
            r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <Credentials>
      <AccessKeyId>{}</AccessKeyId>
      <SecretAccessKey>{}</SecretAccessKey>
      <SessionToken>{}</SessionToken>
      <Expiration>{expiry}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/pipeline/session</Arn>
      <AssumedRoleId>AROAEXAMPLE:session</AssumedRoleId>
    </AssumedRoleUser>
  </{action}Result>
  <ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata>
</{action}Response>"#,
            s.access_key,
            s.secret_key,
            token_of(source)
        );
        return reply(200, body);
    }
    log(format!("unknown {} {path}", parts.method));
    reply(404, String::new())
}

fn sts_error(code: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>refused</Message></Error></ErrorResponse>"
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `t` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn rfc3339_formats_known_instants() {
    let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_796_256_000 + 3_723), "2026-12-03T01:02:03Z");
}
