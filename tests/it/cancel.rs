//! Dropping streams and bodies at arbitrary points returns every slab and permit, and leaves
//! other requests on the same client untouched.

use std::time::Duration;

use futures::StreamExt;
use s3_ordered::ObjectRef;

use crate::support::{assert_quiescent, content, Mock, Reply, Seen};

/// A tiny deterministic generator, so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn reply(r: &Seen) -> Reply {
    // Sizes and delays vary by key so completions happen out of order.
    let n: usize = r
        .key
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply::ok(content(&r.key, 1000 + (n * 997) % 30_000))
        .delayed(Duration::from_micros(((n * 7919) % 3000) as u64))
}

fn objects(group: &str, n: usize) -> Vec<ObjectRef> {
    (0..n)
        .map(|i| ObjectRef::new(format!("{group}/{i}"), (1000 + (i * 997) % 30_000) as u64))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_streams_and_bodies_at_random_points_returns_everything() {
    let mock = Mock::start(reply).await;
    let client = mock
        .builder()
        .max_connections(6)
        .max_connections_per_request(4)
        .slab_size(4096)
        .max_bytes(64 * 4096)
        .build()
        .unwrap();

    // A long request on the same client runs throughout and must be unaffected.
    let bystander = {
        let client = client.clone();
        tokio::spawn(async move {
            let objs = objects("bystander", 300);
            let mut s = client.get_all("bucket", objs.clone());
            let mut i = 0;
            while let Some(item) = s.next().await {
                let obj = item.expect("bystander object failed");
                assert_eq!(obj.key, objs[i].key);
                assert!(obj.body.to_vec() == content(&obj.key, objs[i].size.unwrap() as usize));
                i += 1;
            }
            i
        })
    };

    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let group = format!("c{seed}");
        let total = 5 + rng.below(60) as usize;
        let stop_after = rng.below(total as u64 + 1) as usize;
        let mut s = client.get_all("bucket", objects(&group, total));
        let mut held = Vec::new();
        for i in 0..stop_after {
            let obj = s.next().await.expect("item").expect("ok");
            assert_eq!(obj.seq, i as u64, "seed {seed}");
            held.push(obj);
            // Keep a few bodies, drop others out of order, so memory stays available.
            if held.len() > 6 {
                let j = rng.below(held.len() as u64) as usize;
                held.swap_remove(j);
            }
        }
        if rng.below(2) == 0 {
            // Sometimes let fetches get going before the drop.
            tokio::time::sleep(Duration::from_micros(rng.below(2000))).await;
        }
        drop(s);
        while !held.is_empty() {
            let j = rng.below(held.len() as u64) as usize;
            held.swap_remove(j);
        }
    }
    assert_eq!(bystander.await.unwrap(), 300);
    assert_quiescent(&client).await;
    let stats = client.stats();
    assert!(stats.open_connections <= 6, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_unpolled_stream_cancels_its_fetches() {
    let mock = Mock::start(|r: &Seen| {
        Reply::ok(content(&r.key, 10_000)).delayed(Duration::from_millis(200))
    })
    .await;
    let client = mock.builder().max_connections(4).build().unwrap();
    let s = client.get_all(
        "bucket",
        objects("slow", 50)
            .into_iter()
            .map(|o| ObjectRef::new(o.key, 10_000)),
    );
    // Once fetches are out, drop without reading anything.
    for _ in 0..1000 {
        if client.stats().busy_connections > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(client.stats().busy_connections > 0);
    drop(s);
    assert_quiescent(&client).await;
    // Only the first wave was ever requested.
    let requests = mock
        .counts
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(requests <= 8, "{requests} requests after cancel");
}

/// Dropped while a worker is inside a poll that admits a part and would start another worker:
/// no worker may start after the drop. One that did would go on admitting and fetching, then
/// wait forever for a probe the drop cancelled, holding every result in the ring.
///
/// The first input is an error, delivered at once with no worker freed; the next key's probe
/// is slow; the key after it comes out of the input only once the stream is dropped, so the
/// drop lands inside the admitting worker's poll whatever the machine's load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_while_a_worker_admits_starts_no_worker() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mock = Mock::start(|r: &Seen| {
        Reply::ok(content(&r.key, 3000)).delayed(Duration::from_millis(300))
    })
    .await;
    // Below the budget, so admission may go on past a probe still out.
    let client = mock.builder().stream_threshold(1 << 20).build().unwrap();
    let entered = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (input_entered, input_dropped) = (Arc::clone(&entered), Arc::clone(&dropped));
    let keys = (0..6).map(move |i| match i {
        0 => Err(s3_ordered::Error::invalid_input("a bad line")),
        1 => Ok(ObjectRef::without_size("k/1")),
        _ => {
            if i == 2 {
                // Blocks the admitting worker's poll until the stream is gone (bounded).
                input_entered.store(true, Ordering::SeqCst);
                for _ in 0..500 {
                    if input_dropped.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Ok(ObjectRef::without_size(format!("k/{i}")))
        }
    });
    let mut s = client.get_stream("bucket", futures::stream::iter(keys));
    let first = s.next().await.expect("an item");
    assert!(first.is_err(), "{first:?}");
    for _ in 0..500 {
        if entered.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        entered.load(Ordering::SeqCst),
        "no worker asked for the third input"
    );
    drop(s);
    dropped.store(true, Ordering::SeqCst);
    // A worker mid-poll on another thread ends that poll, which may write a request, and
    // stops at its next await; so the count is taken once every worker is gone. Counted by
    // the client as it writes them: a request written just before may reach the server's
    // count only after.
    assert_quiescent(&client).await;
    let sent = client.stats().requests;
    assert!(
        sent <= 2,
        "{sent} requests: the first probe, and one more at most"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = client.stats();
    assert_eq!(
        stats.requests, sent,
        "requests sent after the stream was dropped"
    );
    let seen = mock
        .counts
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        seen as u64 <= sent,
        "the server saw {seen} of {sent} requests"
    );
    assert_eq!(client.stats().slabs_in_use, 0, "{:?}", client.stats());
}
