# Real-node part of smoke.sh (sourced by it after the control-plane checks; uses e2e/lib.sh).
# Stops that control plane, starts the cluster of e2e/node.sh and proves with the real kubectl
# that the kubelet and containerd enforce what Mimeo's pods rely on: the image's entrypoint and
# user, runAsNonRoot, a read-only root filesystem, fsGroup ownership, memory limits (cgroups),
# Service DNS, readiness probes over the pod network, logs and exec through the kubelet, and
# that deleting a pod ends its process.
# shellcheck shell=bash

stop_pid "$CP_PID" 30
DATA="$WORK/cluster"
E2E_LOGS=("$DATA/controlplane.out" "$DATA/kube-apiserver.log" "${E2E_LOGS[@]}")
t_node=$SECONDS
start_cluster
ok "cluster with node $NODE_NAME up in $((SECONDS - t_node))s"
NNS=mimeo-node-smoke
k create namespace "$NNS" >/dev/null
k label namespace "$NNS" pod-security.kubernetes.io/enforce=restricted >/dev/null
check "node runs kubelet $(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}') on $(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')" \
  bash -c "[[ \$('$BIN/kubectl' get node $NODE_NAME -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}') == containerd://* ]]"

# pod NAME IMAGE SCRIPT [EXTRA POD SECURITY CONTEXT]: a pod under the restricted level running
# SCRIPT with /bin/sh, or its image's entrypoint with --version when SCRIPT is -.
pod() {
  local name=$1 image=$2 script=$3 extra=${4:-} cmd="args: [--version]"
  [[ $script == - ]] || cmd="command: [/bin/sh, -c, '$script']"
  k -n "$NNS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, labels: {app: $name}}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}$extra}
  containers:
  - name: c
    image: $image
    $cmd
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    resources: {limits: {memory: 32Mi}}
    volumeMounts: [{name: tmp, mountPath: /tmp}]
  volumes: [{name: tmp, emptyDir: {}}]
EOF
}
ended() { k -n "$NNS" wait "pod/$1" --for=jsonpath='{.status.phase}'="$2" --timeout=90s >/dev/null; }
log_of() { k -n "$NNS" logs "$1" 2>&1; }

# The image's entrypoint and user: no command, no runAsUser given.
pod entry localhost/mimeo:dev -
if ended entry Succeeded && grep -q '^mimeo ' <<<"$(log_of entry)"; then
  ok "the Mimeo image runs its entrypoint as its own user under runAsNonRoot: $(log_of entry)"
else fail "pod entry: $(k -n "$NNS" get pod entry -o jsonpath='{.status.phase}') $(log_of entry)"; fi

# runAsNonRoot refuses an image whose user is root (the tools image has no USER).
pod rootimage localhost/e2e-tools:dev 'id'
check "runAsNonRoot: the kubelet refuses an image that runs as root" wait_for 60 bash -c \
  "'$BIN/kubectl' -n $NNS get pod rootimage -o jsonpath='{.status.containerStatuses[0].state.waiting.message}' | grep -q 'runAsNonRoot and image will run as root'"

# Read-only root filesystem, fsGroup on an emptyDir, the uid asked for.
pod fs localhost/e2e-tools:dev 'id; touch /rootfile 2>&1 || true; touch /tmp/ok && stat -c "tmp group %g" /tmp' \
  ', runAsUser: 65532, runAsGroup: 65532, fsGroup: 2000'
if ended fs Succeeded; then
  out="$(log_of fs)"
  grep -q 'uid=65532 gid=65532 groups=2000' <<<"$out" && ok "runAsUser, runAsGroup and fsGroup: $(head -1 <<<"$out")" ||
    fail "fs pod identity: $out"
  grep -q 'Read-only file system' <<<"$out" && ok "readOnlyRootFilesystem: writing / fails (Read-only file system)" ||
    fail "fs pod could write its root filesystem: $out"
  grep -q 'tmp group 2000' <<<"$out" && ok "fsGroup: the kubelet gave the emptyDir to group 2000" || fail "emptyDir group: $out"
else fail "pod fs did not succeed: $(log_of fs)"; fi

# A memory limit is a cgroup limit: 64 MiB in one buffer under a 32 MiB limit is OOM-killed.
pod hog localhost/e2e-tools:dev 'dd if=/dev/zero of=/dev/null bs=64M count=1' ', runAsUser: 65532'
if ended hog Failed; then
  reason="$(k -n "$NNS" get pod hog -o jsonpath='{.status.containerStatuses[0].state.terminated.reason}')"
  [[ $reason == OOMKilled ]] && ok "memory limit 32Mi: a 64 MiB allocation was OOMKilled" || fail "hog terminated: $reason"
else fail "pod hog was not killed: $(log_of hog)"; fi

# A Service reached by name through CoreDNS and kube-proxy, its pod Ready by an httpGet probe.
k -n "$NNS" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: httpd
        image: localhost/e2e-tools:dev
        command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo served-by-web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
        readinessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
EOF
check "Deployment web Available (httpGet readiness probe over the pod network)" \
  k -n "$NNS" wait deploy/web --for=condition=Available --timeout=90s
pod client localhost/e2e-tools:dev "wget -q -O- http://web.$NNS.svc.cluster.local/" ', runAsUser: 65532'
if ended client Succeeded && [[ "$(log_of client)" == served-by-web ]]; then
  ok "Service DNS: web.$NNS.svc.cluster.local answered through kube-proxy"
else fail "client: $(log_of client)"; fi
check "kubectl exec reaches a container through the kubelet" bash -c \
  "[[ \$('$BIN/kubectl' -n $NNS exec deploy/web -- cat /tmp/www/index.html) == served-by-web ]]"

# Deleting a pod ends its process on the node.
pod sleeper localhost/e2e-tools:dev 'echo started; exec sleep 3600' ', runAsUser: 65532'
if ended sleeper Running && wait_for 30 bash -c "pgrep -u 65532 -f 'sleep 3600' >/dev/null"; then
  pid="$(pgrep -u 65532 -f 'sleep 3600' | head -1)"
  ok "pod sleeper runs as process $pid, uid $(ps -o uid= -p "$pid" | tr -d ' ') on the node"
  check "pod sleeper deleted" k -n "$NNS" delete pod sleeper --timeout=60s
  if kill -0 "$pid" 2>/dev/null; then fail "process $pid still runs after the pod's deletion"; else ok "its process $pid has ended"; fi
else fail "pod sleeper not running"; fi
k delete namespace "$NNS" --wait=false >/dev/null
