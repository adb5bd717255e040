//! Differential test (difftest/README.md): the request script `difftest/requests/*.yaml` runs
//! against `vkube serve` and its answers, normalized, are compared field by field with
//! kube-apiserver's. In CI those are the answers recorded in `difftest/fixtures/`; `difftest/run`
//! starts kube-apiserver + etcd and compares live (`--record` rewrites the fixtures). Differences
//! listed in `difftest/allow.yaml` pass with their reason; any other fails the test, and so does an
//! allow-list entry that no longer matches anything.
//!
//! Environment: `VKUBE_DIFFTEST_UPSTREAM` = kubeconfig of a live kube-apiserver (compare with it,
//! not the fixtures); `VKUBE_DIFFTEST_RECORD=1` = also write its answers as the fixtures;
//! `VKUBE_DIFFTEST_ONLY=crud,patch` = these script files only.

pub(crate) mod client;
mod compare;
mod normalize;
mod script;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::Server;
use client::Target;
use compare::{AllowList, Diff, diff};
use script::Recorded;

fn difftest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../difftest")
}

fn fixture_path(file: &str) -> PathBuf {
    difftest_dir().join("fixtures").join(format!("{file}.json"))
}

fn write_fixture(file: &str, version: &str, steps: &[Recorded]) {
    let steps: Vec<Value> = steps
        .iter()
        .map(|r| {
            let mut v = json!({"step": r.step, "request": r.request});
            for (k, x) in r.answer.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({"recorded_from": version, "steps": steps}))
        .unwrap()
        + "\n";
    std::fs::create_dir_all(fixture_path(file).parent().unwrap()).unwrap();
    std::fs::write(fixture_path(file), text).unwrap();
}

/// The recorded answers of one script file, checked to be of the script as it is now.
fn read_fixture(script: &script::Script) -> (String, Vec<Recorded>) {
    let path = fixture_path(&script.name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; record it with difftest/run --record",
            path.display()
        )
    });
    let file: Value = serde_json::from_str(&text).unwrap();
    let steps: Vec<Recorded> = file["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut answer = s.clone();
            let o = answer.as_object_mut().unwrap();
            let step = o.remove("step").unwrap().as_str().unwrap().to_string();
            let request = o.remove("request").unwrap().as_str().unwrap().to_string();
            Recorded {
                step,
                request,
                answer,
            }
        })
        .collect();
    let now: Vec<(String, String)> = script
        .steps
        .iter()
        .map(|s| (s.name.clone(), format!("{} {}", s.method, s.path)))
        .collect();
    let recorded: Vec<(String, String)> = steps
        .iter()
        .map(|r| (r.step.clone(), r.request.clone()))
        .collect();
    assert_eq!(
        now,
        recorded,
        "{} is not of the script as it is now: re-record with difftest/run --record",
        path.display()
    );
    let version = file["recorded_from"].as_str().unwrap_or("?").to_string();
    (version, steps)
}

fn short(v: &Option<Value>) -> String {
    let s = match v {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    };
    if s.chars().count() > 240 {
        format!("{}…", s.chars().take(240).collect::<String>())
    } else {
        s
    }
}

