use super::founding::{FOUNDING_GRACE, cluster_of, record_cluster, recorded_cluster};
use super::*;

#[test]
fn urls_by_position_or_index() {
    let by_position = parse_urls(
        "etcd-peers",
        &[
            "http://10.0.0.1:2380".into(),
            "http://10.0.0.2:2380/".into(),
        ],
        2,
    )
    .unwrap();
    assert_eq!(
        by_position,
        ["http://10.0.0.1:2380", "http://10.0.0.2:2380"]
    );
    let by_index = parse_urls(
        "etcd-peers",
        &["1=http://b:2380".into(), "0=http://a:2380".into()],
        2,
    )
    .unwrap();
    assert_eq!(by_index, ["http://a:2380", "http://b:2380"]);
    let err = |items: &[&str], n| {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        parse_urls("etcd-peers", &items, n).unwrap_err().to_string()
    };
    assert!(err(&["http://a:2380"], 2).contains("no URL for replica 1"));
    assert!(err(&["0=http://a:2380", "0=http://b:2380"], 2).contains("named twice"));
    assert!(err(&["a:2380"], 1).contains("not an http://HOST:PORT URL"));
    assert!(err(&["3=http://a:2380"], 3).contains("does not exist"));
}

#[test]
fn client_and_listen_urls() {
    assert_eq!(
        client_url_of("http://vkube-1.vkube-headless:2380").unwrap(),
        "http://vkube-1.vkube-headless:2379"
    );
    // An address: that one only (bare machines, as before).
    assert_eq!(
        listen_urls("http://127.0.0.3:4001", None, true).unwrap(),
        "http://127.0.0.3:4001"
    );
    // A pod's name: the pod's address, and loopback for clients; never 0.0.0.0.
    let pod = Some("10.244.1.7".parse().unwrap());
    let fqdn = "https://vk-1.vk-headless.ns.svc.cluster.local";
    assert_eq!(
        listen_urls(&format!("{fqdn}:2379"), pod, true).unwrap(),
        "https://10.244.1.7:2379,https://127.0.0.1:2379"
    );
    assert_eq!(
        listen_urls(&format!("{fqdn}:2380"), pod, false).unwrap(),
        "https://10.244.1.7:2380"
    );
    assert!(
        listen_urls("http://localhost:2380", None, false)
            .unwrap()
            .contains("http://127.0.0.1:2380")
    );
    let err = listen_urls("http://no-such-host.invalid:2380", None, false).unwrap_err();
    assert!(err.to_string().contains("--advertise-address"), "{err}");
    let any = Some("0.0.0.0".parse().unwrap());
    assert!(listen_urls(&format!("{fqdn}:2380"), any, false).is_err());
}

/// Two replicas' URLs on loopback ports free now.
fn two_replicas(dir: &Path) -> Options {
    let ports: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i].local_addr().unwrap().port());
    Options {
        binary: "etcd".into(),
        dir: dir.to_path_buf(),
        replica: 0,
        peers: vec![url(0), url(1)],
        clients: vec![url(2), url(3)],
        extra_args: vec![],
        advertise: None,
        tls: None,
    }
}

async fn recorded_soon(options: &Options) -> u64 {
    for _ in 0..100 {
        if let Some(id) = recorded_cluster(options).unwrap() {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no cluster ID recorded in {}",
        options.cluster_file().display()
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vkube-{name}-{}-{}",
        std::process::id(),
        unix_now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_replica_that_lost_its_etcd_data_never_founds_a_second_cluster() {
    let dir = temp_dir("refound");
    let options = two_replicas(&dir);
    // First start: no peer answers, nothing recorded: replica 0 founds the cluster.
    let member = start(options.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), member.wait_healthy())
        .await
        .expect("replica 0 founds the cluster");
    let first = recorded_soon(&options).await;
    member.stop().await;

    // Its etcd data is lost; the other replica does not answer (yet). Founding now would
    // split the cluster: it must wait, well past the founding grace.
    std::fs::remove_dir_all(options.data()).unwrap();
    let member = start(options.clone()).await.unwrap();
    assert!(
        tokio::time::timeout(FOUNDING_GRACE * 4, member.wait_healthy())
            .await
            .is_err(),
        "a member of cluster {first:x} founded a new cluster"
    );
    member.stop().await;

    // The explicit, documented act: delete the record. Then it founds a new cluster.
    std::fs::remove_file(options.cluster_file()).unwrap();
    let member = start(options.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), member.wait_healthy())
        .await
        .expect("a replica told to found anew does");
    assert_ne!(recorded_soon(&options).await, first);
    member.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_member_of_another_cluster_is_not_joined() {
    let dir = temp_dir("foreign");
    let options = two_replicas(&dir);
    // Replica 1's address is served by a member of an unrelated, single-member cluster.
    let other = dir.join("other");
    let mut foreign = tokio::process::Command::new("etcd")
        .arg("--name=other")
        .arg(format!("--data-dir={}", other.display()))
        .arg(format!("--listen-client-urls={}", options.clients[1]))
        .arg(format!("--advertise-client-urls={}", options.clients[1]))
        .arg(format!("--listen-peer-urls={}", options.peers[1]))
        .arg(format!(
            "--initial-advertise-peer-urls={}",
            options.peers[1]
        ))
        .arg(format!("--initial-cluster=other={}", options.peers[1]))
        .arg("--log-level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let foreign_cluster = loop {
        if let Some(id) = cluster_of(&options, &options.clients[1]).await {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Replica 0 was a member of another cluster, and has lost its data.
    std::fs::create_dir_all(&dir).unwrap();
    record_cluster(&options, foreign_cluster ^ 1).unwrap();
    let member = start(options.clone()).await.unwrap();
    assert!(
        tokio::time::timeout(FOUNDING_GRACE * 3, member.wait_healthy())
            .await
            .is_err()
    );
    member.stop().await;
    let mut client = options.connect(&options.clients[1], false).await.unwrap();
    let members = client.member_list().await.unwrap().members().len();
    assert_eq!(members, 1, "replica 0 was added to a cluster not its own");
    foreign.kill().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn endpoints_start_with_the_local_member() {
    let options = Options {
        binary: "etcd".into(),
        dir: "/tmp".into(),
        replica: 1,
        peers: vec![],
        clients: vec!["a".into(), "b".into(), "c".into()],
        extra_args: vec![],
        advertise: None,
        tls: None,
    };
    assert_eq!(options.endpoints(), ["b", "c", "a"]);
    assert_eq!(options.others().collect::<Vec<_>>(), ["a", "c"]);
}
