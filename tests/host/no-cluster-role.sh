# shellcheck shell=bash
# e2e of the syncer with the namespaced Role of deploy/host-rbac.yaml only (no ClusterRole), as
# vcluster's default chart grants: pods run, their node is a fake node, a bound claim's volume is
# made from its host claim, and each refusal is logged once. Not wired in: source this file from
# tests/host/run after the syncer section's helpers (k, until_true, free_port, VKUBE_BIN, DIR,
# NODE_IP, NODE_NAME, API_SERVER) exist, then:
#   check "syncer: with the Role only, pods run on a fake node and volumes come from host claims" t_sync_no_cluster_role
# It runs its own vkube (cluster role-only, host namespace vkube-sync-ro) beside the suite's.

t_sync_no_cluster_role() {
  local ns=vkube-sync-ro sa=vkube-syncer-ro dir=$DIR/vkube-ro log=$DIR/vkube-ro.log
  local kc=$DIR/syncer-ro.kubeconfig pid version
  ro() { kubectl --kubeconfig "$dir/admin.kubeconfig" "$@"; }
  k create namespace "$ns" >/dev/null
  # The Role and its binding: the file's first two documents.
  sed -e "s/HOST_NAMESPACE/$ns/g" -e "s/SERVICE_ACCOUNT/$sa/g" "$ROOT/deploy/host-rbac.yaml" \
    | awk '/^---$/{n++} n<2' | k apply -f - >/dev/null
  k -n "$ns" create serviceaccount "$sa" >/dev/null
  [ "$(k auth can-i get nodes --as "system:serviceaccount:$ns:$sa")" = no ] || { echo "$sa may read nodes"; return 1; }
  [ "$(k auth can-i get persistentvolumes --as "system:serviceaccount:$ns:$sa")" = no ] || { echo "$sa may read volumes"; return 1; }
  cat >"$kc" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: host, cluster: {server: "$API_SERVER", certificate-authority-data: $(base64 -w0 "$DIR/pki/ca.crt")}}]
users: [{name: syncer, user: {token: "$(k -n "$ns" create token "$sa" --duration=1h)"}}]
contexts: [{name: host, context: {cluster: host, user: syncer, namespace: $ns}}]
current-context: host
EOF
  # The syncer's info lines: each refusal is logged once, at info.
  RUST_LOG=warn,vkube_syncer=info "$VKUBE_BIN" serve --data-dir "$dir" --listen "$NODE_IP:$(free_port)" --dns-listen "$NODE_IP:$(free_port)" \
    --host-kubeconfig "$kc" --name role-only --dns-upstream "$NODE_IP:53" >>"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$DIR/vkube-ro.pid" # this runs in a subshell: the PID lives in a file
  # Whatever happens below, this vkube and its host namespace go: `check` runs a test in a
  # subshell (errexit ends it there), whose EXIT trap this is.
  trap 'kill "$(cat "$DIR/vkube-ro.pid")" 2>/dev/null; k delete namespace '"$ns"' --wait=false >/dev/null 2>&1' EXIT
  until_true 30 ro get --raw /readyz >/dev/null 2>&1

  ro run ro-pod --image=vkube.local/busybox:1 --image-pull-policy=Never -- sleep 3600 >/dev/null
  ro_running() { [ "$(ro get pod ro-pod -o jsonpath='{.status.phase}')" = Running ]; }
  until_true 60 ro_running || { ro get pod ro-pod -o yaml; tail -n 30 "$log"; return 1; }
  [ "$(ro get pod ro-pod -o jsonpath='{.spec.nodeName}')" = "$NODE_NAME" ] || { echo "ro-pod is not bound to $NODE_NAME"; return 1; }

  # The fake node: vcluster's label and hostname label, Ready, the host pod's hostIP, the virtual
  # cluster's version as kubelet version, vcluster's capacity.
  version=$(ro get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
  local got want
  fake_node() { ro get node "$NODE_NAME" -o jsonpath='{.metadata.labels.vcluster\.loft\.sh/fake-node} {.metadata.labels.kubernetes\.io/hostname} {.metadata.labels.kubernetes\.io/os} {.status.conditions[?(@.type=="Ready")].status} {.status.addresses[?(@.type=="InternalIP")].address} {.status.nodeInfo.kubeletVersion} {.status.capacity.cpu} {.status.capacity.pods}'; }
  want="true fake-$NODE_NAME linux True $(ro get pod ro-pod -o jsonpath='{.status.hostIP}') $version 16 110"
  # The node's status follows its pods (the InternalIP is the host pod's hostIP, which may come
  # after the node was made): it converges within the syncer's 10 s loop.
  fake_node_ok() { [ "$(fake_node)" = "$want" ]; }
  until_true 30 fake_node_ok || { echo "fake node: '$(fake_node)', want '$want'"; return 1; }
  # Its heartbeat is kept current (renewed at 20 s; the loop runs every 10 s).
  local beat; beat=$(ro get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  renewed() { [ "$(ro get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')" != "$beat" ]; }
  until_true 45 renewed

  # A claim binds on the host; its virtual volume is made from the host claim.
  ro apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ro-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: ro-writer}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: w, image: vkube.local/busybox:1, imagePullPolicy: Never, command: [sh, -c, 'echo ok >/data/proof && sleep 3600'], volumeMounts: [{name: d, mountPath: /data}]}
  volumes: [{name: d, persistentVolumeClaim: {claimName: ro-data}}]
EOF
  ro_bound() { [ "$(ro get pvc ro-data -o jsonpath='{.status.phase}')" = Bound ]; }
  until_true 60 ro_bound || { ro get pvc ro-data -o yaml; tail -n 30 "$log"; return 1; }
  local pv; pv=$(ro get pvc ro-data -o jsonpath='{.spec.volumeName}')
  got=$(ro get pv "$pv" -o jsonpath='{.metadata.labels.vcluster\.loft\.sh/fake-pv} {.status.phase} {.spec.claimRef.name} {.spec.capacity.storage} {.spec.flexVolume.driver}')
  [ "$got" = "true Bound ro-data 16Mi fake" ] || { echo "volume: '$got'"; ro get pv "$pv" -o yaml; return 1; }
  ro_writer() { [ "$(ro exec ro-writer -- cat /data/proof 2>/dev/null)" = ok ]; }
  until_true 60 ro_writer

  # Each refusal logged once, and no error spam about nodes or volumes.
  [ "$(grep -c 'refuses reading its nodes' "$log")" = 1 ] || { grep 'refuses reading' "$log"; return 1; }
  [ "$(grep -c 'refuses reading its persistent volumes' "$log")" = 1 ] || { grep 'refuses reading' "$log"; return 1; }
  if grep -E 'virtual node sync|volume claim sync failed|pod sync failed' "$log" | grep -qi forbidden; then
    grep -i forbidden "$log" | tail -n 5; return 1
  fi

  # The last pod gone, the fake node goes too (vcluster's fake nodes do).
  ro delete pod ro-pod ro-writer --wait=false >/dev/null
  node_gone() { ! ro get node "$NODE_NAME" >/dev/null 2>&1; }
  until_true 90 node_gone || { ro get pods -A -o wide; return 1; }
  ro delete pvc ro-data >/dev/null
}
