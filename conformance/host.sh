# conformance/run --host: vkube with its syncer against a real host cluster, then that host
# cluster's own kube-apiserver as the oracle. Sourced by conformance/run; uses its variables
# (root, work, vkube, kubectl_bin, VKUBE_PIDS, host_dir, host_up) and functions (wait_ready,
# run_e2e, stop_pids).

HOST_SYNC_NS=vkube-sync   # the host namespace vkube's pods run in
HOST_VKUBE_NAME=conformance

hk() { "$kubectl_bin" --kubeconfig "$host_dir/kubeconfig" "$@"; }

# host_cluster_up: scripts/host-cluster up, then the e2e images into its containerd.
host_cluster_up() {
  log "host cluster: scripts/host-cluster up $host_dir (log: $work/host-up.log)"
  host_up=1 # from here on, cleanup brings it down (also after a half-done up)
  VKUBE_HOST_IMAGES="busybox pause" "$root/scripts/host-cluster" up "$host_dir" >"$work/host-up.log" 2>&1 \
    || { tail -30 "$work/host-up.log" >&2; return 1; }
  # shellcheck source=/dev/null
  source "$host_dir/host.env"   # NODE_IP, NODE_NAME, API_SERVER, ...
  "$root/scripts/e2e-images" --import "$host_dir" >"$work/e2e-images.log" 2>&1 \
    || { tail -30 "$work/e2e-images.log" >&2; return 1; }
  log "host cluster up; e2e images imported"
}

# host_vkube_start: the syncer's namespace, Role and token on the host (as tests/host/run), and
# vkube serve on the bridge address with --host-kubeconfig. Sets vkube_kc.
host_vkube_start() {
  hk create namespace "$HOST_SYNC_NS" >/dev/null
  sed -e "s/HOST_NAMESPACE/$HOST_SYNC_NS/g" -e 's/SERVICE_ACCOUNT/vkube-syncer/g' "$root/deploy/host-rbac.yaml" \
    | hk apply -f - >/dev/null
  hk -n "$HOST_SYNC_NS" create serviceaccount vkube-syncer >/dev/null
  local skc=$work/vkube/syncer.kubeconfig port
  cat >"$skc" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: host, cluster: {server: "$API_SERVER", certificate-authority-data: $(base64 -w0 "$host_dir/pki/ca.crt")}}]
users: [{name: syncer, user: {token: "$(hk -n "$HOST_SYNC_NS" create token vkube-syncer --duration=12h)"}}]
contexts: [{name: host, context: {cluster: host, user: syncer, namespace: $HOST_SYNC_NS}}]
current-context: host
EOF
  # Every host node mirrored (vcluster's sync.fromHost.nodes.enabled, which the ClusterRole of
  # deploy/host-rbac.yaml allows): without it vkube shows a node only once a pod of its runs
  # there, and the e2e framework will not start without a schedulable node.
  printf 'sync:\n  fromHost:\n    nodes: {enabled: true}\n' >"$work/vkube/vcluster.yaml"
  port=$(free_port)
  # On the bridge's address, so pods reach it through its front Service (API and DNS); names
  # outside the cluster domain go to the host's CoreDNS.
  "$vkube" serve --data-dir "$work/vkube/data" --listen "$NODE_IP:$port" \
    --host-kubeconfig "$skc" --name "$HOST_VKUBE_NAME" --dns-upstream "$NODE_IP:53" \
    --config "$work/vkube/vcluster.yaml" >"$work/vkube/vkube.log" 2>&1 &
  VKUBE_PIDS+=($!)
  log "vkube serve on $NODE_IP:$port with its syncer to host namespace $HOST_SYNC_NS (pid $!)"
  vkube_kc=$work/vkube/data/admin.kubeconfig
  for _ in $(seq 1 300); do [ -f "$vkube_kc" ] && break; sleep 0.1; done
  wait_ready "$vkube_kc" vkube "$work/vkube/vkube.log"
}

