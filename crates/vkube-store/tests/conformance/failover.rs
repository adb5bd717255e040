//! etcd with several endpoints, the first one down: every operation goes to the next one, writes
//! included, since a refused connection never carried the request (embedded etcd lists the
//! replica's own member first and relies on this while it restarts).

use std::time::Duration;

use vkube_store::Store;

use crate::common::{next_event, servers};

pub async fn a_dead_first_endpoint_fails_over_to_the_next() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let endpoints = [dead, servers::etcd_endpoints()];
    let prefix = format!("/failover-{}", std::process::id());
    let store = vkube_store::EtcdStore::connect(&endpoints, &prefix, None)
        .await
        .expect("connects through the second endpoint");
    let mut watch = store
        .watch("/k/", store.current_revision().await.unwrap())
        .await
        .unwrap();
    let created = store.create("/k/a", b"1".to_vec(), None).await.unwrap();
    let updated = store
        .update(
            "/k/a",
            b"2".to_vec(),
            created.mod_revision,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(store.get("/k/a", None).await.unwrap().unwrap().value, b"2");
    assert_eq!(
        store
            .list("/k/", Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    store
        .delete("/k/a", Some(updated.mod_revision))
        .await
        .unwrap();
    for revision in [created.mod_revision, updated.mod_revision] {
        assert_eq!(next_event(&mut watch).await.revision, revision);
    }
}
