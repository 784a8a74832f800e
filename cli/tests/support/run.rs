//! Running the built binary from an async test.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Runs `c` (with `stdin` on its standard input, if any) off the async runtime, so the
/// in-process servers keep serving, and collects its output.
pub async fn output(mut c: Command, stdin: Option<Vec<u8>>) -> Output {
    tokio::task::spawn_blocking(move || {
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(&input).expect("write stdin");
        }
        child.wait_with_output().expect("wait")
    })
    .await
    .expect("join")
}
