#!/usr/bin/env bash
# Smoke test of the e2e foundation: starts mimeo-controlplane (etcd + kube-apiserver +
# kube-controller-manager) in a temporary directory and checks, with the real kubectl and helm
# built by e2e/tools.sh, that it behaves like a Kubernetes control plane for Mimeo:
#   - the Mimeo CRDs (crds/crds.yaml) install and become Established;
#   - a valid MediaClass is accepted, invalid ones are rejected with the CEL messages naming the field;
#   - PodSecurity admission enforces `restricted`;
#   - the job controller creates a Pod for a Job (Pending: there is no node yet), the garbage
#     collector deletes it with the Job;
#   - service-account tokens work (TokenRequest and the token controller), RBAC is enforced
#     (`kubectl auth can-i` and a real request with the token);
#   - `helm template charts/mimeo` applies with --dry-run=server, and `helm install` / `uninstall` work;
#   - the namespace controller deletes a namespace; SIGTERM stops everything.
# Usage: bash e2e/tools.sh && bash e2e/smoke.sh        (MIMEO_E2E_KEEP=1 keeps the temp dir)
set -euo pipefail
NAME=smoke
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools mimeo-controlplane kubelet kube-proxy kubectl helm

# ---- start the control plane
start_controlplane
ok "control plane ready in $((SECONDS - T0))s"
NS=mimeo-smoke

check "kubectl version reaches the API server" k version
check "/readyz is ok" k get --raw /readyz

# ---- CRDs
check "kubectl apply -f crds/crds.yaml" k apply -f "$ROOT/crds/crds.yaml"
CRDS="$(k get -f "$ROOT/crds/crds.yaml" -o name)"
check "CRDs Established ($(echo "$CRDS" | wc -l))" k wait --for=condition=Established --timeout=60s $CRDS

k create namespace "$NS" >/dev/null
# Pods in this namespace must pass the restricted Pod Security Standard.
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
for _ in $(seq 1 60); do k -n "$NS" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
check "serviceaccount controller created $NS/default" k -n "$NS" get serviceaccount default

# ---- MediaClass validation (CEL rules served by the real API server)
check "valid MediaClass accepted" k -n "$NS" apply -f - <<'EOF'
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: disk}
spec:
  volumeCapacity: 64Mi
  blockSize: 1Mi
  backend:
    filesystem: {path: /var/lib/mimeo/disk}
EOF
if out="$(k -n "$NS" apply -f - 2>&1 <<'EOF'
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: bad}
spec:
  volumeCapacity: 1Ki
  blockSize: 1Mi
  backend:
    filesystem: {path: /x}
    s3: {bucket: mimeo}
EOF
)"; then
  fail "invalid MediaClass (two backends, capacity < block size) was accepted"
else
  if grep -q 'spec.backend: .*exactly one of filesystem, pvc, s3 must be set' <<<"$out"; then
    ok "two backends rejected: spec.backend: exactly one of filesystem, pvc, s3 must be set"
  else fail "two backends: expected a spec.backend CEL error"; echo "$out" | sed 's/^/       /'; fi
  if grep -q 'spec.volumeCapacity: .*spec.volumeCapacity must be at least spec.blockSize' <<<"$out"; then
    ok "capacity below block size rejected: spec.volumeCapacity: must be at least spec.blockSize"
  else fail "capacity < block size: expected a spec.volumeCapacity CEL error"; echo "$out" | sed 's/^/       /'; fi
fi
check "the invalid MediaClass does not exist" bash -c "! '$BIN/kubectl' -n $NS get mediaclass bad 2>/dev/null"

# ---- PodSecurity admission
if out="$(k -n "$NS" run privileged --image=mimeo:e2e --restart=Never \
    --overrides='{"spec":{"containers":[{"name":"privileged","image":"mimeo:e2e","securityContext":{"privileged":true}}]}}' 2>&1)"; then
  fail "privileged pod admitted in a restricted namespace"
else
  if grep -q 'violates PodSecurity "restricted' <<<"$out"; then ok "PodSecurity rejects a privileged pod (restricted)"
  else fail "privileged pod rejected, but not by PodSecurity"; echo "$out" | sed 's/^/       /'; fi
fi

# ---- job controller + garbage collector
check "Job created" k -n "$NS" apply -f - <<'EOF'
apiVersion: batch/v1
kind: Job
metadata: {name: smoke}
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 60
  template:
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: worker
        image: mimeo:e2e
        command: ["/usr/local/bin/mimeo", "--version"]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: ["ALL"]}
EOF
POD=""
for _ in $(seq 1 120); do
  POD="$(k -n "$NS" get pods -l job-name=smoke -o name 2>/dev/null | sed -n 1p)"
  [[ -n "$POD" ]] && break
  sleep 0.5
done
if [[ -n "$POD" ]]; then
  phase="$(k -n "$NS" get "$POD" -o jsonpath='{.status.phase}')"
  [[ "$phase" == Pending ]] && ok "job controller created $POD (Pending: no node yet)" || fail "$POD phase $phase, want Pending"
  sa="$(k -n "$NS" get "$POD" -o jsonpath='{.spec.serviceAccountName} {.spec.volumes[0].projected.sources[0].serviceAccountToken.path}')"
  [[ "$sa" == "default token" ]] && ok "ServiceAccount admission mounted a projected token" || fail "pod SA/token volume: '$sa'"
else
  fail "job controller created no Pod for Job smoke"
fi
check "Job deleted (background propagation)" k -n "$NS" delete job smoke --cascade=background --wait=true --timeout=30s
gone=""
for _ in $(seq 1 120); do
  [[ -z "$(k -n "$NS" get pods -l job-name=smoke -o name 2>/dev/null)" ]] && { gone=1; break; }
  sleep 0.5
