# Sourced by tests/host/cli.sh: the seed's scenario on the real host. `vkube create` with three
# replicas on embedded etcd and OIDC (the test IdP of tests/idp), a group bound through one
# replica and allowed by all three, the leader's pod deleted under a writing client, and the
# workloads through pause and resume, then delete.

HA_NS=vkube-ha
IDP_DIR=$DIR/idp
IDP_PID=

# The test IdP on the bridge's address, so the vkube pods reach it (it checks the address is
# loopback or the test bridge).
start_idp() {
  ensure_idp >/dev/null || return 1
  mkdir -p "$IDP_DIR"
  # A CA and a serving certificate from it (rustls refuses a CA certificate as a server's).
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=test-idp-ca" \
    -keyout "$IDP_DIR/ca.key" -out "$IDP_DIR/ca.crt" 2>/dev/null || return 1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=test-idp" -keyout "$IDP_DIR/tls.key" -out "$IDP_DIR/tls.csr" 2>/dev/null || return 1
  printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$NODE_IP" >"$IDP_DIR/ext.cnf"
  openssl x509 -req -in "$IDP_DIR/tls.csr" -CA "$IDP_DIR/ca.crt" -CAkey "$IDP_DIR/ca.key" -CAcreateserial -days 1 \
    -extfile "$IDP_DIR/ext.cnf" -out "$IDP_DIR/tls.crt" 2>/dev/null || return 1
  IDP_PORT=$(free_port)
  node "$ROOT/tests/idp/provider.mjs" --host "$NODE_IP" --port "$IDP_PORT" --cert "$IDP_DIR/tls.crt" \
    --key "$IDP_DIR/tls.key" --signing-key "$IDP_DIR/signing.json" >"$IDP_DIR/ready" 2>"$IDP_DIR/idp.log" &
  echo $! >"$IDP_DIR/pid" # tests run in subshells: the PID lives in a file
  until_true 30 grep -q "^ready https://$NODE_IP:$IDP_PORT" "$IDP_DIR/ready"
  echo "https://$NODE_IP:$IDP_PORT" >"$IDP_DIR/issuer"
}
issuer() { cat "$IDP_DIR/issuer"; }

# ha_pods: "NAME IP" of each control-plane pod.
ha_pods() { k -n "$HA_NS" get pods -l app=vkube,release=ha -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}'; }
# ha_get IP PATH: GET through one replica, by its pod address, as the admin.
ha_get() { curl -sf --max-time 5 --cacert "$DIR/ha-ca.crt" --cert "$DIR/ha-admin.crt" --key "$DIR/ha-admin.key" "https://$1:8443$2"; }
# ha_leaders: the ids of the replicas that say they lead, as the first replica that answers
# lists them (normally one).
ha_leaders() {
  local name ip
  while read -r name ip; do
    [ -n "$ip" ] || continue
    ha_get "$ip" /vkube/replicas 2>/dev/null | jq -er '.replicas[] | select(.leader) | .id' 2>/dev/null && return 0
  done < <(ha_pods)
  return 1
}

