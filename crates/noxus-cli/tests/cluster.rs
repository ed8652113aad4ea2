//! Several `noxus serve` processes on one PostgreSQL database, as deployed
//! behind a load balancer (`noxus_testkit::cluster`). The key cache's TTL
//! is set to a minute here, so that a refusal on another replica within
//! seconds can only come from the store's events (`pg_notify` → each
//! replica's listener → its cache), not from an entry expiring.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use noxus_testkit::cluster::Cluster;

const NOXUS: &str = env!("CARGO_BIN_EXE_noxus");

/// Polls `GET /v1/nodes` with `key` on replica `index` until it answers
/// `status`, and returns how long that took (failing after 10 s).
async fn until_status(cluster: &Cluster, index: usize, key: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = cluster
            .get(index, "/v1/nodes", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica {index} still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_the_others() {
    let test = "cluster::a_key_revoked_on_one_replica_is_refused_by_the_others";
    let Some(cluster) = Cluster::start(
        test,
        Path::new(NOXUS),
        3,
        &["--key-cache-ttl-ms", "60000", "--rate-limit-per-key", "0"],
    )
    .await
    else {
        return;
    };
    for round in 0..5 {
        let (id, key) = cluster
            .create_key(0, serde_json::json!({"name": format!("victim {round}")}))
            .await;
        // Every replica verifies the key once, so every cache holds it.
        for index in 0..3 {
            until_status(&cluster, index, &key, 200).await;
        }
        let revoked = cluster
            .delete(
                round % 3,
                &format!("/v1/admin/groups/{}/api-keys/{id}", cluster.workspace_id),
                &cluster.owner_key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status().as_u16(), 200);
        for index in 0..3 {
            let took = until_status(&cluster, index, &key, 401).await;
            eprintln!(
                "round {round}: replica {index} refused the key {} ms after the revoke's response",
                took.as_millis()
            );
        }
    }
}

#[tokio::test]
async fn a_second_start_on_the_same_database_finds_the_platform_set_up() {
    let test = "cluster::a_second_start_on_the_same_database_finds_the_platform_set_up";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 2, &[]).await else {
        return;
    };
    // The owner's key from the first start works on the second replica:
    // one organization, one pepper.
    let me: serde_json::Value = cluster
        .get(1, "/v1/admin/me", &cluster.owner_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["workspace_id"], cluster.workspace_id.as_str());
    assert_eq!(me["tenant_admin"], true);
}
