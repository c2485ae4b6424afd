//! The distributed rate limiter on DynamoDB (moto): eight dispatchers at once hold a bucket's
//! rate, the bulk lanes leave P0 its share, and a pause reaches every instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_tests::aws::Stack;
use shared::aws::AwsBackend;
use shared::domain::limits::{BucketSpec, Rate};
use shared::domain::Priority;
use shared::ports::{Grant, RateLimiter};

fn bucket(per_second: f64) -> Vec<BucketSpec> {
    vec![BucketSpec {
        key: format!("domain:gmail:{}", uuid::Uuid::now_v7().simple()),
        rate: Rate::per_second(per_second),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_dispatchers_hold_the_rate() {
    let stack = Stack::create().await;
    let b = bucket(20.0);
    let started = Instant::now();
    let run = Duration::from_millis(3_500);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        // Each dispatcher is its own instance: its own clients and caches.
        let backend = AwsBackend::new(&stack.sdk, &stack.settings);
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut grants = Vec::new();
            while started.elapsed() < run {
                let slice_before = chrono::Utc::now().timestamp_millis() / 1000;
                match backend.store.acquire(&b, Priority::P2, 1.0).await.unwrap() {
                    Grant::Go => grants.push(slice_before),
                    Grant::Wait(w) => tokio::time::sleep(w.min(Duration::from_millis(200))).await,
                }
            }
            grants
        }));
    }
    let mut grants = Vec::new();
    for t in tasks {
        grants.extend(t.await.unwrap());
    }
    let first = *grants.iter().min().unwrap();
    let last = *grants.iter().max().unwrap();
    let slices = (last - first + 1) as usize;
    println!(
        "dynamodb limiter: {} grants over {slices} one-second slices at 20/s",
        grants.len()
    );
    assert!(
        grants.len() <= 20 * (slices + 1),
        "{} grants in {slices} slices",
        grants.len()
    );
    assert!(
        grants.len() >= 20 * (slices - 1) * 7 / 10,
        "the rate is used, not starved: {}",
        grants.len()
    );
}

#[tokio::test]
async fn bulk_leaves_p0_its_share_and_a_pause_reaches_every_instance() {
    let stack = Stack::create().await;
    let one = AwsBackend::new(&stack.sdk, &stack.settings);
    let other = AwsBackend::new(&stack.sdk, &stack.settings);
    // All of this must land in one slice (a second): on a slow emulator it is tried again, on
    // a new bucket, until it does.
    let mut tries = 0;
    let (b, bulk, p0) = loop {
        tries += 1;
        assert!(
            tries <= 10,
            "16 acquires never fit in one second: is moto overloaded?"
        );
        while chrono::Utc::now().timestamp_subsec_millis() > 300 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let slice = chrono::Utc::now().timestamp();
        let b = bucket(10.0);
        let mut bulk = 0;
        for _ in 0..15 {
            if one.store.acquire(&b, Priority::P3, 0.8).await.unwrap() == Grant::Go {
                bulk += 1;
            }
        }
        let p0 = other.store.acquire(&b, Priority::P0, 0.8).await.unwrap();
        if chrono::Utc::now().timestamp() == slice {
            break (b, bulk, p0);
        }
    };
    assert_eq!(bulk, 8, "bulk stops at 80% of the slice");
    assert_eq!(p0, Grant::Go, "P0 still finds a token");

    let until = chrono::Utc::now() + chrono::Duration::seconds(4);
    let key = b[0].key.clone();
    one.store.pause(&key, until).await.unwrap();
    // The other instance trusts what it read about the pause for a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    match Arc::clone(&other.store)
        .acquire(&b, Priority::P0, 0.8)
        .await
        .unwrap()
    {
        Grant::Wait(w) => assert!(w >= Duration::from_secs(2), "{w:?}"),
        Grant::Go => panic!("another instance ignored the pause"),
    }
}
