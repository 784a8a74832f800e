//! A bucket in another region than the client's: the first replies name the region (both of
//! S3's forms), the client learns it once, sends the refused requests again, and no object
//! fails. Wrongly signed requests are bounded by the connections in flight, not by the keys.

use futures::StreamExt;
use s3_ordered::{ErrorKind, ObjectRef};

use crate::s3_server::WrongRegion;
use crate::support::{content, S3Server};

const CONNECTIONS: usize = 8;

async fn server(form: WrongRegion) -> (S3Server, Vec<String>) {
    let server = S3Server::start().await;
    let keys: Vec<String> = (0..200).map(|i| format!("obj/{i:03}")).collect();
    for (i, k) in keys.iter().enumerate() {
        server.put("bkt", k, &content(k, 100 + i * 37));
    }
    // Large enough for ranged parts.
    server.put("bkt", "big", &content("big", 3 << 20));
    server.set_bucket_region("bkt", "eu-west-1", form);
    (server, keys)
}

async fn fetch_all_in_order(client: &s3_ordered::Client, objects: Vec<ObjectRef>) {
    let want: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let mut results = client.get_all("bkt", objects);
    let mut n = 0;
    while let Some(r) = results.next().await {
        let o = r.unwrap_or_else(|e| panic!("{}", e.with_causes()));
        assert_eq!(o.key, want[n]);
        let size = if o.key == "big" {
            3 << 20
        } else {
            let i: usize = o.key[4..].parse().unwrap();
            100 + i * 37
        };
        assert!(o.body.to_vec() == content(&o.key, size), "{}", o.key);
        n += 1;
    }
    assert_eq!(n, want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_redirect_forms_are_learned_once_for_gets() {
    for form in [WrongRegion::Moved, WrongRegion::Malformed] {
        let (server, keys) = server(form).await;
        let client = server
            .builder()
            .region("us-east-1")
            .max_connections(CONNECTIONS)
            .part_size(1 << 20)
            .build()
            .unwrap();
        let mut objects: Vec<ObjectRef> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ObjectRef::new(k.clone(), 100 + i as u64 * 37))
            .collect();
        objects.insert(50, ObjectRef::new("big", 3 << 20));
        // Some without sizes: their first GET is a ranged probe.
        for o in objects.iter_mut().skip(100).step_by(10) {
            o.size = None;
        }
        fetch_all_in_order(&client, objects.clone()).await;
        let wrong = server.signed_for_other_than("eu-west-1");
        assert!(
            (1..=CONNECTIONS).contains(&wrong),
            "{form:?}: {wrong} requests signed for the wrong region"
        );
        let stats = client.stats();
        assert_eq!(stats.region_redirects, 1, "{form:?}");
        assert_eq!((stats.errors, stats.retries), (0, 0), "{form:?}");

        // The region stays learned for the next request of the client.
        fetch_all_in_order(&client, objects).await;
        assert_eq!(server.signed_for_other_than("eu-west-1"), wrong, "{form:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_head_follow_the_region_too() {
    for form in [WrongRegion::Moved, WrongRegion::Malformed] {
        let (server, keys) = server(form).await;
        let client = server.builder().region("ap-southeast-2").build().unwrap();
        let listed: Vec<String> = client
            .list("bkt", "obj/")
            .map(|r| r.unwrap().key)
            .collect()
            .await;
        assert_eq!(listed, keys, "{form:?}");
        assert_eq!(server.signed_for_other_than("eu-west-1"), 1, "{form:?}");

        let client = server.builder().region("ap-southeast-2").build().unwrap();
        let head = client.head("bkt", "big", None).await.unwrap();
        assert_eq!(head.size, Some(3 << 20));
        assert_eq!(server.signed_for_other_than("eu-west-1"), 2, "{form:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_are_not_redirects_fail_as_before() {
    let (server, _) = server(WrongRegion::Moved).await;
    let client = server.builder().region("eu-west-1").build().unwrap();
    let mut results = client.get_all("bkt", [ObjectRef::new("missing", 10)]);
    let e = results.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(client.stats().region_redirects, 0);
}
