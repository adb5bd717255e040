//! Jobs, CronJobs and TTL after finished through kubectl against `vkube serve`. There is no
//! kubelet: the test plays it, patching pods' status to `Succeeded` or `Failed` (with the
//! container's exit code) through the status subresource, as a kubelet would write it.

use std::time::{Duration, Instant};

use crate::gc::exists;
use crate::harness::*;

/// Waits up to `secs` for `check`.
fn within(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(server: &Server, ns: &str, what: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    run(server, "kubectl", &["get", what, "-n", ns, "-o", &path])
}

/// The job's pods, oldest first.
fn pods_of(server: &Server, ns: &str, job: &str) -> Vec<String> {
    let out = run(
        server,
        "kubectl",
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    out.split_whitespace().map(str::to_string).collect()
}

/// Seconds since the epoch now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Plays kubelet: the pod's container ended with `exit_code`.
fn finish(server: &Server, ns: &str, pod: &str, exit_code: i32) {
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let now = rfc3339(unix_now());
    let patch = serde_json::json!({"status": {"phase": phase, "containerStatuses": [{
        "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" },
            "startedAt": now, "finishedAt": now}}}]}});
    patch_pod_status(server, ns, pod, &patch.to_string());
}

fn job_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox\n        command: [\"true\"]\n"
    )
}

#[test]
fn times_are_written_as_the_api_writes_them() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_900), "2026-01-01T00:05:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
}

#[test]
fn a_job_completes_after_its_completions_and_counts_each_pod_once() {
    let server = Server::start();
    let ns = "jobs";
    run(&server, "kubectl", &["create", "namespace", ns]);
    let yaml = job_yaml(ns, "two", "  completions: 2\n  parallelism: 1\n");
    apply_file(&server, "kubectl", &yaml, "create");
    within(20, "the first pod", || {
        pods_of(&server, ns, "two").len() == 1
    });
    let first = pods_of(&server, ns, "two").remove(0);
    assert!(first.starts_with("two-"), "{first}");
    assert_eq!(
        get(
            &server,
            ns,
            &format!("pod/{first}"),
            "{.metadata.finalizers}"
        ),
        r#"["batch.kubernetes.io/job-tracking"]"#
    );
    finish(&server, ns, &first, 0);
    within(20, "a second pod", || {
        pods_of(&server, ns, "two").len() == 2
    });
    let second = pods_of(&server, ns, "two")
        .into_iter()
        .find(|p| *p != first)
        .unwrap();
    finish(&server, ns, &second, 0);
    run(
        &server,
        "kubectl",
        &[
            "wait",
            "--for=condition=complete",
            "job/two",
            "-n",
            ns,
            "--timeout=30s",
        ],
    );
    assert_eq!(
        get(
            &server,
            ns,
            "job/two",
            "{.status.succeeded}/{.status.active}/{.status.conditions[*].type}"
        ),
        "2/0/SuccessCriteriaMet Complete"
    );
    for pod in [&first, &second] {
        assert_eq!(
            get(&server, ns, &format!("pod/{pod}"), "{.metadata.finalizers}"),
            ""
        );
    }
    let events = run(
        &server,
        "kubectl",
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector=involvedObject.name=two",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    assert!(
        events.contains(&format!("SuccessfulCreate: Created pod: {first}")),
        "{events}"
    );
    assert!(events.contains("Completed: Job completed"), "{events}");
    // The pods are written by the job controller's service account.
    let managers = get(
        &server,
        ns,
        &format!("pod/{first}"),
        "{.metadata.managedFields[*].manager}",
    );
    assert!(managers.contains("kube-controller-manager"), "{managers}");
}