# host_prepare KUBECONFIG: the real node is Ready in that cluster, and the default ServiceAccount
# exists (vkube shows the host node once the syncer has started).
host_prepare() {
  local kc=$1 i
  for i in $(seq 1 120); do
    [ "$("$kubectl_bin" --kubeconfig="$kc" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] \
      && break
    sleep 0.5
  done
  [ "$i" -lt 120 ] || { log "node $NODE_NAME is not Ready in $kc after 60 s"; return 1; }
  for i in $(seq 1 120); do
    "$kubectl_bin" --kubeconfig="$kc" -n default get serviceaccount default >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "no default ServiceAccount in namespace default after 60 s"; return 1
}

# host_run: both runs of --host.
host_run() {
  mkdir -p "$work/vkube"
  local started
  started=$(date +%s)
  host_cluster_up
  host_vkube_start
  host_prepare "$vkube_kc"
  local oracle=
  if [ "${CONFORMANCE_PARALLEL:-0}" = 1 ] && [ "$vkube_only" = 0 ]; then
    # The oracle at the same time, in a subshell that stops its e2e.test when stopped. Its
    # namespaces and vkube's host namespace are apart; specs marked [Serial] do not belong here.
    host_prepare "$host_dir/kubeconfig"
    (trap 'stop_pids; exit 143' TERM; run_e2e upstream "$host_dir/kubeconfig" "$started") &
    oracle=$!
    VKUBE_PIDS+=("$oracle")
  fi
  run_e2e vkube "$vkube_kc" "$started"
  if [ -n "$oracle" ]; then
    wait "$oracle" || log "the oracle's run exited $?"
    unset 'VKUBE_PIDS[-1]'
  fi
  stop_pids
  # What vkube's pods left on the host goes before the oracle runs on it.
  hk delete namespace "$HOST_SYNC_NS" --timeout=120s >/dev/null 2>&1 \
    || log "host namespace $HOST_SYNC_NS not gone after 120 s"
  if [ "$vkube_only" = 0 ] && [ -z "$oracle" ]; then
    started=$(date +%s)
    host_prepare "$host_dir/kubeconfig"
    run_e2e upstream "$host_dir/kubeconfig" "$started"
  fi
}

# host_setup_lines: the "What ran" lines of a --host run (sets the setup array).
host_setup_lines() {
  setup=(
    "host cluster: \`scripts/host-cluster up\` (upstream 1.33 kube-apiserver, kube-controller-manager, kube-scheduler, kubelet on containerd $(containerd --version 2>/dev/null | awk '{print $3}') + runc, kube-proxy, CoreDNS; one node \`vkube-host\`), the e2e images from \`scripts/e2e-images\` imported into its containerd (agnhost, sample-apiserver and the rest built locally; httpd and nginx are busybox httpd stand-ins on port 80)"
    "vkube: \`vkube serve --data-dir D --listen NODE_IP:PORT --host-kubeconfig SYNCER --name $HOST_VKUBE_NAME --dns-upstream NODE_IP:53 --config C\`, C setting \`sync.fromHost.nodes.enabled: true\` (embedded SQLite; its own controllers; its syncer runs the pods in host namespace \`$HOST_SYNC_NS\` with deploy/host-rbac.yaml's permissions)"
  )
  if [ "$vkube_only" = 0 ] && [ "${CONFORMANCE_PARALLEL:-0}" = 1 ]; then
    setup+=("upstream (the oracle): the host cluster's own kube-apiserver and controllers, at the same time as vkube's run (CONFORMANCE_PARALLEL=1: both e2e.test sequences share the 2 CPUs, so spec times are longer than alone)")
  elif [ "$vkube_only" = 0 ]; then
    setup+=("upstream (the oracle): the host cluster's own kube-apiserver and controllers, after vkube's run (its host namespace deleted)")
  fi
  setup+=(
    "one e2e.test process per spec, in name order, each with \`--ginkgo.timeout=$spec_timeout\` (the specs to run: a dry run with the focus and skips.txt without its [no-kubelet] lines); machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
  )
}
