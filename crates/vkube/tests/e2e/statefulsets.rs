//! StatefulSets through kubectl against the StatefulSet controller: no kubelet runs, so the
//! test plays it, marking pods Running and Ready through the status subresource. Ordered
//! scale-up (a pod only once the one before it is Ready), a claim per template and ordinal,
//! scale-down from the highest ordinal, a rolling update held at a partition, `kubectl rollout
//! status` and `kubectl rollout history`, and the claims' retention policy with the garbage
//! collector.

use std::time::{Duration, Instant};

use crate::gc::eventually;
use crate::harness::*;

const K: &str = "kubectl";

fn names(server: &Server, ns: &str, what: &str) -> Vec<String> {
    let out = run(
        server,
        K,
        &[
            "get",
            what,
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let mut names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    names.sort();
    names
}

fn field(server: &Server, ns: &str, what: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    run(server, K, &["get", what, "-n", ns, "-o", &path])
}

/// Plays the kubelet: the pod runs and is Ready.
fn ready(server: &Server, ns: &str, pod: &str) {
    patch_pod_status(server, ns, pod, POD_READY);
}

/// `names` stays `want` for a while: the controller is waiting.
fn stays(server: &Server, ns: &str, want: &[&str], what: &str) {
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(names(server, ns, "pods"), want, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn statefulset(ns: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web, namespace: {ns}}}
spec:
  serviceName: web
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: 'nginx:1'}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
{extra}"
    )
}

