# `up`, `down` and `status` of scripts/host-cluster. Sourced by it; uses its variables.

STEP_START=0
step() { STEP_START=$(date +%s.%N); log "$*"; }
step_done() { log "  done in $(printf '%.1f' "$(echo "$(date +%s.%N) - $STEP_START" | bc)")s"; }

# ensure_host_tools: Debian's packages and the upstream builds the host needs.
ensure_host_tools() {
  local pkgs=() bin
  command -v containerd >/dev/null || pkgs+=(containerd)
  command -v runc >/dev/null || pkgs+=(runc)
  [ -x "$CNI_BIN/bridge" ] && [ -x "$CNI_BIN/host-local" ] && [ -x "$CNI_BIN/portmap" ] || pkgs+=(containernetworking-plugins)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v conntrack >/dev/null || pkgs+=(conntrack)
  command -v etcd >/dev/null || pkgs+=(etcd-server)
  command -v openssl >/dev/null || pkgs+=(openssl)
  command -v bc >/dev/null || pkgs+=(bc)
  command -v jq >/dev/null || pkgs+=(jq)
  command -v ip >/dev/null || pkgs+=(iproute2)
  command -v kubectl >/dev/null || { log "kubectl is missing: install kubectl (1.27 or newer)"; return 1; }
  [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
  [ -d /proc/sys/net/bridge ] || log "warning: br_netfilter is not loaded; Service traffic between pods on the bridge may fail"
  UPSTREAM_BIN=$("$ROOT/scripts/build-upstream" "${UPSTREAM[@]}" "$@" | tail -n1 | xargs dirname)
  for bin in "${UPSTREAM[@]}" "$@"; do
    [ -x "$UPSTREAM_BIN/$bin" ] || { log "scripts/build-upstream did not build $bin"; return 1; }
  done
}

# start NAME COMMAND...: runs it in a session of its own (so it outlives this script), logs to
# DIR/logs/NAME.log, and records its PID in DIR/pids.
start() {
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$PIDS"
}

# alive PID: runs, and is no zombie (our processes outlive `up`, so init reaps them, when it will).
alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
pid_of() { awk -v n="$1" '$1 == n {print $2}' "$PIDS" 2>/dev/null | tail -n1; }

# wait_for WHAT SECONDS NAME COMMAND...: until COMMAND succeeds; fails naming the log of NAME,
# and fails at once if NAME's process died.
wait_for() {
  local what=$1 secs=$2 name=$3 deadline; shift 3
  deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$(pid_of "$name")"; then
      log "$name exited while waiting for $what; the end of $LOGS/$name.log:"
      tail -n 20 "$LOGS/$name.log" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${secs}s waiting for $what; the end of $LOGS/$name.log:"
      tail -n 20 "$LOGS/$name.log" >&2
      return 1
    fi
    sleep 0.5
  done
}

k() { kubectl --kubeconfig "$DIR/kubeconfig" "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }
crictl_() { "$UPSTREAM_BIN/crictl" --runtime-endpoint "unix://$CTRD_SOCK" --image-endpoint "unix://$CTRD_SOCK" --timeout 20s "$@"; }

running_pids() {
  local name pid
  [ -f "$PIDS" ] || return 0
  while read -r name pid; do alive "$pid" && echo "$name $pid"; done <"$PIDS"
}

# --- the network ----------------------------------------------------------------------------------

network_up() {
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Everything in 198.18.0.0/15 stays on the bridge: ClusterIPs that kube-proxy did not (yet)
  # translate go nowhere rather than out of the default route.
  ip route add "$OUR_NET" dev "$BRIDGE" src "$NODE_IP"
  # Pods reach Services on other pods through the node, so the node forwards; it never forwards
  # out of the machine (the raw rule below drops that before routing).
  cat /proc/sys/net/ipv4/ip_forward >"$DIR/ip_forward.orig"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  local ipt
  for ipt in $(iptables_variants iptables); do
    "$ipt" -t raw -N VKUBE-HOST-EGRESS
    "$ipt" -t raw -A VKUBE-HOST-EGRESS -d "$OUR_NET" -j RETURN
    "$ipt" -t raw -A VKUBE-HOST-EGRESS -m comment --comment "vkube host: pods never reach outside this machine" -j DROP
    "$ipt" -t raw -I PREROUTING -i "$BRIDGE" -j VKUBE-HOST-EGRESS
    # kube-apiserver binds every address; only loopback and the bridge may reach it.
    "$ipt" -N VKUBE-HOST-INPUT
    "$ipt" -A VKUBE-HOST-INPUT -i lo -j RETURN
    "$ipt" -A VKUBE-HOST-INPUT -i "$BRIDGE" -j RETURN
    "$ipt" -A VKUBE-HOST-INPUT -p tcp --dport "$API_PORT" -j DROP
    "$ipt" -I INPUT -j VKUBE-HOST-INPUT
  done
}

# iptables_variants iptables|ip6tables: the backends present (nft and legacy: kube-proxy and the
# kubelet pick one themselves, so cleaning looks at both).
iptables_variants() {
  local v
  for v in "$1-nft" "$1-legacy"; do command -v "$v" >/dev/null && echo "$v"; done
  command -v "$1-nft" >/dev/null || command -v "$1-legacy" >/dev/null || echo "$1"
}

# iptables_clean: removes every chain named KUBE-*, CNI-* or VKUBE-HOST-* and every rule jumping to
# one, in each table of each backend, by restoring the table without them (one atomic step).
iptables_clean() {
  local fam ipt table saved
  for fam in iptables ip6tables; do
    for ipt in $(iptables_variants "$fam"); do
      for table in raw mangle nat filter; do
        saved=$("$ipt-save" -t "$table" 2>/dev/null) || continue
        grep -qE '(^:|-j |^-A )(KUBE-|CNI-|VKUBE-HOST-)' <<<"$saved" || continue
        grep -vE '^:(KUBE-|CNI-|VKUBE-HOST-)|^-A (KUBE-|CNI-|VKUBE-HOST-)|-j (KUBE-|CNI-|VKUBE-HOST-)' <<<"$saved" \
          | "$ipt-restore" -T "$table" || log "could not clean $ipt table $table"
      done
    done
  done
}

# --- images ---------------------------------------------------------------------------------------

# VKUBE_HOST_IMAGES names the images of scripts/build-image to import (default: busybox pause
# vkube); conformance/run --host leaves vkube out, as it tests a binary outside any image and
# need not wait on a release build.
import_images() {
  local archives images=${VKUBE_HOST_IMAGES:-busybox pause vkube}
  # shellcheck disable=SC2086 # a list of words
  archives=$("$ROOT/scripts/build-image" --out-dir "$DIR/images" $images) || return 1
  local a
  for a in $archives; do
    ctr_ images import "$a" >/dev/null || { log "ctr could not import $a"; return 1; }
  done
  # ctr names an OCI archive's image by its io.containerd.image.name annotation.
  local want have
  have=$(ctr_ images ls -q)
  for want in vkube.local/busybox:1 "$PAUSE_IMAGE" vkube.local/vkube:dev; do
    case " $images " in *" $(basename "${want%%:*}") "*) ;; *) continue ;; esac
    grep -qx "$want" <<<"$have" || { log "image $want is not in containerd after import"; return 1; }
  done
}