t_cli_ha_create() {
  start_idp || return 1
  k create namespace "$HA_NS" >/dev/null
  k -n "$HA_NS" create configmap idp-ca --from-file=ca.crt="$IDP_DIR/ca.crt" >/dev/null
  cat >"$DIR/ha-values.yaml" <<EOF
controlPlane:
  backingStore:
    etcd:
      embedded:
        enabled: true
  statefulSet:
    highAvailability:
      replicas: 3
      leaseDuration: 10
      renewDeadline: 8
      retryPeriod: 2
    persistence:
      addVolumes:
      - name: idp-ca
        configMap:
          name: idp-ca
      addVolumeMounts:
      - name: idp-ca
        mountPath: /etc/idp
        readOnly: true
  distro:
    k8s:
      apiServer:
        extraArgs:
        - --oidc-issuer-url=$(issuer)
        - --oidc-client-id=vkube
        - --oidc-username-claim=email
        - --oidc-groups-claim=groups
        - "--oidc-groups-prefix=oidc:"
        - --oidc-ca-file=/etc/idp/ca.crt
EOF
  local t0 out i
  t0=$(date +%s.%N)
  out=$(c create ha -n "$HA_NS" -f "$DIR/ha-values.yaml" --connect=false 2>&1) \
    || { echo "$out"; k -n "$HA_NS" get pods; k -n "$HA_NS" logs ha-0 --tail=20; return 1; }
  echo "# vkube create ha (3 replicas, embedded etcd with TLS, OIDC) to ready: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2
  for i in 0 1 2; do grep -q "replica ha-$i ready" <<<"$out" || { echo "$out"; return 1; }; done
  # Three pods on the host's kubelet, each with its etcd member's data and certificates.
  [ "$(k -n "$HA_NS" get pods -l app=vkube,release=ha --field-selector=status.phase=Running -o name | wc -l)" = 3 ]
  for i in 0 1 2; do
    k -n "$HA_NS" exec "ha-$i" -- sh -c 'test -d /data/etcd && test -f /data/etcd/pki/ca.crt' \
      || { echo "ha-$i has no etcd member data with TLS"; return 1; }
  done
  # The admin's credentials, from the Secret vkube published.
  k -n "$HA_NS" get secret vc-ha -o jsonpath='{.data.certificate-authority}' | base64 -d >"$DIR/ha-ca.crt"
  k -n "$HA_NS" get secret vc-ha -o jsonpath='{.data.client-certificate}' | base64 -d >"$DIR/ha-admin.crt"
  k -n "$HA_NS" get secret vc-ha -o jsonpath='{.data.client-key}' | base64 -d >"$DIR/ha-admin.key"
  # Every replica answers at its pod address, with a certificate that names it.
  local name ip
  while read -r name ip; do ha_get "$ip" /readyz >/dev/null || { echo "$name at $ip does not answer /readyz"; return 1; }; done < <(ha_pods)
}
check "vkube create ha: 3 replicas on embedded etcd (TLS from the cluster CA) and OIDC, each pod serving at its address" t_cli_ha_create

