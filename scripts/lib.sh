# Shared by scripts/test and bench/store: install what is missing, start etcd and PostgreSQL on
# loopback in temp dirs, and stop them by PID. Source it; it defines functions only.

VKUBE_PIDS=()
VKUBE_APT_UPDATED=

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vkube/target}"

log() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "missing: $*; install it (apt-get install -y $*) or run as root"
    return 1
  fi
  if [ -z "$VKUBE_APT_UPDATED" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    VKUBE_APT_UPDATED=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL's server binaries live outside PATH in Debian's packages.
add_postgres_to_path() {
  command -v initdb >/dev/null && command -v postgres >/dev/null && return 0
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && PATH="$PATH:$bin" && export PATH && return 0
  done
  return 1
}

ensure_tools() {
  command -v cargo >/dev/null || { log "cargo is missing: install Rust with rustup"; return 1; }
  command -v protoc >/dev/null || apt_install protobuf-compiler
  command -v etcd >/dev/null || apt_install etcd-server
  add_postgres_to_path || { apt_install postgresql && add_postgres_to_path; }
  command -v python3 >/dev/null || apt_install python3
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy >&2
  fi
  ensure_idp
  ensure_pyclient
}

# The Python `kubernetes` client, the third-party client of the e2e suite (tests/clients), in a
# venv of its own; exports VKUBE_PYTHON.
ensure_pyclient() {
  local venv=${VKUBE_CACHE:-$HOME/.cache/vkube}/pyclient
  if ! "$venv/bin/python" -c 'import kubernetes' 2>/dev/null; then
    python3 -m venv "$venv" >&2 || { apt_install python3-venv && python3 -m venv "$venv" >&2; }
    "$venv/bin/pip" install -q 'kubernetes==31.0.0' >&2
  fi
  export VKUBE_PYTHON="$venv/bin/python"
}

# The test OpenID provider (npm oidc-provider, tests/idp) needs Node.js >= 20.19.
ensure_idp() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  command -v node >/dev/null || apt_install nodejs npm
  if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
    log "Node.js $(node --version) is too old for tests/idp (oidc-provider 9 needs >= 20.19): install a newer Node.js"
    return 1
  fi
  if [ ! -d "$root/tests/idp/node_modules/oidc-provider" ]; then
    npm ci --prefix "$root/tests/idp" --no-audit --no-fund >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port what logfile
  local i
  for i in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$2 did not start on 127.0.0.1:$1"; cat "$3" >&2; return 1
}

# start_etcd DIR: starts etcd and exports VKUBE_TEST_ETCD_ENDPOINTS.
start_etcd() {
  local dir=$1 client peer
  mkdir -p "$dir"
  client=$(free_port); peer=$(free_port)
  etcd --name vkube-test --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "vkube-test=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
  VKUBE_PIDS+=($!)
  wait_port "$client" etcd "$dir/etcd.log"
  export VKUBE_TEST_ETCD_ENDPOINTS="http://127.0.0.1:$client"
  log "etcd $(etcd --version | head -1 | awk '{print $3}') on 127.0.0.1:$client (pid $!)"
}

# start_postgres DIR: starts PostgreSQL (as user postgres when root) and exports VKUBE_TEST_POSTGRES_URL.
start_postgres() {
  local dir=$1 port run=()
  mkdir -p "$dir"
  port=$(free_port)
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$dir"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" initdb -D "$dir/data" -U postgres --auth=trust >"$dir/postgres.log" 2>&1 \
    || { cat "$dir/postgres.log" >&2; return 1; }
  "${run[@]}" postgres -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" -c max_connections=300 \
    >>"$dir/postgres.log" 2>&1 &
  VKUBE_PIDS+=($!)
  wait_port "$port" postgres "$dir/postgres.log"
  export VKUBE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "PostgreSQL $(postgres --version | awk '{print $3}') on 127.0.0.1:$port (pid $!)"
}

stop_started() {
  local pid
  for pid in "${VKUBE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${VKUBE_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  VKUBE_PIDS=()
}
