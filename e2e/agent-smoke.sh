# Node-agent part of smoke.sh (sourced by it, after the control-plane checks; uses e2e/lib.sh's
# ok, fail, check, k, free_port, BIN, ROOT, DATA and WORK). Starts mimeo-node-agent and proves with the real kubectl
# and helm that pods really run: the Node stays Ready (Lease renewed), Jobs complete or fail
# through the job controller with Secret env, ConfigMap volume and PVC, runAsUser and fsGroup
# are applied, the projected service-account token authenticates, a readiness-probed Deployment
# and the operator from charts/mimeo become Available, and a deleted pod's process ends.

NODE_ROOT="$WORK/node"
ANS=mimeo-agent-smoke
MIMEO_BIN="${MIMEO_BIN:-$ROOT/target/debug/mimeo}"

"$BIN/mimeo-node-agent" --kubeconfig "$KUBECONFIG" --node e2e-node --root "$NODE_ROOT" \
  --image-binary "mimeo=$MIMEO_BIN" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
E2E_PIDS+=("$AGENT_PID:node-agent")
t_agent=$SECONDS
for _ in $(seq 1 60); do k get node e2e-node >/dev/null 2>&1 && break; sleep 0.5; done # registered?
check "node e2e-node Ready" k wait --for=condition=Ready node/e2e-node --timeout=60s
ok "node agent up in $((SECONDS - t_agent))s (pid $AGENT_PID, root $NODE_ROOT)"
lease0="$(k -n kube-node-lease get lease e2e-node -o jsonpath='{.spec.renewTime}' 2>/dev/null || true)"