t_cli_ha_oidc() {
  local token ips n urls=() codes out
  token=$(node "$ROOT/tests/idp/login.mjs" --issuer "$(issuer)" --ca "$IDP_DIR/ca.crt" --user alice 2>"$IDP_DIR/login.log") \
    || { cat "$IDP_DIR/login.log"; return 1; }
  ips=($(ha_pods | awk '{print $2}'))
  [ ${#ips[@]} = 3 ] || { ha_pods; return 1; }
  # Bound through one replica (the port forward's), as a user would through any.
  c connect ha -n "$HA_NS" --print >"$DIR/ha.kubeconfig" 2>/dev/null || return 1
  kubectl --kubeconfig "$DIR/ha.kubeconfig" create clusterrolebinding oidc-dev-view --clusterrole=view --group=oidc:dev >/dev/null
  # 1000 requests right after the binding, round-robin over the three pod addresses.
  for n in $(seq 0 999); do urls+=(-o /dev/null "https://${ips[$((n % 3))]}:8443/api/v1/namespaces/default/pods?limit=1"); done
  codes=$(curl -s --cacert "$DIR/ha-ca.crt" -H "Authorization: Bearer $token" -w '%{http_code}\n' "${urls[@]}" | sort | uniq -c | xargs)
  [ "$codes" = "1000 200" ] || { echo "answers: $codes"; return 1; }
  echo "# 1000 requests of an OIDC group member, round-robin over 3 replicas: all 200" >&2
  # vkube check: every replica, one fingerprint, the user allowed by each.
  sed "s#server: .*#server: https://${ips[0]}:8443#" "$DIR/ha.kubeconfig" >"$DIR/ha-direct.kubeconfig"
  out=$("$VKUBE_BIN" check --kubeconfig "$DIR/ha-direct.kubeconfig" --token "$token" --can-i "list pods default" 2>&1) \
    || { echo "$out"; return 1; }
  [ "$(grep -cE "198\.1[89]\.[0-9]+\.[0-9]+:8443" <<<"$out")" -ge 3 ] || { echo "check did not list three replicas:"; echo "$out"; return 1; }
}
check "an OIDC group bound to view through one replica: 1000 requests round-robin over the three pods allowed; vkube check agrees" t_cli_ha_oidc

t_cli_ha_leader_loss() {
  local leader pod ips t0 took writer_pid new i
  leader=$(ha_leaders) || { echo "no leader"; return 1; }
  [ "$(wc -l <<<"$leader")" = 1 ] || { echo "leaders: $leader"; return 1; }
  pod=ha-${leader##*-} # replica vkube-N is pod ha-N
  ips=($(ha_pods | awk '{print $2}'))
  # A client writing throughout, round-robin over the pods; it records what was acknowledged.
  : >"$DIR/ha-acked"
  (
    n=0 end=$(($(date +%s) + 30))
    while [ "$(date +%s)" -lt "$end" ]; do
      code=$(curl -s --max-time 3 --cacert "$DIR/ha-ca.crt" --cert "$DIR/ha-admin.crt" --key "$DIR/ha-admin.key" \
        -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -X POST \
        -d "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"w-$n\"}}" \
        "https://${ips[$((n % 3))]}:8443/api/v1/namespaces/default/configmaps") || true # a replica going away
      if [ "$code" = 201 ]; then echo "w-$n" >>"$DIR/ha-acked"; fi
      n=$((n + 1))
    done
  ) &
  writer_pid=$!
  sleep 3
  t0=$(date +%s.%N)
  k -n "$HA_NS" delete pod "$pod" --wait=false >/dev/null
  # Asked of a replica that stays (the deleted one may answer slowly while it shuts down).
  local witness
  witness=$(ha_pods | awk -v p="$pod" '$1 != p { print $2; exit }')
  new=
  for i in $(seq 200); do
    new=$(ha_get "$witness" /vkube/replicas 2>/dev/null | jq -r '.replicas[] | select(.leader) | .id' | grep -vx "$leader" | head -1)
    [ -n "$new" ] && break
    sleep 0.1
  done
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ -n "$new" ] || { echo "no new leader after the leader's pod was deleted"; kill "$writer_pid"; return 1; }
  echo "# leader $leader's pod deleted: new leader $new after ${took}s" >&2
  awk -v t="$took" 'BEGIN { exit !(t <= 5) }' || { echo "a new leader took ${took}s"; kill "$writer_pid"; return 1; }
  # The StatefulSet brings the pod back, and its etcd member rejoins (the pod is ready again).
  until_true 120 bash -c "[ \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n $HA_NS get pod $pod -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' 2>/dev/null)\" = True ]"
  wait "$writer_pid"
  # No acknowledged write is lost: each is there, read through the pod that came back.
  local back acked lost
  back=$(k -n "$HA_NS" get pod "$pod" -o jsonpath='{.status.podIP}')
  ha_get "$back" /api/v1/namespaces/default/configmaps | jq -r '.items[].metadata.name' | grep '^w-' | sort >"$DIR/ha-present"
  acked=$(wc -l <"$DIR/ha-acked")
  lost=$(sort "$DIR/ha-acked" | comm -23 - "$DIR/ha-present" | wc -l)
  echo "# writes acknowledged during the leader loss: $acked, lost: $lost" >&2
  [ "$acked" -gt 20 ] && [ "$lost" = 0 ]
}
check "the leader's pod deleted: a new leader within 5 s, the pod and its etcd member come back, no acknowledged write lost" t_cli_ha_leader_loss

t_cli_ha_workload_pause_delete() {
  c connect ha -n "$HA_NS" >/dev/null 2>&1 || return 1
  ck create deployment hello --image=vkube.local/busybox:1 --replicas=2 -- sh -c 'exec httpd -f -p 8080' >/dev/null
  until_true 120 bash -c "[ \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n $HA_NS get pods -l vkube.dev/cluster=ha --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
  c pause ha -n "$HA_NS" >/dev/null 2>&1 || return 1
  c resume ha -n "$HA_NS" >/dev/null 2>&1 || return 1
  c connect ha -n "$HA_NS" >/dev/null 2>&1 || return 1
  until_true 180 bash -c "[ \"\$(kubectl --kubeconfig '$CLI_KUBECONFIG' get pods -l app=hello --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
  until_true 60 bash -c "[ \"\$(kubectl --kubeconfig '$DIR/kubeconfig' -n $HA_NS get pods -l vkube.dev/cluster=ha --field-selector=status.phase=Running -o name | wc -l)\" = 2 ]"
  # The binding made before the pause is still there (etcd's data is on the claims).
  ck get clusterrolebinding oidc-dev-view >/dev/null
  c delete ha -n "$HA_NS" --delete-namespace --wait >/dev/null 2>&1 || return 1
  ! k get namespace "$HA_NS" >/dev/null 2>&1 || { echo "namespace $HA_NS is left"; return 1; }
  [ -z "$(k get pods -A -l vkube.dev/cluster=ha -o name)" ] || { echo "synced pods of ha left"; return 1; }
  [ "$(current_context)" = "$HOST_CONTEXT" ]
}
check "ha: a Deployment runs on the host; pause and resume bring it back with its state; delete leaves nothing of ha" t_cli_ha_workload_pause_delete

[ -f "$IDP_DIR/pid" ] && kill "$(cat "$IDP_DIR/pid")" 2>/dev/null
