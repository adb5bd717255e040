//! The CronJob controller against the fake API and a fake clock.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{job_name, sync};
use crate::Context;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const CRONJOBS: &str = "/apis/batch/v1/namespaces/ns/cronjobs";
const JOBS: &str = "/apis/batch/v1/namespaces/ns/jobs";
const EVENTS: &str = "/api/v1/namespaces/ns/events";

struct Env {
    fake: FakeApi,
    clock: Arc<FakeClock>,
    ctx: Context,
}

/// The fake API stamps every object created at 2026-01-01T00:00:00Z; the clock starts at `at`.
fn env(at: &str) -> Env {
    let fake = FakeApi::default();
    let clock = Arc::new(FakeClock::new(at.parse().unwrap()));
    let ctx = Context {
        client: fake.client(),
        clock: clock.clone(),
        workers: 1,
        resync: Duration::from_secs(600),
        max_endpoints_per_slice: 100,
    };
    Env { fake, clock, ctx }
}

impl Env {
    fn create(&self, name: &str, spec: Value) {
        let mut full = json!({
            "schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"app": "report"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}]}}}},
        });
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        self.fake.put(
            CRONJOBS,
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": full}),
        );
    }

    async fn sync(&self, name: &str) -> Action {
        let obj: CronJob = serde_json::from_value(self.fake.get(CRONJOBS, name).unwrap()).unwrap();
        sync(&obj, &self.ctx).await.unwrap()
    }

    fn at(&self, t: &str) {
        use crate::Clock;
        let target: jiff::Timestamp = t.parse().unwrap();
        let by = target.duration_since(self.clock.now());
        self.clock.advance(Duration::try_from(by).unwrap());
    }

    fn jobs(&self) -> Vec<String> {
        self.fake
            .list(JOBS)
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn cronjob(&self, name: &str) -> Value {
        self.fake.get(CRONJOBS, name).unwrap()
    }

    fn events(&self) -> Vec<(String, String)> {
        self.fake
            .list(EVENTS)
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Another controller finished the Job.
    fn finish(&self, job: &str, type_: &str, at: &str) {
        self.fake.edit(JOBS, job, |j| {
            j["status"] =
                json!({"startTime": at, "conditions": [{"type": type_, "status": "True"}]});
            if type_ == "Complete" {
                j["status"]["completionTime"] = json!(at);
            }
        });
    }
}

fn name_at(cj: &str, t: &str) -> String {
    job_name(cj, t.parse().unwrap())
}

fn secs(s: f64) -> Action {
    Action::requeue(Duration::from_secs_f64(s))
}

#[tokio::test]
async fn a_job_per_scheduled_time_and_a_requeue_at_the_next() {
    let e = env("2026-01-01T00:00:00Z");
    e.create("report", json!({}));
    assert_eq!(e.sync("report").await, secs(300.1));
    assert!(e.jobs().is_empty());
    e.at("2026-01-01T00:05:00.1Z");
    assert_eq!(e.sync("report").await, secs(300.0));
    let name = name_at("report", "2026-01-01T00:05:00Z");
    assert_eq!(name, "report-29453765");
    assert_eq!(e.jobs(), vec![name.clone()]);
    let job = e.fake.get(JOBS, &name).unwrap();
    assert_eq!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        "2026-01-01T00:05:00Z"
    );
    assert_eq!(job["metadata"]["labels"]["app"], "report");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["name"],
        "main"
    );
    let cj = e.cronjob("report");
    assert_eq!(cj["status"]["lastScheduleTime"], "2026-01-01T00:05:00Z");
    assert_eq!(cj["status"]["active"][0]["name"], name.as_str());
    assert_eq!(
        e.events(),
        vec![("SuccessfulCreate".into(), format!("Created job {name}"))]
    );
    // The same time is not run twice.
    e.sync("report").await;
    assert_eq!(e.jobs().len(), 1);
    e.at("2026-01-01T00:10:00Z");
    e.sync("report").await;
    assert_eq!(e.jobs().len(), 2, "Allow: a second one beside the first");
}

#[tokio::test]
async fn the_schedule_is_read_in_the_time_zone() {
    let e = env("2026-01-01T23:59:00Z");
    e.create(
        "tokyo",
        json!({"schedule": "0 9 * * *", "timeZone": "Asia/Tokyo"}),
    );
    assert_eq!(e.sync("tokyo").await, secs(60.1));
    assert!(e.jobs().is_empty());
    e.at("2026-01-02T00:00:00Z");
    e.sync("tokyo").await;
    let jobs = e.jobs();
    assert_eq!(jobs, vec![name_at("tokyo", "2026-01-02T00:00:00Z")]);
    let job = e.fake.get(JOBS, &jobs[0]).unwrap();
    assert_eq!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        "2026-01-02T09:00:00+09:00"
    );
}