# --- up -------------------------------------------------------------------------------------------

host_up() {
  local kwok_count=$1 t0 etcd_client etcd_peer holder
  t0=$(date +%s)
  [ "$(id -u)" = 0 ] || { log "host-cluster needs root (containers, the bridge, iptables)"; exit 1; }
  if [ -n "$(running_pids)" ]; then
    log "a host cluster is already running from $DIR (PIDs: $(running_pids | awk '{print $2}' | xargs));"
    log "use it (KUBECONFIG=$DIR/kubeconfig), or stop it first: scripts/host-cluster down $DIR"
    exit 1
  fi
  if [ -f "$MACHINE_LOCK" ]; then
    holder=$(cat "$MACHINE_LOCK")
    if [ "$holder" != "$DIR" ] && [ -f "$holder/pids" ] && [ -n "$(DIR=$holder PIDS=$holder/pids running_pids)" ]; then
      log "another host cluster runs on this machine, from $holder; stop it first: scripts/host-cluster down $holder"
      exit 1
    fi
    log "cleaning up what a host cluster from $holder left behind (its processes are gone)"
    (set_dirs_for_cleanup "$holder" && machine_cleanup) || true
  elif ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "the bridge $BRIDGE is left over from an earlier host cluster; removing it"
    (set_dirs_for_cleanup "$DIR" && machine_cleanup) || true
  fi
  ensure_host_tools $([ "$kwok_count" -gt 0 ] && echo kwok)
  rm -rf "$DIR"/{pki,logs,etcd,containerd,cni,kubelet,coredns,images,pids,host.env,kubeconfig,*.kubeconfig,*.yaml,ip_forward.orig,hostpath_pv.ours}
  mkdir -p "$LOGS"
  echo "$DIR" >"$MACHINE_LOCK"
  # A failure or an interrupt below leaves nothing half-started.
  UP_DONE=
  trap 'if [ -z "$UP_DONE" ]; then log "up failed; stopping what it started (logs stay in $LOGS)"; host_down >/dev/null 2>&1 || true; fi' EXIT

  # The hostpath provisioner writes under /tmp/hostpath_pv; `down` removes it if `up` made it.
  [ -e /tmp/hostpath_pv ] || touch "$DIR/hostpath_pv.ours"

  step "certificates"
  pki_all
  step_done

  step "network: bridge $BRIDGE ($NODE_IP), guard rules"
  network_up
  step_done

  step "etcd"
  etcd_client=$(free_port); etcd_peer=$(free_port)
  start etcd etcd --name vkube-host --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "vkube-host=http://127.0.0.1:$etcd_peer"
  wait_for "etcd" 30 etcd bash -c "exec 3<>/dev/tcp/127.0.0.1/$etcd_client"
  step_done

  step "kube-apiserver on 127.0.0.1:$API_PORT and $NODE_IP:$API_PORT"
  start kube-apiserver "$UPSTREAM_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_client" \
    --bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --allow-privileged=true --profiling=false --v=1
  wait_for "kube-apiserver /readyz" 120 kube-apiserver k get --raw /readyz
  step_done

  step "kube-controller-manager, kube-scheduler"
  start kube-controller-manager "$UPSTREAM_BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --controllers '*,bootstrapsigner,tokencleaner' \
    --enable-hostpath-provisioner=true \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$CLUSTER_CIDR" --allocate-node-cidrs=false \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 --v=1
  # The hostpath provisioner makes each volume's directory 0750 root:root, and fsGroup does not
  # apply to hostPath volumes, so a non-root pod (vkube's own StatefulSet) could not write its
  # claim. Make them 0777, as kind's local-path-provisioner does with its volumes.
  start hostpath-modes bash -c 'while :; do
      find /tmp/hostpath_pv -mindepth 1 -maxdepth 1 -type d ! -perm -0777 -exec chmod 0777 {} + 2>/dev/null
      sleep 0.3
    done'
  # A pod found unschedulable because its claim was not bound yet is normally retried when the
  # claim binds; once in a CI run that event was lost and the pod waited out the scheduler's
  # 5 minutes (a StatefulSet's claim bound in a second). Retry such pods every 15 s instead.
  start kube-scheduler "$UPSTREAM_BIN/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --kube-api-qps 300 --kube-api-burst 500 \
    --pod-max-in-unschedulable-pods-duration 15s --v=1
  k apply -f - <<<"$(bootstrap_manifest)" >/dev/null
  step_done

  step "containerd, images"
  write_containerd_config
  start containerd containerd --config "$CTRD/config.toml"
  wait_for "containerd" 30 containerd ctr --address "$CTRD_SOCK" version
  import_images
  step_done

  step "kubelet ($NODE_NAME on $NODE_IP), kube-proxy, CoreDNS"
  write_kubelet_config
  start kubelet "$UPSTREAM_BIN/kubelet" --config "$DIR/kubelet/config.yaml" \
    --kubeconfig "$DIR/kubelet.kubeconfig" --root-dir "$DIR/kubelet/root" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
  write_kube_proxy_config
  start kube-proxy "$UPSTREAM_BIN/kube-proxy" --config "$DIR/kube-proxy.yaml" --v=1
  write_coredns_config
  start coredns "$UPSTREAM_BIN/coredns" -conf "$DIR/coredns/Corefile"
  wait_for "node $NODE_NAME Ready" 120 kubelet \
    k wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  wait_for "CoreDNS" 30 coredns curl -fsS http://127.0.0.1:18181/ready
  wait_for "kube-proxy" 30 kube-proxy curl -fsS http://127.0.0.1:10256/healthz
  wait_for "the default ServiceAccount" 60 kube-controller-manager k get serviceaccount default -n default
  step_done

  if [ "$kwok_count" -gt 0 ]; then
    step "kwok with $kwok_count fake nodes"
    start kwok "$UPSTREAM_BIN/kwok" --kubeconfig "$DIR/kubeconfig" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --cidr "$KWOK_CIDR" --node-ip "$NODE_IP" --node-lease-duration-seconds 40 \
      --config "$UPSTREAM_BIN/kwok-stages.yaml" --v=WARN
    k apply -f - <<<"$(kwok_nodes "$kwok_count")" >/dev/null
    wait_for "$kwok_count kwok nodes Ready" 120 kwok kwok_ready "$kwok_count"
    step_done
  fi

  cat >"$DIR/host.env" <<EOF
# The host cluster from scripts/host-cluster up $DIR
KUBECONFIG=$DIR/kubeconfig
API_SERVER=https://127.0.0.1:$API_PORT
NODE_API_SERVER=https://$NODE_IP:$API_PORT
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
DNS_IP=$DNS_IP
CLUSTER_DOMAIN=$CLUSTER_DOMAIN
KWOK_NODES=$kwok_count
KWOK_POD_CIDR=$KWOK_CIDR
CONTAINERD_SOCK=$CTRD_SOCK
UPSTREAM_BIN=$UPSTREAM_BIN
EOF
  UP_DONE=1
  log "host cluster up in $(($(date +%s) - t0))s"
  echo "export KUBECONFIG=$DIR/kubeconfig"
}

