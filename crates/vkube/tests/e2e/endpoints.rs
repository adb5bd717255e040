//! Endpoints and EndpointSlices through kubectl 1.33 against `vkube serve` with no host: the
//! endpoint, endpointslice and endpointslicemirroring controllers write them from Services and
//! pods; the test plays the kubelet, giving pods an IP and flipping their Ready condition.

use std::time::{Duration, Instant};

use crate::gc::eventually;
use crate::harness::*;

/// Waits until `value()` is `want`, failing with the last value seen.
fn eventually_is(what: &str, want: &str, mut value: impl FnMut() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = value();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "never: {what}; last: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const K: &str = "kubectl.1.33";

fn get(server: &Server, ns: &str, what: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    let out = server.kubectl(K, &["get", what, "-n", ns, "-o", &path]);
    if out.ok {
        out.stdout
    } else {
        format!("error: {}", out.stderr)
    }
}

/// `kubectl get endpointslices -n NS -l LABELS -o OUTPUT`.
fn slices(server: &Server, ns: &str, labels: &str, output: &str) -> String {
    let args = [
        "get",
        "endpointslices",
        "-n",
        ns,
        "-l",
        labels,
        "-o",
        output,
    ];
    run(server, K, &args)
}

/// `ip=ready` of every endpoint in the slices of `service`, sorted.
fn slice_endpoints(server: &Server, ns: &str, service: &str) -> Vec<String> {
    let out = slices(
        server,
        ns,
        &format!("kubernetes.io/service-name={service}"),
        "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
    );
    let mut all: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    all.sort();
    all
}

/// Plays the kubelet: the pod runs at `ip`, Ready or not since now.
fn kubelet(server: &Server, ns: &str, pod: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = rfc3339(now as i64);
    patch_pod_status(
        server,
        ns,
        pod,
        &format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{status}","lastTransitionTime":"{at}"}}]}}}}"#
        ),
    );
}

#[test]
fn endpoints_and_slices_follow_pod_readiness_and_custom_endpoints_are_mirrored() {
    let server = Server::start();
    let ns = "endpoints";
    run(&server, K, &["create", "namespace", ns]);
    apply_file(
        &server,
        K,
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: nginx
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}, labels: {{team: a}}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"
        ),
        "apply",
    );
    // Before any pod has an IP: an Endpoints without subsets, and one placeholder slice.
    eventually_is("empty endpoints", "web|", || {
        get(&server, ns, "endpoints/web", "{.metadata.name}|{.subsets}")
    });
    eventually_is(
        "the placeholder slice",
        "endpointslice-controller.k8s.io:0",
        || {
            get(
                &server,
                ns,
                "endpointslices",
                "{range .items[*]}{.metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}:{.endpoints[*].addresses}{.ports[*].port}0 {end}",
            )
        },
    );
    eventually("two pods", || {
        run(&server, K, &["get", "pods", "-n", ns, "-o", "name"])
            .lines()
            .count()
            == 2
    });
    let pods = run(
        &server,
        K,
        &["get", "pods", "-n", ns, "-l", "app=web", "-o", "name"],
    );
    let pods: Vec<&str> = pods.lines().collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    kubelet(&server, ns, pods[0], "10.244.0.11", true);
    kubelet(&server, ns, pods[1], "10.244.0.12", false);
    eventually_is(
        "one ready and one not-ready address",
        "10.244.0.11|10.244.0.12|8080",
        || {
            get(
                &server,
                ns,
                "endpoints/web",
                "{.subsets[*].addresses[*].ip}|{.subsets[*].notReadyAddresses[*].ip}|{.subsets[0].ports[0].port}",
            )
        },
    );
    let row = run(
        &server,
        K,
        &["get", "endpoints", "web", "-n", ns, "--no-headers"],
    );
    assert_eq!(lines(&row)[0][..2], ["web", "10.244.0.11:8080"], "{row}");
    let labels = get(&server, ns, "endpoints/web", "{.metadata.labels.team}");
    assert_eq!(labels, "a");
    let trigger = get(
        &server,
        ns,
        "endpoints/web",
        "{.metadata.annotations.endpoints\\.kubernetes\\.io/last-change-trigger-time}",
    );
    assert!(trigger.ends_with('Z'), "trigger time {trigger:?}");
    eventually_is(
        "slices follow",
        "10.244.0.11=true 10.244.0.12=false",
        || slice_endpoints(&server, ns, "web").join(" "),
    );
    let slice = get(
        &server,
        ns,
        "endpointslices",
        "{.items[0].metadata.generateName}|{.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].name}|{.items[0].ports[0].port}|{.items[0].metadata.labels.team}",
    );
    assert_eq!(slice, "web-|Service/web|8080|a");

    // Settled: the controllers write nothing more (what they compare is what the API stores).
    let versions = || {
        let e = get(&server, ns, "endpoints/web", "{.metadata.resourceVersion}");
        let s = get(
            &server,
            ns,
            "endpointslices",
            "{.items[*].metadata.resourceVersion}",
        );
        format!("{e} {s}")
    };
    let settled = versions();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(versions(), settled, "the controllers keep rewriting");

    // Readiness flips both ways.
    kubelet(&server, ns, pods[0], "10.244.0.11", false);
    kubelet(&server, ns, pods[1], "10.244.0.12", true);
    eventually_is("the other pod ready", "10.244.0.12|10.244.0.11", || {
        get(
            &server,
            ns,
            "endpoints/web",
            "{.subsets[*].addresses[*].ip}|{.subsets[*].notReadyAddresses[*].ip}",
        )
    });
    eventually_is(
        "slices follow the flip",
        "10.244.0.11=false 10.244.0.12=true",
        || slice_endpoints(&server, ns, "web").join(" "),
    );

    // A Service without a selector and the Endpoints a client wrote for it: mirrored.
    apply_file(
        &server,
        K,
        &format!(
            "apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec:
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: db, namespace: {ns}}}
subsets:
- addresses: [{{ip: 192.0.2.10}}]
  notReadyAddresses: [{{ip: 192.0.2.11}}]
  ports: [{{name: pg, port: 5432}}]