done
[[ -n "$gone" ]] && ok "garbage collector deleted the Job's Pod" || fail "Job's Pod still there after 60s"

# ---- service accounts and RBAC
k -n "$NS" create serviceaccount smoke-worker >/dev/null
k -n "$NS" create role smoke-worker --verb=get,list --resource=configmaps >/dev/null
k -n "$NS" create rolebinding smoke-worker --role=smoke-worker --serviceaccount="$NS:smoke-worker" >/dev/null
AS="system:serviceaccount:$NS:smoke-worker"
check "can-i: $AS can list configmaps" k -n "$NS" auth can-i list configmaps --as="$AS"
check "can-i: $AS cannot get secrets" bash -c "! '$BIN/kubectl' -n $NS auth can-i get secrets --as=$AS"
check "can-i: $AS cannot create jobs" bash -c "! '$BIN/kubectl' -n $NS auth can-i create jobs.batch --as=$AS"
check "can-i: $AS cannot list configmaps in kube-system" bash -c "! '$BIN/kubectl' -n kube-system auth can-i list configmaps --as=$AS"
TOKEN="$(k -n "$NS" create token smoke-worker --duration=10m)"
SERVER="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
kt() { "$BIN/kubectl" --kubeconfig=/dev/null --server="$SERVER" --certificate-authority="$DATA/pki/ca.crt" --token="$TOKEN" "$@"; }
check "TokenRequest token authenticates as $AS" bash -c "[[ \"\$1\" == *'$AS'* ]]" _ "$(kt auth whoami 2>&1)"
check "the token can list configmaps" kt -n "$NS" get configmaps
if out="$(kt -n "$NS" get secrets 2>&1)"; then fail "the token could list secrets"
else grep -q Forbidden <<<"$out" && ok "the token is Forbidden to list secrets" || { fail "secrets: not Forbidden"; echo "$out"; }; fi
k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: smoke-worker-token
  annotations: {kubernetes.io/service-account.name: smoke-worker}
type: kubernetes.io/service-account-token
EOF
tok=""
for _ in $(seq 1 60); do
  tok="$(k -n "$NS" get secret smoke-worker-token -o jsonpath='{.data.token}' 2>/dev/null || true)"
  [[ -n "$tok" ]] && break; sleep 0.5
done
[[ -n "$tok" ]] && ok "serviceaccount-token controller filled a token Secret" || fail "token Secret not filled"
check "kube-root-ca.crt published in $NS" k -n "$NS" get configmap kube-root-ca.crt

# ---- the Helm chart
k create namespace mimeo-system >/dev/null
if "$BIN/helm" template mimeo "$ROOT/charts/mimeo" --namespace mimeo-system --include-crds >"$WORK/chart.yaml" 2>"$WORK/helm.err"; then
  ok "helm template charts/mimeo ($(grep -c '^kind:' "$WORK/chart.yaml") objects)"
  check "rendered chart applies with --dry-run=server" k apply --dry-run=server -f "$WORK/chart.yaml"
else
  fail "helm template charts/mimeo"; sed 's/^/       /' "$WORK/helm.err"
fi
check "helm install (no wait: there is no node yet)" "$BIN/helm" install mimeo "$ROOT/charts/mimeo" --namespace mimeo-system
check "operator Deployment exists" k -n mimeo-system get deployment -l app.kubernetes.io/instance=mimeo -o name
check "helm uninstall" "$BIN/helm" uninstall mimeo --namespace mimeo-system --wait --timeout 60s

# ---- namespace controller
check "namespace $NS deleted by the namespace controller" k delete namespace "$NS" --wait=true --timeout=90s

missing=""
for c in job garbage-collector serviceaccount serviceaccount-token namespace ttl-after-finished \
         pod-garbage-collector deployment replicaset root-ca-certificate-publisher; do
  grep -q "\"Started controller\" controller=\"$c-controller\"" "$DATA/kube-controller-manager.log" || missing+=" $c"
done
[[ -z "$missing" ]] && ok "controller-manager started job, garbage-collector, serviceaccount(-token), namespace, ttl-after-finished, ..." \
  || fail "controllers not started:$missing"

# ---- a real node: pods really run, under the kubelet's rules
# shellcheck source=e2e/node-smoke.sh
source "$E2E/node-smoke.sh"

# ---- memory, then stop
rss_total=0
rss_line=""
for pid in "$CP_PID" $(ps -o pid= --ppid "$CP_PID"); do
  r="$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ')"; [[ -n "$r" ]] || continue
  name="$(ps -o args= -p "$pid" | awk '{print ($2 ~ /^kube-/) ? $2 : "etcd+supervisor"}')"
  rss_total=$((rss_total + r)); rss_line+=" $name=$((r / 1024))MiB"
done
echo "smoke: control plane RSS $((rss_total / 1024)) MiB:$rss_line"

t_stop=$SECONDS
for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do
  [[ ${E2E_PIDS[i]%%:*} == "$CP_PID" ]] || stop_pid "${E2E_PIDS[i]%%:*}" 20
done
stop_node
stop_pid "$CP_PID"
E2E_PIDS=()
grep -q 'mimeo-controlplane: stopped' "$DATA/controlplane.out" && ok "control plane stopped cleanly on SIGTERM in $((SECONDS - t_stop))s" \
  || fail "control plane did not report a clean stop"

echo "$NAME: $PASSED passed, $FAILED failed in $((SECONDS - T0))s"
[[ $FAILED -eq 0 ]]
