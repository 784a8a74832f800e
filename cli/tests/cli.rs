//! The built binary, end to end.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_s3-ordered"))
}

#[test]
fn demo_fetches_and_verifies_every_object() {
    let out = bin()
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fetched 300 objects in input order"),
        "{stdout}"
    );
    assert!(stdout.contains("verified 300 ok, 0 failed"), "{stdout}");
    assert!(stdout.contains("peak open connections"), "{stdout}");
}

#[test]
fn bad_flags_exit_2_with_a_one_line_reason() {
    for args in [
        &["demo", "--max-bytes", "12parsecs"][..],
        &["demo", "--max-connections", "64", "--max-bytes", "1MiB"],
        &["demo", "--max-connections", "0"],
        &["no-such-command"],
    ] {
        let out = bin().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: no reason given");
    }
    let out = bin()
        .args(["demo", "--max-connections", "64", "--max-bytes", "1MiB"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid max_bytes"), "{stderr}");
}
