//! The built binary under a low file descriptor limit (`ulimit -n` in a shell that then runs
//! it), against a real S3 server in this test process: more connections asked for than
//! descriptors. With the hard limit as low as the soft one, every object still comes right,
//! no attempt is spent on `EMFILE`, the listing ends, and the summary names the cap; with the
//! soft limit alone low, the program raises it and is not capped.

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

use std::process::Command;

use run::{bin, output};
use s3_server::{content, S3Server, ACCESS_KEY, SECRET_KEY};

/// More keys than one listing page, a few hundred bytes to a few KiB each.
const KEYS: usize = 1_500;
const CONNECTIONS: &str = "300";

struct Fixture {
    server: S3Server,
    home: tempfile::TempDir,
    body: Vec<u8>,
}

async fn fixture() -> Fixture {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let mut body = Vec::new();
    for i in 0..KEYS {
        let key = format!("k/{i:05}");
        let data = content(&key, 300 + i % 7 * 400);
        server.put("bkt", &key, &data);
        body.extend_from_slice(&data);
    }
    Fixture {
        server,
        home: tempfile::tempdir().expect("home"),
        body,
    }
}

impl Fixture {
    /// `bench --json` over every key under `ulimit LIMIT`: its report and its stderr.
    async fn bench(&self, limit: &str) -> (serde_json::Value, String) {
        let args = [
            "bench",
            "s3://bkt/k/",
            "--json",
            "-q",
            "--max-connections",
            CONNECTIONS,
        ];
        let out = output(self.under(limit, &args), None).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let report = serde_json::from_slice(&out.stdout).expect("json");
        (report, text(&out.stderr))
    }

    /// `s3-ordered ARGS` run by `sh` after `ulimit LIMIT` (e.g. `-n 40`, `-Sn 40`).
    fn under(&self, limit: &str, args: &[&str]) -> Command {
        let mut c = bin(self.home.path());
        c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .arg("--endpoint-url")
            .arg(format!("http://{}", self.server.addr));
        let program = c.get_program().to_owned();
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
            .arg(program)
            .args(args)
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_by_a_hard_limit_every_object_comes_right_and_the_summary_says_so() {
    let f = fixture().await;
    let limit = "-n 40";
    let cat = ["cat", "s3://bkt/k/", "--max-connections", CONNECTIONS];
    let out = output(f.under(limit, &cat), None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == f.body, "every byte, in the listing's order");
    let err = text(&out.stderr);
    assert!(
        err.contains("connections capped at") && err.contains("ulimit -n"),
        "{err}"
    );

    let (v, _) = f.bench(limit).await;
    assert_eq!((&v["objects"], &v["failed"]), (&KEYS.into(), &0.into()));
    assert_eq!(v["retries"], 0, "no attempt spent on a descriptor");
    let capped = v["connection_limit"].as_u64().unwrap();
    assert!((1..40).contains(&capped), "{capped}");
    // Connections are reused under the cap, not closed to open others.
    let opened = v["connections_opened"].as_u64().unwrap();
    assert!(
        opened < 3 * capped + 50,
        "{opened} connections opened under a cap of {capped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_limit_is_raised_to_the_hard_one() {
    let f = fixture().await;
    let (v, stderr) = f.bench("-Sn 40").await;
    assert_eq!((&v["objects"], &v["failed"]), (&KEYS.into(), &0.into()));
    assert_eq!(
        v["connection_limit"], 300,
        "the soft limit was raised: no cap"
    );
    assert!(!stderr.contains("capped"));
}
