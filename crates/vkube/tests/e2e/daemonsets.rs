//! DaemonSets through kubectl: Node objects registered as a kubelet would (one tainted), a
//! DaemonSet gets one pod per eligible node, placed by node affinity on the node's name (no
//! scheduler binds them here); the test plays the kubelet (pod status through the `status`
//! subresource) so `kubectl rollout status` completes, then rolls a new image out one node at a
//! time, with `kubectl rollout history` listing both revisions, and `kubectl rollout undo` rolls
//! the first image back out as revision 3.

use std::time::{Duration, Instant};

use crate::gc::eventually;
use crate::harness::*;

const NS: &str = "daemons";

fn nodes_yaml() -> &'static str {
    "apiVersion: v1
kind: Node
metadata:
  name: worker-1
  labels: {kubernetes.io/hostname: worker-1, kubernetes.io/os: linux}
---
apiVersion: v1
kind: Node
metadata:
  name: worker-2
  labels: {kubernetes.io/hostname: worker-2, kubernetes.io/os: linux}
spec:
  taints:
  - {key: dedicated, value: db, effect: NoSchedule}
"
}

fn daemonset_yaml() -> String {
    format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: {NS}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      nodeSelector: {{kubernetes.io/os: linux}}
      containers: [{{name: agent, image: busybox:1.36}}]
"
    )
}

/// `node image` of each pod, sorted: the node its affinity names.
fn placement(server: &Server) -> Vec<String> {
    let path = "jsonpath={range .items[*]}{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]} {.spec.containers[0].image}{\"\\n\"}{end}";
    let out = run(server, "kubectl", &["get", "pods", "-n", NS, "-o", path]);
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Plays the kubelet: every pod not yet ready becomes Running and Ready.
fn start_pods(server: &Server) {
    let path = "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}";
    let out = run(server, "kubectl", &["get", "pods", "-n", NS, "-o", path]);
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), phase) = (parts.next(), parts.next()) else {
            continue;
        };
        if phase == Some("Running") {
            continue;
        }
        // A pod deleted meanwhile is fine.
        server.kubectl(
            "kubectl",
            &[
                "patch",
                "pod",
                name,
                "-n",
                NS,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
            ],
        );
    }
}