"
        ),
        "apply",
    );
    eventually_is(
        "a mirrored slice",
        "192.0.2.10=true 192.0.2.11=false",
        || slice_endpoints(&server, ns, "db").join(" "),
    );
    let managed = get(
        &server,
        ns,
        "endpointslices",
        "{.items[?(@.metadata.labels.kubernetes\\.io/service-name==\"db\")].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}",
    );
    assert_eq!(managed, "endpointslicemirroring-controller.k8s.io");
    let mirror_version = || {
        slices(
            &server,
            ns,
            "kubernetes.io/service-name=db",
            "jsonpath={.items[*].metadata.resourceVersion}",
        )
    };
    let settled = mirror_version();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(mirror_version(), settled, "the mirror keeps rewriting");
    let custom = get(&server, ns, "endpoints/db", "{.subsets[0].addresses[0].ip}");
    assert_eq!(
        custom, "192.0.2.10",
        "the client's Endpoints stay as written"
    );
    // vkube's own default/kubernetes Endpoints opts out of mirroring.
    let mirrored = slices(
        &server,
        "default",
        "endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io",
        "name",
    );
    assert_eq!(mirrored, "");

    // Services deleted: their Endpoints and slices go.
    run(&server, K, &["delete", "service", "web", "db", "-n", ns]);
    for svc in ["web", "db"] {
        eventually(&format!("{svc}'s endpoints gone"), || {
            !crate::gc::exists(&server, ns, &format!("endpoints/{svc}"))
        });
        eventually(&format!("{svc}'s slices gone"), || {
            let label = format!("kubernetes.io/service-name={svc}");
            slices(&server, ns, &label, "name").is_empty()
        });
    }
}

#[test]
fn controllers_leaves_the_endpoint_controller_out_by_upstreams_name() {
    let server = Server::start_with(&["--controllers=*,-endpoints-controller"]);
    let ns = "no-endpoints";
    run(&server, K, &["create", "namespace", ns]);
    run(
        &server,
        K,
        &[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
            "-n",
            ns,
        ],
    );
    // The slice controller runs (a placeholder slice), the endpoint controller does not.
    eventually("a placeholder slice", || {
        !slices(&server, ns, "kubernetes.io/service-name=web", "name").is_empty()
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!crate::gc::exists(&server, ns, "endpoints/web"));
}
