#!/usr/bin/env python3
"""The report side of conformance/run, from Ginkgo JSON reports.

  report.py --list DRYRUN.json
      the names of the specs a dry run would run (it reports them as passed), sorted
  report.py --compact FULL.json NAME EXIT SECONDS LOG
      one spec's result from the JSON report of the e2e.test run that ran it alone: its state,
      failure, run time, and the suite-level nodes (BeforeSuite...) that did not pass
  report.py --summary SPEC.json
      one line for the progress log
  report.py WORK OUT
      writes the Markdown results. WORK: the run's work dir (meta.json, focus.json and
      would-run.json of the dry runs, and per server SERVER/meta.json and SERVER/specs/*.json;
      SERVER: vkube, upstream). OUT: the Markdown file.

A spec's verdict: pass; fail (Ginkgo's failed, panicked, timedout, interrupted and aborted states;
the state is named when it is not "failed"); skip (matched conformance/skips.txt, so not run);
skip (run time) (the spec skipped itself, e.g. a missing precondition); no result (its e2e.test
run left no report of it).
"""

import glob
import json
import os
import re
import sys

SERVERS = ("vkube", "upstream")
FAILED = {"failed", "panicked", "timedout", "interrupted", "aborted"}


def load(path):
    with open(path) as f:
        return json.load(f)


def spec_name(r):
    return " ".join((r.get("ContainerHierarchyTexts") or []) + [r.get("LeafNodeText") or ""])


def its(report):
    """name -> spec report for every It node of a Ginkgo JSON report."""
    out = {}
    for suite in report:
        for r in suite.get("SpecReports") or []:
            if r.get("LeafNodeType") == "It":
                out[spec_name(r)] = r
    return out


def selected(report):
    return {n for n, r in its(report).items() if r.get("State") == "passed"}


def failure_text(f, limit=400):
    """A failure's message on one line, with where it happened in the e2e code."""
    f = f or {}
    msg = (f.get("Message") or "").strip()
    if f.get("ForwardedPanic"):
        msg = f"{msg}: {f['ForwardedPanic']}"
        frames = re.findall(r"test/e2e/([\w/]+\.go:\d+)",
                            (f.get("Location") or {}).get("FullStackTrace") or "")
        if frames:
            msg += f" (at {frames[0]})"
    else:
        loc = f.get("Location") or {}
        fname = loc.get("FileName") or ""
        if "test/" in fname:
            msg += f" (at {fname.split('test/', 1)[1]}:{loc.get('LineNumber')})"
    msg = re.sub(r"\s+", " ", msg)
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def compact(full, name, status, seconds, log):
    out = {"name": name, "exit": int(status), "seconds": int(seconds), "log": log,
           "state": "no result", "failure": "", "suite_failures": []}
    try:
        report = load(full)
    except (OSError, ValueError) as e:
        out["failure"] = f"no JSON report ({e.__class__.__name__}); e2e.test exited {status}"
        return out
    text = ""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        pass
    m = re.search(r"^Ran (\d+) of \d+ Specs", text, re.M)
    out["ran"] = int(m.group(1)) if m else None
    spec = its(report).get(name)
    if spec is not None:
        out["state"] = spec.get("State") or "?"
        out["failure"] = failure_text(spec.get("Failure"))
        if out["state"] in ("timedout", "interrupted"):
            # Where it hung: the last step before the timeout, not the cleanup after it.
            steps = re.findall(r"STEP: (.*?) @ [\d/]+ [\d:.]+$",
                               text.split("[TIMEDOUT]")[0].split("[INTERRUPTED]")[0], re.M)
            if steps:
                out["failure"] = f"{out['failure']}; last step: {steps[-1]}"
        out["runtime_s"] = round((spec.get("RunTime") or 0) / 1e9, 1)
    for suite in report:
        for r in suite.get("SpecReports") or []:
            if r.get("LeafNodeType") != "It" and r.get("State") != "passed":
                out["suite_failures"].append(
                    f"{r.get('LeafNodeType')} {r.get('State')}: {failure_text(r.get('Failure'))}")
    return out


