//! The Job controller against the fake API, the test playing kubelet.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::policy::Backoffs;
use super::sync;
use crate::Context;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const JOBS: &str = "/apis/batch/v1/namespaces/ns/jobs";
const PODS: &str = "/api/v1/namespaces/ns/pods";

pub(crate) struct Env {
    pub fake: FakeApi,
    pub clock: Arc<FakeClock>,
    pub ctx: Context,
    backoffs: Backoffs,
}

pub(crate) fn env() -> Env {
    let fake = FakeApi::default();
    let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    let ctx = Context {
        client: fake.client(),
        clock: clock.clone(),
        workers: 1,
        resync: Duration::from_secs(600),
        max_endpoints_per_slice: 100,
    };
    Env {
        fake,
        clock,
        ctx,
        backoffs: Backoffs::default(),
    }
}

/// A Job as the API stores it after defaulting: selector and template labels on its uid.
pub(crate) fn job(name: &str, spec: Value) -> Value {
    let uid = format!("uid-{name}");
    let labels = json!({"batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name});
    let mut full = json!({
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "suspend": false,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
        "template": {"metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}},
    });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": full})
}

impl Env {
    pub(crate) fn create(&self, name: &str, spec: Value) {
        self.fake.put(JOBS, job(name, spec));
    }

    pub(crate) async fn sync(&self, name: &str) -> Action {
        let obj: Job = serde_json::from_value(self.fake.get(JOBS, name).unwrap()).unwrap();
        sync(&obj, &self.ctx, &self.backoffs).await.unwrap()
    }

    pub(crate) fn job(&self, name: &str) -> Value {
        self.fake.get(JOBS, name).unwrap()
    }

    fn pods(&self) -> Vec<Value> {
        self.fake.list(PODS)
    }

    fn pod_names(&self) -> Vec<String> {
        self.pods()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn now(&self) -> Timestamp {
        use crate::Clock;
        self.clock.now()
    }

    /// The kubelet ends the pod: `Succeeded`, or `Failed` with the container's exit code.
    pub(crate) fn finish(&self, pod: &str, exit_code: i32) {
        let at = self.now().to_string();
        let phase = if exit_code == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        self.fake.edit(PODS, pod, |p| {
            p["status"] = json!({"phase": phase, "containerStatuses": [{"name": "main",
                "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "finishedAt": at}}}]});
        });
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn conditions(job: &Value) -> Vec<(String, String, String)> {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn cond(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

#[tokio::test]
async fn completions_with_parallelism_complete_and_count_each_pod_once() {
    let e = env();
    e.create("pi", json!({"completions": 3, "parallelism": 2}));
    e.sync("pi").await;
    let pods = e.pods();
    assert_eq!(pods.len(), 2);
    let pod = &pods[0];
    assert!(pod["metadata"]["generateName"] == "pi-");
    assert_eq!(
        pod["metadata"]["finalizers"],
        json!(["batch.kubernetes.io/job-tracking"])
    );
    assert_eq!(pod["metadata"]["labels"]["job-name"], "pi");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    let job = e.job("pi");
    assert_eq!(job["status"]["active"], 2);
    assert_eq!(job["status"]["startTime"], "2026-01-01T00:00:00Z");

    let names = e.pod_names();
    e.finish(&names[0], 0);
    e.sync("pi").await;
    let job = e.job("pi");
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(
        job["status"]["active"], 2,
        "one more pod for the third completion"
    );
    assert!(job["status"]["uncountedTerminatedPods"]["succeeded"].is_null());
    assert!(e.fake.get(PODS, &names[0]).unwrap()["metadata"]["finalizers"].is_null());
    // Synced again with nothing new: still one.
    e.sync("pi").await;
    assert_eq!(e.job("pi")["status"]["succeeded"], 1);

    for name in e.pod_names().iter().skip(1) {
        e.finish(name, 0);
    }
    e.advance(5);
    e.sync("pi").await;
    let job = e.job("pi");
    assert_eq!(job["status"]["succeeded"], 3);
    assert_eq!(job["status"]["active"], 0);
    assert_eq!(
        conditions(&job),
        vec![
            cond("SuccessCriteriaMet", "True", "CompletionsReached"),
            cond("Complete", "True", "CompletionsReached")
        ]
    );
    assert_eq!(job["status"]["completionTime"], "2026-01-01T00:00:05Z");
    assert_eq!(
        job["status"]["conditions"][1]["message"],
        "Reached expected number of succeeded pods"
    );
    let writes = e.fake.writes().len();
    e.sync("pi").await;
    assert_eq!(
        e.fake.writes().len(),
        writes,
        "a finished Job is left alone"
    );
}

#[tokio::test]
async fn a_pod_in_uncounted_is_counted_once_after_a_restart() {
    let e = env();
    e.create("once", json!({"completions": 2}));
    e.sync("once").await;
    let name = e.pod_names()[0].clone();
    e.finish(&name, 0);
    // The controller died after writing the uid but before removing the finalizer.
    let uid = e.fake.get(PODS, &name).unwrap()["metadata"]["uid"].clone();
    e.fake.edit(JOBS, "once", |j| {
        j["status"]["uncountedTerminatedPods"] = json!({"succeeded": [uid]});
    });
    let restarted = Env {
        backoffs: Backoffs::default(),
        ..env_from(&e)
    };
    restarted.sync("once").await;
    restarted.sync("once").await;
    let job = e.job("once");
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"]["uncountedTerminatedPods"]["succeeded"].is_null());
    assert_eq!(job["status"]["active"], 1);
}

fn env_from(e: &Env) -> Env {
    Env {
        fake: e.fake.clone(),
        clock: e.clock.clone(),
        ctx: e.ctx.clone(),
        backoffs: Backoffs::default(),
    }
}

#[tokio::test]
async fn failures_are_retried_after_a_doubling_delay_until_the_backoff_limit() {
    let e = env();
    e.create("flaky", json!({"backoffLimit": 2}));
    e.sync("flaky").await;
    let mut delays = Vec::new();
    for round in 0..3 {
        let names = e.pod_names();
        assert_eq!(names.len(), round + 1, "round {round}");
        e.finish(names.last().unwrap(), 1);
        let action = e.sync("flaky").await;
        let job = e.job("flaky");
        assert_eq!(job["status"]["failed"], round as i64 + 1);
        if round == 2 {
            break;
        }
        assert_eq!(
            e.pod_names().len(),
            round + 1,
            "no replacement during the backoff"
        );
        assert_eq!(job["status"]["active"], 0);
        delays.push(action);
        let wait = 10 << round;
        e.advance(wait - 1);
        e.sync("flaky").await;
        assert_eq!(e.pod_names().len(), round + 1, "still waiting");
        e.advance(1);
        e.sync("flaky").await;
    }
    assert_eq!(
        delays,
        vec![
            Action::requeue(Duration::from_secs(10)),
            Action::requeue(Duration::from_secs(20))
        ]
    );
    let job = e.job("flaky");
    assert_eq!(
        conditions(&job),
        vec![
            cond("FailureTarget", "True", "BackoffLimitExceeded"),
            cond("Failed", "True", "BackoffLimitExceeded")
        ]
    );
    assert_eq!(
        job["status"]["conditions"][1]["message"],
        "Job has reached the specified backoff limit"
    );
    assert!(job["status"]["completionTime"].is_null());
}

#[tokio::test]
async fn pod_failure_policy_fails_the_job_or_ignores_the_failure() {
    let e = env();
    let policy = json!({"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]});
    e.create(
        "pfp",
        json!({"podFailurePolicy": policy, "podReplacementPolicy": "Failed"}),
    );
    e.sync("pfp").await;
    let first = e.pod_names()[0].clone();
    e.finish(&first, 137);
    e.fake.edit(PODS, &first, |p| {
        p["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True"}]);
    });
    e.sync("pfp").await;
    assert!(e.job("pfp")["status"]["failed"].is_null(), "ignored");
    e.advance(10);
    e.sync("pfp").await;
    let second = e
        .pod_names()
        .into_iter()
        .find(|n| *n != first)
        .expect("a replacement");
    e.finish(&second, 42);
    e.sync("pfp").await;
    let job = e.job("pfp");
    assert_eq!(
        conditions(&job),
        vec![
            cond("FailureTarget", "True", "PodFailurePolicy"),
            cond("Failed", "True", "PodFailurePolicy")
        ]
    );
    assert_eq!(
        job["status"]["conditions"][1]["message"],
        format!(
            "Container main for pod ns/{second} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert_eq!(job["status"]["failed"], 1);
}

#[tokio::test]
async fn active_deadline_fails_the_job_and_deletes_its_pods() {
    let e = env();
    e.create(
        "slow",
        json!({"activeDeadlineSeconds": 30, "parallelism": 2, "completions": 4}),
    );
    let action = e.sync("slow").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(e.pod_names().len(), 2);
    e.advance(30);
    e.sync("slow").await;
    assert!(e.pod_names().is_empty());
    let job = e.job("slow");
    assert_eq!(
        conditions(&job),
        vec![cond("FailureTarget", "True", "DeadlineExceeded")]
    );
    assert_eq!(job["status"]["terminating"], 2);
    e.sync("slow").await;
    let job = e.job("slow");
    assert_eq!(
        conditions(&job),
        vec![
            cond("FailureTarget", "True", "DeadlineExceeded"),
            cond("Failed", "True", "DeadlineExceeded")
        ]
    );
    assert_eq!(
        job["status"]["conditions"][1]["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(job["status"]["failed"], 2);
    assert_eq!(job["status"]["terminating"], 0);
}

#[tokio::test]
async fn suspend_deletes_active_pods_and_resume_restarts_the_clock() {
    let e = env();
    e.create("nap", json!({"parallelism": 2, "completions": 2}));
    e.sync("nap").await;
    assert_eq!(e.pod_names().len(), 2);
    e.fake
        .edit(JOBS, "nap", |j| j["spec"]["suspend"] = json!(true));
    e.sync("nap").await;
    assert!(e.pod_names().is_empty());
    let job = e.job("nap");
    assert_eq!(
        conditions(&job),
        vec![cond("Suspended", "True", "JobSuspended")]
    );
    assert_eq!(job["status"]["active"], 0);
    assert_eq!(
        job["status"]["failed"],
        json!(null),
        "suspended pods are not failures"
    );
    e.advance(60);
    e.fake
        .edit(JOBS, "nap", |j| j["spec"]["suspend"] = json!(false));
    e.sync("nap").await;
    let job = e.job("nap");
    assert_eq!(
        conditions(&job),
        vec![cond("Suspended", "False", "JobResumed")]
    );
    assert_eq!(job["status"]["startTime"], "2026-01-01T00:01:00Z");
    assert_eq!(e.pod_names().len(), 2);
}

#[tokio::test]
async fn a_job_created_suspended_has_no_start_time() {
    let e = env();
    e.create("later", json!({"suspend": true}));
    e.sync("later").await;
    let job = e.job("later");
    assert!(job["status"]["startTime"].is_null());
    assert_eq!(
        conditions(&job),
        vec![cond("Suspended", "True", "JobSuspended")]
    );
    assert!(e.pod_names().is_empty());
}

#[tokio::test]
async fn indexed_jobs_give_each_pod_its_index() {
    let e = env();
    e.create(
        "idx",
        json!({"completionMode": "Indexed", "completions": 3, "parallelism": 2}),
    );
    e.sync("idx").await;
    let pods = e.pods();
    assert_eq!(pods.len(), 2);
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, vec!["0", "1"]);
    let zero = pods
        .iter()
        .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
        .unwrap();
    assert_eq!(zero["metadata"]["generateName"], "idx-0-");
    assert_eq!(
        zero["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
        "0"
    );
    assert_eq!(zero["spec"]["hostname"], "idx-0");
    assert_eq!(
        zero["spec"]["containers"][0]["env"][0],
        json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef":
            {"fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}})
    );
    let one = e
        .pods()
        .into_iter()
        .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1")
        .unwrap();
    e.finish(one["metadata"]["name"].as_str().unwrap(), 0);
    e.sync("idx").await;
    let job = e.job("idx");
    assert_eq!(job["status"]["completedIndexes"], "1");
    assert_eq!(job["status"]["succeeded"], 1);
    let two = e
        .pods()
        .into_iter()
        .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "2")
        .expect("index 2 started");
    e.finish(two["metadata"]["name"].as_str().unwrap(), 0);
    e.finish(zero["metadata"]["name"].as_str().unwrap(), 0);
    e.sync("idx").await;
    let job = e.job("idx");
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    assert_eq!(
        conditions(&job)[1],
        cond("Complete", "True", "CompletionsReached")
    );
}

#[tokio::test]
async fn backoff_limit_per_index_fails_an_index_not_the_job() {
    let e = env();
    e.create(
        "per",
        json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
               "backoffLimitPerIndex": 0, "backoffLimit": 2147483647}),
    );
    e.sync("per").await;
    let index_of = |p: &Value| {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].clone()
    };
    let pods = e.pods();
    let zero = pods.iter().find(|p| index_of(p) == "0").unwrap();
    assert_eq!(
        zero["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "0"
    );
    e.finish(zero["metadata"]["name"].as_str().unwrap(), 1);
    e.sync("per").await;
    let job = e.job("per");
    assert_eq!(job["status"]["failedIndexes"], "0");
    assert_eq!(job["status"]["failed"], 1);
    assert_eq!(e.pods().len(), 2, "index 0 is not retried");
    let one = e.pods().into_iter().find(|p| index_of(p) == "1").unwrap();
    e.finish(one["metadata"]["name"].as_str().unwrap(), 0);
    e.sync("per").await;
    e.sync("per").await;
    let job = e.job("per");
    assert_eq!(job["status"]["completedIndexes"], "1");
    assert_eq!(
        conditions(&job),
        vec![
            cond("FailureTarget", "True", "FailedIndexes"),
            cond("Failed", "True", "FailedIndexes")
        ]
    );
}

#[tokio::test]
async fn fewer_completions_delete_surplus_pods_without_counting_them() {
    let e = env();
    e.create("many", json!({"parallelism": 3, "completions": 3}));
    e.sync("many").await;
    assert_eq!(e.pod_names().len(), 3);
    e.fake
        .edit(JOBS, "many", |j| j["spec"]["parallelism"] = json!(1));
    e.sync("many").await;
    assert_eq!(e.pod_names().len(), 1);
    let job = e.job("many");
    assert_eq!(job["status"]["active"], 1);
    assert!(job["status"]["failed"].is_null());
}

#[tokio::test]
async fn pods_of_a_deleted_job_lose_the_tracking_finalizer() {
    let e = env();
    e.create("gone", json!({"parallelism": 2, "completions": 2}));
    e.create("alive", json!({}));
    e.sync("gone").await;
    e.sync("alive").await;
    let pod_of = |job: &str| {
        e.pods()
            .into_iter()
            .find(|p| p["metadata"]["labels"]["job-name"] == job)
            .unwrap()
    };
    let alive = pod_of("alive");
    let orphan = pod_of("gone");
    e.fake
        .edit(JOBS, "gone", |j| j["metadata"]["uid"] = json!("another"));
    for pod in [&orphan, &alive] {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
        super::release_orphan(&pod, &e.ctx).await.unwrap();
    }
    let name = |p: &Value| p["metadata"]["name"].as_str().unwrap().to_string();
    assert!(e.fake.get(PODS, &name(&orphan)).unwrap()["metadata"]["finalizers"].is_null());
    assert_eq!(
        e.fake.get(PODS, &name(&alive)).unwrap()["metadata"]["finalizers"],
        json!(["batch.kubernetes.io/job-tracking"])
    );
}

#[tokio::test]
async fn events_say_what_the_controller_did() {
    let e = env();
    e.create("told", json!({}));
    e.sync("told").await;
    let pod = e.pod_names()[0].clone();
    e.finish(&pod, 0);
    e.sync("told").await;
    let events: Vec<(String, String, String)> = e
        .fake
        .list("/api/v1/namespaces/ns/events")
        .iter()
        .map(|ev| {
            (
                ev["reason"].as_str().unwrap().to_string(),
                ev["message"].as_str().unwrap().to_string(),
                ev["source"]["component"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(events.contains(&(
        "SuccessfulCreate".into(),
        format!("Created pod: {pod}"),
        "job-controller".into()
    )));
    assert!(events.contains(&(
        "Completed".into(),
        "Job completed".into(),
        "job-controller".into()
    )));
}

#[tokio::test]
async fn an_adopted_pod_is_tracked_and_counted() {
    let e = env();
    e.create("adopt", json!({"completions": 1}));
    let labels = e.job("adopt")["spec"]["template"]["metadata"]["labels"].clone();
    e.fake.put(
        PODS,
        json!({"metadata": {"name": "stray", "labels": labels},
               "spec": {"containers": [{"name": "main", "image": "busybox"}]},
               "status": {"phase": "Running"}}),
    );
    e.sync("adopt").await;
    let stray = e.fake.get(PODS, "stray").unwrap();
    assert_eq!(stray["metadata"]["ownerReferences"][0]["name"], "adopt");
    assert_eq!(
        stray["metadata"]["finalizers"],
        json!(["batch.kubernetes.io/job-tracking"])
    );
    assert_eq!(
        e.pod_names(),
        vec!["stray"],
        "the adopted pod is the one running"
    );
    e.finish("stray", 0);
    e.sync("adopt").await;
    assert_eq!(e.job("adopt")["status"]["succeeded"], 1);
    assert_eq!(
        conditions(&e.job("adopt"))[1],
        cond("Complete", "True", "CompletionsReached")
    );
}

#[tokio::test]
async fn fail_index_and_count_rules() {
    let e = env();
    let policy = json!({"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}},
        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [3]}},
    ]});
    e.create(
        "rules",
        json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
               "backoffLimitPerIndex": 5, "backoffLimit": 2147483647, "podFailurePolicy": policy}),
    );
    e.sync("rules").await;
    let by_index = |ix: &str| {
        e.pods()
            .into_iter()
            .find(|p| {
                p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == ix
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (zero, one) = (by_index("0"), by_index("1"));
    e.finish(&zero, 3);
    e.finish(&one, 1);
    e.sync("rules").await;
    let job = e.job("rules");
    assert_eq!(
        job["status"]["failedIndexes"], "0",
        "FailIndex: index 0 is not retried"
    );
    // Index 1's failed pod stays (uncounted) until its replacement carries its failure count.
    assert_eq!(job["status"]["failed"], 1);
    // Index 1 is retried after its backoff, with its failure counted on the new pod.
    e.advance(10);
    e.sync("rules").await;
    let retry = e
        .pods()
        .into_iter()
        .find(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
                && p["metadata"]["name"] != one.as_str()
        })
        .expect("a new pod for index 1");
    assert_eq!(
        retry["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "1"
    );
    e.sync("rules").await;
    assert_eq!(e.job("rules")["status"]["failed"], 2);
}

#[tokio::test]
async fn refused_pods_are_reported_and_retried() {
    let e = env();
    e.create("quota", json!({"parallelism": 2, "completions": 2}));
    let message = "pods \"quota-x\" is forbidden: exceeded quota: pods";
    e.fake.refuse("POST", PODS, 403, "Forbidden", message);
    let obj: Job = serde_json::from_value(e.job("quota")).unwrap();
    assert!(sync(&obj, &e.ctx, &e.backoffs).await.is_err());
    let events = e.fake.list("/api/v1/namespaces/ns/events");
    assert!(events.iter().any(|ev| ev["reason"] == "FailedCreate"
        && ev["message"] == format!("Error creating: {message}")));
    assert_eq!(
        e.fake
            .writes()
            .iter()
            .filter(|w| *w == &format!("POST {PODS}"))
            .count(),
        1,
        "stops at the first refusal"
    );
    e.fake.accept();
    e.sync("quota").await;
    assert_eq!(e.pod_names().len(), 2);
}
