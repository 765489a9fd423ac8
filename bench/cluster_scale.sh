#!/usr/bin/env bash
# Parallelism of a duplication on the e2e cluster (the operator's worker Jobs, MinIO as S3): a
# DuplicationPolicy with `parallelism: 4` against the same policy with `parallelism: 1`, each
# copying every instance of a BackupTrail of 32 S3 work items (mode Logical), round after round.
#
#   1. The control plane and the real node as e2e/scenarios.sh starts them (e2e/lib.sh
#      start_cluster), MinIO from examples/kind/minio in namespace e2e-minio, `helm install
#      charts/mimeo` with the image localhost/mimeo:dev.
#   2. N objects of pseudo-random data (AES-CTR keystream, `openssl enc`), one per work item,
#      uploaded from this machine to MinIO's pod (bucket bench-src, prefix item-NN/); two S3
#      MediaClasses (tapes and vault buckets), a BackupTrail over the N items (streams 4), and
#      its backup Job waited for.
#   3. Per round, both parallelisms back to back (the order alternates between rounds): a fresh
#      DuplicationTrail and a DuplicationPolicy over all items (so each run copies everything),
#      after a `sync` (no write-back of earlier runs during this one), waited for until the
#      policy's status says Succeeded. Recorded: the worker Job's wall time (status.startTime ->
#      completionTime, 1 s resolution), the worker process's lifetime on the node (~0.1 s), the
#      policy run's start/end from its status, the worker's own figures (its last stdout line:
#      bytes and seconds of the copy), the bytes of the CatalogEntries on the target trail, the
#      CPU time of the worker's pod and of MinIO's pod (cgroup v1 cpuacct on the node), the
#      load average. Aggregate MB/s = bytes / Job wall time (MB = 10^6 bytes); the ratio p4/p1
#      within each round, and the median of the rounds.
#   4. bench/results-cluster.json and a summary table; the cluster is removed on any exit
#      (e2e/lib.sh's trap; MIMEO_E2E_KEEP=1 or --keep keeps the work directory).
#
# Needs root, the tools of e2e/tools.sh (with mc) and the images of e2e/image.sh and
# e2e/addon-images.sh. Only one node can run on the machine at a time. On a shared machine run
# it under the lock the heavy jobs share:
#   flock /tmp/mimeo-heavy.lock bash bench/cluster_scale.sh [options]
#
# Options (environment variable in brackets):
#   --items N            work items (MIMEO_BENCH_ITEMS, default 32)
#   --item-size SIZE     bytes per item, suffixes Ki Mi Gi (MIMEO_BENCH_ITEM_SIZE, default 32Mi)
#   --rounds N           rounds of (p1, pN) (MIMEO_BENCH_ROUNDS, default 3)
#   --parallelism N      the parallelism compared with 1 (MIMEO_BENCH_PARALLELISM, default 4)
#   --layout L           the DuplicationTrails' layout, Sequential or Interleaved
#                        (MIMEO_BENCH_LAYOUT, default Sequential: the trail's default)
#   --out FILE           the results (MIMEO_BENCH_OUT, default bench/results-cluster.json)
#   --keep               keep the work directory (logs, kubeconfig, per-run JSON)
set -euo pipefail

COMMAND="bench/cluster_scale.sh${*:+ $*}"
ITEMS="${MIMEO_BENCH_ITEMS:-32}"
ITEM_SIZE="${MIMEO_BENCH_ITEM_SIZE:-32Mi}"
ROUNDS="${MIMEO_BENCH_ROUNDS:-3}"
HIGH="${MIMEO_BENCH_PARALLELISM:-4}"
LAYOUT="${MIMEO_BENCH_LAYOUT:-Sequential}"
OUT="${MIMEO_BENCH_OUT:-}"
STREAMS=4
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --items) ITEMS="$2"; shift 2 ;;
    --item-size) ITEM_SIZE="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --parallelism) HIGH="$2"; shift 2 ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --keep) export MIMEO_E2E_KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster_scale.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
