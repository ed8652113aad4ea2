//! Usage counts merge by addition, exactly, whoever writes them.

use std::sync::Arc;

use noxus_server::store::prelude::*;
use noxus_server::store::{KeyUsageFlush, UsageCounts};
use time::OffsetDateTime;
use tokio::sync::Barrier;

use crate::backend::Fresh;
use crate::world::*;

fn counts(seed: u64) -> UsageCounts {
    UsageCounts {
        requests: 10 + seed,
        ok: 5 + seed,
        client_errors: 3,
        server_errors: 1,
        unauthorized: 2,
        forbidden: 1,
        rate_limited: seed % 3,
    }
}

fn current_hour() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() / 3600
}

/// `writers` stores each flush `batches` batches for the same two keys and
/// hours at once; the stored sums are exactly the sums sent.
async fn merge(writers: Vec<Arc<dyn Store>>, batches: u64) {
    let store = Arc::clone(&writers[0]);
    let w = world(&store).await;
    let k1 = key(&store, &w.ws.id, &w.owner.id, "k1").await;
    let k2 = key(&store, &w.ws.id, &w.owner.id, "k2").await;
    let hour = current_hour();
    let barrier = Arc::new(Barrier::new(writers.len()));
    let mut expected = [UsageCounts::default(); 3];
    let mut handles = Vec::new();
    for (writer, store) in writers.iter().enumerate() {
        let mut plan = Vec::new();
        for b in 0..batches {
            let seed = writer as u64 * 100 + b;
            let batch = vec![
                KeyUsageFlush {
                    key_id: k1.id.clone(),
                    workspace_id: w.ws.id.clone(),
                    last_used: None,
                    hours: vec![(hour - 1, counts(seed)), (hour, counts(seed + 1))],
                    addresses: vec![],
                },
                KeyUsageFlush {
                    key_id: k2.id.clone(),
                    workspace_id: w.ws.id.clone(),
                    last_used: None,
                    hours: vec![(hour, counts(seed + 2))],
                    addresses: vec![],
                },
            ];
            expected[0].add(&counts(seed));
            expected[1].add(&counts(seed + 1));
            expected[2].add(&counts(seed + 2));
            plan.push(batch);
        }
        let store = Arc::clone(store);
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            for batch in plan {
                store.record_usage(&batch, 10).await.expect("record usage");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("writer");
    }
    let hours: Vec<_> = store
        .usage_hours(&w.ws.id, None, hour - 5, hour + 5)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.key_id, h.hour, h.counts))
        .collect();
    let mut want = vec![
        (k1.id.clone(), hour - 1, expected[0]),
        (k1.id.clone(), hour, expected[1]),
        (k2.id.clone(), hour, expected[2]),
    ];
    let mut got = hours.clone();
    got.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    want.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(got, want);
    let only_k2: Vec<_> = store
        .usage_hours(&w.ws.id, Some(&k2.id), hour - 5, hour + 5)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.hour, h.counts))
        .collect();
    assert_eq!(only_k2, [(hour, expected[2])]);
}

/// Two writers (tasks on one store) flush batches for the same key and
/// hour at once: the hourly sums are exact.
pub async fn concurrent_usage_batches_sum_exactly(store: Arc<dyn Store>) {
    merge(vec![Arc::clone(&store), store], 20).await;
}

/// Two store instances on one database (two replicas) flush at once: the
/// hourly sums are exact.
pub async fn usage_from_two_instances_sums_exactly(fresh: &mut Fresh) {
    let other = fresh.open_another().await;
    merge(vec![Arc::clone(&fresh.store), other], 20).await;
}

/// `prune_usage(h)` removes hours before `h` and addresses last seen before
/// it, keeps the rest, and counts what went.
pub async fn prune_usage_removes_what_is_older(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let hour = current_hour() - 10;
    let at_hour = |h: i64| OffsetDateTime::from_unix_timestamp(h * 3600 + 60).unwrap();
    store
        .record_usage(
            &[KeyUsageFlush {
                key_id: k.id.clone(),
                workspace_id: w.ws.id.clone(),
                last_used: Some((at_hour(hour + 1), Some("10.0.0.3".to_owned()))),
                hours: (hour - 3..=hour + 1).map(|h| (h, counts(1))).collect(),
                addresses: vec![
                    ("10.0.0.1".to_owned(), at_hour(hour - 2)),
                    ("10.0.0.2".to_owned(), at_hour(hour - 1)),
                    ("10.0.0.3".to_owned(), at_hour(hour + 1)),
                ],
            }],
            10,
        )
        .await
        .unwrap();
    // Hours hour-3, hour-2, hour-1 go; addresses seen at hour-2 and hour-1 go.
    assert_eq!(store.prune_usage(hour).await.unwrap(), 3 + 2);
    let hours: Vec<_> = store
        .usage_hours(&w.ws.id, None, hour - 10, hour + 10)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.hour, h.counts))
        .collect();
    assert_eq!(hours, [(hour, counts(1)), (hour + 1, counts(1))]);
    let (addresses, total) = store.key_addresses(&k.id, 0, 10).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(addresses[0].addr, "10.0.0.3");
    // The live key stays; pruning again removes nothing.
    assert!(store.key(&w.ws.id, &k.id).await.unwrap().is_some());
    assert_eq!(store.prune_usage(hour).await.unwrap(), 0);
    let kept = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
    assert_eq!(kept.last_used_at, Some(at_hour(hour + 1)));
    assert_eq!(kept.last_used_addr.as_deref(), Some("10.0.0.3"));
}
