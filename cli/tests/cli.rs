//! The built binary, end to end, against a real S3 server (s3s-fs) in this test process.

#[path = "../../tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;
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
#[path = "../../tests/support/shed_server.rs"]
#[allow(dead_code)]
mod shed_server;
#[path = "support/slow_server.rs"]
mod slow_server;
#[path = "../../tests/support/tls_server.rs"]
#[allow(dead_code)]
mod tls_server;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use run::{bin, output};
use s3_server::{content, S3Server, ACCESS_KEY, SECRET_KEY};

fn with_keys(mut c: Command, secret: &str) -> Command {
    c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Fixture {
    server: S3Server,
    home: tempfile::TempDir,
    /// (key, contents) in S3's order.
    objects: Vec<(String, Vec<u8>)>,
}

async fn fixture() -> Fixture {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let mut objects = Vec::new();
    for (i, key) in [
        "pre/a.txt",
        "pre/sub/b.bin",
        "pre/sub/deeper/c.bin",
        "pre/with space.txt",
        "pre/empty",
        "pre/z-last",
        "other/x",
    ]
    .into_iter()
    .enumerate()
    {
        let data = if key.ends_with("empty") {
            Vec::new()
        } else {
            content(key, 1000 + i * 7000)
        };
        server.put("bkt", key, &data);
        objects.push((key.to_owned(), data));
    }
    objects.sort();
    Fixture {
        server,
        home: tempfile::tempdir().expect("home"),
        objects,
    }
}

impl Fixture {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = with_keys(bin(self.home.path()), SECRET_KEY);
        c.args(args)
            .args(["--endpoint-url", &format!("http://{}", self.server.addr)]);
        c
    }

    fn under(&self, prefix: &str) -> Vec<&(String, Vec<u8>)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_prints_size_and_key_in_s3_order() {
    let f = fixture().await;
    let out = output(f.cmd(&["ls", "s3://bkt/pre/"]), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: String = f
        .under("pre/")
        .iter()
        .map(|(k, d)| format!("{}\t{k}\n", d.len()))
        .collect();
    assert_eq!(text(&out.stdout), want);
    let all = output(f.cmd(&["ls", "s3://bkt"]), None).await;
    assert_eq!(text(&all.stdout).lines().count(), f.objects.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_with_a_delimiter_lists_one_level_with_common_prefixes_in_order() {
    let f = fixture().await;
    let ls = |args: &[&str]| {
        let out = f.cmd(args);
        async move {
            let out = output(out, None).await;
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        }
    };
    let size = |key: &str| f.objects.iter().find(|(k, _)| k == key).unwrap().1.len();
    let want = format!(
        "{}\tpre/a.txt\n0\tpre/empty\nPRE\tpre/sub/\n{}\tpre/with space.txt\n{}\tpre/z-last\n",
        size("pre/a.txt"),
        size("pre/with space.txt"),
        size("pre/z-last"),
    );
    assert_eq!(ls(&["ls", "s3://bkt/pre/", "--delimiter", "/"]).await, want);
    assert_eq!(
        ls(&["ls", "s3://bkt", "--delimiter", "/"]).await,
        "PRE\tother/\nPRE\tpre/\n"
    );
    let after = ls(&[
        "ls",
        "s3://bkt/pre/",
        "--delimiter",
        "/",
        "--start-after",
        "pre/empty",
    ]);
    assert!(after.await.starts_with("PRE\tpre/sub/\n"));
    // One level deeper, and a delimiter that is not a slash.
    let sub = ls(&["ls", "s3://bkt/pre/sub/", "--delimiter", "/"]).await;
    assert!(
        sub.ends_with("\tpre/sub/b.bin\nPRE\tpre/sub/deeper/\n"),
        "{sub}"
    );
    let dash = ls(&["ls", "s3://bkt/pre/", "--delimiter", "-"]).await;
    assert!(dash.contains("PRE\tpre/z-\n"), "{dash}");
    for bad in [
        &["ls", "s3://bkt/p*", "--delimiter", "/"][..],
        &["ls", "s3://bkt", "--delimiter", ""],
    ] {
        let out = output(f.cmd(bad), None).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_prefix_writes_bodies_in_listing_order() {
    let f = fixture().await;
    let out = output(
        f.cmd(&["cat", "s3://bkt/pre/", "--max-connections", "3"]),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: Vec<u8> = f
        .under("pre/")
        .iter()
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert!(out.stdout == want, "cat output differs");
    // The summary goes to stderr, the bytes alone to stdout.
    assert!(
        text(&out.stderr).contains("6 objects ok, 0 failed"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_keys_file_keeps_file_order_with_and_without_sizes() {
    let f = fixture().await;
    // Out of S3 order, one key twice, sizes on some lines only (the rest learned with HEAD).
    let order = [
        "pre/z-last",
        "pre/a.txt",
        "other/x",
        "pre/with space.txt",
        "pre/a.txt",
        "pre/empty",
    ];
    let size = |k: &str| {
        f.objects
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, d)| d.len())
            .unwrap()
    };
    let mut file = String::new();
    for (i, k) in order.iter().enumerate() {
        if i % 2 == 0 {
            file.push_str(&format!("{k}\t{}\n", size(k)));
        } else {
            file.push_str(&format!("{k}\n"));
        }
    }
    let want: Vec<u8> = order
        .iter()
        .flat_map(|k| {
            f.objects
                .iter()
                .find(|(key, _)| key == k)
                .unwrap()
                .1
                .clone()
        })
        .collect();
    let path = f.home.path().join("keys.tsv");
    std::fs::write(&path, &file).unwrap();
    let out = output(
        f.cmd(&["cat", "s3://bkt", "--keys-from", path.to_str().unwrap()]),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == want, "keys-file cat differs");
    let out = output(
        f.cmd(&["cat", "s3://bkt", "--keys-from", "-", "-q"]),
        Some(file.into_bytes()),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == want, "stdin cat differs");
    assert!(
        out.stderr.is_empty(),
        "--quiet printed {}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_and_bad_line_fail_alone_with_exit_1() {
    let f = fixture().await;
    let input = "pre/a.txt\nnope/missing\t5\npre/a.txt\tnot-a-size\npre/z-last\n";
    let out = output(
        f.cmd(&["cat", "s3://bkt", "--keys-from", "-"]),
        Some(input.into()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let want: Vec<u8> = ["pre/a.txt", "pre/z-last"]
        .iter()
        .flat_map(|k| {
            f.objects
                .iter()
                .find(|(key, _)| key == k)
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert!(out.stdout == want);
    let err = text(&out.stderr);
    assert!(
        err.contains("nope/missing") && err.contains("not found"),
        "{err}"
    );
    assert!(
        err.contains("line 3") && err.contains("not-a-size"),
        "{err}"
    );
    assert!(err.contains("2 objects ok, 2 failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_writes_the_tree_under_the_prefix() {
    let f = fixture().await;
    let out_dir = f.home.path().join("out");
    let out = output(
        f.cmd(&["get", "s3://bkt/pre/", "--out", out_dir.to_str().unwrap()]),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (key, data) in f.under("pre/") {
        let path = out_dir.join(key.strip_prefix("pre/").unwrap());
        assert!(std::fs::read(&path).unwrap() == *data, "{}", path.display());
    }
    // Exactly those files, and no temporary leftovers.
    let mut files = Vec::new();
    let mut stack = vec![out_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert_eq!(files.len(), f.under("pre/").len(), "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_refuses_keys_that_would_leave_the_directory() {
    let f = fixture().await;
    // s3s-fs serves `a//b` and `a/./b` from the file `a/b`.
    f.server.put("bkt", "trav/a/b", b"inside");
    let root = f.home.path().join("root");
    let out_dir = root.join("out");
    let keys = "trav/a/b\ntrav/a//b\ntrav/a/./b\n../escape\n/abs\n";
    let out = output(
        f.cmd(&[
            "get",
            "s3://bkt",
            "--keys-from",
            "-",
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        Some(keys.into()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("trav/a//b") && err.contains("empty path segment"),
        "{err}"
    );
    assert!(
        err.contains("trav/a/./b") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(std::fs::read(out_dir.join("trav/a/b")).unwrap(), b"inside");
    // Nothing beside the output directory.
    let beside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("out")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_exit_1_with_the_reason() {
    let f = fixture().await;
    let mut c = with_keys(bin(f.home.path()), "wrong-secret");
    c.args(["cat", "s3://bkt", "--keys-from", "-"])
        .args(["--endpoint-url", &format!("http://{}", f.server.addr)]);
    let out = output(c, Some(b"pre/a.txt\t1000\n".to_vec())).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("pre/a.txt") && err.contains("access denied") && err.contains("403"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "secret leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_sizes_exit_2_with_one_line() {
    let f = fixture().await;
    let cases: &[&[&str]] = &[
        &["cat", "s3://bkt", "--max-bytes", "12parsecs"],
        &["cat", "bkt/no-scheme"],
        &["cat", "s3://bkt", "--max-connections", "0"],
        &[
            "cat",
            "s3://bkt",
            "--max-connections",
            "4",
            "--max-connections-per-request",
            "5",
        ],
        &[
            "cat",
            "s3://bkt",
            "--max-connections",
            "64",
            "--max-bytes",
            "1MiB",
        ],
        &["cat", "s3://bkt", "--profile", "no-such-profile"],
        &["cat", "s3://bkt/prefix", "--keys-from", "-"],
        &["cat", "s3://bkt", "--keys-from", "/no/such/file"],
        &["get", "s3://bkt"],
        &["ls"],
        &["cat", "s3://bkt", "--hedge-quantile", "1"],
        &["cat", "s3://bkt", "--hedge-factor", "0.5"],
        &["cat", "s3://bkt", "--hedge-budget", "2"],
        &["cat", "s3://bkt", "--body-rate-window", "0.01"],
    ];
    for args in cases {
        let out = output(f.cmd(args), None).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: no reason");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_into_a_closed_pipe_exits_0() {
    let f = fixture().await;
    for i in 0..40 {
        f.server
            .put("bkt", &format!("big/{i:02}"), &content("big", 256 << 10));
    }
    let mut c = f.cmd(&["cat", "s3://bkt/big/", "--max-connections", "2", "-q"]);
    let status = tokio::task::spawn_blocking(move || {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 10];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        drop(child.stdout.take()); // like `| head -c 10`
        let out = child.wait_with_output().unwrap();
        (out.status, text(&out.stderr))
    })
    .await
    .unwrap();
    assert!(status.0.success(), "status {:?}: {}", status.0, status.1);
    assert!(status.1.is_empty(), "{}", status.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_profile_files() {
    let f = fixture().await;
    let aws = f.home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\n\
             [bad]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = nope\n"
        ),
    )
    .unwrap();
    std::fs::write(aws.join("config"), "[default]\nregion = us-east-1\n").unwrap();
    let endpoint = format!("http://{}", f.server.addr);
    let run = |extra: &[&str], env: &[(&str, String)]| {
        let mut c = bin(f.home.path());
        c.args(["ls", "s3://bkt/pre/", "--endpoint-url", &endpoint])
            .args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        output(c, None)
    };
    assert_eq!(
        run(&[], &[]).await.status.code(),
        Some(0),
        "[default] profile"
    );
    assert_eq!(run(&["--profile", "bad"], &[]).await.status.code(), Some(1));
    assert_eq!(
        run(&[], &[("AWS_PROFILE", "bad".into())])
            .await
            .status
            .code(),
        Some(1)
    );
    // An explicit file location wins over ~/.aws.
    let elsewhere = f.home.path().join("creds-elsewhere");
    std::fs::write(
        &elsewhere,
        format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = nope\n"),
    )
    .unwrap();
    let out = run(
        &[],
        &[(
            "AWS_SHARED_CREDENTIALS_FILE",
            elsewhere.display().to_string(),
        )],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // No credentials anywhere: a usage error that says what to do.
    std::fs::remove_file(aws.join("credentials")).unwrap();
    let out = run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--no-sign-request"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_json() {
    let f = fixture().await;
    let out = output(f.cmd(&["bench", "s3://bkt/pre/", "--json", "-q"]), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["objects"], 6);
    assert_eq!(v["failed"], 0);
    let bytes: u64 = f.under("pre/").iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(v["bytes"], bytes);
    assert!(v["cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(v["stale_connections"], 0);
    // The same on hyper's HTTP/1.1.
    let args = [
        "bench",
        "s3://bkt/pre/",
        "--json",
        "-q",
        "--transport",
        "hyper",
    ];
    let on_hyper = output(f.cmd(&args), None).await;
    assert!(on_hyper.status.success(), "{}", text(&on_hyper.stderr));
    let h: serde_json::Value = serde_json::from_slice(&on_hyper.stdout).expect("json");
    assert_eq!((&h["objects"], &h["bytes"]), (&v["objects"], &v["bytes"]));
    let text_out = output(f.cmd(&["bench", "s3://bkt/pre/", "-q"]), None).await;
    assert!(
        text(&text_out.stdout).starts_with("objects 6  failed 0"),
        "{}",
        text(&text_out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_never_writes_an_object_whose_checksum_fails() {
    let f = fixture().await;
    // Stored with their checksums, then one byte changed on disk behind the server's back:
    // a small object (one GET) and one that streams in parts.
    let small = content("ck/small", 5000);
    let big = content("ck/big", 3 << 20);
    f.server
        .put_with_checksum("bkt", "ck/small", &small, "CRC64NVME")
        .await;
    f.server
        .put_with_checksum("bkt", "ck/big", &big, "SHA256")
        .await;
    f.server
        .put_with_checksum("bkt", "ck/good", &small, "CRC32C")
        .await;
    for (key, data) in [("ck/small", &small), ("ck/big", &big)] {
        let mut bad = data.clone();
        bad[data.len() / 2] ^= 1;
        f.server.put("bkt", key, &bad);
    }
    let out_dir = f.home.path().join("ck-out");
    let budget = [
        "--max-connections",
        "4",
        "--max-bytes",
        "1MiB",
        "--part-size",
        "256KiB",
    ];
    let mut cmd = f.cmd(&["get", "s3://bkt/ck/", "--out", out_dir.to_str().unwrap()]);
    cmd.args(budget);
    let out = output(cmd, None).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ck/small") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(err.contains("ck/big") && err.contains("SHA256"), "{err}");
    assert!(
        err.contains("checksums: 1 verified, 0 unavailable"),
        "{err}"
    );
    // Only the good object, and no temporary file.
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["good"], "{err}");
    assert!(std::fs::read(out_dir.join("good")).unwrap() == small);

    // In a tar stream, the streaming object whose checksum fails after its bytes went out ends
    // the stream there: no padding, no end-of-archive blocks, so no reader takes it as whole.
    let mut cmd = f.cmd(&["cat", "s3://bkt/ck/", "--format", "tar"]);
    cmd.args(budget);
    let out = output(cmd, None).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the tar stream ends at \"ck/big\""), "{err}");
    assert_eq!(out.stdout.len(), 512 + big.len(), "{err}");
    assert_eq!(&out.stdout[..6], b"ck/big");

    // With checksums off the same bytes are written, unchecked.
    let off_dir = f.home.path().join("ck-off");
    let mut cmd = f.cmd(&["get", "s3://bkt/ck/", "--out", off_dir.to_str().unwrap()]);
    cmd.args(budget).args(["--checksum-mode", "off"]);
    let out = output(cmd, None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("checksums:"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&off_dir).unwrap().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_stream_through_cat_get_and_bench_in_parts() {
    let f = fixture().await;
    let huge = content("big/huge", 3 << 20);
    f.server.put("bkt", "big/huge", &huge);
    f.server.put("bkt", "big/small", b"tail");
    // A 1 MiB budget: the 3 MiB object can only stream, in 256 KiB parts.
    let budget = [
        "--max-connections",
        "4",
        "--max-bytes",
        "1MiB",
        "--part-size",
        "256KiB",
    ];
    let cmd = |args: &[&str]| {
        let mut c = f.cmd(args);
        c.args(budget);
        c
    };
    let mut both = huge.clone();
    both.extend_from_slice(b"tail");

    let out = output(cmd(&["cat", "s3://bkt/big/", "-q"]), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == both, "cat wrote {} bytes", out.stdout.len());

    let out_dir = f.home.path().join("big-out");
    let out = output(
        cmd(&[
            "get",
            "s3://bkt/big/",
            "--out",
            out_dir.to_str().unwrap(),
            "-q",
        ]),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(out_dir.join("huge")).unwrap() == huge);
    assert_eq!(std::fs::read(out_dir.join("small")).unwrap(), b"tail");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        2,
        "no leftovers"
    );

    // Keys without sizes: the first GET of each learns it, with no HEAD for the size; the
    // object fetched in parts costs one HEAD for its checksum (it has none here).
    let out = output(
        cmd(&["bench", "s3://bkt", "--keys-from", "-", "--json", "-q"]),
        Some(b"big/huge\nbig/small\n".to_vec()),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["objects"], 2);
    assert_eq!(v["bytes"], (3 << 20) + 4);
    assert_eq!(v["parts"], 12 + 1);
    assert_eq!(v["checksum_heads"], 1);
    assert_eq!(v["requests"], 12 + 1 + 1);
    assert_eq!(
        (&v["checksums_verified"], &v["checksums_unavailable"]),
        (&0.into(), &2.into())
    );
}

#[test]
fn demo_fetches_and_verifies_every_object() {
    let home = tempfile::tempdir().unwrap();
    let out = bin(home.path())
        .args([
            "demo",
            "--objects",
            "300",
            "--max-connections",
            "4",
            "--max-bytes",
            "4MiB",
        ])
        .output()
        .expect("run demo");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("fetched 300 objects in input order"),
        "{stdout}"
    );
    assert!(stdout.contains("verified 300 ok, 0 failed"), "{stdout}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let home = tempfile::tempdir().unwrap();
    for cmd in ["ls", "cat", "get", "bench", "demo"] {
        let out = bin(home.path()).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("Example"),
            "{cmd} --help has no example:\n{help}"
        );
    }
}

/// `cat` with 32 connections from a server that takes 2 requests at once (503 SlowDown above):
/// every object arrives, `-v` shows the limit coming down, and the summary counts the throttling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_slows_down_to_what_a_throttling_server_accepts() {
    const LEN: usize = 2000;
    let server = shed_server::ShedServer::start(2, std::time::Duration::from_millis(2), LEN).await;
    let home = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k/{i:04}")).collect();
    let list = home.path().join("keys.tsv");
    let lines: String = keys.iter().map(|k| format!("{k}\t{LEN}\n")).collect();
    std::fs::write(&list, lines).unwrap();
    let endpoint = format!("http://{}", server.addr);
    let cat = |extra: &[&str]| {
        let mut c = with_keys(bin(home.path()), SECRET_KEY);
        c.args(["cat", "s3://bkt", "--keys-from"])
            .arg(&list)
            .args(["--endpoint-url", &endpoint, "--max-connections", "32"])
            .args(extra)
            .env_remove("RUST_LOG");
        c
    };

    let out = output(cat(&["-v"]), None).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let want: Vec<u8> = keys.iter().flat_map(|k| content(k, LEN)).collect();
    assert!(out.stdout == want, "the bodies, in order");
    assert!(
        err.contains("throttled: concurrency limit lowered"),
        "{err}"
    );
    assert!(!err.contains("GET sent"), "-v is not -vv: {err}");
    assert!(err.contains("300 objects ok, 0 failed"), "{err}");
    let throttled = server.throttled_and_requests().0;
    assert!(throttled > 0);
    assert!(err.contains(&format!("{throttled} throttled")), "{err}");

    // RUST_LOG instead of -v: every request.
    let mut c = cat(&["--quiet"]);
    c.env("RUST_LOG", "s3_ordered=debug");
    let out = output(c, None).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("GET sent") && err.contains("connection opened"),
        "{err}"
    );
    assert!(!err.contains(SECRET_KEY), "{err}");
}

/// Starts `s3-ordered serve` over `root` (with `extra` flags) and reads the URL it prints,
/// which must start with `scheme://127.0.0.1:`.
async fn serve(
    home: &Path,
    root: &Path,
    extra: &[&std::ffi::OsStr],
    scheme: &str,
) -> (Serving, String) {
    use std::io::BufRead as _;

    let mut c = bin(home);
    c.args(["serve", "--addr", "127.0.0.1:0", "--access-key", ACCESS_KEY])
        .args(["--secret-key", SECRET_KEY, "--root"])
        .arg(root)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = Serving(c.spawn().expect("spawn serve"));
    let stdout = server.0.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let prefix = format!("{scheme}://127.0.0.1:");
    let url = first
        .split_whitespace()
        .last()
        .filter(|u| u.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {scheme} address in {first:?}"))
        .to_owned();
    (server, url)
}

/// Kills the server process when the test ends, however it ends.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_makes_a_directory_an_s3_endpoint() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("served/deep")).unwrap();
    std::fs::write(root.path().join("served/a.txt"), b"first\n").unwrap();
    std::fs::write(root.path().join("served/deep/b.txt"), b"second\n").unwrap();

    // Without keys the server refuses to start, and says how to give them.
    let refused = output(
        {
            let mut c = bin(home.path());
            c.args(["serve", "--root"]).arg(root.path());
            c
        },
        None,
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("--access-key"),
        "{refused:?}"
    );

    let (_server, url) = serve(home.path(), root.path(), &[], "http").await;

    let mut cat = with_keys(bin(home.path()), SECRET_KEY);
    cat.args(["cat", "s3://served/", "--endpoint-url", &url]);
    let out = output(cat, None).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "first\nsecond\n");

    // SigV4 is checked: a wrong secret is refused.
    let mut cat = with_keys(bin(home.path()), "not-the-secret");
    cat.args(["cat", "s3://served/a.txt", "--endpoint-url", &url]);
    let out = output(cat, None).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("403"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_from_flag_variable_or_profile() {
    use tls_server::{Ca, Leaf, TlsServer, SIZE};

    let ca = Ca::new();
    let server = TlsServer::start(&ca, Leaf::Good).await;
    let home = tempfile::tempdir().unwrap();
    let bundle = home.path().join("ca.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();
    let url = server.url();
    let cat = |extra: &[&str]| {
        let mut c = with_keys(bin(home.path()), SECRET_KEY);
        c.args([
            "cat",
            "s3://bucket",
            "--keys-from",
            "-",
            "--endpoint-url",
            &url,
        ]);
        c.args(extra);
        c
    };
    let expected = content("k1", SIZE);
    let keys = format!("k1\t{SIZE}\n").into_bytes();

    // Without the CA: refused at once, with the reason and the fix.
    let out = output(cat(&[]), Some(keys.clone())).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown issuer") && err.contains("--ca-bundle"),
        "{err}"
    );
    assert!(
        !err.contains("attempts"),
        "a TLS failure is not retried: {err}"
    );

    // --ca-bundle
    let out = output(
        cat(&["--ca-bundle", bundle.to_str().unwrap()]),
        Some(keys.clone()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout == expected);

    // AWS_CA_BUNDLE
    let mut c = cat(&[]);
    c.env("AWS_CA_BUNDLE", &bundle);
    let out = output(c, Some(keys.clone())).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout == expected);

    // The profile's ca_bundle, as the AWS CLI reads it.
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        format!("[default]\nca_bundle = {}\n", bundle.display()),
    )
    .unwrap();
    let out = output(cat(&[]), Some(keys.clone())).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout == expected);
    std::fs::remove_file(aws.join("config")).unwrap();

    // --no-verify-ssl works, and says what it gives up, every time.
    for _ in 0..2 {
        let out = output(cat(&["--no-verify-ssl"]), Some(keys.clone())).await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(out.stdout == expected);
        assert!(
            text(&out.stderr).contains("warning: --no-verify-ssl"),
            "{out:?}"
        );
    }

    // A bundle that is not one is a configuration error (exit 2).
    let out = output(
        cat(&["--ca-bundle", "/nonexistent/ca.pem"]),
        Some(keys.clone()),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("ca_bundle"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_with_a_given_certificate() {
    let ca = certs::Ca::new();
    let (cert, key) = ca.leaf_pem(certs::Leaf::Good);
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("secure")).unwrap();
    std::fs::write(root.path().join("secure/a.txt"), b"over tls\n").unwrap();
    let pem = |name: &str, text: &str| {
        let path = home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert, key, ca_file) = (
        pem("cert.pem", &cert),
        pem("key.pem", &key),
        pem("ca.pem", &ca.pem),
    );

    let flags = [
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ];
    let (_server, url) = serve(home.path(), root.path(), &flags, "https").await;

    let mut cat = with_keys(bin(home.path()), SECRET_KEY);
    cat.args([
        "cat",
        "s3://secure/a.txt",
        "--endpoint-url",
        &url,
        "--ca-bundle",
    ])
    .arg(&ca_file);
    let out = output(cat, None).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "over tls\n");
}

/// The object GETs the server has seen (not listings), by path.
fn object_gets(server: &S3Server) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == hyper::Method::GET && r.uri.path() != "/bkt/")
        .map(|r| r.uri.path().to_owned())
        .collect()
}

/// The files under `dir`, relative, sorted; temporary ones included.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_owned();
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_with_skip_existing_sends_nothing_for_what_is_there() {
    let f = fixture().await;
    let out_dir = f.home.path().join("out");
    let dir = out_dir.to_str().unwrap();
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "s3://bkt/pre/", "--out", dir];
        args.extend_from_slice(extra);
        output(f.cmd(&args), None)
    };
    let out = get(&[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = object_gets(&f.server).len();
    assert_eq!(all, f.under("pre/").len());

    // Everything there: no object GET at all.
    let out = get(&["--skip-existing"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(object_gets(&f.server).len(), all, "a GET was sent");
    let skipped = format!("{} skipped", f.under("pre/").len());
    assert!(
        text(&out.stderr).contains(&skipped),
        "{}",
        text(&out.stderr)
    );

    // One file cut short, one removed, a leftover temporary file: those two are fetched,
    // and the leftover of a skipped file is gone.
    std::fs::write(out_dir.join("sub/b.bin"), b"short").unwrap();
    std::fs::remove_file(out_dir.join("a.txt")).unwrap();
    std::fs::write(out_dir.join("sub/deeper/.c.bin.s3-ordered.tmp"), b"left").unwrap();
    for flag in ["--skip-existing", "--if-size-differ"] {
        let before = object_gets(&f.server).len();
        let out = get(&[flag]).await;
        assert!(out.status.success(), "{flag}: {}", text(&out.stderr));
        // Concurrent GETs reach the server in any order.
        let mut sent = object_gets(&f.server)[before..].to_vec();
        sent.sort();
        if flag == "--skip-existing" {
            assert_eq!(sent, ["/bkt/pre/a.txt", "/bkt/pre/sub/b.bin"], "{flag}");
        } else {
            assert!(sent.is_empty(), "{flag}: {sent:?}");
        }
        for (key, data) in f.under("pre/") {
            let path = out_dir.join(key.strip_prefix("pre/").unwrap());
            assert!(std::fs::read(&path).unwrap() == *data, "{}", path.display());
        }
        assert!(
            !files_under(&out_dir).iter().any(|f| f.ends_with(".tmp")),
            "{:?}",
            files_under(&out_dir)
        );
    }

    // A keys file without sizes: --skip-existing keeps any file there, --if-size-differ
    // fetches what it cannot compare.
    let keys = f.home.path().join("keys.txt");
    std::fs::write(&keys, "pre/a.txt\npre/z-last\n").unwrap();
    let keyed_dir = f.home.path().join("keyed");
    std::fs::create_dir_all(keyed_dir.join("pre")).unwrap();
    std::fs::write(keyed_dir.join("pre/a.txt"), b"mine").unwrap();
    for (flag, want) in [("--skip-existing", 1), ("--if-size-differ", 2)] {
        let before = object_gets(&f.server).len();
        let out = output(
            f.cmd(&[
                "get",
                "s3://bkt",
                "--keys-from",
                keys.to_str().unwrap(),
                "--out",
                keyed_dir.to_str().unwrap(),
                flag,
            ]),
            None,
        )
        .await;
        assert!(out.status.success(), "{flag}: {}", text(&out.stderr));
        assert_eq!(object_gets(&f.server).len() - before, want, "{flag}");
    }
    let out = get(&["--skip-existing", "--if-size-differ"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_after_and_skip_go_on_exactly_after_the_last_key() {
    let f = fixture().await;
    let objects = f.under("pre/");
    for i in 0..objects.len() {
        let after = objects[i].0.as_str();
        let out = output(
            f.cmd(&["cat", "s3://bkt/pre/", "--start-after", after]),
            None,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let want: Vec<u8> = objects[i + 1..]
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert!(out.stdout == want, "after {after:?}");
        let out = output(
            f.cmd(&["ls", "s3://bkt/pre/", "--start-after", after]),
            None,
        )
        .await;
        let listed: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap().to_owned())
            .collect();
        let want: Vec<&String> = objects[i + 1..].iter().map(|(k, _)| k).collect();
        assert_eq!(listed.iter().collect::<Vec<_>>(), want);
    }
    // A keys file, in its own order, a bad line counting as one.
    let keys = f.home.path().join("keys.txt");
    std::fs::write(
        &keys,
        "pre/z-last\npre/a.txt\tbig\npre/a.txt\n\npre/sub/b.bin\n",
    )
    .unwrap();
    let body = |k: &str| {
        f.objects
            .iter()
            .find(|(key, _)| key == k)
            .unwrap()
            .1
            .clone()
    };
    for (skip, want) in [
        ("1", [body("pre/a.txt"), body("pre/sub/b.bin")].concat()),
        ("2", [body("pre/a.txt"), body("pre/sub/b.bin")].concat()),
        ("3", body("pre/sub/b.bin")),
        ("4", Vec::new()),
        ("99", Vec::new()),
    ] {
        let out = output(
            f.cmd(&[
                "cat",
                "s3://bkt",
                "--keys-from",
                keys.to_str().unwrap(),
                "--skip",
                skip,
            ]),
            None,
        )
        .await;
        assert!(out.stdout == want, "--skip {skip}");
        // The bad line (item 1) fails the run when it is not passed over.
        let code = if skip == "1" { 1 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(code),
            "--skip {skip}: {}",
            text(&out.stderr)
        );
    }
    let out = output(
        f.cmd(&[
            "cat",
            "s3://bkt",
            "--keys-from",
            keys.to_str().unwrap(),
            "--start-after",
            "x",
        ]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--skip"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_get_leaves_no_temporary_file_and_a_rerun_completes_the_tree() {
    const SIZES: [(&str, usize); 3] = [("fast/a", 20_000), ("fast/b", 30_000), ("slow/c", 600_000)];
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let server = slow_server::SlowServer::start(&SIZES).await;
        let home = tempfile::tempdir().unwrap();
        let keys = home.path().join("keys.txt");
        let lines: String = SIZES.iter().map(|(k, n)| format!("{k}\t{n}\n")).collect();
        std::fs::write(&keys, lines).unwrap();
        let out_dir = home.path().join("out");
        let cmd = |extra: &[&str]| {
            let mut c = with_keys(bin(home.path()), SECRET_KEY);
            c.args(["get", "s3://bkt", "--keys-from", keys.to_str().unwrap()])
                .args(["--out", out_dir.to_str().unwrap(), "--max-bytes", "256KiB"])
                .args([
                    "--max-connections",
                    "2",
                    "--checksum-mode",
                    "off",
                    "--quiet",
                ])
                .args(["--endpoint-url", &format!("http://{}", server.addr)])
                .args(extra);
            c
        };
        // Started, and stopped while the large object is written part by part.
        let mut child = cmd(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tmp = out_dir.join("slow/.c.s3-ordered.tmp");
        let mut waited = 0;
        while !(tmp.exists() && out_dir.join("fast/b").exists()) {
            assert!(waited < 2000, "the large object was never being written");
            assert!(
                child.try_wait().unwrap().is_none(),
                "it ended before it was stopped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        // SAFETY: kill(2) with the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let done = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), done)
            .await
            .expect("it did not stop")
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{stderr}");
        let name = if signal == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        assert!(stderr.contains(&format!("stopped by {name}")), "{stderr}");
        assert!(
            stderr.contains("\"fast/b\" (item 1 of the input") && stderr.contains("--skip 2"),
            "{stderr}"
        );
        assert_eq!(files_under(&out_dir), ["fast/a", "fast/b"], "{stderr}");

        // The rerun sends nothing for what is there and completes the tree.
        server
            .slow
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let out = output(cmd(&["--skip-existing"]), None).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!((server.gets_of("fast/a"), server.gets_of("fast/b")), (1, 1));
        assert_eq!(files_under(&out_dir), ["fast/a", "fast/b", "slow/c"]);
        for (key, n) in SIZES {
            let bytes = std::fs::read(out_dir.join(key)).unwrap();
            assert!(bytes == content(key, n), "{key}");
        }
    }
}

/// The model of glob matching the tests hold the binary to: a translation to a regular
/// expression, written apart from the binary's matcher.
fn glob_model(glob: &str) -> regex::Regex {
    let mut re = String::from("(?s)^");
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '\\' => re.push_str(&regex::escape(&chars.next().unwrap().to_string())),
            '[' => {
                re.push('[');
                let mut first = true;
                for c in chars.by_ref() {
                    match c {
                        '!' | '^' if first => re.push('^'),
                        ']' if !first => break,
                        '-' => re.push('-'),
                        c => re.push_str(&regex::escape(&c.to_string())),
                    }
                    first = false;
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_select_what_the_model_matches_in_listing_order() {
    let server = S3Server::start().await;
    server.create_bucket("bkt");
    let mut keys = vec![
        "logs/a.json",
        "logs/2024/01/b.json",
        "logs/2024/01/b.json.gz",
        "logs/2024/02/c.json",
        "logs/[x].json",
        "logs/x.json",
        "logs/*.json",
        "logs/?.json",
        "logs/é ü.json",
        "logs/with space.json",
        "logs/.json",
        "logs/a\\b.json",
        "logs/f1X",
        "logs/f1x",
        "logs/]",
        "logsa.json",
        "other/a.json",
    ];
    keys.sort_unstable();
    for (i, key) in keys.iter().enumerate() {
        server.put("bkt", key, &content(key, 100 + i * 37));
    }
    let f = Fixture {
        server,
        home: tempfile::tempdir().expect("home"),
        objects: keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), content(k, 100 + i * 37)))
            .collect(),
    };
    for glob in [
        "logs/*.json",
        "logs/**",
        "logs/?.json",
        "logs/[x].json",
        "logs/\\[x\\].json",
        "logs/*/*/b.json*",
        "logs*",
        "logs/[!a-z]*",
        "*.gz",
        "logs/f1[A-Z]",
        "logs/\\*.json",
        "logs/*\\\\*",
        "logs/[]]",
        "*/?.json",
        "logs?a.json",
        "nothing*",
    ] {
        let model = glob_model(glob);
        let want: Vec<&str> = keys.iter().copied().filter(|k| model.is_match(k)).collect();
        let out = output(f.cmd(&["ls", &format!("s3://bkt/{glob}")]), None).await;
        assert!(out.status.success(), "{glob}: {}", text(&out.stderr));
        let listed: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| l.split_once('\t').unwrap().1.to_owned())
            .collect();
        assert_eq!(listed, want, "ls {glob:?}");
    }
    // cat takes the same selection, bodies in listing order.
    let glob = "logs/*.json";
    let model = glob_model(glob);
    let out = output(f.cmd(&["cat", &format!("s3://bkt/{glob}")]), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: Vec<u8> = f
        .objects
        .iter()
        .filter(|(k, _)| model.is_match(k))
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert!(out.stdout == want, "cat {glob:?}");
    // get writes each key relative to the glob's literal directory.
    let dir = f.home.path().join("out");
    let out = output(
        f.cmd(&[
            "get",
            "s3://bkt/logs/2024/*.json",
            "--out",
            dir.to_str().unwrap(),
        ]),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(files_under(&dir), ["01/b.json", "02/c.json"]);
    // A malformed glob is a usage error.
    let out = output(f.cmd(&["ls", "s3://bkt/logs/[ab"]), None).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not closed"),
        "{}",
        text(&out.stderr)
    );
    // --raw takes the path as a plain prefix.
    let out = output(f.cmd(&["ls", "s3://bkt/logs/[ab", "--raw"]), None).await;
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        text(&out.stderr)
    );
    let raw = output(f.cmd(&["cat", "s3://bkt/logs/[x]", "--raw"]), None).await;
    assert!(raw.status.success(), "{}", text(&raw.stderr));
    let x = f
        .objects
        .iter()
        .find(|(k, _)| k == "logs/[x].json")
        .unwrap();
    assert!(raw.stdout == x.1, "cat --raw");
}