#[test]
fn a_failing_job_backs_off_and_fails_at_its_backoff_limit() {
    let server = Server::start();
    let ns = "failing";
    run(&server, "kubectl", &["create", "namespace", ns]);
    apply_file(
        &server,
        "kubectl",
        &job_yaml(ns, "flaky", "  backoffLimit: 1\n"),
        "create",
    );
    within(20, "the first pod", || {
        pods_of(&server, ns, "flaky").len() == 1
    });
    let first = pods_of(&server, ns, "flaky").remove(0);
    finish(&server, ns, &first, 1);
    let failed_at = Instant::now();
    within(30, "a replacement after the backoff", || {
        pods_of(&server, ns, "flaky").len() == 2
    });
    let waited = failed_at.elapsed();
    // Upstream's pod failure backoff: 10 s after the first failure (finishedAt, in seconds).
    assert!(
        waited >= Duration::from_secs(8),
        "replaced after {waited:?}"
    );
    assert_eq!(get(&server, ns, "job/flaky", "{.status.failed}"), "1");
    let second = pods_of(&server, ns, "flaky")
        .into_iter()
        .find(|p| *p != first)
        .unwrap();
    finish(&server, ns, &second, 1);
    run(
        &server,
        "kubectl",
        &[
            "wait",
            "--for=condition=failed",
            "job/flaky",
            "-n",
            ns,
            "--timeout=30s",
        ],
    );
    assert_eq!(
        get(
            &server,
            ns,
            "job/flaky",
            "{.status.failed}/{.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "2/BackoffLimitExceeded"
    );
    assert_eq!(pods_of(&server, ns, "flaky").len(), 2, "no third pod");
}

/// `*/1 * * * *` fires at each minute. Its last scheduled time is set two minutes back (as after
/// a controller outage), so the first run is the catch-up of the current minute, at once, and
/// the second comes at the next minute: under a minute and a half in all.
#[test]
fn a_cronjob_fires_at_each_scheduled_minute() {
    let server = Server::start();
    let ns = "cron";
    run(&server, "kubectl", &["create", "namespace", ns]);
    run(
        &server,
        "kubectl",
        &[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/1 * * * *",
            "-n",
            ns,
            "--",
            "true",
        ],
    );
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "cronjob",
            "tick",
            "-n",
            ns,
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    );
    let back = rfc3339((unix_now() - 120) / 60 * 60);
    let patch = format!(r#"{{"status":{{"lastScheduleTime":"{back}"}}}}"#);
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "cronjob",
            "tick",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "cronjob",
            "tick",
            "-n",
            ns,
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    );
    let jobs = || {
        let out = get(&server, ns, "jobs", "{.items[*].metadata.name}");
        let mut names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        names.sort();
        names
    };
    within(20, "the catch-up run", || jobs().len() == 1);
    within(75, "the next minute's run", || jobs().len() == 2);
    let names = jobs();
    let minutes: Vec<i64> = names
        .iter()
        .map(|n| n.strip_prefix("tick-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(minutes[1], minutes[0] + 1, "{names:?}");
    let stamp = get(
        &server,
        ns,
        &format!("job/{}", names[1]),
        "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    );
    assert_eq!(stamp, rfc3339(minutes[1] * 60));
    within(10, "both Jobs listed active", || {
        get(&server, ns, "cronjob/tick", "{.status.active[*].name}")
            .split_whitespace()
            .count()
            == 2
    });
    assert_eq!(
        get(&server, ns, "cronjob/tick", "{.status.lastScheduleTime}"),
        stamp
    );
    let owner = get(
        &server,
        ns,
        &format!("job/{}", names[0]),
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    );
    assert_eq!(owner, "CronJob/tick");
}

#[test]
fn ttl_seconds_after_finished_deletes_a_finished_job_and_its_pods() {
    let server = Server::start();
    let ns = "ttl";
    run(&server, "kubectl", &["create", "namespace", ns]);
    apply_file(
        &server,
        "kubectl",
        &job_yaml(ns, "brief", "  ttlSecondsAfterFinished: 3\n"),
        "create",
    );
    within(20, "the pod", || pods_of(&server, ns, "brief").len() == 1);
    let pod = pods_of(&server, ns, "brief").remove(0);
    finish(&server, ns, &pod, 0);
    run(
        &server,
        "kubectl",
        &[
            "wait",
            "--for=condition=complete",
            "job/brief",
            "-n",
            ns,
            "--timeout=30s",
        ],
    );
    let done = Instant::now();
    within(20, "the Job deleted", || !exists(&server, ns, "job/brief"));
    assert!(done.elapsed() >= Duration::from_secs(1), "deleted at once");
    within(20, "its pod deleted", || {
        !exists(&server, ns, &format!("pod/{pod}"))
    });
}

/// `kubectl delete job` deletes in the background: the garbage collector deletes the running
/// pod, whose tracking finalizer the job controller then removes (upstream's orphan queue).
#[test]
fn deleting_a_running_job_leaves_no_pod_behind() {
    let server = Server::start();
    let ns = "deleted";
    run(&server, "kubectl", &["create", "namespace", ns]);
    apply_file(&server, "kubectl", &job_yaml(ns, "short", ""), "create");
    within(20, "the pod", || pods_of(&server, ns, "short").len() == 1);
    let pod = pods_of(&server, ns, "short").remove(0);
    run(
        &server,
        "kubectl",
        &["delete", "job", "short", "-n", ns, "--wait=false"],
    );
    within(20, "the pod deleted", || {
        !exists(&server, ns, &format!("pod/{pod}"))
    });
}

/// An Indexed Job created suspended: no pod until resumed, then one pod per index with its
/// index in an annotation, a label, the hostname and `JOB_COMPLETION_INDEX`.
#[test]
fn an_indexed_job_resumed_runs_each_index() {
    let server = Server::start();
    let ns = "indexed";
    run(&server, "kubectl", &["create", "namespace", ns]);
    apply_file(
        &server,
        "kubectl",
        &job_yaml(
            ns,
            "idx",
            "  completionMode: Indexed\n  completions: 2\n  parallelism: 2\n  suspend: true\n",
        ),
        "create",
    );
    within(20, "the Suspended condition", || {
        get(
            &server,
            ns,
            "job/idx",
            "{.status.conditions[0].type}/{.status.conditions[0].reason}",
        ) == "Suspended/JobSuspended"
    });
    assert!(pods_of(&server, ns, "idx").is_empty());
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "job",
            "idx",
            "-n",
            ns,
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    );
    within(20, "a pod per index", || {
        pods_of(&server, ns, "idx").len() == 2
    });
    for pod in pods_of(&server, ns, "idx") {
        let got = get(
            &server,
            ns,
            &format!("pod/{pod}"),
            "{.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}/{.metadata.labels.batch\\.kubernetes\\.io/job-completion-index}/{.spec.hostname}/{.spec.containers[0].env[0].name}",
        );
        let ix = got.split('/').next().unwrap().to_string();
        assert_eq!(got, format!("{ix}/{ix}/idx-{ix}/JOB_COMPLETION_INDEX"));
        assert!(pod.starts_with(&format!("idx-{ix}-")), "{pod}");
        finish(&server, ns, &pod, 0);
    }
    run(
        &server,
        "kubectl",
        &[
            "wait",
            "--for=condition=complete",
            "job/idx",
            "-n",
            ns,
            "--timeout=30s",
        ],
    );
    assert_eq!(
        get(
            &server,
            ns,
            "job/idx",
            "{.status.completedIndexes}/{.status.succeeded}"
        ),
        "0,1/2"
    );
}

/// A FailJob rule on exit code 42 fails the Job at once, with upstream's message.
#[test]
fn a_pod_failure_policy_fails_the_job_on_its_exit_code() {
    let server = Server::start();
    let ns = "policy";
    run(&server, "kubectl", &["create", "namespace", ns]);
    let spec = "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes:\n        containerName: main\n        operator: In\n        values: [42]\n";
    apply_file(&server, "kubectl", &job_yaml(ns, "pfp", spec), "create");
    within(20, "the pod", || pods_of(&server, ns, "pfp").len() == 1);
    let pod = pods_of(&server, ns, "pfp").remove(0);
    finish(&server, ns, &pod, 42);
    run(
        &server,
        "kubectl",
        &[
            "wait",
            "--for=condition=failed",
            "job/pfp",
            "-n",
            ns,
            "--timeout=30s",
        ],
    );
    assert_eq!(
        get(
            &server,
            ns,
            "job/pfp",
            "{.status.conditions[?(@.type==\"Failed\")].reason}: {.status.conditions[?(@.type==\"Failed\")].message}"
        ),
        format!(
            "PodFailurePolicy: Container main for pod {ns}/{pod} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert_eq!(pods_of(&server, ns, "pfp").len(), 1, "no retry");
}

/// A Job adopts a pod that its selector matches and no controller owns, and releases one whose
/// labels no longer match (the conformance spec "should adopt matching orphans and release
/// non-matching pods").
#[test]
fn a_job_adopts_matching_orphans_and_releases_non_matching_pods() {
    let server = Server::start();
    let ns = "adopt";
    run(&server, "kubectl", &["create", "namespace", ns]);
    apply_file(
        &server,
        "kubectl",
        &job_yaml(ns, "keeper", "  parallelism: 2\n  completions: 4\n"),
        "create",
    );
    within(20, "two pods", || pods_of(&server, ns, "keeper").len() == 2);
    let pod = pods_of(&server, ns, "keeper").remove(0);
    let owner = |server: &Server| {
        get(
            server,
            ns,
            &format!("pod/{pod}"),
            "{.metadata.ownerReferences[*].name}",
        )
    };
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "pod",
            &pod,
            "-n",
            ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/ownerReferences"}]"#,
        ],
    );
    within(20, "the orphan adopted", || owner(&server) == "keeper");
    let uid = get(&server, ns, "job/keeper", "{.metadata.uid}");
    assert_eq!(
        get(
            &server,
            ns,
            &format!("pod/{pod}"),
            "{.metadata.ownerReferences[0].uid}"
        ),
        uid
    );
    // Its labels gone, it is released.
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "pod",
            &pod,
            "-n",
            ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/labels"}]"#,
        ],
    );
    within(20, "the pod released", || owner(&server).is_empty());
}
