//! Replicas: SQLite refuses more than one, and leader election hands the controllers over when
//! the leader is killed, while every replica keeps serving.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn sqlite_with_several_replicas_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vcluster.yaml");
    std::fs::write(
        &config,
        "controlPlane:\n  statefulSet:\n    highAvailability: {replicas: 3}\n  backingStore:\n    database:\n      embedded: {enabled: true}\n",
    )
    .unwrap();
    for args in [
        vec!["--replicas", "3"],
        vec!["--config", config.to_str().unwrap()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
            .args([
                "serve",
                "--data-dir",
                &dir.path().display().to_string(),
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            stderr.contains("embedded SQLite keeps one database per replica, so replicas would disagree (for example on RBAC); use controlPlane.backingStore.etcd.embedded or an external etcd/PostgreSQL"),
            "{args:?}: {stderr}"
        );
    }
}

/// A second `vkube serve` on an SQLite database another one serves is a second replica, declared
/// or not: it is refused, saying what to do instead.
#[test]
fn a_second_process_on_one_sqlite_database_is_refused() {
    let first = Server::start();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args([
            "serve",
            "--data-dir",
            &first.dir.path().display().to_string(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at once; one still running after a while is serving.
    let stderr = expect_refused(second, 15);
    assert!(
        stderr.contains("another vkube serve is already serving the embedded SQLite database")
            && stderr.contains("give this one its own --data-dir")
            && stderr.contains("etcd or PostgreSQL"),
        "{stderr}"
    );
    // The first one is unharmed.
    assert!(first.kubectl("kubectl", &["get", "--raw", "/readyz"]).ok);
}

fn holder(server: &Server) -> String {
    let out = server.kubectl(
        "kubectl",
        &[
            "get",
            "lease",
            "vkube-controllers",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    out.stdout
}

/// The replica index in a holder identity (`vkube-N_<hostname>_<uuid>`).
fn replica_of(holder: &str) -> usize {
    holder
        .split('_')
        .next()
        .and_then(|r| r.trim_start_matches("vkube-").parse().ok())
        .unwrap_or_else(|| panic!("holder identity {holder:?} names no replica"))
}

fn leads(server: &Server) -> bool {
    let metrics = run(server, "kubectl", &["get", "--raw", "/metrics"]);
    metrics.lines().any(|l| l == "vkube_leader 1")
}

#[test]
fn the_leader_killed_another_takes_over() {
    let store = format!(
        "etcd://{}?prefix=/ha-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let mut replicas: Vec<Option<Server>> = (0..3)
        .map(|i| Some(Server::start_with(&strs(&replica_flags(&store, i)))))
        .collect();
    let any = |r: &Vec<Option<Server>>| r.iter().flatten().next().map(holder).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while any(&replicas).is_empty() {
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = any(&replicas);
    // The holder identity is the process's own (hostname_uuid), not the replica's name: the
    // leader is the one replica whose metrics say it leads.
    let mut leading: Vec<bool> = Vec::new();
    while Instant::now() < deadline {
        leading = replicas.iter().flatten().map(leads).collect();
        if leading.iter().any(|l| *l) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        leading.iter().filter(|l| **l).count(),
        1,
        "exactly one leader: {leading:?}"
    );
    let index = leading.iter().position(|l| *l).unwrap();
    // kill -9 the leader.
    let killed_at = Instant::now();
    drop(replicas[index].take());
    let survivor = replicas.iter().flatten().next().unwrap();
    let mut next = String::new();
    while Instant::now() < killed_at + Duration::from_secs(15) {
        next = holder(survivor);
        if !next.is_empty() && next != first {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed_at.elapsed();
    assert!(
        !next.is_empty() && next != first,
        "no takeover after {took:?}"
    );
    eprintln!("failover: {first} killed, {next} leads after {took:?}");
    // The new leader runs the controllers: a new namespace gets its default ServiceAccount.
    run(
        survivor,
        "kubectl",
        &["create", "namespace", "after-failover"],
    );
    let mut seen = false;
    for _ in 0..50 {
        if survivor
            .kubectl("kubectl", &["get", "sa", "default", "-n", "after-failover"])
            .ok
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen, "the namespace controller runs on the new leader");
}

/// Drift: one replica started with another `--oidc-client-id` goes NotReady, says why, and
/// `vkube check` names it.
#[test]
fn a_replica_with_drifted_config_is_not_ready_and_check_names_it() {
    let store = format!(
        "etcd://{}?prefix=/drift-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let replica = |id: usize, client: &str| {
        Server::start_until(
            &[
                "--store",
                &store,
                "--replicas",
                "3",
                "--replica-id",
                &id.to_string(),
                "--identity-secret-file",
                &shared_secret(),
                "--oidc-issuer-url=https://127.0.0.1:9/unreachable",
                &format!("--oidc-client-id={client}"),
            ],
            "/livez",
        )
    };
    let replicas = [
        replica(0, "vkube"),
        replica(1, "vkube"),
        replica(2, "other"),
    ];
    let readyz = |s: &Server| s.kubectl("kubectl", &["get", "--raw", "/readyz?verbose"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = readyz(&replicas[2]);
        if !out.ok || out.stdout.contains("[-]config-agreement") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drifted replica stayed ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(readyz(&replicas[0]).ok, "the agreeing replicas stay ready");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args([
            "check",
            "--kubeconfig",
            &replicas[0].kubeconfig().display().to_string(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
    );
    eprintln!("{stdout}{stderr}");
    assert!(!check.status.success(), "vkube check must fail on drift");
    let table = lines(&stdout);
    assert_eq!(table[0][..4], ["REPLICA", "VERSION", "READY", "LEADER"]);
    assert_eq!(table.len(), 4, "one row per replica: {stdout}");
    assert!(
        stderr.contains("vkube-2") && stderr.contains("disagrees on fingerprint"),
        "{stderr}"
    );
    assert!(
        stdout.contains("kubernetes-admin [system:masters system:authenticated]"),
        "{stdout}"
    );
}

/// `vkube check --token` for a user who is not an admin: the membership is read with the
/// kubeconfig's credential, the token answers whoami and can-i. A credential that may not read
/// the membership is an error that says so, not "no replicas found".
#[test]
fn check_token_of_a_user_who_is_not_an_admin() {
    let server = Server::start();
    run(&server, "kubectl", &["create", "namespace", "checked"]);
    run(
        &server,
        "kubectl",
        &["create", "serviceaccount", "bot", "-n", "checked"],
    );
    run(
        &server,
        "kubectl",
        &[
            "create",
            "rolebinding",
            "bot-view",
            "--clusterrole=view",
            "--serviceaccount=checked:bot",
            "-n",
            "checked",
        ],
    );
    let token = run(
        &server,
        "kubectl",
        &["create", "token", "bot", "-n", "checked", "--duration=20m"],
    );
    let check = |kubeconfig: &std::path::Path, token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"));
        cmd.args(["check", "--kubeconfig", &kubeconfig.display().to_string()]);
        cmd.args([
            "--can-i",
            "list pods checked",
            "--can-i",
            "list secrets checked",
        ]);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("{stdout}{stderr}");
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = check(&server.kubeconfig(), Some(&token));
    assert!(ok, "vkube check --token must pass for a viewer: {stderr}");
    let table = lines(&stdout);
    assert_eq!(table.len(), 2, "one row for the one replica: {stdout}");
    assert!(
        stdout.contains("system:serviceaccount:checked:bot [system:serviceaccounts"),
        "whoami is the token's user: {stdout}"
    );
    // The token's answers, not the admin's: a viewer lists pods but not secrets.
    let row = &table[1];
    assert_eq!(row[row.len() - 2..], ["yes", "no"], "{stdout}");

    // The token as the kubeconfig's own credential: it may not read the membership.
    let admin = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let bot: Vec<String> = admin
        .lines()
        .filter(|l| !l.contains("client-key-data:"))
        .map(|l| match l.find("client-certificate-data:") {
            Some(at) => format!("{}token: {token}", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    let as_bot = server.dir.path().join("bot.kubeconfig");
    std::fs::write(&as_bot, bot.join("\n")).unwrap();
    let (ok, _, stderr) = check(&as_bot, None);
    assert!(!ok, "a refused membership read must fail the check");
    assert!(
        stderr.contains("HTTP 403") && stderr.contains("/vkube/replicas"),
        "the refusal is reported as such: {stderr}"
    );
    assert!(!stderr.contains("no replicas found"), "{stderr}");
}

/// A client that writes ConfigMaps `cm-N` round-robin through the replicas and records every
/// write acknowledged (201), for the fault tests: afterwards none of them may be missing.
pub(crate) struct WriteLoad {
    kubeconfig: std::path::PathBuf,
    clients: Vec<Option<crate::rbac::Api>>,
    pub(crate) acknowledged: Vec<String>,
}

impl WriteLoad {
    pub(crate) async fn connect(kubeconfig: &std::path::Path, ports: &[u16]) -> WriteLoad {
        let mut clients = Vec::new();
        for port in ports {
            clients.push(Some(crate::rbac::Api::connect(kubeconfig, *port).await));
        }
        WriteLoad {
            kubeconfig: kubeconfig.to_path_buf(),
            clients,
            acknowledged: Vec::new(),
        }
    }

    /// Writes through replica `i` again, now serving on `port`.
    pub(crate) async fn reconnect(&mut self, i: usize, port: u16) {
        self.clients[i] = Some(crate::rbac::Api::connect(&self.kubeconfig, port).await);
    }

    /// Write `n`, through replica `n % replicas`: the replica's index when acknowledged.
    pub(crate) async fn write(&mut self, n: usize) -> Option<usize> {
        let via = n % self.clients.len();
        let body = format!(r#"{{"metadata":{{"name":"cm-{n}"}},"data":{{"n":"{n}"}}}}"#);
        let client = self.clients[via].as_mut()?;
        let path = "/api/v1/namespaces/default/configmaps";
        match client.try_send("POST", path, Some(body), None).await {
            Ok((201, _)) => {
                self.acknowledged.push(format!("cm-{n}"));
                Some(via)
            }
            _ => None,
        }
    }

    /// Lists the ConfigMaps through each replica of `via`: every acknowledged write is there, and
    /// the replicas list the same names.
    pub(crate) async fn verify(&mut self, via: &[usize]) {
        let mut lists = Vec::new();
        for &i in via {
            let client = self.clients[i].as_mut().expect("a live replica");
            let path = "/api/v1/namespaces/default/configmaps";
            let (code, body) = client.send("GET", path, None, None).await;
            assert_eq!(code, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let mut names: Vec<String> = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .filter(|n| n.starts_with("cm-"))
                .collect();
            names.sort();
            let missing: Vec<_> = self
                .acknowledged
                .iter()
                .filter(|n| names.binary_search(n).is_err())
                .collect();
            assert!(
                missing.is_empty(),
                "acknowledged writes missing through replica {i}: {missing:?}"
            );
            lists.push(names);
        }
        assert!(
            lists.windows(2).all(|w| w[0] == w[1]),
            "the replicas {via:?} disagree"
        );
    }
}

/// Fault: kill -9 of the leader in the middle of a write load through every replica. No
/// acknowledged write may be missing afterwards, and the survivors must list the same objects.
fn leader_killed_under_writes(store: &str) {
    let mut replicas: Vec<Option<Server>> = (0..3)
        .map(|i| Some(Server::start_with(&strs(&replica_flags(store, i)))))
        .collect();
    let first = replicas[0].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder(first).is_empty() {
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The holder identity is `vkube-N_<hostname>_<uuid>`.
    let first_holder = holder(first);
    let leader: usize = replica_of(&first_holder);
    let kubeconfig = first.kubeconfig();
    let ports: Vec<u16> = replicas.iter().flatten().map(|r| r.port).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut load = WriteLoad::connect(&kubeconfig, &ports).await;
        let mut killed_at = None;
        let mut recovered_after = None;
        for i in 0..600 {
            if i == 200 {
                drop(replicas[leader].take()); // SIGKILL
                killed_at = Some(Instant::now());
            }
            if load.write(i).await.is_some() {
                if let (Some(at), None) = (killed_at, recovered_after) {
                    recovered_after = Some(at.elapsed());
                }
            }
        }
        let acknowledged = load.acknowledged.len();
        assert!(acknowledged >= 400, "writes through the survivors went on: {acknowledged}");
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        load.verify(&survivors).await;
        eprintln!(
            "{store}: leader vkube-{leader} killed after 200 of 600 writes; {acknowledged} acknowledged, none missing; first acknowledged write after the kill {recovered_after:?}"
        );
    });
    // The controllers came back on a survivor.
    let survivor = replicas.iter().flatten().next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = holder(survivor);
        if !now.is_empty() && now != first_holder {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fault_leader_killed_under_writes_on_etcd() {
    leader_killed_under_writes(&format!(
        "etcd://{}?prefix=/fault-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    ));
}

#[test]
fn fault_leader_killed_under_writes_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(crate::servers::postgres_database(&format!(
        "fault{}",
        std::process::id()
    )));
    leader_killed_under_writes(&url);
}

/// A CRD created through one replica is served by every replica within a second (each
/// replica's registry follows the store watch), and leaves every replica's discovery within a
/// second of its deletion.
#[test]
fn a_crd_is_served_by_every_replica_within_a_second() {
    let store = format!(
        "etcd://{}?prefix=/ha-crd-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let replicas: Vec<Server> = (0..3)
        .map(|i| Server::start_with(&strs(&replica_flags(&store, i))))
        .collect();
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gizmos.ha.vkube-test.example.com\nspec:\n  group: ha.vkube-test.example.com\n  scope: Namespaced\n  names: {plural: gizmos, kind: Gizmo}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    let serves = |r: &Server| {
        r.kubectl(
            "kubectl",
            &["get", "--raw", "/apis/ha.vkube-test.example.com/v1"],
        )
        .ok
    };
    apply_file(&replicas[0], "kubectl", crd, "create");
    let created = Instant::now();
    for (i, r) in replicas.iter().enumerate() {
        while !serves(r) {
            assert!(
                created.elapsed() < Duration::from_secs(1),
                "replica {i} does not serve the CRD a second after its create"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!(
        "CRD served by all 3 replicas {:?} after its create",
        created.elapsed()
    );
    // An object written through one replica reads back through another.
    apply_file(
        &replicas[1],
        "kubectl",
        "apiVersion: ha.vkube-test.example.com/v1\nkind: Gizmo\nmetadata: {name: g1, namespace: default}\nspec: {size: 3}\n",
        "create",
    );
    let size = run(
        &replicas[2],
        "kubectl",
        &["get", "gizmos", "g1", "-o", "jsonpath={.spec.size}"],
    );
    assert_eq!(size, "3");
    run(
        &replicas[2],
        "kubectl",
        &["delete", "crd", "gizmos.ha.vkube-test.example.com"],
    );
    let deleted = Instant::now();
    for (i, r) in replicas.iter().enumerate() {
        while serves(r) {
            assert!(
                deleted.elapsed() < Duration::from_secs(1),
                "replica {i} still serves the CRD a second after its deletion"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