kwok_ready() {
  [ "$(k get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -cx True)" = "$1" ]
}

# --- down -----------------------------------------------------------------------------------------

# set_dirs_for_cleanup DIR: the paths of a possibly half-gone DIR, without creating it.
set_dirs_for_cleanup() {
  DIR=$1 PKI=$1/pki CTRD=$1/containerd CTRD_SOCK=$1/containerd/containerd.sock LOGS=$1/logs PIDS=$1/pids
  CNI_CONF=$1/cni/net.d CNI_IPAM=$1/cni/ipam
}

# stop_pid NAME PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local name=$1 pid=$2 i
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    if ! alive "$pid"; then
      [ "$i" -lt 20 ] || log "$name took $((i / 10))s to stop"
      return 0
    fi
    sleep 0.1
  done
  log "$name (pid $pid) did not stop in 10s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do alive "$pid" || return 0; sleep 0.1; done
}

host_down() {
  local name pid running
  if [ ! -d "$DIR" ] || { [ ! -f "$PIDS" ] && [ "$(cat "$MACHINE_LOCK" 2>/dev/null)" != "$DIR" ]; }; then
    log "no host cluster in $DIR: nothing to stop"
    return 0
  fi
  running=$(running_pids)
  [ -n "$running" ] || log "no process of the host cluster in $DIR is running; removing what it left"
  # The pods first, through the CRI while the kubelet is stopped, so the CNI plugin releases
  # each pod's veth, address and portmap rules.
  for name in kwok kubelet; do stop_pid "$name" "$(pid_of "$name")"; done
  UPSTREAM_BIN=${UPSTREAM_BIN:-$(sed -n 's/^UPSTREAM_BIN=//p' "$DIR/host.env" 2>/dev/null)}
  if alive "$(pid_of containerd)" && [ -x "${UPSTREAM_BIN:-}/crictl" ]; then
    crictl_ stopp $(crictl_ pods -q 2>/dev/null) >/dev/null 2>&1 || true
    crictl_ rmp -f -a >/dev/null 2>&1 || true
  fi
  for name in hostpath-modes kube-proxy coredns kube-scheduler kube-controller-manager containerd kube-apiserver etcd; do
    stop_pid "$name" "$(pid_of "$name")"
  done
  machine_cleanup
  rm -f "$PIDS"
  log "host cluster in $DIR stopped"
}

