# Sourced by tests/host/run with `vkube serve --host-kubeconfig` running (`v` is its kubectl):
# vkube's own controllers (crates/vkube-controllers) drive real pods on the host, whose kubelet
# reports their readiness. A rolling update never drops below replicas - maxUnavailable,
# `rollout undo` returns, a StatefulSet comes up in order with its claims bound, Jobs complete or
# fail after their backoff, and a CronJob fires twice.
CTL_NS=controllers
v create namespace "$CTL_NS" >/dev/null
vc() { v -n "$CTL_NS" "$@"; }

# The CronJob first: it fires at the top of each minute while the other tests run.
vc apply -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 5
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: vkube.local/busybox:1, imagePullPolicy: Never, command: [sh, -c, "echo tick"]}]
YAML

t_ctl_rolling_update() {
  vc apply -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  selector: {matchLabels: {app: roll}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: vkube.local/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, "mkdir -p /tmp/www && echo ok >/tmp/www/index.html && sleep 2 && exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
YAML
  vc rollout status deployment/roll --timeout=120s >/dev/null
  # Sample availability through the whole update, in the background.
  local samples=$DIR/roll.samples
  : >"$samples"
  ( while [ ! -f "$DIR/roll.done" ]; do
      vc get deployment roll -o jsonpath='{.status.availableReplicas}{"\n"}' >>"$samples" 2>/dev/null
      sleep 0.2
    done ) &
  local sampler=$!
  vc set env deployment/roll VERSION=2 >/dev/null
  vc rollout status deployment/roll --timeout=180s >/dev/null
  touch "$DIR/roll.done"; wait "$sampler"; rm -f "$DIR/roll.done"
  local min; min=$(grep -E '^[0-9]+$' "$samples" | sort -n | head -1)
  echo "# rolling update: $(wc -l <"$samples") availability samples, lowest $min (replicas 3, maxUnavailable 1)"
  [ "${min:-0}" -ge 2 ] || { echo "availability fell to '$min'"; return 1; }
  [ "$(vc get pods -l app=roll -o jsonpath='{range .items[*]}{.spec.containers[0].env[0].value}{"\n"}{end}' | sort -u)" = 2 ] \
    || { vc get pods -l app=roll -o wide; return 1; }
  vc rollout history deployment/roll | grep -qE '^2 ' || { vc rollout history deployment/roll; return 1; }
  # Undo: the first template comes back (the old ReplicaSet scales up again, as revision 3).
  vc rollout undo deployment/roll >/dev/null
  vc rollout status deployment/roll --timeout=180s >/dev/null
  [ -z "$(vc get deployment roll -o jsonpath='{.spec.template.spec.containers[0].env}')" ] || { echo "undo kept the env"; return 1; }
  [ "$(vc get rs -l app=roll -o jsonpath='{range .items[*]}{.status.replicas}{" "}{end}' | tr ' ' '\n' | grep -c '^3$')" = 1 ] \
    || { vc get rs -l app=roll; return 1; }
  vc rollout history deployment/roll | grep -qE '^3 '
}
check "controllers: a rolling update on real pods keeps replicas - maxUnavailable available; rollout undo returns" t_ctl_rolling_update

t_ctl_statefulset() {
  vc apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 8080}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: vkube.local/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, "hostname > /data/who; exec httpd -f -p 8080"]
        readinessProbe: {exec: {command: [cat, /data/who]}, periodSeconds: 1}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
YAML
  vc rollout status statefulset/db --timeout=180s >/dev/null
  local t0 t1
  t0=$(vc get pod db-0 -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastTransitionTime}')
  t1=$(vc get pod db-1 -o jsonpath='{.metadata.creationTimestamp}')
  # OrderedReady: db-1 is created only once db-0 is Ready.
  [[ ! "$t1" < "$t0" ]] || { echo "db-1 created at $t1, before db-0 was Ready at $t0"; return 1; }
  for i in 0 1; do
    [ "$(vc get pvc "data-db-$i" -o jsonpath='{.status.phase}')" = Bound ] || { vc get pvc; return 1; }
  done
  [ "$(vc exec db-1 -- cat /data/who)" = db-1 ]
}
check "controllers: a StatefulSet comes up in order on the host, each pod with its own bound claim" t_ctl_statefulset

t_ctl_jobs() {
  vc create job ok --image=vkube.local/busybox:1 -- sh -c 'echo done' >/dev/null
  vc apply -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: Job
metadata: {name: two}
spec:
  completions: 2
  parallelism: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: vkube.local/busybox:1, imagePullPolicy: Never, command: [sh, -c, "echo two"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: vkube.local/busybox:1, imagePullPolicy: Never, command: [sh, -c, "exit 3"]}]
YAML
  vc wait --for=condition=complete job/ok job/two --timeout=120s >/dev/null
  [ "$(vc get job two -o jsonpath='{.status.succeeded}')" = 2 ]
  vc logs job/ok | grep -qx done
  vc wait --for=condition=failed job/fails --timeout=120s >/dev/null
  [ "$(vc get job fails -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}')" = BackoffLimitExceeded ] \
    || { vc get job fails -o yaml; return 1; }
  [ "$(vc get job fails -o jsonpath='{.status.failed}')" = 2 ]
}
check "controllers: Jobs run to completion on the host; a failing one stops at its backoffLimit" t_ctl_jobs

t_ctl_cronjob() {
  until_true 150 bash -c "[ \"\$(kubectl --kubeconfig '$VK_DIR/admin.kubeconfig' -n '$CTL_NS' get jobs -o jsonpath='{range .items[?(@.metadata.ownerReferences[0].name==\"tick\")]}{.status.succeeded}{\"\\n\"}{end}' | grep -c '^1$')\" -ge 2 ]" \
    || { vc get cronjob,jobs; return 1; }
  [ -n "$(vc get cronjob tick -o jsonpath='{.status.lastSuccessfulTime}')" ]
}
check "controllers: a CronJob fires twice, one minute apart, and its Jobs complete" t_ctl_cronjob

v delete namespace "$CTL_NS" --wait=false >/dev/null