#[tokio::test]
async fn forbid_skips_while_one_runs_and_completion_is_recorded() {
    let e = env("2026-01-01T00:05:00Z");
    e.create("once", json!({"concurrencyPolicy": "Forbid"}));
    e.sync("once").await;
    let first = name_at("once", "2026-01-01T00:05:00Z");
    assert_eq!(e.jobs(), vec![first.clone()]);
    e.at("2026-01-01T00:10:00Z");
    e.sync("once").await;
    assert_eq!(e.jobs().len(), 1);
    assert!(
        e.events().contains(&(
            "JobAlreadyActive".into(),
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into()
        ))
    );
    e.finish(&first, "Complete", "2026-01-01T00:11:00Z");
    e.at("2026-01-01T00:11:00Z");
    e.sync("once").await;
    // As upstream: a Job leaving the active list is counted as a success on the next sync.
    e.sync("once").await;
    let cj = e.cronjob("once");
    assert_eq!(cj["status"]["lastSuccessfulTime"], "2026-01-01T00:11:00Z");
    // The 00:10 start, late, once the first is done.
    assert_eq!(
        cj["status"]["active"][0]["name"],
        name_at("once", "2026-01-01T00:10:00Z").as_str()
    );
    assert!(e.events().iter().any(|(r, m)| r == "SawCompletedJob"
        && *m == format!("Saw completed job: {first}, status: Complete")));
}

#[tokio::test]
async fn replace_deletes_the_running_job() {
    let e = env("2026-01-01T00:05:00Z");
    e.create("swap", json!({"concurrencyPolicy": "Replace"}));
    e.sync("swap").await;
    e.at("2026-01-01T00:10:00Z");
    e.sync("swap").await;
    let second = name_at("swap", "2026-01-01T00:10:00Z");
    assert_eq!(e.jobs(), vec![second.clone()]);
    let cj = e.cronjob("swap");
    assert_eq!(cj["status"]["active"].as_array().unwrap().len(), 1);
    assert_eq!(cj["status"]["active"][0]["name"], second.as_str());
    assert!(
        e.fake
            .writes()
            .iter()
            .any(|w| w.starts_with("DELETE /apis/batch/v1/namespaces/ns/jobs/swap-"))
    );
}

#[tokio::test]
async fn history_limits_keep_the_newest_finished_jobs() {
    let e = env("2026-01-01T00:00:00Z");
    e.create(
        "hist",
        json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}),
    );
    for (minute, kind) in [
        (5, "Complete"),
        (10, "Complete"),
        (15, "Failed"),
        (20, "Complete"),
    ] {
        let at = format!("2026-01-01T00:{minute:02}:00Z");
        e.at(&at);
        e.sync("hist").await;
        let name = name_at("hist", &at);
        e.finish(&name, kind, &at);
    }
    e.sync("hist").await;
    assert_eq!(e.jobs(), vec![name_at("hist", "2026-01-01T00:20:00Z")]);
    assert!(
        e.cronjob("hist")["status"]["active"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
}

#[tokio::test]
async fn starts_missed_beyond_the_deadline_are_skipped() {
    let e = env("2026-01-01T00:07:00Z");
    e.create("late", json!({"startingDeadlineSeconds": 60}));
    let action = e.sync("late").await;
    assert!(e.jobs().is_empty(), "00:05 is more than 60 s ago");
    assert_eq!(action, secs(180.1));
    e.at("2026-01-01T00:10:30Z");
    e.sync("late").await;
    assert_eq!(e.jobs(), vec![name_at("late", "2026-01-01T00:10:00Z")]);
}

#[tokio::test]
async fn too_many_missed_starts_warn_and_run_the_latest() {
    let e = env("2026-01-02T00:00:30Z");
    e.create("behind", json!({"schedule": "* * * * *"}));
    e.sync("behind").await;
    assert_eq!(e.jobs(), vec![name_at("behind", "2026-01-02T00:00:00Z")]);
    assert!(e.events().contains(&(
        "TooManyMissedTimes".into(),
        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into()
    )));
}

#[tokio::test]
async fn suspended_bad_schedules_and_zones_start_nothing() {
    let e = env("2026-01-01T01:00:00Z");
    e.create("off", json!({"suspend": true}));
    e.create("bad", json!({"schedule": "61 * * * *"}));
    e.create("zone", json!({"timeZone": "Mars/Olympus"}));
    for name in ["off", "bad", "zone"] {
        assert_eq!(e.sync(name).await, Action::await_change());
    }
    assert!(e.jobs().is_empty());
    let reasons: Vec<String> = e.events().into_iter().map(|(r, _)| r).collect();
    assert!(reasons.contains(&"UnparseableSchedule".to_string()));
    assert!(e.events().contains(&(
        "UnknownTimeZone".into(),
        "invalid timeZone: \"Mars/Olympus\": unknown time zone Mars/Olympus".into()
    )));
    assert!(e.events().contains(&(
        "UnparseableSchedule".into(),
        "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59): 61".into()
    )));
}