# machine_cleanup: what `up` changed outside its processes: container processes left by a
# killed containerd, mounts under DIR, the pods' network namespaces, iptables, the bridge, the
# kubelet's cgroups and log links, ip_forward.
machine_cleanup() {
  local m p ns
  # Shims and containers whose containerd was killed: they run from DIR's state.
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  for m in $(awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for ns in /var/run/netns/cni-*; do
    [ -e "$ns" ] || continue
    # Only the namespaces this DIR's containerd made (it is the only CNI user here, but a
    # namespace made before this cluster was up is not ours).
    [ "$ns" -nt "$DIR/pki/ca.crt" ] 2>/dev/null || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  iptables_clean
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  ip route del "$OUR_NET" 2>/dev/null || true
  if [ -f "$DIR/ip_forward.orig" ]; then cat "$DIR/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward; rm -f "$DIR/ip_forward.orig"; fi
  # Containers whose shim was killed with it are still in the kubelet's cgroups.
  for p in $(cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
      /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null); do
    kill -9 "$p" 2>/dev/null || true
  done
  for p in /sys/fs/cgroup/*/kubepods; do
    [ -d "$p" ] && find "$p" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
  # The hostpath provisioner's volumes (kube-controller-manager writes them under /tmp).
  if [ -f "$DIR/hostpath_pv.ours" ]; then rm -rf /tmp/hostpath_pv; rm -f "$DIR/hostpath_pv.ours"; fi
  [ "$(cat "$MACHINE_LOCK" 2>/dev/null)" = "$DIR" ] && rm -f "$MACHINE_LOCK"
  return 0
}

host_status() {
  local running
  running=$(running_pids)
  if [ -z "$running" ]; then echo "no host cluster running in $DIR"; return 1; fi
  echo "$running"
}