def read_skips(path, host=False):
    """(regex, reason) of each skips.txt line that applies: with a kubelet (host), not the
    [no-kubelet] ones."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = re.match(r"^(.*?\S)\s+#\s+(.*)$", line)
            if m and not (host and m.group(2).startswith("[no-kubelet]")):
                out.append((m.group(1), m.group(2)))
    return out


def verdict(name, res, would_run):
    """(verdict, detail) for one spec on one server."""
    if name not in would_run:
        return "skip", ""
    if res is None:
        return "no result", "not run"
    state = res["state"]
    detail = res.get("failure") or ""
    if res.get("suite_failures") and state != "passed":
        detail = "; ".join(res["suite_failures"]) + ("; " + detail if detail else "")
    if state == "passed":
        return "pass", ""
    if state == "skipped":
        if res.get("suite_failures"):
            return "fail (suite setup)", detail
        return "skip (run time)", detail
    if state in FAILED:
        return ("fail" if state == "failed" else f"fail ({state})"), detail
    return state, detail


def category(v):
    return "fail" if v.startswith("fail") else v


def fmt_secs(s):
    s = int(round(float(s)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def cell(text):
    return text.replace("|", "\\|")


def write_markdown(work, out):
    meta = load(os.path.join(work, "meta.json"))
    focus = selected(load(os.path.join(work, "focus.json")))
    would_run = selected(load(os.path.join(work, "would-run.json")))
    host = meta.get("host", False)
    skips = read_skips(meta["skips_file"], host)
    names = sorted(focus)

    runs = {}
    for s in SERVERS:
        mpath = os.path.join(work, s, "meta.json")
        if not os.path.exists(mpath):
            continue
        results = {}
        for p in sorted(glob.glob(os.path.join(work, s, "specs", "*.json"))):
            if p.endswith(".full.json"):
                continue
            r = load(p)
            results[r["name"]] = r
        runs[s] = {"meta": load(mpath), "results": results,
                   "verdicts": {n: verdict(n, results.get(n), would_run) for n in names}}

    label = {"vkube": f"vkube ({meta['store']})", "upstream": "kube-apiserver " + meta["k8s_version"]}
    if host:
        label = {"vkube": "vkube + syncer", "upstream": "host cluster " + meta["k8s_version"]}
    cols = [s for s in SERVERS if s in runs]
    lines = []
    w = lines.append

    def count(s, k):
        return sum(1 for n in names if category(runs[s]["verdicts"][n][0]) == k)

    w(f"# Conformance run {meta['date']}: `{meta['focus']}`")
    w("")
    if host:
        w("Upstream's e2e conformance suite (`e2e.test` " + meta["k8s_version"] + ") against `vkube serve`"
          " with its syncer on a real host cluster (pods run on its kubelet)"
          + (" and, as the oracle, against that host cluster's own kube-apiserver, controllers,"
             " scheduler and kubelet." if "upstream" in runs else " (oracle not run: --vkube-only)."))
    else:
        w("Upstream's e2e conformance suite (`e2e.test` " + meta["k8s_version"] + ") against `vkube serve`"
          + (" and, as the oracle, upstream kube-apiserver + kube-controller-manager on an etcd of their own."
             if "upstream" in runs else " (upstream not run: --vkube-only)."))
    w("Written by `conformance/run`; failures on vkube are expected, the point is a repeatable count.")
    w("")
    w("```sh")
    w(meta["command"])
    w("```")
    w("")
    w("## Totals")
    w("")
    w("| | " + " | ".join(label[s] for s in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    kinds = ["pass", "fail", "skip", "skip (run time)", "no result"]
    for k in kinds:
        counts = [count(s, k) for s in cols]
        if k in ("skip (run time)", "no result") and not any(counts):
            continue
        title = {"skip": "skip (skips.txt)"}.get(k, k)
        w(f"| {title} | " + " | ".join(str(c) for c in counts) + " |")
    w("| specs in focus | " + " | ".join(str(len(names)) for _ in cols) + " |")
    w("| wall time of the e2e.test runs | "
      + " | ".join(fmt_secs(runs[s]["meta"]["e2e_seconds"]) for s in cols) + " |")
    w("| wall time, server start to last spec | "
      + " | ".join(fmt_secs(runs[s]["meta"]["total_seconds"]) for s in cols) + " |")
    w("")

    w("## What ran")
    w("")
    for item in meta["setup"]:
        w(f"- {item}")
    for s in cols:
        w(f"- {label[s]}, for each spec NAME to run: `{runs[s]['meta']['e2e_command']}`")
    w("")
    w("Versions:")
    w("")
    for item in meta["versions"]:
        w(f"- {item}")
    for s in cols:
        v = runs[s]["meta"].get("server_version")
        if v:
            w(f"- {label[s]} reports `/version` gitVersion `{v}`")
    w("")
    w(f"Skipped by `conformance/skips.txt` ({len(skips)} patterns"
      + (" that apply with a kubelet" if host else "") + ", "
      f"{len(set(names) - would_run)} specs, on both servers):")
    w("")
    for regex, reason in skips:
        w(f"- `{regex}`: {reason}")
    w("")

    w("## Per spec")
    w("")
    w("Seconds: how long the spec's e2e.test run took.")
    w("")
    w("| spec | " + " | ".join(label[s] for s in cols) + " |")
    w("|---|" + "---|" * len(cols))
    for n in names:
        row = []
        for s in cols:
            v = runs[s]["verdicts"][n][0]
            r = runs[s]["results"].get(n)
            row.append(v + (f" ({r['seconds']} s)" if r is not None else ""))
        w(f"| {cell(n)} | " + " | ".join(row) + " |")
    w("")

    for s in cols:
        failing = [(n, runs[s]["verdicts"][n]) for n in names
                   if runs[s]["verdicts"][n][0] not in ("pass", "skip")]
        w(f"## Not passed on {label[s]} ({len(failing)})")
        w("")
        if not failing:
            w("None.")
            w("")
            continue
        w("Each failure's message, cut at 400 characters (the spec's full log is in the work dir).")
        w("")
        for n, (v, detail) in failing:
            w(f"- **{cell(n)}**: {v}" + (f": {cell(detail)}" if detail else ""))
        w("")
    w(f"Raw results of this run (per spec: log and compact JSON; server logs): `{work}` "
      "(outside the clone, not kept in git).")

    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    for s in cols:
        c = {k: count(s, k) for k in kinds}
        print(f"{label[s]}: {c['pass']} pass, {c['fail']} fail, {c['skip']} skip (skips.txt)"
              + (f", {c['skip (run time)']} skip (run time)" if c["skip (run time)"] else "")
              + (f", {c['no result']} no result" if c["no result"] else "")
              + f"; e2e.test runs {fmt_secs(runs[s]['meta']['e2e_seconds'])}")


def main():
    a = sys.argv[1:]
    if a and a[0] == "--list":
        for n in sorted(selected(load(a[1]))):
            print(n)
    elif a and a[0] == "--summary":
        r = load(a[1])
        print(f"{r['state']} in {r['seconds']} s"
              + ("" if r.get("ran") == 1 else f" (WARNING: its e2e.test ran {r.get('ran')} specs)"))
    elif a and a[0] == "--compact":
        print(json.dumps(compact(*a[1:6]), indent=1))
    elif len(a) == 2:
        write_markdown(*a)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