k create namespace "$ANS" >/dev/null
k -n "$ANS" create secret generic greeting --from-literal=word=hello >/dev/null
k -n "$ANS" create configmap settings --from-literal=suffix.txt=world >/dev/null
k -n "$ANS" create serviceaccount reader >/dev/null
# Source data of claim "src", laid out before the claim exists: ROOT/pv/<namespace>/<claim>.
mkdir -p "$NODE_ROOT/pv/$ANS/src" && echo "from-the-host" >"$NODE_ROOT/pv/$ANS/src/in.txt"
WEB_PORT="$(free_port)"
# Mount paths are under /mnt/e2e: the agent leaves missing mount points behind on the host.
check "workloads created" k -n "$ANS" apply -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: src}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: out}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nonroot}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: copy}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: copy
        image: busybox
        command: ["/bin/sh", "-c", "echo \$WORD \$(cat /mnt/e2e/settings/suffix.txt) \$(cat /mnt/e2e/src/in.txt) > /mnt/e2e/out/result.txt"]
        env:
        - name: WORD
          valueFrom: {secretKeyRef: {name: greeting, key: word}}
        volumeMounts:
        - {name: settings, mountPath: /mnt/e2e/settings}
        - {name: src, mountPath: /mnt/e2e/src, readOnly: true}
        - {name: out, mountPath: /mnt/e2e/out}
      volumes:
      - {name: settings, configMap: {name: settings}}
      - {name: src, persistentVolumeClaim: {claimName: src}}
      - {name: out, persistentVolumeClaim: {claimName: out}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: fails, image: busybox, command: ["/bin/sh", "-c", "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  restartPolicy: Never
  serviceAccountName: reader
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: main
    image: busybox
    command: ["/bin/sh", "-c"]
    args:
    - |
      echo "uid \$(id -u)"
      echo x > /mnt/e2e/scratch/f && echo "emptyDir writable"
      echo y > /mnt/e2e/data/f && echo "pvc writable"
      touch /root-file 2>/dev/null || echo "root read-only"
      $BIN/kubectl --kubeconfig=/dev/null --server=https://\$(KUBERNETES_SERVICE_HOST):\$(KUBERNETES_SERVICE_PORT) \\
        --certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt \\
        --token="\$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)" auth whoami -o jsonpath='{.status.userInfo.username}'
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: ["ALL"]}
    volumeMounts:
    - {name: scratch, mountPath: /mnt/e2e/scratch}
    - {name: data, mountPath: /mnt/e2e/data}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: data, persistentVolumeClaim: {claimName: nonroot}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python
        command: ["python3", "-m", "http.server", "$WEB_PORT", "--bind", "127.0.0.1"]
        ports: [{name: http, containerPort: $WEB_PORT}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - {name: sleeper, image: busybox, command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]}
EOF

check "Job copy Complete (Secret env, ConfigMap volume, PVCs)" k -n "$ANS" wait --for=condition=Complete job/copy --timeout=60s
result="$(cat "$NODE_ROOT/pv/$ANS/out/result.txt" 2>/dev/null || true)"
[[ "$result" == "hello world from-the-host" ]] && ok "the Job wrote '$result' to ROOT/pv/$ANS/out" \
  || fail "ROOT/pv/$ANS/out/result.txt: '$result'"
check "Job fails reaches Failed (backoffLimit 0)" k -n "$ANS" wait --for=condition=Failed job/fails --timeout=60s
code="$(k -n "$ANS" get pods -l job-name=fails -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}')"
[[ "$code" == 3 ]] && ok "its pod reports exit code 3" || fail "failed Job's pod exit code '$code', want 3"

check "pod nonroot Succeeded" k -n "$ANS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/nonroot --timeout=60s
log="$(cat "$NODE_ROOT/logs/${ANS}_nonroot_main.log" 2>/dev/null || true)"
for want in "uid 65532" "emptyDir writable" "pvc writable" "root read-only" "system:serviceaccount:$ANS:reader"; do
  grep -q "$want" <<<"$log" && ok "nonroot pod log: $want" || { fail "nonroot pod log lacks '$want'"; sed 's/^/       /' <<<"$log"; }
done
owner="$(stat -c %u:%g "$NODE_ROOT/pv/$ANS/nonroot/f" 2>&1)"
[[ "$owner" == 65532:65532 ]] && ok "its PVC file belongs to 65532:65532" || fail "PVC file owner: $owner"

check "Deployment web (httpGet readinessProbe) Available" k -n "$ANS" wait --for=condition=Available deploy/web --timeout=60s

if k -n "$ANS" wait --for=condition=Ready pod/sleeper --timeout=60s >/dev/null; then
  pid="$(k -n "$ANS" get pod sleeper -o jsonpath='{.status.containerStatuses[0].containerID}')"
  pid="${pid#mimeo://}"
  kill -0 "$pid" 2>/dev/null && ok "pod sleeper runs as process $pid" || fail "pod sleeper: no process '$pid'"
  check "pod sleeper deleted (SIGTERM, then the final delete)" k -n "$ANS" delete pod sleeper --timeout=30s
  if kill -0 "$pid" 2>/dev/null; then fail "process $pid still runs after the pod's deletion"; else ok "its process $pid has ended"; fi
else
  fail "pod sleeper not Ready"
fi

# The operator from the chart: the image "mimeo:<appVersion>" runs $MIMEO_BIN. The metrics port
# is a free one: every pod shares the host network.
METRICS_PORT="$(free_port)"
check "helm install charts/mimeo --wait (operator Deployment Available)" "$BIN/helm" install mimeo-agent "$ROOT/charts/mimeo" \
  --namespace "$ANS" --set "metrics.port=$METRICS_PORT" --wait --timeout 60s
check "operator /readyz answers on :$METRICS_PORT" curl -fsS "http://127.0.0.1:$METRICS_PORT/readyz"

# Renewed every 10 s: wait for the next renewal if the checks above were quicker.
lease1=""
for _ in $(seq 1 30); do
  lease1="$(k -n kube-node-lease get lease e2e-node -o jsonpath='{.spec.renewTime}' 2>/dev/null || true)"
  [[ -n "$lease1" && "$lease1" != "$lease0" ]] && break
  sleep 0.5
done
[[ -n "$lease1" && "$lease1" != "$lease0" ]] && ok "node Lease renewed ($lease0 -> $lease1)" \
  || fail "node Lease not renewed ('$lease0' -> '$lease1')"
ready="$(k get node e2e-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.spec.taints}')"
[[ "$ready" == "True " ]] && ok "node still Ready, no taints, after $((SECONDS - t_agent))s" || fail "node: '$ready'"