done
ITEM_BYTES="$(python3 -c '
import re, sys
m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G)?", sys.argv[1].strip())
if not m: sys.exit("cluster_scale.sh: --item-size: a number with Ki, Mi, Gi, K, M or G: " + sys.argv[1])
print(int(m[1]) * {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m[2]])' "$ITEM_SIZE")"
[[ $ITEMS =~ ^[1-9][0-9]*$ && $ITEMS -le 999 ]] || { echo "cluster_scale.sh: --items: 1..999" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "cluster_scale.sh: --rounds: a positive number" >&2; exit 2; }
[[ $HIGH =~ ^[1-9][0-9]*$ && $HIGH -le 64 ]] || { echo "cluster_scale.sh: --parallelism: 1..64" >&2; exit 2; }
[[ $LAYOUT == Sequential || $LAYOUT == Interleaved ]] || { echo "cluster_scale.sh: --layout: Sequential or Interleaved" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "cluster_scale.sh: run as root (the node needs it)" >&2; exit 1; }

NAME=cluster-scale
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
OUT="${OUT:-$ROOT/bench/results-cluster.json}"
[[ $OUT == /* ]] || OUT="$PWD/$OUT"
require_tools mimeo-controlplane kubelet kube-proxy kubectl helm mc
for f in "$E2E/.cache/mimeo-image.tar" "$E2E/.cache/images/minio_e2e.tar" "$E2E/.cache/images/mc_e2e.tar"; do
  [[ -f $f ]] || { say "$f missing: run bash e2e/image.sh and bash e2e/addon-images.sh"; exit 1; }
done

# One node per machine: say so before starting anything (start_node would, later).
if [[ -S $CTR_SOCK ]] && ctr_ version >/dev/null 2>&1; then
  say "a node is running on this machine already (containerd at $CTR_SOCK): wait for it to stop"; exit 1
fi
# The image holds the binary e2e/image.sh was given, stripped of debug info into dist/mimeo: is
# it the release build (a debug build would be measured otherwise)?
IMAGE_BIN_MATCHES=unknown
if [[ -x $ROOT/dist/mimeo && -x $ROOT/target/release/mimeo ]] &&
  strip --strip-debug -o "$WORK/mimeo-release" "$ROOT/target/release/mimeo" 2>/dev/null; then
  if cmp -s "$WORK/mimeo-release" "$ROOT/dist/mimeo"; then IMAGE_BIN_MATCHES=yes; else IMAGE_BIN_MATCHES=no; fi
  rm -f "$WORK/mimeo-release"
fi
[[ $IMAGE_BIN_MATCHES == yes ]] || say "WARNING: the image's binary (dist/mimeo, from e2e/image.sh) is not target/release/mimeo ($IMAGE_BIN_MATCHES): rebuild it with MIMEO_BIN=target/release/mimeo bash e2e/image.sh"

IMAGE=localhost/mimeo:dev
TOOLS_IMAGE=localhost/e2e-tools:dev
MINIO=e2e-minio
SYSTEM=mimeo-system
NS=bench-scale
S3_ENDPOINT="http://minio.$MINIO.svc:9000"
S3_KEY=mimeo-demo                 # examples/kind/minio/credentials.yaml
S3_SECRET=mimeo-demo-not-a-secret
S3="endpoint: \"$S3_ENDPOINT\", region: us-east-1, forcePathStyle: true, credentialsSecretRef: {name: minio-credentials}"
RUNS="$WORK/runs"
mkdir -p "$RUNS"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# images: the example's image names for the node's (as scenarios.sh does).
images() {
  sed -e "s#image: busybox:1.37#image: $TOOLS_IMAGE#" \
    -e "s#image: quay.io/minio/minio:.*#image: localhost/minio:e2e#" \
    -e "s#image: quay.io/minio/mc:.*#image: localhost/mc:e2e#"
}
jp() { k -n "$2" get "$1" -o "jsonpath=$3" 2>/dev/null; }
# valid_entries NS SELECTOR: how many CatalogEntries matching the selector are Valid.
valid_entries() {
  local names
  names="$(k -n "$1" get catalogentries -l "$2" -o jsonpath='{range .items[?(@.status.state=="Valid")]}{.metadata.name}{"\n"}{end}')" || return 1
  grep -c . <<<"$names" || true
}
mcb() { MC_CONFIG_DIR="$WORK/mc" "$BIN/mc" "$@"; }
phase() { say "$* ($((SECONDS - T0))s)"; }

# ---- the cluster, MinIO, the operator (as e2e/scenarios.sh sets them up)
phase "starting the control plane and the node"
start_cluster --etcd-unsafe-no-fsync=false
phase "control plane and node $NODE_NAME ready"
k create namespace $MINIO >/dev/null
k kustomize "$ROOT/examples/kind/minio" | sed "s/namespace: mimeo-demo/namespace: $MINIO/" | images | k apply -f - >/dev/null
k -n $MINIO rollout status deploy/minio --timeout=300s >/dev/null
k -n $MINIO wait job/minio-buckets --for=condition=complete --timeout=300s >/dev/null
phase "MinIO running, buckets created"
k create namespace $NS >/dev/null
k label namespace $NS pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
"$BIN/helm" install mimeo "$ROOT/charts/mimeo" -n $SYSTEM --create-namespace \
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" \
  --set "workerNamespaces={$NS}" --wait --timeout 180s >/dev/null
k wait crd --all --for=condition=Established --timeout=30s >/dev/null
phase "helm install charts/mimeo: operator available"
k -n $NS apply -f "$ROOT/examples/kind/minio/credentials.yaml" >/dev/null

# ---- the data: N objects in bucket bench-src, sent from here to MinIO's pod (the node's
# bridge reaches the pod network; no port-forward in the data path)
MINIO_IP="$(k -n $MINIO get pod -l app.kubernetes.io/name=minio -o jsonpath='{.items[0].status.podIP}')"
wait_for 60 mcb alias set bench "http://$MINIO_IP:9000" "$S3_KEY" "$S3_SECRET" ||
  { say "MinIO's pod at $MINIO_IP:9000 does not answer from this machine"; exit 1; }
mcb mb --ignore-existing bench/bench-src >/dev/null
item() { printf 'item-%02d' "$1"; }
t=$SECONDS
for ((i = 0; i < ITEMS; i++)); do
  # Pseudo-random, different per item: the AES-128-CTR keystream of a per-item key.
  { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:mimeo-cluster-$i" -in /dev/zero 2>/dev/null || true; } |
    head -c "$ITEM_BYTES" | mcb pipe --quiet "bench/bench-src/$(item "$i")/data.bin" >/dev/null
done
uploaded="$(mcb ls --recursive --json bench/bench-src/ | python3 -c 'import json, sys; print(sum(json.loads(l).get("size", 0) for l in sys.stdin if l.strip()))')"
[[ $uploaded == $((ITEMS * ITEM_BYTES)) ]] || { say "uploaded $uploaded bytes, want $((ITEMS * ITEM_BYTES))"; exit 1; }
phase "$ITEMS x $ITEM_BYTES bytes uploaded to bench-src in $((SECONDS - t))s"

# ---- media classes, the backup trail and its backup
for class in tapes vault; do
  cat <<EOF
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: bench-$class}
spec:
  backend: {s3: {bucket: mimeo-$class, prefix: bench, $S3}}
  volumeCapacity: 256Mi
  blockSize: 1Mi
EOF
done | k -n $NS apply -f - >/dev/null
wait_for 120 bash -c "[[ \$($BIN/kubectl -n $NS get mediaclass -o jsonpath='{.items[*].status.reachable}') == 'true true' ]]" ||
  { say "the media classes are not reachable"; k -n $NS get mediaclass -o yaml >&2; exit 1; }
{
  cat <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: bench-src}
spec:
  mediaClassName: bench-tapes
  retention: 30d
  streams: $STREAMS
  workItems:
EOF
  for ((i = 0; i < ITEMS; i++)); do
    echo "    - {name: $(item "$i"), source: {s3: {bucket: bench-src, prefix: $(item "$i")/, $S3}}}"
  done
} | k -n $NS apply -f - >/dev/null
t=$SECONDS
until_eq 1200 "$ITEMS" valid_entries $NS mimeo.dev/trail=bench-src,mimeo.dev/role=Original ||
  { say "the backup did not complete"; k -n $NS get backuptrail bench-src -o yaml >&2; k -n $NS get jobs,pods >&2; exit 1; }
phase "backup of $ITEMS items ($STREAMS streams) Valid in $((SECONDS - t))s"
# Its entries are published before the worker exits: the Job's completion comes a moment later.
k -n $NS wait job -l mimeo.dev/run-kind=backup --for=condition=complete --timeout=120s >/dev/null ||
  say "the backup Job is not complete after 120s (its figures will be missing)"
k -n $NS get jobs -l mimeo.dev/run-kind=backup -o json >"$WORK/backup-jobs.json"
k -n $NS get catalogentries -l mimeo.dev/trail=bench-src -o json >"$WORK/backup-entries.json"

# ---- CPU time of pods, from the node's cgroups (v1, cgroupfs driver)
# pod_cgroup PID: the cpuacct directory of the pod holding process PID.
pod_cgroup() {
  local cg
  cg="$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3; exit}' "/proc/$1/cgroup" 2>/dev/null)" || return 1
  [[ -n $cg ]] || return 1
  echo "/sys/fs/cgroup/cpuacct${cg%/*}"
}
# minio_cpu: nanoseconds of CPU MinIO's pod has used so far.
minio_cpu() {
  local pid dir
  pid="$(pgrep -o -f 'minio server /data')" && dir="$(pod_cgroup "$pid")" && cat "$dir/cpuacct.usage" || echo ""
}
# worker_sampler DIR: waits for the worker process of the next run, then, until its pod's
# cgroup is gone or DIR/stop exists, every 0.1 s: the CPU time of the pod in DIR/worker-cpu-ns (a
# cgroup v1 parent keeps what its removed children used, so the last sample holds the worker's
# whole run, less at most 0.1 s of it), and the last moment the process was alive in
# DIR/worker-alive-uptime (/proc/uptime, the clock of the process's start time, written to
# DIR/worker-start-ticks): the worker process's lifetime to about 0.1 s, where the Job's
# timestamps have 1 s.
worker_sampler() {
  local d=$1 pid="" dir v up rest end=$((SECONDS + 1800))
  until [[ -n $pid ]]; do
    [[ -e $d/stop ]] && return 0
    ((SECONDS < end)) || return 0
    pid="$(pgrep -n -u 65532 -f '/usr/local/bin/mimeo worker --task')" || { pid=""; sleep 0.1; }
  done
  # Field 22 of /proc/PID/stat (starttime, in clock ticks since boot), counted after the ")"
  # that ends the command name.
  rest="$(<"/proc/$pid/stat")" && rest="${rest##*) }" && echo "$(cut -d' ' -f20 <<<"$rest") $(getconf CLK_TCK)" >"$d/worker-start-ticks"
  dir="$(pod_cgroup "$pid")" || return 0
  while read -r v 2>/dev/null <"$dir/cpuacct.usage"; do
    printf '%s\n' "$v" >"$d/worker-cpu-ns"
    if [[ -d /proc/$pid ]]; then
      read -r up _ </proc/uptime
      printf '%s\n' "$up" >"$d/worker-alive-uptime"
    fi
    [[ -e $d/stop ]] && break
    sleep 0.1
  done
  return 0
}

# ---- one measured run: a fresh DuplicationTrail and DuplicationPolicy with parallelism P
# measure RUN P: writes $RUNS/RUN/ (the objects as the API server has them, and timings).
measure() {
  local run=$1 p=$2 d="$RUNS/$1" trail="dt-$1" policy="dp-$1" sampler job pod outcome
  mkdir -p "$d"
  k -n $NS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: $trail}
spec: {mediaClassName: bench-vault, retention: 30d, layout: $LAYOUT}
EOF
  # The target trail is known (reconciled) before the policy plans its run.
  wait_for 60 bash -c "[[ \$($BIN/kubectl -n $NS get duplicationtrail $trail -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}') == True ]]" ||
    say "$trail: Ready is not True after 60s ($(jp duplicationtrail/$trail $NS '{.status.conditions}')), going on"
  # Every run starts with nothing left to write back: the data of the runs before it (MinIO's
  # files on this machine's disk) would otherwise be flushed during it, later runs more.
  sync
  sleep 1
  worker_sampler "$d" &
  sampler=$!
  E2E_PIDS+=("$sampler:cpu-sampler")
  minio_cpu >"$d/minio-cpu-before-ns"
  cut -d' ' -f1-3 /proc/loadavg >"$d/loadavg-before"
  date +%s.%N >"$d/applied"
  k -n $NS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: $policy}
spec:
  sourceTrails: [bench-src]
  targets: [$trail]
  mode: Logical
  parallelism: $p
  selection: {workItems: ["*"]}
EOF
  # Looked at every 2 s, not every 0.5 s as until_eq does: each kubectl costs CPU the run shares
  # (the figures come from the objects' timestamps and the node, not from this loop).
  local limit=$((SECONDS + 1800))
  until [[ "$(jp duplicationpolicy/$policy $NS '{.status.lastRun.outcome}')" =~ ^(Succeeded|Failed)$ ]]; do
    ((SECONDS < limit)) || { say "$policy: no run ended in 1800s"; k -n $NS get duplicationpolicy $policy -o yaml >&2; k -n $NS get jobs,pods >&2; exit 1; }
    sleep 2
  done
  date +%s.%N >"$d/ended"
  minio_cpu >"$d/minio-cpu-after-ns"
  cut -d' ' -f1-3 /proc/loadavg >"$d/loadavg-after"
  touch "$d/stop"
  wait "$sampler" 2>/dev/null || true
  unset 'E2E_PIDS[-1]' # the sampler's, appended last: its pid must not be signalled once reused
  outcome="$(jp duplicationpolicy/$policy $NS '{.status.lastRun.outcome}')"
  k -n $NS get duplicationpolicy "$policy" -o json >"$d/policy.json"
  k -n $NS get jobs -l mimeo.dev/run-kind=copy -o json |
    python3 -c 'import json, sys; l = json.load(sys.stdin); l["items"] = [j for j in l["items"] if any(o["name"] == sys.argv[1] for o in j["metadata"].get("ownerReferences", []))]; json.dump(l, sys.stdout)' "$policy" >"$d/jobs.json"
  job="$(python3 -c 'import json, sys; print(" ".join(j["metadata"]["name"] for j in json.load(open(sys.argv[1]))["items"]))' "$d/jobs.json")"
  [[ -n $job ]] || { say "$policy: no copy Job found"; exit 1; }
  k -n $NS get pods -l "job-name in (${job// /,})" -o json >"$d/pods.json"
  for pod in $(k -n $NS get pods -l "job-name in (${job// /,})" -o jsonpath='{.items[*].metadata.name}'); do
    k -n $NS logs "$pod" >"$d/log-$pod" 2>&1 || true
  done
  k -n $NS get catalogentries -l "mimeo.dev/trail=$trail" -o json >"$d/entries.json"
  echo "$p" >"$d/parallelism"
  [[ $outcome == Succeeded ]] || { say "$policy: run $outcome: $(jp duplicationpolicy/$policy $NS '{.status.lastRun.message}')"; exit 1; }
  # The next run starts with a quiet policy list: this one has nothing left to copy anyway.
  k -n $NS delete duplicationpolicy "$policy" --wait=false >/dev/null
  phase "$run: parallelism $p, job $job: $(python3 "$RUNS/../summarise.py" one "$d")"
}

# ---- what the runs' files say (one run; the whole benchmark)
cat >"$WORK/summarise.py" <<'PY'
import datetime, json, os, re, statistics, sys

def ts(s):
    """RFC 3339 as the API server and chrono write it, to seconds since the epoch."""
    if not s:
        return None
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", s)
    frac = float("0" + m[2]) if m[2] else 0.0
    tz = "+00:00" if m[3] == "Z" else m[3]
    return datetime.datetime.fromisoformat(m[1] + tz).timestamp() + frac

def read(d, name, conv=str):
    try:
        with open(os.path.join(d, name)) as f:
            v = f.read().strip()
        return conv(v) if v else None
    except (OSError, ValueError):
        return None

def worker_line(d, pods):
    """The worker's last stdout line: {"entries", "bytesRead", "bytesWritten", "seconds"}."""
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Succeeded":
            continue
        path = os.path.join(d, "log-" + pod["metadata"]["name"])
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if isinstance(o, dict) and "bytesWritten" in o:
                return o
    return None

def run(d):
    policy = json.load(open(os.path.join(d, "policy.json")))
    jobs = json.load(open(os.path.join(d, "jobs.json")))["items"]
    pods = json.load(open(os.path.join(d, "pods.json")))["items"]
    entries = json.load(open(os.path.join(d, "entries.json")))["items"]
    last = policy["status"]["lastRun"]
    job = jobs[0]
    js = job["status"]
    wall = ts(js.get("completionTime")) - ts(js.get("startTime"))
    w = worker_line(d, pods) or {}
    ok_pods = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    cstate = ok_pods[0]["status"]["containerStatuses"][0]["state"].get("terminated", {}) if ok_pods else {}
    valid = [e for e in entries if (e.get("status") or {}).get("state", "Valid") == "Valid"]
    bytes_ = last["bytes"]
    cpu = read(d, "worker-cpu-ns", int)
    m0, m1 = read(d, "minio-cpu-before-ns", int), read(d, "minio-cpu-after-ns", int)
    status_s = ts(last.get("end")) - ts(last["start"]) if last.get("end") else None
    st, alive = read(d, "worker-start-ticks"), read(d, "worker-alive-uptime", float)
    proc_s = None
    if st and alive:
        ticks, tck = st.split()
        proc_s = round(alive - int(ticks) / int(tck), 2)
    r = {
        "parallelism": read(d, "parallelism", int),
        "policy": policy["metadata"]["name"],
        "trail": policy["spec"]["targets"][0],
        "job": job["metadata"]["name"],
        "jobs": len(jobs),
        "job_start": js.get("startTime"),
        "job_completion": js.get("completionTime"),
        "job_wall_s": wall,
        "job_failed_pods": js.get("failed", 0),
        "pod_run_s": (ts(cstate.get("finishedAt")) - ts(cstate.get("startedAt"))) if cstate.get("startedAt") else None,
        "status_start": last["start"],
        "status_end": last.get("end"),
        "status_run_s": round(status_s, 3) if status_s is not None else None,
        "outcome": last["outcome"],
        "instances": last["instances"],
        "bytes": bytes_,
        "worker_bytes_read": w.get("bytesRead"),
        "worker_bytes_written": w.get("bytesWritten"),
        "worker_copy_s": round(w["seconds"], 3) if w.get("seconds") is not None else None,
        "worker_process_s": proc_s,
        "entries_valid": len(valid),
        "entries_bytes": sum(e["spec"]["bytes"] for e in valid),
        "apply_to_status_end_s": round(read(d, "ended", float) - read(d, "applied", float), 1),  # polled every 2 s
        "mb_per_s": round(bytes_ / wall / 1e6, 2) if wall else None,
        "mb_per_s_worker_copy": round(bytes_ / w["seconds"] / 1e6, 2) if w.get("seconds") else None,
        "mb_per_s_worker_process": round(bytes_ / proc_s / 1e6, 2) if proc_s else None,
        "worker_pod_cpu_s": round(cpu / 1e9, 2) if cpu else None,
        "minio_cpu_s": round((m1 - m0) / 1e9, 2) if m0 is not None and m1 is not None else None,
        "loadavg_before": read(d, "loadavg-before"),
        "loadavg_after": read(d, "loadavg-after"),
    }
    if r["worker_pod_cpu_s"] and wall:
        r["worker_avg_cores"] = round(r["worker_pod_cpu_s"] / wall, 2)  # over the Job's wall time
    return r

def median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None

def whole(argv):
    runs_dir, out, meta = argv[0], argv[1], json.loads(argv[2])
    high = meta.pop("parallelism")
    rounds = []
    for i in range(1, meta["rounds_asked"] + 1):
        order = [n for n in sorted(os.listdir(runs_dir)) if n.startswith(f"r{i}-")]
        if not order:
            continue
        stamps = {n: read(os.path.join(runs_dir, n), "applied", float) for n in order}
        order.sort(key=lambda n: stamps[n] or 0)
        rd = {"round": i, "order": [n.split("-", 1)[1] for n in order]}
        for n in order:
            rd[n.split("-", 1)[1]] = run(os.path.join(runs_dir, n))
        lo, hi = rd.get("p1"), rd.get(f"p{high}")
        if lo and hi and lo["job_wall_s"] and hi["job_wall_s"]:
            rd["ratio_mb_per_s"] = round(hi["mb_per_s"] / lo["mb_per_s"], 3)
            for k in ("worker_process", "worker_copy"):
                if lo.get("mb_per_s_" + k) and hi.get("mb_per_s_" + k):
                    rd["ratio_mb_per_s_" + k] = round(hi["mb_per_s_" + k] / lo["mb_per_s_" + k], 3)
        rounds.append(rd)
    key = f"p{high}"
    summary = {}
    for metric in ("mb_per_s", "job_wall_s", "mb_per_s_worker_process", "mb_per_s_worker_copy",
                   "worker_pod_cpu_s", "minio_cpu_s"):
        for p in ("p1", key):
            summary[f"{metric}_{p}"] = median(r.get(p, {}).get(metric) for r in rounds)
    summary[f"ratio_{key}_p1"] = median(r.get("ratio_mb_per_s") for r in rounds)
    for k in ("worker_process", "worker_copy"):
        summary[f"ratio_{k}_{key}_p1"] = median(r.get(f"ratio_mb_per_s_{k}") for r in rounds)
    ratio = summary[f"ratio_{key}_p1"]
    summary["verdict"] = None if ratio is None else (
        f"parallelism {high} not slower than 1" if ratio >= 1.0 else f"parallelism {high} SLOWER than 1")
    backup = meta.pop("backup_dir")
    bj = json.load(open(os.path.join(backup, "backup-jobs.json")))["items"]
    be = json.load(open(os.path.join(backup, "backup-entries.json")))["items"]
    bwall = None
    if bj and bj[0]["status"].get("completionTime"):
        bwall = ts(bj[0]["status"]["completionTime"]) - ts(bj[0]["status"]["startTime"])
    bbytes = sum(e["spec"]["bytes"] for e in be)
    result = {
        "command": meta.pop("command"),
        "date": meta.pop("date"),
        "commit": meta.pop("commit"),
        "src_changed_since_commit": meta.pop("src_changed_since_commit"),
        "items": meta.pop("items"),
        "item_bytes": meta.pop("item_bytes"),
        "parallelism": [1, high],
        "what": ("a DuplicationPolicy (mode Logical, all items, one target DuplicationTrail) run as "
                 "the operator's worker Job on the e2e node; per run a fresh target trail and policy. "
                 "mb_per_s = lastRun.bytes / Job wall time (status.startTime -> completionTime, "
                 "1 s resolution) in 10^6 bytes/s; mb_per_s_worker_process uses the worker "
                 "process's lifetime on the node (start time from /proc, last seen alive, ~0.1 s); "
                 "mb_per_s_worker_copy the worker's own copy seconds (its stdout figures, without "
                 "start-up and catalog writes); ratio = p%d / p1 within a round, summary = median "
                 "of rounds; CPU from the pods' cgroups on the node." % high),
        "summary": summary,
        "rounds": rounds,
        "backup": {"job_wall_s": bwall, "bytes": bbytes, "entries": len(be),
                   "mb_per_s": round(bbytes / bwall / 1e6, 2) if bwall else None},
        **meta,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return result

def table(res):
    high = res["parallelism"][1]
    key = f"p{high}"
    f = lambda v, w, p=1: f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
    side = lambda r: (f"{f(r.get('job_wall_s'), 5, 0)} {f(r.get('mb_per_s'), 6)} {f(r.get('worker_process_s'), 6)} "
                      f"{f(r.get('mb_per_s_worker_process'), 6)} {f(r.get('worker_copy_s'), 6)} {f(r.get('worker_pod_cpu_s'), 5)}")
    head = f"{'Job':>5} {'MB/s':>6} {'proc':>6} {'MB/s':>6} {'copy':>6} {'cpu':>5}"
    print(f"{'':>13}| {'p1':<{len(head)}} | {key:<{len(head)}} | {key + '/p1 by'}")
    print(f"{'round':>5} {'order':>7}| {head} | {head} | {'Job':>7} {'proc':>7} {'copy':>7}")
    for r in res["rounds"]:
        print(f"{r['round']:>5} {','.join(r['order']):>7}| {side(r.get('p1', {}))} | {side(r.get(key, {}))} | "
              f"{f(r.get('ratio_mb_per_s'), 7, 3)} {f(r.get('ratio_mb_per_s_worker_process'), 7, 3)} "
              f"{f(r.get('ratio_mb_per_s_worker_copy'), 7, 3)}")
    s = res["summary"]
    print(f"(seconds; MB/s = 10^6 bytes/s; proc = the worker process's lifetime, copy = its own copy time, cpu = its pod's CPU seconds)")
    print(f"median: by Job wall time p1 {s['mb_per_s_p1']} MB/s, {key} {s['mb_per_s_' + key]} MB/s, "
          f"{key}/p1 = {s['ratio_' + key + '_p1']} ({s['verdict']})")
    print(f"        by worker process   p1 {s['mb_per_s_worker_process_p1']} MB/s, {key} {s['mb_per_s_worker_process_' + key]} MB/s, "
          f"{key}/p1 = {s['ratio_worker_process_' + key + '_p1']}; by copy time {key}/p1 = {s['ratio_worker_copy_' + key + '_p1']}")
    print(f"        MinIO CPU per run p1 {s['minio_cpu_s_p1']} s, {key} {s['minio_cpu_s_' + key]} s; "
          f"worker pod CPU p1 {s['worker_pod_cpu_s_p1']} s, {key} {s['worker_pod_cpu_s_' + key]} s")
    print(f"{res['items']} items x {res['item_bytes']} bytes; backup {res['backup']['mb_per_s']} MB/s; "
          f"load average {res['machine']['loadavg_start']} at start, {res['machine']['loadavg_end']} at end")

if __name__ == "__main__":
    if sys.argv[1] == "one":
        r = run(sys.argv[2])
        print(f"Job {r['job_wall_s']:.0f}s, {r['mb_per_s']} MB/s; worker process {r['worker_process_s']}s, "
              f"copy {r['worker_copy_s']}s, "
              f"pod CPU {r['worker_pod_cpu_s']}s, MinIO CPU {r['minio_cpu_s']}s, {r['entries_valid']} entries")
    else:
        table(whole(sys.argv[2:]))
PY

# ---- the rounds
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(1 "$HIGH"); else order=("$HIGH" 1); fi
  for p in "${order[@]}"; do measure "r$r-p$p" "$p"; done
done

# ---- the results
META="$(python3 -c '
import json, os, sys
a = sys.argv[1:]
print(json.dumps({
    "command": a[0], "date": a[1], "commit": a[2], "src_changed_since_commit": a[19] == "1", "items": int(a[3]), "item_bytes": int(a[4]),
    "rounds_asked": int(a[5]), "parallelism": int(a[6]), "backup_dir": a[7],
    "settings": {"layout": a[8], "backup_streams": int(a[9]), "block_size": "1Mi",
                 "volume_capacity": "256Mi", "source": "S3 (MinIO bucket bench-src, one object per item)",
                 "media": "S3 (MinIO buckets mimeo-tapes -> mimeo-vault)",
                 "worker_resources": "chart defaults (requests cpu 100m, memory 128Mi; limit memory 512Mi)",
                 "etcd_fsync": True},
    "cluster": {"kubelet": a[10], "containerd": a[11], "image": "localhost/mimeo:dev",
                "image_archive_built": a[12], "mimeo_version": a[13],
                "image_binary_is_target_release": {"yes": True, "no": False}.get(a[20]),
                "image_binary_bytes": int(a[21]) if a[21] else None,
                "note": "the image holds the binary e2e/image.sh was given (dist/mimeo), built at image_archive_built"},
    "machine": {"nproc": int(a[14]), "loadavg_start": a[15], "loadavg_end": a[16],
                "cpu": a[17], "mem_total_kib": int(a[18])},
}))' "$COMMAND" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git -C "$ROOT" rev-parse --short HEAD)" \
  "$ITEMS" "$ITEM_BYTES" "$ROUNDS" "$HIGH" "$WORK" "$LAYOUT" "$STREAMS" \
  "$(k get node $NODE_NAME -o jsonpath='{.status.nodeInfo.kubeletVersion}')" \
  "$(k get node $NODE_NAME -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')" \
  "$(date -u -r "$E2E/.cache/mimeo-image.tar" +%Y-%m-%dT%H:%M:%SZ)" \
  "$("$ROOT/dist/mimeo" --version 2>/dev/null || true)" \
  "$(nproc)" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" "$(awk '/^MemTotal/ {print $2}' /proc/meminfo)" \
  "$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null && echo 0 || echo 1)" \
  "$IMAGE_BIN_MATCHES" "$(stat -c %s "$ROOT/dist/mimeo" 2>/dev/null || true)")"
python3 "$WORK/summarise.py" whole "$RUNS" "$OUT" "$META"
say "wrote $OUT in $((SECONDS - T0))s"