#[test]
fn statefulsets_scale_in_order_with_claims_and_roll_at_a_partition() {
    let server = Server::start();
    let ns = "sts";
    run(&server, K, &["create", "namespace", ns]);
    apply_file(&server, K, &statefulset(ns, ""), "create");

    // Ordered scale-up: web-1 only once web-0 is Running and Ready.
    eventually("web-0", || names(&server, ns, "pods") == ["web-0"]);
    stays(&server, ns, &["web-0"], "web-1 waits for web-0 to be Ready");
    assert_eq!(names(&server, ns, "pvc"), ["data-web-0"]);
    let pod = |name: &str, path: &str| field(&server, ns, &format!("pod/{name}"), path);
    assert_eq!(
        pod("web-0", "{.spec.hostname}/{.spec.subdomain}"),
        "web-0/web"
    );
    assert_eq!(
        pod(
            "web-0",
            "{.metadata.labels.statefulset\\.kubernetes\\.io/pod-name} {.metadata.labels.apps\\.kubernetes\\.io/pod-index}"
        ),
        "web-0 0"
    );
    assert_eq!(
        pod(
            "web-0",
            "{.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}"
        ),
        "data-web-0"
    );
    ready(&server, ns, "web-0");
    eventually("web-1", || names(&server, ns, "pods") == ["web-0", "web-1"]);
    stays(&server, ns, &["web-0", "web-1"], "web-2 waits for web-1");
    ready(&server, ns, "web-1");
    eventually("web-2", || names(&server, ns, "pods").len() == 3);
    ready(&server, ns, "web-2");
    assert_eq!(
        names(&server, ns, "pvc"),
        ["data-web-0", "data-web-1", "data-web-2"]
    );
    let status = run(
        &server,
        K,
        &["rollout", "status", "sts/web", "-n", ns, "--timeout=20s"],
    );
    assert!(status.contains("roll out complete"), "{status}");
    assert_eq!(
        field(
            &server,
            ns,
            "sts/web",
            "{.status.replicas} {.status.readyReplicas} {.status.currentReplicas} {.status.updatedReplicas} {.status.availableReplicas}"
        ),
        "3 3 3 3 3"
    );

    let events = run(
        &server,
        K,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.kind=StatefulSet,involvedObject.name=web",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    for want in [
        "SuccessfulCreate: create Claim data-web-0 Pod web-0 in StatefulSet web success",
        "SuccessfulCreate: create Pod web-2 in StatefulSet web successful",
    ] {
        assert!(events.lines().any(|l| l == want), "{want} in {events}");
    }

    // Scale down: web-2 goes before web-1; the claims stay (Retain).
    run(&server, K, &["scale", "sts/web", "--replicas=1", "-n", ns]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = names(&server, ns, "pods");
        let has = |p: &str| pods.iter().any(|n| n == p);
        assert!(!has("web-2") || has("web-1"), "web-1 went before web-2");
        if pods == ["web-0"] {
            break;
        }
        assert!(Instant::now() < deadline, "never scaled down: {pods:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(names(&server, ns, "pvc").len(), 3, "claims are retained");
    run(&server, K, &["scale", "sts/web", "--replicas=3", "-n", ns]);
    eventually("web-1 again", || names(&server, ns, "pods").len() == 2);
    ready(&server, ns, "web-1");
    eventually("web-2 again", || names(&server, ns, "pods").len() == 3);
    ready(&server, ns, "web-2");
    assert_eq!(
        pod(
            "web-2",
            "{.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}"
        ),
        "data-web-2"
    );

    // A failed pod is deleted and made again (a new uid, the same name and claim).
    let uid = pod("web-1", "{.metadata.uid}");
    run(
        &server,
        K,
        &[
            "patch",
            "pod",
            "web-1",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed"}}"#,
        ],
    );
    eventually("web-1 made again", || {
        let out = server.kubectl(
            K,
            &[
                "get",
                "pod",
                "web-1",
                "-n",
                ns,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        out.ok && !out.stdout.is_empty() && out.stdout != uid
    });
    ready(&server, ns, "web-1");

    // A rolling update held at partition 1: web-2 then web-1 move, web-0 stays.
    let first = field(&server, ns, "sts/web", "{.status.currentRevision}");
    run(
        &server,
        K,
        &[
            "patch",
            "sts",
            "web",
            "-n",
            ns,
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}"#,
        ],
    );
    run(
        &server,
        K,
        &["set", "image", "sts/web", "web=nginx:2", "-n", ns],
    );
    let image = |name: &str| {
        let out = server.kubectl(
            K,
            &[
                "get",
                "pod",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.spec.containers[0].image}",
            ],
        );
        out.ok.then_some(out.stdout)
    };
    eventually("web-2 at the new template", || {
        image("web-2").as_deref() == Some("nginx:2")
    });
    let second = field(&server, ns, "sts/web", "{.status.updateRevision}");
    assert_ne!(first, second);
    assert_eq!(
        pod("web-2", "{.metadata.labels.controller-revision-hash}"),
        second
    );
    stays(
        &server,
        ns,
        &["web-0", "web-1", "web-2"],
        "web-1 waits for web-2 to be Ready",
    );
    assert_eq!(image("web-1").as_deref(), Some("nginx:1"));
    ready(&server, ns, "web-2");
    eventually("web-1 at the new template", || {
        image("web-1").as_deref() == Some("nginx:2")
    });
    ready(&server, ns, "web-1");
    let status = run(
        &server,
        K,
        &["rollout", "status", "sts/web", "-n", ns, "--timeout=20s"],
    );
    assert!(
        status.contains("partitioned roll out complete: 2 new pods have been updated"),
        "{status}"
    );
    assert_eq!(
        image("web-0").as_deref(),
        Some("nginx:1"),
        "below the partition"
    );
    assert_eq!(
        field(
            &server,
            ns,
            "sts/web",
            "{.status.currentRevision} {.status.currentReplicas} {.status.updatedReplicas}"
        ),
        format!("{first} 1 2")
    );

    for k in KUBECTLS {
        let history = run(&server, k, &["rollout", "history", "sts/web", "-n", ns]);
        let revisions: Vec<String> = lines(&history)
            .into_iter()
            .skip_while(|l| l.first().map(String::as_str) != Some("REVISION"))
            .skip(1)
            .filter_map(|l| l.first().cloned())
            .collect();
        assert_eq!(revisions, ["1", "2"], "{k}: {history}");
        let second_template = run(
            &server,
            k,
            &["rollout", "history", "sts/web", "-n", ns, "--revision=2"],
        );
        assert!(
            second_template.contains("nginx:2"),
            "{k}: {second_template}"
        );
        let status = run(
            &server,
            k,
            &["rollout", "status", "sts/web", "-n", ns, "--timeout=20s"],
        );
        assert!(
            status.contains("partitioned roll out complete"),
            "{k}: {status}"
        );
    }
    assert_eq!(names(&server, ns, "controllerrevisions"), {
        let mut r = vec![first.clone(), second.clone()];
        r.sort();
        r
    });

    // The last pod follows once the partition is lifted; the rollout completes.
    run(
        &server,
        K,
        &[
            "patch",
            "sts",
            "web",
            "-n",
            ns,
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
        ],
    );
    eventually("web-0 at the new template", || {
        image("web-0").as_deref() == Some("nginx:2")
    });
    ready(&server, ns, "web-0");
    eventually("the rollout completes", || {
        field(&server, ns, "sts/web", "{.status.currentRevision}") == second
    });

    // Deleting the set takes its pods; the claims stay (whenDeleted: Retain).
    run(&server, K, &["delete", "sts", "web", "-n", ns]);
    eventually("the pods go with the set", || {
        names(&server, ns, "pods").is_empty()
    });
    assert_eq!(names(&server, ns, "pvc").len(), 3);
}

#[test]
fn statefulset_claims_follow_the_retention_policy() {
    let server = Server::start();
    let ns = "sts-retention";
    run(&server, K, &["create", "namespace", ns]);
    let extra = "  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
";
    apply_file(&server, K, &statefulset(ns, extra), "create");
    // Parallel: all at once, none Ready.
    eventually("3 pods at once", || names(&server, ns, "pods").len() == 3);
    eventually("3 claims", || names(&server, ns, "pvc").len() == 3);
    let owner = |claim: &str| {
        field(
            &server,
            ns,
            &format!("pvc/{claim}"),
            "{.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name}",
        )
    };
    eventually("the claims are owned by the set", || {
        owner("data-web-2") == "StatefulSet/web"
    });

    // Scaled down: the condemned pod's claim is handed to the pod and goes with it.
    run(&server, K, &["scale", "sts/web", "--replicas=2", "-n", ns]);
    eventually("web-2 and its claim go", || {
        names(&server, ns, "pods") == ["web-0", "web-1"]
            && names(&server, ns, "pvc") == ["data-web-0", "data-web-1"]
    });
    assert_eq!(owner("data-web-1"), "StatefulSet/web");
    // Scaled up again: a new claim for the new pod, owned by the set.
    run(&server, K, &["scale", "sts/web", "--replicas=3", "-n", ns]);
    eventually("web-2 and a new claim", || {
        names(&server, ns, "pods").len() == 3 && owner("data-web-2") == "StatefulSet/web"
    });

    // Deleted: the claims go with the set.
    run(&server, K, &["delete", "sts", "web", "-n", ns]);
    eventually("pods and claims go with the set", || {
        names(&server, ns, "pods").is_empty() && names(&server, ns, "pvc").is_empty()
    });
}
