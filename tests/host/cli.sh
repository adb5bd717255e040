# Sourced by tests/host/run once the host is up: `vkube create / connect / list / pause / resume /
# disconnect / delete` against the real host, with the vkube image in its containerd. The CLI
# runs as a user would: its own kubeconfig (a copy of the host's admin one, which `connect`
# edits) and its own HOME (where `connect` keeps its records).

CLI_HOME=$DIR/cli-home
CLI_KUBECONFIG=$DIR/cli.kubeconfig
mkdir -p "$CLI_HOME"
cp "$DIR/kubeconfig" "$CLI_KUBECONFIG"
HOST_CONTEXT=$(kubectl --kubeconfig "$CLI_KUBECONFIG" config current-context)
# A real helm (helm.sh/helm/v4 from the Go module proxy, cached): it must read vkube's release.
HELM_BIN=$("$ROOT/scripts/build-upstream" helm 2>"$DIR/build-helm.log" | tail -n1)
h() { "$HELM_BIN" --kubeconfig "$DIR/kubeconfig" "$@"; }
# c ARGS...: the vkube CLI as the user runs it; ck: kubectl on whatever context is current.
c() { KUBECONFIG=$CLI_KUBECONFIG HOME=$CLI_HOME "$VKUBE_BIN" "$@"; }
ck() { kubectl --kubeconfig "$CLI_KUBECONFIG" "$@"; }
current_context() { kubectl --kubeconfig "$CLI_KUBECONFIG" config current-context; }

t_cli_create() {
  local t0 out
  t0=$(date +%s.%N)
  out=$(c create one 2>&1) || { echo "$out"; return 1; }
  echo "# vkube create one (1 replica, SQLite) to a ready, connected cluster: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2
  local step
  for step in "namespace vkube-one created" "objects applied, Helm release one revision 1" \
    "1 pod(s) scheduled" "replica one-0 ready" "kubeconfig fetched" "connected to virtual cluster one"; do
    grep -q "$step" <<<"$out" || { echo "no step '$step' in:"; echo "$out"; return 1; }
  done
  # Piped, each step is a plain line with its time.
  grep -qE '^done replica one-0 ready \([0-9.]+s\)$' <<<"$out" || { echo "$out"; return 1; }
  [ "$(current_context)" = "vkube_one_vkube-one_$HOST_CONTEXT" ] || { echo "current context: $(current_context)"; return 1; }
  ck get namespace default >/dev/null
  [ "$(ck auth whoami -o jsonpath='{.status.userInfo.username}')" = kubernetes-admin ]
  # The release is Helm's: helm lists it, deployed, of chart vkube.
  [ -x "$HELM_BIN" ] || { echo "no helm: $(tail -3 "$DIR/build-helm.log")"; return 1; }
  h list -n vkube-one -o json | jq -e '.[0] | .name == "one" and .status == "deployed" and .chart == "vkube-0.1.0" and .revision == "1"' >/dev/null \
    || { h list -n vkube-one; return 1; }
}
check "vkube create one: progress step by step, a Helm release, connected as the current context" t_cli_create

t_cli_create_twice() {
  local out
  if out=$(c create one --connect=false 2>&1); then echo "a second create succeeded"; return 1; fi
  grep -q -- "--upgrade" <<<"$out" || { echo "$out"; return 1; }
}
check "a second vkube create of the same name fails and points to --upgrade" t_cli_create_twice

t_cli_workload() {
  ck create deployment web --image=vkube.local/busybox:1 --replicas=2 -- sh -c 'exec httpd -f -p 8080' >/dev/null
  until_true 120 bash -c "[ \"\$(kubectl --kubeconfig '$CLI_KUBECONFIG' get pods -l app=web --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
  # They run on the host, in the virtual cluster's namespace, as the syncer's copies.
  [ "$(k -n vkube-one get pods -l vkube.dev/cluster=one --field-selector=status.phase=Running -o name | wc -l)" = 2 ]
}
check "a Deployment through the connected context runs on the host (the syncer in the pod)" t_cli_workload

t_cli_list() {
  local out
  out=$(c list) || return 1
  head -1 <<<"$out" | grep -qE '^NAME +NAMESPACE +STATUS +VERSION +CONNECTED +AGE$' || { echo "$out"; return 1; }
  grep -qE '^one +vkube-one +Running +dev +True +[0-9]+[smhd]$' <<<"$out" || { echo "$out"; return 1; }
  c list -o json | jq -e '.[] | select(.name == "one") | .status == "Running" and .connected == true' >/dev/null
}
check "vkube list: NAME NAMESPACE STATUS VERSION CONNECTED AGE, as a table and as JSON" t_cli_list