/// Plays the kubelet until `kubectl rollout status` says the DaemonSet rolled out.
fn roll_out(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        start_pods(server);
        let out = server.kubectl(
            "kubectl",
            &["rollout", "status", "ds/agent", "-n", NS, "--watch=false"],
        );
        if out.ok && out.stdout.contains("successfully rolled out") {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "never rolled out: {} {}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(server: &Server) -> String {
    let path = "jsonpath={.status.desiredNumberScheduled}/{.status.currentNumberScheduled}/{.status.updatedNumberScheduled}/{.status.numberReady}/{.status.numberAvailable}";
    run(
        server,
        "kubectl",
        &["get", "ds", "agent", "-n", NS, "-o", path],
    )
}

#[test]
fn daemonset_runs_on_each_eligible_node_and_rolls_out() {
    let server = Server::start();
    run(&server, "kubectl", &["create", "namespace", NS]);
    apply_file(&server, "kubectl", nodes_yaml(), "create");
    apply_file(&server, "kubectl", &daemonset_yaml(), "apply");

    eventually("one pod, on the untainted node", || {
        placement(&server) == ["worker-1 busybox:1.36"]
    });
    let tolerations = run(
        &server,
        "kubectl",
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-o",
            "jsonpath={.items[0].spec.tolerations[*].key}",
        ],
    );
    assert!(
        tolerations.contains("node.kubernetes.io/unschedulable")
            && tolerations.contains("node.kubernetes.io/not-ready"),
        "{tolerations}"
    );
    let hash = run(
        &server,
        "kubectl",
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-o",
            "jsonpath={.items[0].metadata.labels.controller-revision-hash}",
        ],
    );
    assert!(!hash.is_empty());
    let revision = run(
        &server,
        "kubectl",
        &["get", "controllerrevisions", "-n", NS, "-o", "name"],
    );
    assert_eq!(revision, format!("controllerrevision.apps/agent-{hash}"));
    let out = roll_out(&server);
    assert!(
        out.contains(r#"daemon set "agent" successfully rolled out"#),
        "{out}"
    );
    assert_eq!(status(&server), "1/1/1/1/1");

    // The taint goes: the second node gets its pod.
    run(
        &server,
        "kubectl",
        &["taint", "nodes", "worker-2", "dedicated=db:NoSchedule-"],
    );
    eventually("a pod on each node", || {
        placement(&server) == ["worker-1 busybox:1.36", "worker-2 busybox:1.36"]
    });
    roll_out(&server);
    assert_eq!(status(&server), "2/2/2/2/2");

    // A new image rolls out one node at a time (maxUnavailable 1).
    run(
        &server,
        "kubectl",
        &["set", "image", "ds/agent", "agent=busybox:1.37", "-n", NS],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = placement(&server);
        assert!(!p.is_empty(), "both nodes without a pod at once");
        if p == ["worker-1 busybox:1.37", "worker-2 busybox:1.37"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new image never rolled out: {p:?}"
        );
        start_pods(&server);
        std::thread::sleep(Duration::from_millis(200));
    }
    roll_out(&server);
    assert_eq!(status(&server), "2/2/2/2/2");
    let history = run(
        &server,
        "kubectl",
        &["rollout", "history", "ds/agent", "-n", NS],
    );
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let first = run(
        &server,
        "kubectl",
        &["rollout", "history", "ds/agent", "-n", NS, "--revision=1"],
    );
    assert!(first.contains("busybox:1.36"), "{first}");

    // Undo applies revision 1's patch: the old image rolls back out as revision 3.
    run(
        &server,
        "kubectl",
        &["rollout", "undo", "ds/agent", "-n", NS],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while placement(&server) != ["worker-1 busybox:1.36", "worker-2 busybox:1.36"] {
        assert!(
            Instant::now() < deadline,
            "never rolled back: {:?}",
            placement(&server)
        );
        start_pods(&server);
        std::thread::sleep(Duration::from_millis(200));
    }
    roll_out(&server);
    let history = run(
        &server,
        "kubectl",
        &["rollout", "history", "ds/agent", "-n", NS],
    );
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // Deleting the DaemonSet takes its pods and revisions.
    run(&server, "kubectl", &["delete", "ds", "agent", "-n", NS]);
    eventually("pods and revisions deleted", || {
        placement(&server).is_empty()
            && run(
                &server,
                "kubectl",
                &["get", "controllerrevisions", "-n", NS, "-o", "name"],
            )
            .is_empty()
    });
}

/// Node changes reach the controller: a label that the nodeSelector wants brings a pod, a
/// NoExecute taint evicts it, and a node deleted takes its (never scheduled) pod with it.
#[test]
fn daemon_pods_follow_node_labels_taints_and_removal() {
    let server = Server::start();
    run(&server, "kubectl", &["create", "namespace", NS]);
    let nodes = nodes_yaml().replace(
        "spec:\n  taints:\n  - {key: dedicated, value: db, effect: NoSchedule}\n",
        "",
    );
    apply_file(&server, "kubectl", &nodes, "create");
    let ds = daemonset_yaml().replace("kubernetes.io/os: linux", "role: agent");
    apply_file(&server, "kubectl", &ds, "apply");
    eventually("the DaemonSet is seen with no node to run on", || {
        status(&server) == "0/0/0/0/0"
    });
    assert!(placement(&server).is_empty());

    for node in ["worker-1", "worker-2"] {
        run(&server, "kubectl", &["label", "node", node, "role=agent"]);
    }
    eventually("a pod for each labelled node", || {
        placement(&server) == ["worker-1 busybox:1.36", "worker-2 busybox:1.36"]
    });
    run(
        &server,
        "kubectl",
        &["taint", "node", "worker-2", "drain=now:NoExecute"],
    );
    eventually("the NoExecute taint evicts worker-2's pod", || {
        placement(&server) == ["worker-1 busybox:1.36"]
    });
    run(&server, "kubectl", &["delete", "node", "worker-1"]);
    eventually("the deleted node's pod goes", || {
        placement(&server).is_empty()
    });
    eventually("nothing desired", || status(&server) == "0/0/0/0/0");
}