#[test]
fn vkube_answers_as_kube_apiserver() {
    let dir = difftest_dir();
    let only: Option<Vec<String>> = std::env::var("VKUBE_DIFFTEST_ONLY")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_string).collect());
    let scripts: Vec<_> = script::load(&dir.join("requests"))
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.contains(&s.name)))
        .collect();
    assert!(!scripts.is_empty(), "no script files selected");
    let allow: AllowList =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("allow.yaml")).unwrap())
            .expect("difftest/allow.yaml");
    let upstream = std::env::var("VKUBE_DIFFTEST_UPSTREAM")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|k| Target::from_kubeconfig("kube-apiserver", Path::new(&k)));
    let record = std::env::var("VKUBE_DIFFTEST_RECORD").is_ok_and(|v| v == "1");
    assert!(
        !record || upstream.is_some(),
        "recording needs VKUBE_DIFFTEST_UPSTREAM (use difftest/run --record)"
    );

    // The recorded kube-apiserver ran without kube-controller-manager: vkube's own
    // controllers that it has no counterpart of are left out, so they do not touch the objects.
    let server = Server::start_with(&[
        "--controllers=*,-garbagecollector,-resourcequota,-deployment,-replicaset,-replicationcontroller,-statefulset,-daemonset,-job,-cronjob,-ttl-after-finished,-disruption,-csrsigning,-endpoint,-endpointslice,-endpointslicemirroring,-podgc",
    ]);
    let vkube = Target::from_kubeconfig("vkube", &server.kubeconfig());
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Per step: its id and the differences found.
    let mut results: Vec<(String, Vec<Diff>)> = Vec::new();
    let mut versions = BTreeMap::new();
    rt.block_on(async {
        let live_version = match &upstream {
            Some(up) => {
                let v = up
                    .send("GET", "/version", &[], Vec::new())
                    .await
                    .expect("upstream /version");
                let v: Value = serde_json::from_slice(&v.body).unwrap();
                Some(format!(
                    "kube-apiserver {}",
                    v["gitVersion"].as_str().unwrap()
                ))
            }
            None => None,
        };
        for s in &scripts {
            let (version, expected) = match (&upstream, &live_version) {
                (Some(up), Some(v)) => (v.clone(), script::run(up, s).await),
                _ => read_fixture(s),
            };
            if record {
                write_fixture(&s.name, &version, &expected);
            }
            versions.insert(version, ());
            let got = script::run(&vkube, s).await;
            for (e, g) in expected.iter().zip(&got) {
                let mut diffs = Vec::new();
                diff("", Some(&e.answer), Some(&g.answer), &mut diffs);
                for d in &mut diffs {
                    d.path = d.path.trim_start_matches('.').to_string();
                }
                results.push((format!("{}/{}", s.name, e.step), diffs));
            }
        }
    });

    // Classify every difference: intended, known gap, or unexpected.
    let entries: Vec<(&str, &compare::Allow)> = allow
        .intended
        .iter()
        .map(|a| ("intended", a))
        .chain(allow.known_gaps.iter().map(|a| ("known gap", a)))
        .collect();
    // Per entry, the steps it accepted a difference of.
    let mut used: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); entries.len()];
    let (mut matching, mut allowed_steps, mut failing_steps) = (0, 0, 0);
    let mut report = String::new();
    let mut unexpected = String::new();
    for (step, diffs) in &results {
        if diffs.is_empty() {
            matching += 1;
            continue;
        }
        let mut step_failed = false;
        for d in diffs {
            let line = format!(
                "{step}  {}: kube-apiserver {} | vkube {}",
                d.path,
                short(&d.upstream),
                short(&d.vkube)
            );
            match entries.iter().position(|(_, a)| a.accepts(step, d)) {
                Some(i) => {
                    used[i].insert(step.as_str());
                    let _ = writeln!(report, "  [{}] {line}", entries[i].0);
                }
                None => {
                    step_failed = true;
                    let _ = writeln!(unexpected, "  {line}");
                }
            }
        }
        if step_failed {
            failing_steps += 1;
        } else {
            allowed_steps += 1;
        }
    }
    let source = if upstream.is_some() {
        "live"
    } else {
        "fixtures"
    };
    println!(
        "difftest: {} steps in {} files, against {} ({source}): {matching} match, {allowed_steps} differ as allowed, {failing_steps} differ unexpectedly",
        results.len(),
        scripts.len(),
        versions.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    // One line per reason (entries may share one), with the steps it covers.
    let mut reasons: Vec<(&str, &str, BTreeSet<&str>)> = Vec::new();
    for ((kind, a), steps) in entries.iter().zip(&used) {
        match reasons.iter_mut().find(|(_, r, _)| *r == a.reason) {
            Some((_, _, all)) => all.extend(steps),
            None => reasons.push((kind, &a.reason, steps.clone())),
        }
    }
    for (kind, reason, steps) in reasons.iter().filter(|(_, _, s)| !s.is_empty()) {
        println!("[{kind}, {} steps] {reason}", steps.len());
    }
    print!("{report}");
    let stale: Vec<String> = entries
        .iter()
        .zip(&used)
        .filter(|(_, u)| u.is_empty())
        .map(|((kind, a), _)| format!("  [{kind}] {:?} {:?}: {}", a.steps, a.fields, a.reason))
        .collect();
    if !stale.is_empty() {
        println!(
            "allow-list entries that matched nothing:\n{}",
            stale.join("\n")
        );
    }
    assert!(
        unexpected.is_empty(),
        "differences not in difftest/allow.yaml:\n{unexpected}"
    );
    // A subset of files leaves other entries unused by design.
    assert!(
        stale.is_empty() || only.is_some(),
        "difftest/allow.yaml has entries that match no difference any more; remove them"
    );
}