t_cli_upgrade() {
  # A changed value: revision 2 (the first superseded, as helm upgrade leaves it), the pod rolls
  # and comes back ready, and the CA is kept, so the connected context still works.
  c create one --upgrade --connect=false --set controlPlane.statefulSet.pods.labels.tier=gold >/dev/null 2>&1 || return 1
  h history one -n vkube-one -o json | jq -e 'length == 2 and .[0].status == "superseded" and .[1].status == "deployed"' >/dev/null \
    || { h history one -n vkube-one; return 1; }
  h get values one -n vkube-one -o json | jq -e '.controlPlane.statefulSet.pods.labels.tier == "gold"' >/dev/null
  until_true 120 bash -c "[ \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n vkube-one get pods -l tier=gold -o jsonpath='{.items[0].status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  until_true 30 ck get deployment web >/dev/null 2>&1
}
check "vkube create --upgrade: Helm revision 2 (the first superseded), the pod rolls, the CA and the connection hold" t_cli_upgrade

t_cli_helm_uninstall() {
  # A release vkube made, removed by helm itself.
  c create two --connect=false >/dev/null 2>&1 || return 1
  h uninstall two -n vkube-two --wait --timeout 120s >/dev/null || return 1
  [ -z "$(k -n vkube-two get statefulset,service,serviceaccount,role,rolebinding -l release=two -o name 2>/dev/null)" ] \
    || { k -n vkube-two get all,secret -l release=two; return 1; }
  [ -z "$(k -n vkube-two get secret -l owner=helm -o name)" ]
  # The kubeconfig Secret vkube published is owned by the release's Service: the host's GC takes it.
  until_true 60 bash -c "[ -z \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n vkube-two get secret vc-two -o name 2>/dev/null)\" ]"
  k delete namespace vkube-two --wait=false >/dev/null
}
check "helm uninstall removes a virtual cluster vkube create made" t_cli_helm_uninstall

t_cli_idle_rss() {
  # The kubelet's own figure for the vkube pod (its summary API: the working set, what `kubectl
  # top` shows), with two web pods synced.
  local rss
  rss=$(k get --raw "/api/v1/nodes/$NODE_NAME/proxy/stats/summary" \
    | jq -r '.pods[] | select(.podRef.namespace == "vkube-one" and .podRef.name == "one-0") | .containers[] | select(.name == "vkube") | .memory.workingSetBytes')
  [ -n "$rss" ] && [ "$rss" != null ] && [ "$rss" -gt 0 ] || { echo "no working set for one-0 in the kubelet's summary"; return 1; }
  echo "# idle memory (working set) of pod one-0 as the kubelet reports it: $((rss / 1048576)) MiB (vcluster's chart requests 256 MiB)" >&2
}
check "the kubelet reports the vkube pod's memory (working set)" t_cli_idle_rss

t_cli_disconnect_and_run() {
  c disconnect >/dev/null 2>&1 || return 1
  [ "$(current_context)" = "$HOST_CONTEXT" ] || { echo "after disconnect: $(current_context)"; return 1; }
  ! kubectl --kubeconfig "$CLI_KUBECONFIG" config get-contexts -o name | grep -q '^vkube_one_' || { echo "the context is left"; return 1; }
  # connect -- CMD: the command sees the virtual cluster; the user's kubeconfig is untouched.
  local out
  out=$(c connect one -- kubectl get deployment web -o jsonpath='{.metadata.name}' 2>/dev/null) || return 1
  [ "$out" = web ] || { echo "connect -- kubectl printed '$out'"; return 1; }
  [ "$(current_context)" = "$HOST_CONTEXT" ]
  # --print: a kubeconfig on stdout that works.
  c connect one --print >"$DIR/one.kubeconfig" 2>/dev/null
  kubectl --kubeconfig "$DIR/one.kubeconfig" get deployment web >/dev/null
}
check "vkube disconnect switches back; connect -- CMD and --print reach the cluster" t_cli_disconnect_and_run

