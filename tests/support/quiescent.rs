//! The check every test ends with: the client gives back every slab, connection unit and slot
//! under its concurrency limit.

use std::time::Duration;

use s3_ordered::Client;

/// Waits (at most 5 s) until `client` holds no slab, connection unit or limiter slot; panics with
/// `context` and the stats otherwise.
pub async fn assert_quiescent_for(client: &Client, context: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = client.stats();
        if s.slabs_in_use == 0 && s.busy_connections == 0 && s.requests_in_flight == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{context}: resources still held: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// [`assert_quiescent_for`] without a context.
pub async fn assert_quiescent(client: &Client) {
    assert_quiescent_for(client, "after the test").await;
}
