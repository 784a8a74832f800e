//! The built binary finds credentials and the region the ways AWS compute gives them, each
//! against a stand-in on 127.0.0.1 that this test process starts: the instance metadata service
//! (IMDSv2), container credentials, `credential_process`, web identity and `role_arn` through an
//! STS stand-in; and it follows a bucket that is in another region. Nothing here may reach an
//! address off the loopback: every command runs with `AWS_EC2_METADATA_DISABLED=true` unless it
//! points the metadata endpoint at a stand-in.

#[path = "../../tests/support/aws_standins.rs"]
#[allow(dead_code)]
mod aws_standins;
#[path = "../../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "support/run.rs"]
mod run;
#[path = "../../tests/support/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

/// Where `S3Server::builder` starts.
#[allow(dead_code)]
fn client_builder() -> s3_ordered::ClientBuilder {
    s3_ordered::Client::builder()
}

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_standins::{token_of, Standins, CONTAINER_PATH, CONTAINER_TOKEN, SSO_TOKEN};
use run::output;
use s3_server::{content, S3Server, WrongRegion, ACCESS_KEY, SECRET_KEY};

struct World {
    s3: S3Server,
    standins: Standins,
    home: tempfile::TempDir,
    body: Vec<u8>,
}

const KEYS: [&str; 3] = ["a", "b/c", "d"];

async fn world() -> World {
    let s3 = S3Server::start().await;
    s3.create_bucket("bkt");
    let mut body = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        let data = content(key, 100 + i * 5000);
        s3.put("bkt", key, &data);
        body.extend_from_slice(&data);
    }
    let standins = Standins::start(ACCESS_KEY, SECRET_KEY, "eu-central-1").await;
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir_all(home.path().join(".aws")).expect("mkdir");
    World {
        s3,
        standins,
        home,
        body,
    }
}

impl World {
    /// `s3-ordered ARGS --endpoint-url S3` with a clean environment: no AWS_* or proxy
    /// variables, HOME in the world's directory, the metadata service turned off.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = run::bin(self.home.path());
        c.args(args)
            .args(["--endpoint-url", &format!("http://{}", self.s3.addr)]);
        c
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// The session tokens and the regions the S3 server's requests were signed with.
    fn signed_with(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut tokens = BTreeSet::new();
        let mut regions = BTreeSet::new();
        for r in self.s3.requests() {
            tokens.insert(
                r.header("x-amz-security-token")
                    .unwrap_or("none")
                    .to_owned(),
            );
            let scope = r
                .header("authorization")
                .and_then(|a| a.split("Credential=").nth(1))
                .and_then(|c| c.split('/').nth(2))
                .unwrap_or("unsigned");
            regions.insert(scope.to_owned());
        }
        (tokens, regions)
    }