t_cli_pause_resume() {
  c pause one >/dev/null 2>&1 || return 1
  [ "$(k -n vkube-one get statefulset one -o jsonpath='{.spec.replicas}')" = 0 ]
  until_true 60 bash -c "[ -z \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n vkube-one get pods -l vkube.dev/cluster=one -o name)\" ]"
  c list | grep -qE '^one +vkube-one +Paused' || { c list; return 1; }
  local out
  if out=$(c connect one --print 2>&1); then echo "connect to a paused cluster worked"; return 1; fi
  grep -q "vkube resume one" <<<"$out" || { echo "$out"; return 1; }
  c resume one >/dev/null 2>&1 || return 1
  c connect one >/dev/null 2>&1 || return 1
  # Workload state survived: the Deployment is there, and its pods run on the host again.
  until_true 180 bash -c "[ \"\$(kubectl --kubeconfig '$CLI_KUBECONFIG' get pods -l app=web --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
  until_true 60 bash -c "[ \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n vkube-one get pods -l vkube.dev/cluster=one --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
}
check "vkube pause stops the control plane and the workloads; resume brings both back" t_cli_pause_resume

t_cli_snapshot_restore() {
  local out
  ck create configmap kept --from-literal=a=1 >/dev/null || return 1
  out=$(c snapshot create one "file://$DIR/one.snap" 2>&1) || { echo "$out"; return 1; }
  grep -qE "snapshot of virtual cluster one \(from one-0\): [0-9]+ keys at revision [0-9]+" <<<"$out" || { echo "$out"; return 1; }
  # After the snapshot: one ConfigMap more, one less.
  ck create configmap after-snap --from-literal=b=2 >/dev/null && ck delete configmap kept >/dev/null || return 1
  # A damaged file, or another location kind, changes nothing: the cluster keeps running.
  cp "$DIR/one.snap" "$DIR/bad.snap"
  python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[len(b) // 2] ^= 1; open(sys.argv[1], "wb").write(b)' "$DIR/bad.snap"
  if out=$(c restore one "file://$DIR/bad.snap" 2>&1); then echo "a damaged snapshot was restored"; return 1; fi
  grep -q "is not a whole vkube snapshot" <<<"$out" || { echo "$out"; return 1; }
  if out=$(c restore one "s3://bucket/one.snap" 2>&1); then echo "s3 was accepted"; return 1; fi
  grep -q "file:///PATH" <<<"$out" || { echo "$out"; return 1; }
  c list | grep -qE '^one +vkube-one +Running' || { c list; return 1; }
  out=$(c restore one "file://$DIR/one.snap" 2>&1) || { echo "$out"; return 1; }
  grep -q "restored virtual cluster one" <<<"$out" || { echo "$out"; return 1; }
  ! k -n vkube-one get pod one-restore >/dev/null 2>&1 || { echo "the restore pod is left"; return 1; }
  c connect one >/dev/null 2>&1 || return 1
  [ "$(ck get configmap kept -o jsonpath='{.data.a}')" = 1 ] || { echo "kept is not back"; return 1; }
  ! ck get configmap after-snap >/dev/null 2>&1 || { echo "after-snap survived the restore"; return 1; }
  # The workloads of the snapshot run again on the host.
  until_true 180 bash -c "[ \"\$(kubectl --kubeconfig '$CLI_KUBECONFIG' get pods -l app=web --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
}
check "vkube snapshot create NAME file://… then restore NAME file://…: the state of the snapshot is back, a damaged file changes nothing" t_cli_snapshot_restore

t_cli_store_move() {
  # An external etcd beside the node, where pods reach it (the bridge's address); stopped by its
  # PID whatever the outcome (a check runs in a subshell, so the PID is kept in a file too).
  etcd --name move --data-dir "$DIR/move-etcd" \
    --listen-client-urls "http://$NODE_IP:23790" --advertise-client-urls "http://$NODE_IP:23790" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster move=http://127.0.0.1:23800 >"$DIR/move-etcd.log" 2>&1 &
  local pid=$! rc=0
  echo "$pid" >"$DIR/move-etcd.pid"
  store_move_steps || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return "$rc"
}

store_move_steps() {
  local out
  until_true 30 etcdctl --endpoints "http://$NODE_IP:23790" endpoint health >/dev/null 2>&1
  ck create configmap moved --from-literal=a=1 >/dev/null || return 1
  # Into embedded etcd: refused before anything changes.
  if out=$(c create one --upgrade --connect=false --set controlPlane.statefulSet.pods.labels.tier=gold \
    --set controlPlane.backingStore.etcd.embedded.enabled=true 2>&1); then echo "moved into embedded etcd"; return 1; fi
  grep -q "cannot yet move state into or out of embedded etcd" <<<"$out" || { echo "$out"; return 1; }
  c list | grep -qE '^one +vkube-one +Running' || { c list; return 1; }
  # To the external etcd: the state moves, with the copy's progress shown, and the cluster is back.
  out=$(c create one --upgrade --connect=false --set controlPlane.statefulSet.pods.labels.tier=gold \
    --set controlPlane.backingStore.etcd.external.enabled=true \
    --set "controlPlane.backingStore.etcd.external.endpoint=$NODE_IP:23790" 2>&1) || { echo "$out"; return 1; }
  grep -q "moving the state of virtual cluster one from embedded SQLite to external etcd $NODE_IP:23790" <<<"$out" \
    && grep -q "migrated and verified" <<<"$out" || { echo "$out"; return 1; }
  [ -n "$(etcdctl --endpoints "http://$NODE_IP:23790" get /registry/configmaps/default/moved --keys-only)" ] \
    || { echo "the ConfigMap is not in the external etcd"; return 1; }
  c connect one >/dev/null 2>&1 || return 1
  [ "$(ck get configmap moved -o jsonpath='{.data.a}')" = 1 ] || { echo "moved is not served"; return 1; }
  until_true 180 bash -c "[ \"\$(kubectl --kubeconfig '$CLI_KUBECONFIG' get pods -l app=web --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
}
check "vkube create --upgrade with another backing store moves the state (SQLite to external etcd); into embedded etcd is refused" t_cli_store_move

t_cli_delete() {
  c delete one --wait >/dev/null 2>&1 || return 1
  ! k get namespace vkube-one >/dev/null 2>&1 || { echo "namespace vkube-one is left"; return 1; }
  [ -z "$(k get pods -A -l vkube.dev/cluster=one -o name)" ] || { echo "synced pods left"; return 1; }
  [ -z "$(k get pv -o jsonpath='{range .items[?(@.spec.claimRef.namespace=="vkube-one")]}{.metadata.name}{end}')" ] \
    || until_true 60 bash -c "[ -z \"\$(kubectl --kubeconfig '$DIR/kubeconfig' get pv -o jsonpath='{range .items[?(@.spec.claimRef.namespace==\"vkube-one\")]}{.metadata.name}{end}')\" ]"
  [ "$(current_context)" = "$HOST_CONTEXT" ] || { echo "context after delete: $(current_context)"; return 1; }
  local out
  if out=$(c delete one 2>&1); then echo "deleting a missing cluster succeeded"; return 1; fi
  grep -q "not found" <<<"$out" || { echo "$out"; return 1; }
  c delete one --ignore-not-found >/dev/null 2>&1
}
check "vkube delete --wait leaves nothing of it on the host; a missing one is an error unless --ignore-not-found" t_cli_delete

t_cli_bad() {
  local out
  if out=$(c create bad --set controlPlane.statefulSet.highAvailability.replicas=3 2>&1); then echo "created"; return 1; fi
  grep -q "3 replicas on embedded SQLite" <<<"$out" && grep -q "etcd" <<<"$out" || { echo "$out"; return 1; }
  ! k get namespace vkube-bad >/dev/null 2>&1 || { echo "namespace vkube-bad was created"; return 1; }
  if out=$(c create bad --set controlPlane.statefulSet.highAvailability.replicas=three 2>&1); then echo "created"; return 1; fi
  grep -q "controlPlane.statefulSet.highAvailability.replicas" <<<"$out" || { echo "$out"; return 1; }
}
check "vkube create with bad values fails before anything is applied, naming the key or etcd" t_cli_bad

source "$ROOT/tests/host/ha.sh"

if [ -f "$DIR/move-etcd.pid" ]; then kill "$(cat "$DIR/move-etcd.pid")" 2>/dev/null || true; fi
# Whatever a failed test left: the port forwards `vkube connect` started, the clusters it made.
pkill -f "$VKUBE_BIN port-forward-daemon" 2>/dev/null
for ns in vkube-one vkube-two vkube-ha; do k delete namespace "$ns" --wait=false >/dev/null 2>&1; done
