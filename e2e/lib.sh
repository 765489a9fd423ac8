# Shared by the e2e scripts (sourced, not run): paths, ok/FAIL bookkeeping, waiting, and
# starting/stopping the control plane, the node agent and the S3 server in one work directory.
# The caller sets NAME (used in messages and the temp dir name) before sourcing.
# shellcheck shell=bash

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$E2E/.." && pwd)"
BIN="${MIMEO_E2E_BIN:-$E2E/bin}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mimeo-e2e-$NAME.XXXXXX")"
DATA="$WORK/cp"
PASSED=0
FAILED=0
T0=$SECONDS
# Background processes to stop on exit, newest last: "pid:label".
E2E_PIDS=()

say() { echo "$NAME: $*" >&2; }
ok()   { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
# check "description" command... : the command must succeed; its output is shown if not.
check() { local d="$1"; shift; local out; if out="$("$@" 2>&1)"; then ok "$d"; else fail "$d"; echo "$out" | sed 's/^/       /'; fi; }
# wait_for SECONDS command... : retries the command every half second until it succeeds.
wait_for() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.5
  done
}

# until_eq SECONDS WANT command... : retries until the command prints WANT.
until_eq() {
  local limit=$1 want=$2; shift 2
  local end=$((SECONDS + limit)) got
  while got="$("$@" 2>/dev/null)"; [[ "$got" != "$want" ]]; do
    ((SECONDS < end)) || { echo "got '$got', want '$want'"; return 1; }
    sleep 0.5
  done
}

require_tools() {
  local t
  for t in "$@"; do
    [[ -x "$BIN/$t" ]] || { say "$BIN/$t missing: run bash e2e/tools.sh first"; exit 1; }
  done
}

# stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid=$1 grace=${2:-30}
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < grace * 2; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Logs whose tails are printed when the script fails.
E2E_LOGS=("$DATA/controlplane.out" "$DATA/kube-apiserver.log" "$DATA/kube-controller-manager.log" "$DATA/etcd.log")

cleanup() {
  local rc=$?
  # Only the script itself cleans up; a subshell ($(...)) that inherited the trap just exits.
  [[ "$BASHPID" == "$$" ]] || return 0
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  local i
  for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]%%:*}"; done
  stop_node
  if [[ $rc -ne 0 ]]; then
    local f
    for f in "${E2E_LOGS[@]}"; do
      [[ -f "$f" ]] && { echo "---- last lines of $f"; tail -n 25 "$f"; }
    done
  fi
  if [[ -n "${MIMEO_E2E_KEEP:-}" || $rc -ne 0 ]]; then
    say "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
# A signal that lands in a subshell is passed on to the script itself.
on_signal() { if [[ "$BASHPID" != "$$" ]]; then kill -"$1" "$$"; fi; exit "$2"; }
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

# shellcheck source=e2e/node.sh
source "$E2E/node.sh"

# start_controlplane [FLAGS]: starts mimeo-controlplane in $DATA and exports KUBECONFIG; sets
# CP_PID and CP_FLAGS (kept for a restart).
start_controlplane() {
  mkdir -p "$DATA"
  CP_FLAGS=("$@")
  "$BIN/mimeo-controlplane" --data-dir "$DATA" --port 0 "$@" >"$DATA/controlplane.out" 2>&1 &
  CP_PID=$!
  E2E_PIDS+=("$CP_PID:controlplane")
  say "control plane pid $CP_PID, data $DATA"
  local i
  for ((i = 0; i < 600; i++)); do
    grep -qx ready "$DATA/controlplane.out" 2>/dev/null && break
    kill -0 "$CP_PID" 2>/dev/null || { say "control plane exited before ready"; exit 1; }
    sleep 0.5
  done
  grep -qx ready "$DATA/controlplane.out" || { say "control plane not ready in 300s"; exit 1; }
  export KUBECONFIG="$DATA/admin.kubeconfig"
}

# start_cluster: the control plane on the node's address with a scheduler, and the real node
# (e2e/node.sh) with its add-ons.
start_cluster() {
  node_network
  start_controlplane --address "$NODE_IP" --scheduler --node "$NODE_NAME" "$@"
  start_node "$WORK/node"
}

# restart_controlplane: kills kube-apiserver (SIGKILL, as a crash or an OOM kill would: clients
# meet refused connections at once, not a graceful drain), lets the supervisor stop the rest
# (etcd cleanly), and starts the control plane again on the same data, address and port.
restart_controlplane() {
  local port
  port="$(sed -n 's#.*server: https://.*:\([0-9]*\)$#\1#p' "$KUBECONFIG" | sed -n 1p)"
  pkill -KILL -P "$CP_PID" -f ' kube-apiserver ' || true
  stop_pid "$CP_PID" 30
  start_controlplane "${CP_FLAGS[@]}" --port "$port" --etcd-unsafe-no-fsync=false
}

k() { "$BIN/kubectl" "$@"; }

# free_port: an unused loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