    /// Runs `cat s3://bkt --keys-from -` over every key and checks the bytes, then that every
    /// request was signed with `source`'s session token for `region`.
    async fn cat_signed_by(&self, c: Command, source: &str, region: &str) {
        let out = output(c, Some(KEYS.join("\n").into_bytes())).await;
        assert!(
            out.status.success(),
            "exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == self.body, "the bodies in order");
        let (tokens, regions) = self.signed_with();
        assert_eq!(tokens, BTreeSet::from([token_of(source)]), "tokens");
        assert_eq!(regions, BTreeSet::from([region.to_owned()]), "regions");
    }
}

const CAT: [&str; 4] = ["cat", "s3://bkt", "--keys-from", "-"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_role_through_imdsv2_with_the_instances_region() {
    let w = world().await;
    let mut c = w.cmd(&CAT);
    c.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", w.standins.url());
    w.cat_signed_by(c, "imds", "eu-central-1").await;
    let log = w.standins.log();
    assert!(log.iter().any(|l| l == "imds PUT token"), "{log:?}");
    assert!(
        log.iter().all(|l| !l.contains("refused")),
        "every metadata GET carried the session token: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_with_a_token_or_a_token_file() {
    let w = world().await;
    let uri = format!("{}{CONTAINER_PATH}", w.standins.url());
    let mut c = w.cmd(&CAT);
    c.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_TOKEN)
        .env("AWS_REGION", "us-west-2");
    w.cat_signed_by(c, "container", "us-west-2").await;

    // EKS Pod Identity gives the token in a file.
    let token_file = w.file("pod-identity-token", CONTAINER_TOKEN);
    let mut c = w.cmd(&CAT);
    c.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .env("AWS_REGION", "us-west-2");
    w.cat_signed_by(c, "container", "us-west-2").await;
    let log = w.standins.log();
    assert_eq!(log, ["container GET", "container GET"], "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_of_the_default_profile_with_its_region() {
    let w = world().await;
    let expiry = aws_standins::rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    let script = w.file(
        "creds.sh",
        &format!(
            "#!/bin/sh\necho '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY}\", \
             \"SecretAccessKey\": \"{SECRET_KEY}\", \"SessionToken\": \"{}\", \
             \"Expiration\": \"{expiry}\"}}'\n",
            token_of("process")
        ),
    );
    w.file(
        ".aws/config",
        &format!(
            "[default]\nregion = ap-south-1\ncredential_process = sh {}\n",
            script.display()
        ),
    );
    w.cat_signed_by(w.cmd(&CAT), "process", "ap-south-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_through_sts() {
    let w = world().await;
    let jwt = w.file("web-identity-token", "web-identity-jwt");
    let mut c = w.cmd(&CAT);
    c.env("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt)
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pipeline")
        .env("AWS_ROLE_SESSION_NAME", "test")
        .env("AWS_ENDPOINT_URL_STS", w.standins.url())
        .env("AWS_REGION", "eu-west-3");
    w.cat_signed_by(c, "web-identity", "eu-west-3").await;
    assert_eq!(
        w.standins.log(),
        ["sts AssumeRoleWithWebIdentity of arn:aws:iam::123456789012:role/pipeline by nobody"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_with_source_profile_through_sts_and_profile_over_key_variables() {
    let w = world().await;
    w.file(
        ".aws/credentials",
        "[base]\naws_access_key_id = AKIDBASEPROFILE\naws_secret_access_key = base-secret\n",
    );
    w.file(
        ".aws/config",
        "[profile pipeline]\nrole_arn = arn:aws:iam::123456789012:role/reader\n\
         source_profile = base\nregion = sa-east-1\n",
    );
    // A named profile wins over the key variables, as with the AWS CLI.
    let mut c = w.cmd(&[&CAT[..], &["--profile", "pipeline"]].concat());
    c.env("AWS_ENDPOINT_URL_STS", w.standins.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDNOTTHISONE")
        .env("AWS_SECRET_ACCESS_KEY", "not-this-one");
    w.cat_signed_by(c, "assume-role", "sa-east-1").await;
    assert_eq!(
        w.standins.log(),
        ["sts AssumeRole of arn:aws:iam::123456789012:role/reader by AKIDBASEPROFILE"],
        "AssumeRole signed with the source profile's keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_with_a_credential_source() {
    let w = world().await;
    w.file(
        ".aws/config",
        "[profile ci]\nrole_arn = arn:aws:iam::123456789012:role/ci\n\
         credential_source = Environment\nregion = ca-central-1\n",
    );
    let mut c = w.cmd(&[&CAT[..], &["--profile", "ci"]].concat());
    c.env("AWS_ENDPOINT_URL_STS", w.standins.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENV")
        .env("AWS_SECRET_ACCESS_KEY", "env-secret");
    w.cat_signed_by(c, "assume-role", "ca-central-1").await;
    assert_eq!(
        w.standins.log(),
        ["sts AssumeRole of arn:aws:iam::123456789012:role/ci by AKIDFROMTHEENV"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_profile_with_a_cached_token() {
    let w = world().await;
    w.file(
        ".aws/config",
        "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\n\
         sso_role_name = reader\nregion = us-east-2\n\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
         sso_region = eu-west-1\n",
    );
    // What `aws sso login` leaves: the token, under the SHA-1 of the session's name.
    let cache = w.home.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    let expires = aws_standins::rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    std::fs::write(
        cache.join("ee0bfd2552fbd840c02cc48b6e823320543c450f.json"),
        format!(r#"{{"accessToken": "{SSO_TOKEN}", "expiresAt": "{expires}"}}"#),
    )
    .expect("token");
    let mut c = w.cmd(&CAT);
    c.env("AWS_PROFILE", "dev")
        .env("AWS_ENDPOINT_URL_SSO", w.standins.url());
    w.cat_signed_by(c, "sso", "us-east-2").await;
    assert_eq!(
        w.standins.log(),
        ["sso GET role_name=reader&account_id=123456789012"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_anywhere_is_a_usage_error_naming_every_way() {
    let w = world().await;
    let out = output(w.cmd(&["ls", "s3://bkt"]), None).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for way in [
        "AWS_ACCESS_KEY_ID",
        "credential_process",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "IMDS",
        "--profile",
        "--no-sign-request",
    ] {
        assert!(err.contains(way), "{way} missing from: {err}");
    }
    assert!(w.s3.requests().is_empty(), "nothing was sent to S3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_log_lines_stay_out_of_the_default_output() {
    // A config file named but missing: the AWS CLI reads it as empty, and so does the chain,
    // whose own warning about it is shown from -v on, not by default.
    let w = world().await;
    let run = |extra: &[&str]| {
        let mut c = w.cmd(&["ls", "s3://bkt"]);
        c.args(extra)
            .env("AWS_CONFIG_FILE", w.home.path().join("missing-config"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        output(c, None)
    };
    let quiet = run(&[]).await;
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "nothing but the listing"
    );
    let verbose = run(&["-v"]).await;
    assert!(verbose.status.success());
    let err = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        err.contains("WARN") && err.contains("missing-config"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_service_that_never_answers_is_given_up_on_within_seconds() {
    let w = world().await;
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        silent.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end && conns.len() < 64 {
            match silent.accept() {
                Ok((s, _)) => conns.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let mut c = w.cmd(&["ls", "s3://bkt"]);
    c.env_remove("AWS_EC2_METADATA_DISABLED").env(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://{addr}"),
    );
    let start = Instant::now();
    let out = output(c, None).await;
    let took = start.elapsed();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bound on a hang, not a speed measurement: two tries of 1 s for the region and two for
    // the credentials, with room for a slow machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_get_and_ls_follow_a_bucket_in_another_region() {
    for form in [WrongRegion::Moved, WrongRegion::Malformed] {
        let w = world().await;
        w.s3.set_bucket_region("bkt", "eu-north-1", form);
        let keys = |mut c: Command| {
            c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .args(["--max-connections", "2"]);
            c
        };
        let mut wrong = 0;
        let mut bounded = |what: &str| {
            let now = w.s3.signed_for_other_than("eu-north-1");
            assert!(
                (1..=2).contains(&(now - wrong)),
                "{form:?} {what}: {} wrongly signed requests with 2 connections",
                now - wrong
            );
            wrong = now;
        };

        let out = output(keys(w.cmd(&["ls", "s3://bkt"])), None).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            KEYS.len()
        );
        bounded("ls");

        let out = output(keys(w.cmd(&CAT)), Some(KEYS.join("\n").into_bytes())).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == w.body, "{form:?}: the bodies in order");
        bounded("cat");

        let dir = w.home.path().join("out");
        let dir_arg = dir.display().to_string();
        let out = output(keys(w.cmd(&["get", "s3://bkt", "--out", &dir_arg])), None).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (i, key) in KEYS.iter().enumerate() {
            let got = std::fs::read(dir.join(key)).expect("written");
            assert!(got == content(key, 100 + i * 5000), "{key}");
        }
        bounded("get");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_options_reach_the_server_on_every_request() {
    let w = world().await;
    let key_file = w.home.path().join("sse.key");
    std::fs::write(&key_file, [7u8; 32]).expect("key");
    let key_arg = format!("fileb://{}", key_file.display());
    let mut c = w.cmd(&[
        "cat",
        "s3://bkt",
        "--request-payer",
        "requester",
        "--expected-bucket-owner",
        "210987654321",
        "--sse-c-key",
        &key_arg,
    ]);
    c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let out = output(c, None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == w.body);
    let requests = w.s3.requests();
    assert_eq!(requests.len(), 1 + KEYS.len(), "a listing and the GETs");
    for r in requests {
        assert_eq!(r.header("x-amz-request-payer"), Some("requester"));
        assert_eq!(
            r.header("x-amz-expected-bucket-owner"),
            Some("210987654321")
        );
        let listing = r.uri.query().is_some_and(|q| q.contains("list-type=2"));
        // base64 of 32 bytes of 7.
        let key = r.header("x-amz-server-side-encryption-customer-key");
        assert_eq!(
            key,
            (!listing).then_some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
            "{}",
            r.uri
        );
    }

    for (flag, value, says) in [
        ("--sse-c-key", "short", "--sse-c-key"),
        ("--sse-c-key", "c2hvcnQ=", "32"),
        ("--expected-bucket-owner", "me", "12-digit"),
    ] {
        let mut c = w.cmd(&["ls", "s3://bkt", flag, value]);
        c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        let bad = output(c, None).await;
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_variables_are_honoured() {
    let w = world().await;
    let proxy = proxy::ProxyServer::start().await;
    let mut c = w.cmd(&CAT);
    c.env("HTTP_PROXY", proxy.url())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let out = output(c, Some(KEYS.join("\n").into_bytes())).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == w.body);
    assert!(proxy.forwards() >= 1, "went through the proxy");

    // NO_PROXY takes the endpoint off it.
    let mut c = w.cmd(&CAT);
    c.env("HTTP_PROXY", proxy.url())
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let before = proxy.forwards();
    let out = output(c, Some(KEYS.join("\n").into_bytes())).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(proxy.forwards(), before);
}
