# The host cluster's certificates and kubeconfigs, made with openssl. Sourced by scripts/host-cluster.
# Every certificate is signed by one CA in DIR/pki and lasts ten years: this is a test host that
# lives for one `up` … `down`, not a cluster to run for a year.

# pki_cert NAME CN [O] [SANS] [USAGE]: DIR/pki/NAME.{key,crt}; SANS as for subjectAltName
# ("IP:1.2.3.4,DNS:x"), USAGE serverAuth, clientAuth or both (default clientAuth). Signed by
# DIR/pki/ca, or by DIR/pki/$PKI_SIGNER when that is set.
pki_cert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-} usage=${5:-clientAuth} subj ext signer=${PKI_SIGNER:-ca}
  subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  ext=$PKI/$name.ext
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subj" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$signer.crt" -CAkey "$PKI/$signer.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# pki_kubeconfig FILE CERT_NAME SERVER: a kubeconfig with the CA and the client cert embedded.
pki_kubeconfig() {
  local file=$1 name=$2 server=$3
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vkube-host
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: vkube-host
  context:
    cluster: vkube-host
    user: $name
current-context: vkube-host
EOF
  chmod 600 "$file"
}

# pki_all: the CA, each component's certificate and kubeconfig, and the service-account key pair.
pki_all() {
  local api=https://127.0.0.1:$API_PORT node_api=https://$NODE_IP:$API_PORT
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=vkube-host-ca" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  pki_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN" \
    serverAuth
  pki_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  pki_cert admin kubernetes-admin system:masters
  pki_cert controller-manager system:kube-controller-manager
  pki_cert scheduler system:kube-scheduler
  pki_cert kube-proxy system:kube-proxy
  pki_cert kubelet "system:node:$NODE_NAME" system:nodes
  pki_cert kubelet-serving "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME" serverAuth
  # The aggregation layer's front proxy, with a CA of its own as kubeadm makes it: kube-apiserver
  # proxies to aggregated API servers (the e2e Aggregator spec's sample-apiserver) with this
  # client certificate, and they trust its X-Remote-* headers by this CA.
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=vkube-host-front-proxy-ca" -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  PKI_SIGNER=front-proxy-ca pki_cert front-proxy-client front-proxy-client
  # CoreDNS and kwok read the whole cluster; they act as the admin on this test host.
  pki_kubeconfig "$DIR/kubeconfig" admin "$api"
  pki_kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager "$api"
  pki_kubeconfig "$DIR/scheduler.kubeconfig" scheduler "$api"
  pki_kubeconfig "$DIR/kube-proxy.kubeconfig" kube-proxy "$node_api"
  pki_kubeconfig "$DIR/kubelet.kubeconfig" kubelet "$node_api"
}
