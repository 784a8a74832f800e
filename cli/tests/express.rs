//! The built binary against a directory bucket (S3 Express One Zone): a stand-in in this test
//! process that checks sessions and signatures as S3 Express does, with no option beyond an
//! ordinary bucket's; what a directory bucket cannot list refused up front; the zonal endpoint
//! reached through `HTTPS_PROXY` when no endpoint is given.

#[path = "../../tests/support/express_server.rs"]
#[allow(dead_code)]
mod express_server;
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

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use express_server::{ExpressOptions, ExpressServer, EXPRESS_BUCKET};
use run::output;
use s3_server::{content, ACCESS_KEY, SECRET_KEY};

/// The binary with a clean environment and the stand-in's base keys.
fn bin(home: &Path) -> Command {
    let mut c = run::bin(home);
    c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Objects `d/NN` of a few KiB and one of 3 MiB.
fn objects() -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| {
            let key = format!("d/{i:02}");
            let body = content(&key, 1000 + i * 311);
            (key, body)
        })
        .collect();
    all.push(("e/big".into(), content("e/big", 3 << 20)));
    all
}

struct Fixture {
    server: ExpressServer,
    home: tempfile::TempDir,
    objects: Vec<(String, Vec<u8>)>,
}

impl Fixture {
    async fn start(options: ExpressOptions) -> Self {
        let objects = objects();
        Fixture {
            server: ExpressServer::start(objects.clone(), options).await,
            home: tempfile::tempdir().expect("home"),
            objects,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin(self.home.path());
        c.args(args).args(["--endpoint-url", &self.server.url()]);
        c
    }

    /// The stand-in's listing order under `prefix`: keys reversed.
    fn listed(&self, prefix: &str) -> Vec<&(String, Vec<u8>)> {
        let mut v: Vec<_> = self
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        v.reverse();
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_cat_get_and_bench_work_on_a_directory_bucket_as_on_any_other() {
    let f = Fixture::start(ExpressOptions::default()).await;
    let url = format!("s3://{EXPRESS_BUCKET}/d/");

    let ls = output(f.cmd(&["ls", &url]), None).await;
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let want: String = f
        .listed("d/")
        .iter()
        .map(|(k, d)| format!("{}\t{k}\n", d.len()))
        .collect();
    assert_eq!(text(&ls.stdout), want, "the server's order, not sorted");

    let cat = output(f.cmd(&["cat", &format!("s3://{EXPRESS_BUCKET}/")]), None).await;
    assert!(cat.status.success(), "{}", text(&cat.stderr));
    let want: Vec<u8> = f.listed("").iter().flat_map(|(_, d)| d.clone()).collect();
    assert!(cat.stdout == want, "bodies in the listing's order");

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let get = output(f.cmd(&["get", &url, "--out", dest]), None).await;
    assert!(get.status.success(), "{}", text(&get.stderr));
    for (k, d) in f.listed("d/") {
        let path = dir.path().join(k.trim_start_matches("d/"));
        assert!(std::fs::read(&path).unwrap() == *d, "{k}");
    }

    let bench = output(f.cmd(&["bench", &url, "--json", "-q"]), None).await;
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let v: serde_json::Value = serde_json::from_slice(&bench.stdout).expect("json");
    assert_eq!((&v["objects"], &v["failed"]), (&30.into(), &0.into()));
    assert_eq!(v["sessions_created"], 1, "one session for the whole run");

    assert!(f.server.bad().is_empty(), "{:?}", f.server.bad());
    // One session per run: ls, cat, get, bench.
    assert_eq!(f.server.counts().sessions.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_after_is_refused_for_a_directory_bucket() {
    let f = Fixture::start(ExpressOptions::default()).await;
    let url = format!("s3://{EXPRESS_BUCKET}/d/");
    for cmd in ["ls", "cat"] {
        let out = output(f.cmd(&[cmd, &url, "--start-after", "d/05"]), None).await;
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("directory bucket") && err.contains("--skip"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(f.server.counts().served.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_s3_express_session_signs_with_the_keys_themselves() {
    let options = ExpressOptions {
        direct: true,
        ..ExpressOptions::default()
    };
    let f = Fixture::start(options).await;
    let url = format!("s3://{EXPRESS_BUCKET}/d/");
    let out = output(f.cmd(&["cat", &url, "--no-s3-express-session"]), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: Vec<u8> = f.listed("d/").iter().flat_map(|(_, d)| d.clone()).collect();
    assert!(out.stdout == want);
    assert!(f.server.bad().is_empty(), "{:?}", f.server.bad());
    // Without the flag, this server has no CreateSession: the listing fails, naming it.
    let out = output(f.cmd(&["ls", &url]), None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("could not create an S3 Express session"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_endpoint_the_zonal_endpoint_is_reached_through_https_proxy() {
    // A proxy that records each CONNECT target and refuses it: nothing leaves the machine.
    let (addr, targets) = proxy::refusing().await;
    let home = tempfile::tempdir().unwrap();
    let mut c = bin(home.path());
    c.env("AWS_REGION", "us-west-2")
        .env("HTTPS_PROXY", format!("http://{addr}"))
        .args(["cat", "s3://data--usw2-az1--x-s3/k"]);
    let out = output(c, None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let targets = targets.lock().unwrap().clone();
    let want =
        "CONNECT data--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443 HTTP/1.1";
    assert!(!targets.is_empty());
    assert!(targets.iter().all(|t| t == want), "{targets:?}");
}
