#!/usr/bin/env bash
# End-to-end scenarios: Mimeo's image installed with the real helm into a real cluster: the
# control plane and a real node (kubelet, containerd, runc, CNI bridge, kube-proxy, CoreDNS,
# local-path-provisioner; e2e/node.sh), MinIO from examples/kind/minio as the S3 server.
#   install     helm install charts/mimeo -> operator Ready, CRDs Established
#   quickstart  examples/kind (S3 endpoint pointed at loopback): 4 PVC work items, 4 streams;
#               2 items duplicated to a PVC trail, all 4 to an S3 trail; catalog roles/extents
#   restore     Auto picks a duplicate, byte-identical; vault away -> original, with the reason;
#               nothing available -> Failed with a reason
#   expiry      a short-retention trail: entries Expired, volumes freed; a retention edit moves dates, no backup
#   invalid     one rejected resource per CEL/OpenAPI rule, the message names the field
#   kill        operator killed during a duplication: no second Job, run completes, no Valid
#               entry for unwritten data; a worker pod killed mid-run resumes
#   s3-outage   S3 server stopped during a backup: the Job retries, Events explain, completes
#   apiserver-restart  the control plane restarted during a backup: the run completes once, in
#               one Job, and the operator's watches resume (needs kill's trail: run `kill` too)
#   rbac        kubectl auth can-i matrix for the worker and the operator; restricted pods;
#               the S3 secret appears in no log, event, status or catalog entry
#   changing    a PVC source file grows and a FIFO sits in the tree during a worker's backup:
#               the entry's spec.notes, the trail's status.lastRunNotes and an Event say so
#   both_drivers the same resources through the operator and `mimeo local apply` (S3 on MinIO):
#               the same catalog entries, trail counts and restore outcomes; restores identical
# Usage: bash e2e/tools.sh && bash e2e/scenarios.sh [SCENARIO...]   (MIMEO_E2E_KEEP=1 keeps the
# work dir).
#
# Two places to run: by default on this machine (e2e/lib.sh start_cluster; needs root, the tools
# of e2e/tools.sh and the images of e2e/image.sh and e2e/addon-images.sh). With
# MIMEO_E2E_KUBECONFIG=FILE the same scenarios run against that cluster (kind): the operator
# image MIMEO_E2E_IMAGE (default mimeo:dev, already loaded into the nodes). MinIO from
# examples/kind/minio in namespace e2e-minio in both. Data is seeded and compared by busybox
# Jobs in both places; only MinIO's files, the operator's process and the API server's restart
# are looked at or done differently.
set -euo pipefail
NAME=scenarios
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CLUSTER=node
[[ -n "${MIMEO_E2E_KUBECONFIG:-}" ]] && CLUSTER=external

if [[ $CLUSTER == node ]]; then
  require_tools mimeo-controlplane kubelet kube-proxy kubectl helm
  # The images were built by e2e/image.sh (Mimeo, from the Dockerfile) and e2e/addon-images.sh.
  IMAGE=localhost/mimeo:dev
  TOOLS_IMAGE=localhost/e2e-tools:dev
  for f in "$E2E/.cache/mimeo-image.tar" "$E2E/.cache/images/minio_e2e.tar"; do
    [[ -f $f ]] || { say "$f missing: run bash e2e/image.sh and bash e2e/addon-images.sh"; exit 1; }
  done
else
  require_tools kubectl helm
  export KUBECONFIG="$MIMEO_E2E_KUBECONFIG"
  IMAGE="${MIMEO_E2E_IMAGE:-mimeo:dev}"
  TOOLS_IMAGE="${MIMEO_E2E_TOOLS_IMAGE:-busybox:1.37}"
fi

# The keys of examples/kind/minio/credentials.yaml, so the example Secret is applied as is.
S3_KEY=mimeo-demo
S3_SECRET=mimeo-demo-not-a-secret
QS=e2e-quickstart           # namespaces: one per group of scenarios, all `restricted`
FAULTS=e2e-faults
SYSTEM=mimeo-system
MINIO=e2e-minio
S3_ENDPOINT="http://minio.$MINIO.svc:9000"

# images: the examples' image names, and the suite's own tools image, for this cluster's.
images() {
  if [[ $CLUSTER == node ]]; then
    sed -e "s#image: busybox:1.37#image: $TOOLS_IMAGE#" \
      -e "s#image: quay.io/minio/minio:.*#image: localhost/minio:e2e#" \
      -e "s#image: quay.io/minio/mc:.*#image: localhost/mc:e2e#"
  else cat; fi
}

# ---- infrastructure: the cluster and MinIO (examples/kind/minio)
if [[ $CLUSTER == node ]]; then
  # The apiserver-restart scenario restarts it on its data: etcd must not lose acknowledged writes.
  start_cluster --etcd-unsafe-no-fsync=false
  ok "control plane and node $NODE_NAME ready in $((SECONDS - T0))s"
else
  for ns in $QS $FAULTS $MINIO $SYSTEM; do
    if k get namespace "$ns" >/dev/null 2>&1; then
      say "namespace $ns exists: delete it (and helm uninstall -n $SYSTEM mimeo) first"; exit 1
    fi
  done
fi
k create namespace $MINIO >/dev/null
k kustomize "$ROOT/examples/kind/minio" | sed "s/namespace: mimeo-demo/namespace: $MINIO/" | images | k apply -f - >/dev/null
s3_start() {
  k -n $MINIO scale deploy/minio --replicas=1 >/dev/null
  k -n $MINIO rollout status deploy/minio --timeout=300s >/dev/null
}
s3_stop() {
  k -n $MINIO scale deploy/minio --replicas=0 >/dev/null
  k -n $MINIO wait pod -l app.kubernetes.io/name=minio --for=delete --timeout=120s >/dev/null
}
check "MinIO running" s3_start
check "MinIO buckets created" k -n $MINIO wait job/minio-buckets --for=condition=complete --timeout=300s
# On the node, MinIO's volume is a directory here: its objects can be looked at directly.
S3_DATA=""
if [[ $CLUSTER == node ]]; then
  S3_DATA="$(k get pv "$(k -n $MINIO get pvc minio-data -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.hostPath.path}')"
fi

for ns in $QS $FAULTS; do
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null
done

# jp KIND/NAME NS JSONPATH: one field of one object.
jp() { k -n "$2" get "$1" -o "jsonpath=$3" 2>/dev/null; }
# valid_entries NS SELECTOR: how many CatalogEntries matching a label selector are Valid; fails
# (prints nothing) when kubectl does, so an API error never reads as 0.
valid_entries() {
  local names
  names="$(k -n "$1" get catalogentries -l "$2" -o jsonpath='{range .items[?(@.status.state=="Valid")]}{.metadata.name}{"\n"}{end}')" || return 1
  grep -c . <<<"$names" || true
}
# render DIR NS: the example rendered for namespace NS, with this cluster's images.
render() {
  k kustomize "$ROOT/$1" | sed -e "s#http://minio.mimeo-demo.svc:9000#$S3_ENDPOINT#" \
    -e "s/namespace: mimeo-demo/namespace: $2/" | images
}
# pod_logs NS POD: a pod's output.
pod_logs() { k -n "$1" logs "$2" --all-containers 2>/dev/null; }
# job_output NS NAME: waits for a Job to finish, prints its pod's output, fails if the Job did.
job_output() {
  local ns=$1 name=$2 pod
  wait_for 300 eval "[[ -n \$(jp job/$name $ns '{.status.succeeded}{.status.failed}') ]]" || { echo "Job $name did not finish"; return 1; }
  pod="$(k -n "$ns" get pods -l job-name="$name" -o jsonpath='{.items[0].metadata.name}')"
  pod_logs "$ns" "$pod"
  [[ "$(jp job/"$name" "$ns" '{.status.succeeded}')" == 1 ]]
}
# start_pod NS NAME "CLAIM:PATH[:ro] ..." SCRIPT: starts SCRIPT with sh -e in a Job of the tools
# image (busybox) with those PVCs mounted, as uid 65532 under the restricted level, so the same
# check runs on the local node and in a cluster.
start_pod() {
  local ns=$1 name=$2 mounts=$3 script=$4 m claim path ro mnt="" vols="" i=0
  for m in $mounts; do
    IFS=: read -r claim path ro <<<"$m"
    mnt+="        - {name: v$i, mountPath: $path, readOnly: $([[ $ro == ro ]] && echo true || echo false)}"$'\n'
    vols+="      - {name: v$i, persistentVolumeClaim: {claimName: $claim}}"$'\n'
    i=$((i + 1))
  done
  k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $name, labels: {app.kubernetes.io/name: e2e-check}}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app.kubernetes.io/name: e2e-check}}
    spec:
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: sh
        image: $TOOLS_IMAGE
        command: [/bin/sh, -ec]
        args:
        - |
$(sed 's/^/          /' <<<"$script")
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts:
$mnt      volumes:
$vols
EOF
}
# in_pod NS NAME MOUNTS SCRIPT: start_pod, then prints the pod's output; fails if the Job does.
in_pod() {
  start_pod "$@"
  job_output "$1" "$2"
}
# same_tree NS NAME CLAIM[/DIR] CLAIM[/DIR]: the two trees are byte-identical (diff -r in a pod).
same_tree() {
  local a=${3%%/*} b=${4%%/*}
  if [[ $a == "$b" ]]; then # one claim, mounted once
    in_pod "$1" "$2" "$a:/a:ro" "diff -r /a/${3#"$a"} /a/${4#"$b"} && echo identical"
  else
    in_pod "$1" "$2" "$a:/a:ro $b:/b:ro" "diff -r /a/${3#"$a"} /b/${4#"$b"} && echo identical"
  fi
}
# run_now KIND/NAME NS: asks for a run now.
run_now() { k -n "$2" annotate "$1" --overwrite "mimeo.dev/run-now=$(date +%s%N)" >/dev/null; }

# ---- scenario: install
scenario_install() {
  METRICS_PORT="$(free_port)"
  local where=(--set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}")
  check "helm install charts/mimeo (operator Available)" \
    "$BIN/helm" install mimeo "$ROOT/charts/mimeo" -n "$SYSTEM" --create-namespace "${where[@]}" \
      --set "workerNamespaces={$QS,$FAULTS}" --set worker.backoffLimit=4 \
      --set expiredEntryRetentionSeconds=15 --wait --timeout 180s
  check "CRDs Established" k wait crd --all --for=condition=Established --timeout=30s
  check "six Mimeo CRDs" test "$(k get crd -o name | grep -c '\.mimeo\.dev$')" = 6
  k -n "$SYSTEM" port-forward svc/mimeo-operator-metrics "$METRICS_PORT:8080" >"$WORK/port-forward.log" 2>&1 &
  E2E_PIDS+=("$!:port-forward")
  check "the operator pod asks for uid 65532" test \
    "$(k -n "$SYSTEM" get pod -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].spec.securityContext.runAsUser}')" = 65532
  if [[ $CLUSTER == node ]]; then
    # What runs, not what was asked for: the container's process as the node's kernel sees it.
    check "the operator's process runs as uid 65532, gid 65532" bash -c \
      "ps -eo uid=,gid=,args= | grep -v grep | grep -qE '^ *65532 +65532 +/usr/local/bin/mimeo operator'"
  fi
  check "operator /readyz answers ok" wait_for 30 curl -fsS "http://127.0.0.1:$METRICS_PORT/readyz"
  check "the operator holds its Lease" bash -c \
    "$BIN/kubectl -n $SYSTEM get lease mimeo-operator -o jsonpath='{.spec.holderIdentity}' | grep -q mimeo"
}

# ---- scenario: quickstart
scenario_quickstart() {
  k -n $QS apply -f "$ROOT/examples/kind/minio/credentials.yaml" >/dev/null
  render examples/kind/data $QS | k apply -f - >/dev/null
  check "seed Job completes (PVCs provisioned and bound)" k -n $QS wait job/seed-data --for=condition=complete --timeout=120s
  render examples/kind/mimeo $QS | k apply -f - >/dev/null
  check "MediaClasses reachable (S3 HeadBucket, PVC bound)" wait_for 60 bash -c \
    "[[ \$($BIN/kubectl -n $QS get mediaclass -o jsonpath='{.items[*].status.reachable}') == 'true true true' ]]"
  check "backup: 4 Original entries Valid" until_eq 180 4 \
    valid_entries $QS mimeo.dev/trail=nightly,mimeo.dev/role=Original
  check "policy apps-ab-to-disk: 2 Duplicate entries on disk-1w" until_eq 180 2 \
    valid_entries $QS mimeo.dev/trail=disk-1w,mimeo.dev/role=Duplicate
  check "policy all-to-vault: 4 Duplicate entries on vault-7y" until_eq 180 4 \
    valid_entries $QS mimeo.dev/trail=vault-7y,mimeo.dev/role=Duplicate
  check "disk-1w holds app-a and app-b only" test \
    "$(k -n $QS get catalogentries -l mimeo.dev/trail=disk-1w -o jsonpath='{.items[*].spec.workItem}' | tr ' ' '\n' | sort | tr '\n' ' ')" = "app-a app-b "
  # app-c (10 MiB) on 8 MiB volumes written by 4 streams: more than one extent; its duplicate on
  # the 64 MiB vault volumes is one extent (Sequential layout).
  local orig dup
  orig="$(k -n $QS get catalogentries -l mimeo.dev/trail=nightly,mimeo.dev/work-item=app-c -o jsonpath='{.items[0].spec.extents[*].volume}' | wc -w)"
  dup="$(k -n $QS get catalogentries -l mimeo.dev/trail=vault-7y,mimeo.dev/work-item=app-c -o jsonpath='{.items[0].spec.extents[*].volume}' | wc -w)"
  check "extents: original of app-c interleaved in $orig extents, duplicate in $dup" test "$orig" -gt 1 -a "$dup" = 1
  check "kubectl get catalogentries shows its columns" bash -c \
    "$BIN/kubectl -n $QS get catalogentries | head -1 | grep -q 'WORK ITEM.*TRAIL.*ROLE.*BYTES.*STATE.*EXPIRES'"
  check "kubectl get backuptrails shows 4 instances" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get backuptrails nightly | grep -Eq '^nightly +minio-tapes +30d +4 '"
  check "kubectl get duplicationpolicies shows the runs" bash -c \
    "$BIN/kubectl -n $QS get duplicationpolicies | grep -q all-to-vault"
  check "metrics: catalog entries by state, run counts and durations" wait_for 30 bash -c \
    "m=\$(curl -fsS http://127.0.0.1:$METRICS_PORT/metrics) && grep -Eq '^mimeo_catalog_entries\\{state=\"Valid\"\\} 10\$' <<<\"\$m\" && grep -q '^mimeo_runs_total{kind=\"backup\",outcome=\"Succeeded\"} 1' <<<\"\$m\" && grep -q '^mimeo_run_duration_seconds_count{kind=\"copy\",outcome=\"Succeeded\"}' <<<\"\$m\""
  check "worker pods were non-root with a read-only root filesystem" bash -c \
    "$BIN/kubectl -n $QS get jobs -l app.kubernetes.io/component=worker -o jsonpath='{.items[*].spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem}' | grep -qv false"
}

# ---- scenario: restore
restore_field() { jp "restore/$1" $QS "$2"; }
# restore_to NAME WORK_ITEM [SOURCE]: restores the latest WORK_ITEM of nightly into the
# restore-target PVC, directory NAME.
restore_to() {
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: $1}
spec:
  workItem: $2
  backupTrail: nightly
  source: ${3:-Auto}
  target: {pvc: {claimName: restore-target, path: $1}}
EOF
}
scenario_restore() {
  render examples/kind/restore $QS | k apply -f - >/dev/null
  for r in app-a app-c; do
    check "Restore $r Succeeded" until_eq 120 Succeeded restore_field $r '{.status.phase}'
    check "Restore $r read a Duplicate ($(restore_field $r '{.status.restoredFrom.trail}'))" \
      test "$(restore_field $r '{.status.restoredFrom.role}')" = Duplicate
    check "restored $r is byte-identical to its PVC" same_tree $QS "same-$r" "$r" "restore-target/$r"
  done
  render examples/kind/verify $QS | k apply -f - >/dev/null
  check "the example's verify Job agrees" k -n $QS wait job/verify-restores --for=condition=complete --timeout=60s

  k -n $QS patch mediaclass minio-vault --type merge -p '{"spec":{"available":false}}' >/dev/null
  render examples/kind/vault-away $QS | k apply -f - >/dev/null
  check "vault away: app-c Restore Succeeded" until_eq 120 Succeeded restore_field app-c-vault-away '{.status.phase}'
  check "vault away: app-c read the Original on nightly" \
    test "$(restore_field app-c-vault-away '{.status.restoredFrom.role}/{.status.restoredFrom.trail}')" = Original/nightly
  check "vault away: the reason names the unavailable media class" bash -c \
    "$BIN/kubectl -n $QS get restore app-c-vault-away -o jsonpath='{.status.reason}' | grep -q minio-vault"
  check "vault away: app-a still read its duplicate on disk-1w" \
    test "$(restore_field app-a-vault-away '{.status.restoredFrom.trail}')" = disk-1w
  check "vault away: app-c restored byte-identical" \
    same_tree $QS same-app-c-vault-away app-c restore-target/app-c-vault-away

  k -n $QS patch mediaclass minio-tapes --type merge -p '{"spec":{"available":false}}' >/dev/null
  restore_to app-c-nothing app-c
  check "nothing available: Restore Failed" until_eq 60 Failed restore_field app-c-nothing '{.status.phase}'
  check "nothing available: the reason says why ($(restore_field app-c-nothing '{.status.reason}'))" bash -c \
    "$BIN/kubectl -n $QS get restore app-c-nothing -o jsonpath='{.status.reason}' | grep -q minio-tapes"
  check "nothing available: a Warning event NoCopyAvailable" bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=app-c-nothing,type=Warning | grep -q NoCopyAvailable"
  check "nothing available: no worker Job was started" test -z "$(k -n $QS get jobs -o name | grep app-c-nothing || true)"
  k -n $QS patch mediaclass minio-tapes --type merge -p '{"spec":{"available":true}}' >/dev/null
  k -n $QS patch mediaclass minio-vault --type merge -p '{"spec":{"available":true}}' >/dev/null
}

# ---- scenario: encryption
# A duplicate on an encrypted MediaClass: the worker gets the key by Secret reference, the
# media hold no plaintext, the copy restores byte-identical; with a wrong key the restore fails
# naming the keys and the copy stays Valid.
E2E_KEY=6d696d656f2d6532652d6b65792d6e6f742d612d7265616c2d6b65792d303031
E2E_OTHER_KEY=0000000000000000000000000000000000000000000000000000000000000002
key_secret() {
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: sealed-key}
stringData: {MIMEO_ENCRYPTION_KEY: "$1"}
EOF
}
# plaintext_on PREFIX: files of a prefix of the vault bucket holding a line of app-a's log.
plaintext_on() { grep -rl "app-a line 7: the quick brown fox" "$S3_DATA/mimeo-vault/$1" | wc -l; }
# failed_attempts PATTERN: failed pods of the worker Job whose name matches.
failed_attempts() {
  k -n $QS get jobs -o jsonpath='{range .items[*]}{.metadata.name} {.status.failed}{"\n"}{end}' |
    awk -v p="$1" '$1 ~ p {print $2}'
}
wrong_key_logged() {
  all_logs | grep 'cannot decrypt: media class sealed-vault, volume sealed-30d-00001' | grep -q 'encrypted with key'
}
scenario_encryption() {
  key_secret $E2E_KEY
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: sealed-vault}
spec:
  backend:
    s3: {endpoint: "$S3_ENDPOINT", bucket: mimeo-vault, prefix: sealed, region: us-east-1, forcePathStyle: true, credentialsSecretRef: {name: minio-credentials}}
  volumeCapacity: 64Mi
  encryption: {keySecretRef: {name: sealed-key}}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: sealed-30d}
spec: {mediaClassName: sealed-vault, retention: 30d}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: app-a-sealed}
spec: {sourceTrails: [nightly], targets: [sealed-30d], selection: {workItems: [app-a]}}
EOF
  check "encrypted MediaClass reachable (its key parses)" wait_for 60 bash -c \
    "[[ \$($BIN/kubectl -n $QS get mediaclass sealed-vault -o jsonpath='{.status.reachable}') == true ]]"
  check "app-a copied to the encrypted trail" until_eq 180 1 valid_entries $QS mimeo.dev/trail=sealed-30d
  check "the copy Job took the key from the Secret by reference" bash -c \
    "$BIN/kubectl -n $QS get jobs -o jsonpath='{range .items[*]}{.spec.template.spec.containers[0].env[*].valueFrom.secretKeyRef.name}{\"\\n\"}{end}' | grep -q sealed-key"
  check "spec.encryption is immutable" bash -c \
    "$BIN/kubectl -n $QS patch mediaclass sealed-vault --type merge -p '{\"spec\":{\"encryption\":null}}' 2>&1 | grep -q 'spec.encryption is immutable'"
  if [[ $CLUSTER == node ]]; then
    check "no plaintext on the encrypted media ($(plaintext_on sealed) files), some on vault-7y ($(plaintext_on vault-7y))" \
      test "$(plaintext_on sealed)" = 0 -a "$(plaintext_on vault-7y)" -gt 0
  fi
  restore_to app-a-sealed app-a "{trail: sealed-30d}"
  check "Restore from the encrypted copy Succeeded" until_eq 120 Succeeded restore_field app-a-sealed '{.status.phase}'
  check "it read sealed-30d" test "$(restore_field app-a-sealed '{.status.restoredFrom.trail}')" = sealed-30d
  check "restored app-a is byte-identical" same_tree $QS same-app-a-sealed app-a restore-target/app-a-sealed

  key_secret $E2E_OTHER_KEY
  restore_to app-a-wrong-key app-a "{trail: sealed-30d}"
  check "wrong key: Restore Failed" until_eq 120 Failed restore_field app-a-wrong-key '{.status.phase}'
  check "wrong key: the Job failed after one attempt (exit code 3 is not retried)" \
    test "$(failed_attempts wrong-key)" = 1
  check "wrong key: the worker log names the media class, volume and key ids" wrong_key_logged
  check "wrong key: the copy stays Valid" test "$(valid_entries $QS mimeo.dev/trail=sealed-30d)" = 1
  key_secret $E2E_KEY
}

# ---- scenario: damaged_copy
# The copy a Restore reads first (app-a on disk-1w, a PVC) is damaged behind Mimeo's back: the
# worker reports volume, offset and work item, marks the copy Missing and fails at once; the
# operator restores from the next copy (the encrypted one on sealed-30d).
entry_field() { k -n $QS get catalogentries -l "mimeo.dev/trail=$1,mimeo.dev/work-item=$2" -o "jsonpath={.items[0].$3}"; }
scenario_damaged_copy() {
  local vol seg off len
  vol="$(entry_field disk-1w app-a spec.extents[0].volume)"
  seg="$(printf %05d "$(entry_field disk-1w app-a spec.extents[0].segment)")"
  off="$(entry_field disk-1w app-a spec.extents[0].offset)"
  len="$(entry_field disk-1w app-a spec.extents[0].length)"
  check "damage: 8 bytes overwritten inside app-a's copy on $vol" in_pod $QS damage-disk-1w mimeo-media:/m \
    "printf 'DAMAGED!' | dd of=/m/disk-1w/$vol/$seg.seg bs=1 seek=$((off + len / 2)) conv=notrunc 2>/dev/null && echo done"
  restore_to app-a-damaged app-a
  check "damage: Restore Succeeded" until_eq 180 Succeeded restore_field app-a-damaged '{.status.phase}'
  # The next copy is the encrypted one on sealed-30d, or the repair copy a policy run may have
  # written on disk-1w meanwhile (recorded as replacing the damaged one).
  check "damage: it read another copy ($(restore_field app-a-damaged '{.status.restoredFrom.trail}'))" bash -c \
    "case $(restore_field app-a-damaged '{.status.restoredFrom.role}/{.status.restoredFrom.trail}') in
       Duplicate/sealed-30d) ;;
       Duplicate/disk-1w) [[ -n \"$(entry_field disk-1w app-a spec.replaces)\" ]] ;;
       *) false ;;
     esac"
  check "damage: the damaged copy stays Missing, or a repair copy replaced it" bash -c \
    "[[ $(entry_field disk-1w app-a status.state) == Missing || -n \"$(entry_field disk-1w app-a spec.replaces)\" ]]"
  check "damage: status.damaged names the copy, volume, offset and work item" bash -c \
    "$BIN/kubectl -n $QS get restore app-a-damaged -o jsonpath='{.status.damaged[0]}' | grep 'duplicate on disk-1w damaged: corrupt media: volume $vol, offset' | grep -q 'work item app-a'"
  check "damage: a CopyDamaged Warning event" bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=app-a-damaged,type=Warning | grep -q CopyDamaged"
  check "damage: the damaged read was one attempt (exit code 3 is not retried)" \
    test "$(failed_attempts restore-app-a-damaged-1\$)" = 1
  check "damage: restored app-a is byte-identical" same_tree $QS same-app-a-damaged app-a restore-target/app-a-damaged
}

# ---- scenario: forged_copy
# Whoever controls a bucket can hand a worker a stream the catalog did not record: here the
# catalog's digest of app-b's copy on vault-7y no longer matches its intact blocks, as with a
# same-length forged stream with valid CRCs. A restore allowed only that copy fails and leaves
# nothing in its target; with Auto another copy is read into a clean target.
scenario_forged_copy() {
  local entry zeros
  entry="$(k -n $QS get catalogentries -l mimeo.dev/trail=vault-7y,mimeo.dev/work-item=app-b \
    --sort-by=.spec.backupTime -o 'jsonpath={.items[-1:].metadata.name}')"
  zeros="$(printf '0%.0s' $(seq 64))"
  # No repair copy meanwhile: the forged copy must stay the only one the first restore may read.
  k -n $QS patch duplicationpolicy all-to-vault --type merge -p '{"spec":{"suspend":true}}' >/dev/null
  k -n $QS patch catalogentry "$entry" --type merge -p "{\"spec\":{\"digest\":\"sha256:$zeros\"}}" >/dev/null
  restore_to app-b-forged app-b "{trail: vault-7y}"
  check "forged: the restore from the forged copy Failed" until_eq 180 Failed restore_field app-b-forged '{.status.phase}'
  check "forged: its reason names the digest" bash -c \
    "$BIN/kubectl -n $QS get restore app-b-forged -o jsonpath='{.status.reason}' | grep -q digest"
  check "forged: nothing was left in its target" in_pod $QS forged-left restore-target:/t \
    '[ -z "$(ls -A /t/app-b-forged 2>/dev/null)" ] && echo empty'
  restore_to app-b-after-forged app-b
  check "forged: with Auto the restore Succeeded from another copy" \
    until_eq 180 Succeeded restore_field app-b-after-forged '{.status.phase}'
  check "forged: restored app-b is byte-identical" same_tree $QS same-app-b-forged app-b restore-target/app-b-after-forged
  k -n $QS patch duplicationpolicy all-to-vault --type merge -p '{"spec":{"suspend":false}}' >/dev/null
  check "forged: the policy repairs the copy once resumed" wait_for 120 bash -c \
    "[[ -n \$($BIN/kubectl -n $QS get catalogentry $entry -o jsonpath='{.spec.replaces}') ]]"
}

# ---- scenario: expiry
# volumes_with_data: volumes of the `short` trail that still hold segments on S3 (MinIO's files
# on the node: an object is a directory of its key, or a MinIO listing by mc in a cluster).
volumes_with_data() {
  if [[ $CLUSTER == node ]]; then
    find "$S3_DATA/mimeo-vault/short" -name '*.seg' -printf '%h\n' 2>/dev/null | sort -u | wc -l
    return
  fi
  local job
  job="ls-$(date +%s%N)"
  k -n $MINIO apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $job}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: mc
        image: quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z
        command: [/bin/sh, -ec, 'mc alias set m http://minio:9000 "\$AWS_ACCESS_KEY_ID" "\$AWS_SECRET_ACCESS_KEY" >/dev/null; mc ls --recursive m/mimeo-vault/short/']
        env: [{name: HOME, value: /tmp}]
        envFrom: [{secretRef: {name: minio-credentials}}]
EOF
  job_output $MINIO "$job" | awk '{print $NF}' | grep '\.seg$' | sed 's#/[^/]*$##' | sort -u | wc -l
}
scenario_expiry() {
  # A fresh backup: the 40s retention of the new trail counts from the backup time.
  run_now backuptrail/nightly $QS
  check "expiry: a second nightly backup" until_eq 120 8 \
    valid_entries $QS mimeo.dev/trail=nightly,mimeo.dev/role=Original
  # Small volumes, so the copy fills (and seals) several: expiry frees sealed volumes.
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: small-vault}
spec:
  backend: {s3: {endpoint: "$S3_ENDPOINT", bucket: mimeo-vault, region: us-east-1, forcePathStyle: true, credentialsSecretRef: {name: minio-credentials}}}
  volumeCapacity: 512Ki
  blockSize: 64Ki
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: short}
spec: {mediaClassName: small-vault, retention: 40s}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: d-to-short}
spec:
  sourceTrails: [nightly]
  selection: {workItems: [app-d]}
  targets: [short]
EOF
  check "expiry: app-d copied to the 40s trail" \
    wait_for 120 eval '[[ $(valid_entries $QS mimeo.dev/trail=short) -ge 1 ]]'
  local before
  before="$(volumes_with_data)"
  check "expiry: the copy spans $before volumes on S3" test "$before" -gt 2
  check "expiry: trail status lists the volumes" wait_for 30 bash -c \
    "[[ \$($BIN/kubectl -n $QS get duplicationtrail short -o jsonpath='{.status.volumes[*].name}' | wc -w) -ge $before ]]"
  # All of the trail's volumes would go in one sweep: the mass-expiry breaker halts it until
  # the trail is annotated.
  check "expiry: the mass-expiry breaker halts the sweep (ExpiryHalted)" wait_for 120 bash -c \
    "$BIN/kubectl -n $QS get duplicationtrail short -o jsonpath='{.status.conditions[?(@.type==\"ExpiryHalted\")].status}' | grep -q True"
  check "expiry: a MassExpiryHalted Warning event" bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=short,type=Warning | grep -q MassExpiryHalted"
  check "expiry: nothing expired while halted" test "$(valid_entries $QS mimeo.dev/trail=short)" -ge 1
  k -n $QS annotate duplicationtrail short mimeo.dev/allow-mass-expiry=1 >/dev/null
  check "expiry: the entries turn Expired" wait_for 120 bash -c \
    "s=\$($BIN/kubectl -n $QS get catalogentries -l mimeo.dev/trail=short -o jsonpath='{.items[*].status.state}'); [[ \$s == *Expired* && \$s != *Valid* ]]"
  check "expiry: an Expired event on the trail" bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=short | grep -q Expired"
  check "expiry: the sealed volumes are freed (at most the open one keeps data)" \
    wait_for 120 eval '[[ $(volumes_with_data) -le 1 ]]'
  check "expiry: trail status shows Scratch volumes" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get duplicationtrail short -o jsonpath='{.status.volumes[*].state}' | grep -q Scratch"
  check "expiry: the Expired entry is deleted after its retention (15s)" wait_for 90 \
    eval '[[ -z $(k -n $QS get catalogentries -l mimeo.dev/trail=short -o name) ]]'
  check "expiry: the expired copy is not made again" \
    test "$(k -n $QS get jobs -o name | grep -c copy-d-to-short)" = 1
  check "expiry: the 7-year trail is untouched (both backups copied)" \
    until_eq 60 8 valid_entries $QS mimeo.dev/trail=vault-7y
  k -n $QS delete duplicationpolicy d-to-short >/dev/null
  # A retention edit moves the expiry dates of the trail's live entries and starts no backup.
  local backups
  backups="$(k -n $QS get jobs -o name | grep -c backup-nightly)"
  k -n $QS patch backuptrail nightly --type merge -p '{"spec":{"retention":"45d"}}' >/dev/null
  check "expiry: a retention edit moves every nightly entry's expiresAt to backup time + 45d" \
    wait_for 60 retention_days_are $QS mimeo.dev/trail=nightly 45
  check "expiry: and starts no backup" \
    test "$(k -n $QS get jobs -o name | grep -c backup-nightly)" -le "$backups"
}

# retention_days_are NS SELECTOR DAYS: every live entry expires DAYS after its backup time.
retention_days_are() {
  k -n "$1" get catalogentries -l "$2" -o json | python3 -c '
import datetime, json, sys
days = int(sys.argv[1])
parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
items = [i for i in json.load(sys.stdin)["items"] if i.get("status", {}).get("state") != "Expired"]
bad = [i["metadata"]["name"] for i in items
       if parse(i["spec"]["expiresAt"]) - parse(i["spec"]["backupTime"]) != datetime.timedelta(days=days)]
sys.exit(1 if bad or not items else 0)' "$3"
}

# ---- scenario: rescan (catalog lost, rebuilt from the media) and a policy's run-now
scenario_rescan() {
  local n
  n="$(valid_entries $QS mimeo.dev/trail=vault-7y)"
  # Nothing must copy to the trail while its catalog is gone.
  k -n $QS patch duplicationpolicy all-to-vault --type merge -p '{"spec":{"suspend":true}}' >/dev/null
  check "rescan: the policy reports it is suspended" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get duplicationpolicy all-to-vault -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}' | grep -q Suspended"
  k -n $QS delete catalogentries -l mimeo.dev/trail=vault-7y >/dev/null
  check "rescan: the $n entries of vault-7y are gone" until_eq 30 0 valid_entries $QS mimeo.dev/trail=vault-7y
  k -n $QS annotate duplicationtrail vault-7y mimeo.dev/rescan=1 >/dev/null
  check "rescan: a worker rebuilds all $n entries from the manifests on S3" until_eq 120 "$n" \
    valid_entries $QS mimeo.dev/trail=vault-7y
  check "rescan: a Rescanned event" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=vault-7y | grep -q Rescanned"
  check "rescan: the same annotation does not rescan again" \
    test "$(k -n $QS get jobs -o name | grep -c rescan-vault-7y)" = 1
  k -n $QS patch duplicationpolicy all-to-vault --type merge -p '{"spec":{"suspend":false}}' >/dev/null
  run_now duplicationpolicy/all-to-vault $QS
  check "run-now on a policy with nothing to copy: consumed, UpToDate, no new run" wait_for 30 bash -c \
    "[[ \$($BIN/kubectl -n $QS get duplicationpolicy all-to-vault -o jsonpath='{.status.lastRunNow}/{.status.conditions[?(@.type==\"Ready\")].reason}') == \$($BIN/kubectl -n $QS get duplicationpolicy all-to-vault -o jsonpath='{.metadata.annotations.mimeo\\.dev/run-now}')/UpToDate ]]"
}

# ---- scenario: invalid resources
# reject "what" "expected message part" YAML: the API server must refuse it with that message.
reject() {
  local what="$1" want="$2" yaml="$3" out
  if out="$(echo "$yaml" | k -n $QS apply --dry-run=server -f - 2>&1)"; then
    fail "invalid: $what was accepted"
  elif grep -qF -- "$want" <<<"$out"; then
    ok "invalid: $what rejected ($want)"
  else
    fail "invalid: $what rejected without naming the field: $out"
  fi
}
# corpus_rows: the documents of tests/invalid/resources.yaml, one per line: who refuses it,
# the field it gets wrong, kind, name, and the document as JSON.
corpus_rows() {
  k create --dry-run=client --validate=false -f "$ROOT/tests/invalid/resources.yaml" -o json | python3 -c '
import json, sys
text, dec, at, objs = sys.stdin.read(), json.JSONDecoder(), 0, []
while text[at:].strip():
    o, at = dec.raw_decode(text, len(text) - len(text[at:].lstrip()))
    objs += o.get("items", [o])
for o in objs:
    o["metadata"].pop("namespace", None)  # kubectl filled in its default
    a = o["metadata"]["annotations"]
    print(a["test.mimeo.dev/checked"], a["test.mimeo.dev/field"], o["kind"], o["metadata"]["name"], json.dumps(o), sep="\t")
'
}
scenario_invalid() {
  # The corpus: what the CRD schema can judge is refused by the API server, the rest is
  # reported by the operator in status; either way the message names the field.
  local checked field kind name doc rows=0
  while IFS=$'\t' read -r checked field kind name doc; do
    rows=$((rows + 1))
    if [[ $checked == admission ]]; then
      reject "$kind/$name" "$field" "$doc"
    else
      k -n $QS apply -f - <<<"$doc" >/dev/null
      check "invalid: $kind/$name reported in status naming $field" wait_for 30 bash -c \
        "$BIN/kubectl -n $QS get $kind $name -o jsonpath='{.status}' | grep -qF -- '$field'"
      k -n $QS delete "$kind" "$name" >/dev/null
    fi
  done < <(corpus_rows)
  check "invalid: the corpus has $rows resources" test "$rows" -ge 30
  reject "changing a trail's media class" "spec.mediaClassName" "apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: vault-7y}
spec: {mediaClassName: pvc-disk, retention: 7y}"
  # Rules that need other objects are checked by the operator and reported in status.
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: raw-to-pvc}
spec: {sourceTrails: [nightly], targets: [disk-1w], mode: Media, suspend: false}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: nowhere}
spec: {mediaClassName: no-such-class, retention: 1d}
EOF
  check "invalid: mode Media between S3 and PVC trails is reported in status naming spec.mode" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get duplicationpolicy raw-to-pvc -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q spec.mode"
  check "invalid: an InvalidSpec Warning event for it" bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=raw-to-pvc,type=Warning | grep -q InvalidSpec"
  check "invalid: no Job was started for it" test -z "$(k -n $QS get jobs -o name | grep raw-to-pvc || true)"
  check "invalid: a missing media class is reported naming spec.mediaClassName" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get duplicationtrail nowhere -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q spec.mediaClassName"
  k -n $QS delete duplicationpolicy raw-to-pvc >/dev/null
  k -n $QS delete duplicationtrail nowhere >/dev/null
}

# ---- scenario: operator killed during a duplication, worker killed during a backup
# worker_midway: waits for the newest worker process on the node to have read 32 MiB
# (/proc/PID/io) and prints "PID BYTES"; fails if none showed up within 60 s.
worker_midway() {
  local pid="" read=0 end=$((SECONDS + 60))
  until [[ -n $pid ]]; do
    ((SECONDS < end)) || return 1
    pid="$(pgrep -n -u 65532 -f '/usr/local/bin/mimeo worker --task')" || true
  done
  while read="$(awk '$1 == "rchar:" {print $2}' "/proc/$pid/io" 2>/dev/null)" && ((read < 33554432)); do :; done
  [[ -n $read ]] && echo "$pid $read"
}
# kill_worker_midway: SIGKILLs that worker then, and prints how much it had read.
kill_worker_midway() {
  local pid read
  read -r pid read <<<"$(worker_midway)" && kill -KILL "$pid" 2>/dev/null && echo "$read"
}
# refill NAME: 192 MiB of new random data in PVC big of the faults namespace.
refill() {
  in_pod $FAULTS "$1" big:/big 'for i in 1 2 3 4; do head -c 50331648 /dev/urandom > /big/blob-$i; done'
}
# restore_instance NAME INSTANCE PATH: a Restore of that instance of work item big into PVC
# restored at PATH, checked Succeeded and byte-identical to PVC big.
restore_instance() {
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: $1}
spec: {workItem: big, backupTrail: faults, instance: "$2", target: {pvc: {claimName: restored, path: $3}}}
EOF
  check "$1: the instance $2 restores" until_eq 120 Succeeded jp "restore/$1" $FAULTS '{.status.phase}'
  check "$1: restored data is byte-identical to PVC big" same_tree $FAULTS "same-$1" big "restored/$3"
}
# newest_instance: the newest instance of the faults trail.
newest_instance() {
  k -n $FAULTS get catalogentries -l mimeo.dev/trail=faults --sort-by=.spec.backupTime \
    -o 'jsonpath={.items[-1:].spec.instanceId}'
}
operator_pod() { k -n "$SYSTEM" get pod -l app.kubernetes.io/component=operator -o jsonpath='{.items[?(@.status.phase=="Running")].metadata.name}'; }
# job_count NS SELECTOR: how many Jobs match; fails (prints nothing) when kubectl does.
job_count() {
  local names
  names="$(k -n "$1" get jobs -l "$2" -o name)" || return 1
  grep -c . <<<"$names" || true
}
scenario_kill() {
  k -n $FAULTS apply -f "$ROOT/examples/kind/minio/credentials.yaml" >/dev/null
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: big}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: disk}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 4Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restored}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
EOF
  # 4 x 128 MiB of incompressible data: a copy takes long enough to be interrupted (with 192 MiB
  # the copy had already committed its entry when the check below ran, once the stream digest
  # became BLAKE3). The Job mounts every PVC, so they are bound with a
  # WaitForFirstConsumer storage class too.
  check "kill: 512 MiB of random data written to PVC big" in_pod $FAULTS fill-big \
    "big:/big disk:/disk restored:/restored" \
    'for i in 1 2 3 4; do head -c 134217728 /dev/urandom > /big/blob-$i; done; ls -l /big'
  check "fault PVCs bound" k -n $FAULTS wait pvc/big pvc/disk pvc/restored --for=jsonpath='{.status.phase}'=Bound --timeout=60s
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: tapes}
spec:
  backend: {s3: {endpoint: "$S3_ENDPOINT", bucket: mimeo-tapes, region: us-east-1, forcePathStyle: true, credentialsSecretRef: {name: minio-credentials}}}
  volumeCapacity: 64Mi
  blockSize: 1Mi
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: disk}
spec: {backend: {pvc: {claimName: disk}}, volumeCapacity: 64Mi, blockSize: 1Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: faults}
spec:
  mediaClassName: tapes
  retention: 30d
  workItems: [{name: big, source: {pvc: {claimName: big}}}]
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: faults-disk}
spec: {mediaClassName: disk, retention: 30d}
EOF
  check "kill: first backup Valid" until_eq 180 1 valid_entries $FAULTS mimeo.dev/trail=faults
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: to-disk}
spec: {sourceTrails: [faults], targets: [faults-disk]}
EOF
  local sel="mimeo.dev/run-kind=copy"
  # The operator is killed as soon as the run's Job exists: a copy of 512 MiB takes seconds
  # on this node, and the run must be unfinished when its operator dies.
  check "kill: the duplication Job is created" wait_for 60 bash -c \
    "[[ -n \$($BIN/kubectl -n $FAULTS get jobs -l $sel -o name) ]]"
  local old_pod entries_during job
  old_pod="$(operator_pod)"
  k -n "$SYSTEM" delete pod "$old_pod" --grace-period=0 --force >/dev/null 2>&1
  job="$(k -n $FAULTS get jobs -l $sel -o jsonpath='{.items[0].metadata.name}')"
  check "kill: the operator died while its copy Job $job was unfinished" \
    test -z "$(jp job/"$job" $FAULTS '{.status.succeeded}{.status.failed}')"
  entries_during="$(valid_entries $FAULTS mimeo.dev/trail=faults-disk)"
  check "kill: no Valid entry while the copy is unwritten ($entries_during)" test "$entries_during" = 0
  check "kill: a new operator pod is Ready" wait_for 120 bash -c \
    "p=\$($BIN/kubectl -n $SYSTEM get pod -l app.kubernetes.io/component=operator -o jsonpath='{.items[?(@.status.phase==\"Running\")].metadata.name}'); [[ -n \$p && \$p != $old_pod ]] && $BIN/kubectl -n $SYSTEM wait pod/\$p --for=condition=Ready --timeout=1s"
  check "kill: the duplication completes" until_eq 180 1 valid_entries $FAULTS mimeo.dev/trail=faults-disk
  check "kill: still exactly one duplication Job" test "$(job_count $FAULTS $sel)" = 1
  check "kill: the policy counted one run" until_eq 30 1 jp duplicationpolicy/to-disk $FAULTS '{.status.runs}'

  # A worker pod killed mid-backup: the Job's next pod resumes, one entry per instance. New data
  # first, so the backup has 192 MiB to write and a restore of the first instance would differ.
  check "kill: 192 MiB of new random data in PVC big" refill refill-kill
  run_now backuptrail/faults $FAULTS
  sel="mimeo.dev/run-kind=backup"
  local pod read
  if [[ $CLUSTER == node ]]; then
    # The worker's process, SIGKILLed on the node once it has read 32 MiB of the 192: a backup
    # takes about a second here, less than a pod's status takes to say Running.
    read="$(kill_worker_midway)"
    check "kill: the backup's worker process was SIGKILLed after reading $((read / 1048576)) MiB" test -n "$read"
    pod="$(k -n $FAULTS get pods -l $sel --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[-1:].metadata.name}')"
  else
    check "kill: second backup's pod running" wait_for 60 bash -c \
      "$BIN/kubectl -n $FAULTS get pods -l $sel -o jsonpath='{.items[*].status.phase}' | grep -q Running"
    pod="$(k -n $FAULTS get pods -l $sel -o jsonpath='{.items[?(@.status.phase=="Running")].metadata.name}')"
    k -n $FAULTS delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1
  fi
  job="$(k -n $FAULTS get pod "$pod" -o jsonpath='{.metadata.labels.job-name}')"
  check "kill: the backup completes after its worker was killed" until_eq 180 2 \
    valid_entries $FAULTS mimeo.dev/trail=faults
  # The kill hit a running worker: the Job counts that pod failed, and another pod finished.
  check "kill: Job $job counts the killed pod $pod as failed" test "$(jp job/"$job" $FAULTS '{.status.failed}')" -ge 1
  check "kill: a replacement worker pod of $job succeeded" wait_for 60 bash -c \
    "$BIN/kubectl -n $FAULTS get pods -l job-name=$job -o jsonpath='{range .items[?(@.status.phase==\"Succeeded\")]}{.metadata.name}{\"\\n\"}{end}' | grep -v '^$pod\$' | grep -q ."
  check "kill: the second backup ran in one Job" test "$(job_count $FAULTS $sel)" = 2
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: after-kill}
spec: {workItem: big, backupTrail: faults, target: {pvc: {claimName: restored, path: big}}}
EOF
  check "kill: the backup written after the kill restores" until_eq 120 Succeeded \
    jp restore/after-kill $FAULTS '{.status.phase}'
  check "kill: restored data is byte-identical" same_tree $FAULTS same-after-kill big restored/big
}

# ---- scenario: S3 server stopped during a worker run
scenario_s3_outage() {
  local sel="mimeo.dev/run-kind=backup" before midway
  before="$(job_count $FAULTS $sel)"
  check "s3 outage: 192 MiB of new random data in PVC big" refill refill-outage
  run_now backuptrail/faults $FAULTS
  if [[ $CLUSTER == node ]]; then
    # Once the worker has read 32 MiB: MinIO scaled to zero (so the kubelet will not restart
    # it) and its process SIGKILLed on the node at once, not drained.
    midway="$(worker_midway)"
    k -n $MINIO scale deploy/minio --replicas=0 >/dev/null
    pkill -KILL -f 'minio server /data' || true
    check "s3 outage: MinIO killed while the worker had read $((${midway#* } / 1048576)) MiB" test -n "$midway"
  else
    check "s3 outage: backup pod running" wait_for 60 bash -c \
      "$BIN/kubectl -n $FAULTS get pods -l $sel -o jsonpath='{.items[*].status.phase}' | grep -q Running"
  fi
  s3_stop
  # This run's Job: the kill scenario left a failed pod and a WorkerRetrying event of its own.
  local job
  job="$(k -n $FAULTS get jobs -l $sel --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[-1:].metadata.name}')"
  check "s3 outage: the worker pod of $job fails" wait_for 120 bash -c \
    "$BIN/kubectl -n $FAULTS get pods -l job-name=$job -o jsonpath='{.items[*].status.phase}' | grep -q Failed"
  check "s3 outage: a Warning event explains the failed attempt" wait_for 60 bash -c \
    "$BIN/kubectl -n $FAULTS get events --field-selector involvedObject.name=faults,type=Warning | grep WorkerRetrying | grep -q $job"
  check "s3 outage: the trail's Ready condition says the worker retries" wait_for 30 bash -c \
    "$BIN/kubectl -n $FAULTS get backuptrail faults -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}' | grep -q WorkerRetrying"
  # A restore from the copy on S3 while the server is down: unreachable is not damaged.
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: during-outage}
spec: {workItem: big, backupTrail: faults, source: Original, target: {pvc: {claimName: restored, path: during-outage}}}
EOF
  check "s3 outage: the restore's worker fails while the server is down" wait_for 120 bash -c \
    "$BIN/kubectl -n $FAULTS get pods -l mimeo.dev/run-kind=restore -o jsonpath='{.items[*].status.phase}' | grep -q Failed"
  check "s3 outage: no copy is marked Missing" test "$(missing_entries $FAULTS)" = 0
  s3_start
  check "s3 outage: after the server returns the backup completes" until_eq 240 3 \
    valid_entries $FAULTS mimeo.dev/trail=faults
  check "s3 outage: one Job for the run (retried in place)" test "$(job_count $FAULTS $sel)" = $((before + 1))
  check "s3 outage: the restore completes once the server is back" until_eq 240 Succeeded \
    jp restore/during-outage $FAULTS '{.status.phase}'
  # It read the newest Valid instance then, the one the kill scenario restored to restored/big.
  check "s3 outage: the restored data is byte-identical to that instance" \
    same_tree $FAULTS same-during-outage restored/big restored/during-outage
  restore_instance after-outage "$(newest_instance)" after-outage
  check "s3 outage: still no copy marked Missing" test "$(missing_entries $FAULTS)" = 0
}
# missing_entries NS: how many CatalogEntries are Missing.
missing_entries() {
  k -n "$1" get catalogentries -o jsonpath='{range .items[*]}{.status.state}{"\n"}{end}' | grep -c '^Missing$' || true
}

# ---- scenario: the API server restarted during a worker run (builds on kill's trail)
scenario_apiserver_restart() {
  local sel="mimeo.dev/run-kind=backup" before n pod
  before="$(job_count $FAULTS $sel)"
  n="$(valid_entries $FAULTS mimeo.dev/trail=faults)"
  # New data, so the instance taken through the outage differs from every earlier one.
  check "api restart: 192 MiB of new random data in PVC big" refill refill-api
  run_now backuptrail/faults $FAULTS
  if [[ $CLUSTER == node ]]; then
    # The API server is SIGKILLed the moment the worker's process exists (a backup takes about
    # a second here): everything the worker says to the API server meets the outage.
    check "api restart: the backup's worker process started" wait_for 60 \
      pgrep -u 65532 -f '/usr/local/bin/mimeo worker --task'
    restart_controlplane
    ok "api restart: kube-apiserver killed while the worker ran; the control plane started again"
  else
    check "api restart: backup pod running" wait_for 60 bash -c \
      "$BIN/kubectl -n $FAULTS get pods -l $sel -o jsonpath='{.items[*].status.phase}' | grep -q Running"
    # On kind: the kube-apiserver container is stopped on the node; the kubelet starts it again
    # (deleting its mirror pod would not). MIMEO_E2E_APISERVER_RESTART overrides the command.
    local node="${MIMEO_E2E_KIND_NODE:-kind-control-plane}"
    check "api restart: kube-apiserver container stopped on $node" bash -c \
      "${MIMEO_E2E_APISERVER_RESTART:-docker exec $node sh -c 'crictl stop \$(crictl ps -q --name kube-apiserver)'}"
  fi
  check "api restart: the API server answers again" wait_for 120 k get --raw /readyz
  check "api restart: the backup completes" until_eq 240 $((n + 1)) \
    valid_entries $FAULTS mimeo.dev/trail=faults
  check "api restart: one Job for the run" test "$(job_count $FAULTS $sel)" = $((before + 1))
  check "api restart: the trail reports the run" wait_for 60 bash -c \
    "$BIN/kubectl -n $FAULTS get backuptrail faults -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}' | grep -q BackupSucceeded"
  pod="$(k -n $FAULTS get pods -l $sel --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[-1:].metadata.name}')"
  if [[ $CLUSTER == node ]]; then
    check "api restart: the worker $pod retried its API calls through the outage" bash -c \
      "$BIN/kubectl -n $FAULTS logs $pod | grep -q 'transient failure, retrying'"
  fi
  restore_instance after-api-restart "$(newest_instance)" api-restart
  # The operator's watches resumed: a run asked for after the restart happens too.
  run_now backuptrail/faults $FAULTS
  check "api restart: a run asked for afterwards completes" until_eq 240 $((n + 2)) \
    valid_entries $FAULTS mimeo.dev/trail=faults
  check "api restart: one more Job" test "$(job_count $FAULTS $sel)" = $((before + 2))
}

# ---- scenario: RBAC, Pod Security, secrets
# ---- scenario: api_faults
# The operator's API calls fail at random (MIMEO_API_FAULTS=0.3 on its Deployment, see
# src/operator/chaos.rs): reads refused with 500 or 429, watches with 410 Gone or 500, writes
# refused with 409 Conflict or 500 or sent with their answer lost. Two backups, the copies a
# policy makes of them and a restore each still run exactly once.
operator_ready() {
  local p
  p="$(operator_pod)"
  [[ -n $p && $p != "$1" ]] && k -n $SYSTEM wait "pod/$p" --for=condition=Ready --timeout=1s
}
set_api_faults() {
  local deploy old
  deploy="$(k -n $SYSTEM get deploy -l app.kubernetes.io/component=operator -o name)"
  old="$(operator_pod)"
  k -n $SYSTEM set env "$deploy" "MIMEO_API_FAULTS=$1" >/dev/null
  wait_for 180 operator_ready "$old"
}
injected_faults() { all_logs | grep -c 'injected API fault' || true; }
scenario_api_faults() {
  local backups copies restores n m before_faults
  backups="$(job_count $FAULTS mimeo.dev/run-kind=backup)"
  copies="$(job_count $FAULTS mimeo.dev/run-kind=copy)"
  restores="$(job_count $FAULTS mimeo.dev/run-kind=restore)"
  n="$(valid_entries $FAULTS mimeo.dev/trail=faults)"
  m="$(valid_entries $FAULTS mimeo.dev/trail=faults-disk)"
  before_faults="$(injected_faults)"
  check "api faults: operator restarted with MIMEO_API_FAULTS=0.3" set_api_faults 0.3
  local i
  for i in 1 2; do
    run_now backuptrail/faults $FAULTS
    check "api faults: backup $i completes" until_eq 300 $((n + i)) valid_entries $FAULTS mimeo.dev/trail=faults
    # The policy copies every uncopied original (earlier ones too, if it had not yet).
    check "api faults: the policy copies it" until_eq 300 $((n + i)) valid_entries $FAULTS mimeo.dev/trail=faults-disk
  done
  k -n $FAULTS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: under-api-faults}
spec: {workItem: big, backupTrail: faults, target: {pvc: {claimName: restored, path: api-faults}}}
EOF
  check "api faults: the restore Succeeded" until_eq 300 Succeeded jp restore/under-api-faults $FAULTS '{.status.phase}'
  check "api faults: one Job per backup" test "$(job_count $FAULTS mimeo.dev/run-kind=backup)" = $((backups + 2))
  # One copy run per backup, plus at most one for originals left uncopied before ($((n - m))).
  local copy_runs=$(( $(job_count $FAULTS mimeo.dev/run-kind=copy) - copies ))
  check "api faults: $copy_runs copy Jobs, no run twice" test "$copy_runs" -ge 2 -a "$copy_runs" -le $((2 + (n > m ? 1 : 0)))
  check "api faults: one restore Job" test "$(job_count $FAULTS mimeo.dev/run-kind=restore)" = $((restores + 1))
  check "api faults: the trail's status reports the backup" wait_for 120 bash -c \
    "$BIN/kubectl -n $FAULTS get backuptrail faults -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}' | grep -q BackupSucceeded"
  local injected=$(( $(injected_faults) - before_faults ))
  check "api faults: $injected faults injected into the operator's API calls" test "$injected" -ge 20
  check "api faults: restored data is byte-identical" same_tree $FAULTS same-api-faults big restored/api-faults
  check "api faults: operator restarted without faults" set_api_faults ""
}

can() { k auth can-i "$@" 2>/dev/null || true; }
# all_logs: everything the operator, the workers and the node wrote.
all_logs() {
  if [[ $CLUSTER == node ]]; then
    # Every container's output the kubelet kept (pods of finished Jobs too), and the node's own.
    find "$NODE_DIR/pod-logs" -name '*.log' -exec cat {} +
    cat "$NODE_DIR/kubelet.log" "$NODE_DIR/containerd.log"
    return
  fi
  local ns pod
  for ns in $SYSTEM $QS $FAULTS; do
    for pod in $(k -n $ns get pods -o jsonpath='{.items[*].metadata.name}'); do pod_logs $ns "$pod"; done
  done
}
scenario_rbac() {
  local w="system:serviceaccount:$QS:mimeo-worker" o="system:serviceaccount:$SYSTEM:mimeo-operator"
  local row verb res ns want got
  for row in \
    "$w create catalogentries.mimeo.dev $QS yes" "$w patch catalogentries.mimeo.dev $QS yes" \
    "$w patch catalogentries.mimeo.dev/status $QS yes" "$w delete catalogentries.mimeo.dev $QS no" \
    "$w get secrets $QS no" "$w list secrets $QS no" "$w create jobs.batch $QS no" \
    "$w get pods $QS no" "$w patch restores.mimeo.dev/status $QS no" \
    "$w create catalogentries.mimeo.dev $FAULTS no" "$w update mediaclasses.mimeo.dev $QS no" \
    "$o create jobs.batch $QS yes" "$o patch restores.mimeo.dev/status $QS yes" \
    "$o create events.events.k8s.io $QS yes" "$o create leases.coordination.k8s.io $SYSTEM yes" \
    "$o get secrets $QS yes" "$o list secrets $QS no" "$o delete catalogentries.mimeo.dev $QS yes" "$o patch catalogentries.mimeo.dev $QS yes" "$o delete secrets $QS no" "$o create secrets $QS no" \
    "$o update catalogentries.mimeo.dev $QS no" "$o create pods $QS no"; do
    read -r who verb res ns want <<<"$row"
    local sub=()
    [[ $res == */status ]] && sub=(--subresource=status) res="${res%/status}"
    got="$(can "$verb" "$res" "${sub[@]}" -n "$ns" --as "$who")"
    if [[ "$got" == "$want" ]]; then ok "rbac: ${who##*:} $verb $res in $ns: $got"; else fail "rbac: ${who##*:} $verb $res in $ns: $got, want $want"; fi
  done
  # Pod Security: every namespace enforces restricted, so every worker pod was admitted under
  # it; a dry-run relabel lists existing violations as warnings.
  check "restricted: no existing pod violates the restricted level" bash -c \
    "! $BIN/kubectl label --dry-run=server --overwrite ns $QS $FAULTS pod-security.kubernetes.io/enforce=restricted 2>&1 | grep -qi 'violate'"
  check "restricted: worker Jobs ran in restricted namespaces" test "$(job_count $QS app.kubernetes.io/component=worker)" -gt 0
  # The S3 secret key never shows up anywhere it could leak.
  local leaks
  leaks="$( { all_logs; k get events -A -o yaml; k get catalogentries,restores,mediaclasses,backuptrails,duplicationtrails,duplicationpolicies -A -o yaml; k get jobs -A -o yaml; } | grep -c -e "$S3_SECRET" -e "$E2E_KEY" -e "$E2E_OTHER_KEY" || true)"
  check "secrets: the S3 secret key and the encryption keys appear in no log, event, status, Job or catalog entry" test "$leaks" = 0
}

# ---- scenario: a PVC source that changes while a worker pod backs it up
# A file grows all through the backup and a FIFO sits in the tree: the copy is not a clean
# snapshot, and the catalog entry, the trail's status and an Event say so.
grower_ready() {
  local pod
  pod="$(k -n $QS get pods -l job-name=grower -o jsonpath='{.items[0].metadata.name}')" && pod_logs $QS "$pod" | grep -q filled
}
scenario_changing() {
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: live}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
EOF
  start_pod $QS grower live:/d 'head -c 33554432 /dev/urandom > /d/growing
mkfifo /d/fifo
echo filled
end=$(( $(date +%s) + 240 ))
while [ ! -e /d/stop ] && [ "$(date +%s)" -lt "$end" ]; do echo more >> /d/growing; done'
  check "changing: a pod keeps appending to a 32 MiB file in PVC live" wait_for 120 grower_ready
  k -n $QS apply -f - >/dev/null <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: live}
spec:
  mediaClassName: minio-tapes
  retention: 1d
  workItems: [{name: live, source: {pvc: {claimName: live}}}]
EOF
  check "changing: the backup is committed" until_eq 180 1 valid_entries $QS mimeo.dev/trail=live
  local notes
  notes="$(k -n $QS get catalogentries -l mimeo.dev/trail=live -o jsonpath='{.items[0].spec.notes}')"
  check "changing: the entry notes the file that grew while read ($notes)" grep -q 'growing: grew while being read' <<<"$notes"
  check "changing: the entry notes the FIFO it skipped" grep -q 'skipped fifo' <<<"$notes"
  check "changing: the trail's status.lastRunNotes names work item and file" wait_for 60 bash -c \
    "$BIN/kubectl -n $QS get backuptrail live -o jsonpath='{.status.lastRunNotes}' | grep -q 'live: growing: grew'"
  check "changing: its Ready condition points at the notes" bash -c \
    "$BIN/kubectl -n $QS get backuptrail live -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q lastRunNotes"
  check "changing: a Warning Event says so" wait_for 30 bash -c \
    "$BIN/kubectl -n $QS get events --field-selector involvedObject.name=live,type=Warning -o jsonpath='{.items[*].note}{.items[*].message}' | grep -q lastRunNotes"
  in_pod $QS grower-stop live:/d 'touch /d/stop' >/dev/null || true
}

# ---- scenario: both_drivers
# One sequence of resources through both drivers: the operator in the cluster and
# `mimeo local apply` on this machine, each on its own prefixes of the same MinIO (reached
# here through a port-forward), both backing up the same source objects. What each driver
# records must agree: catalog entries (work item, trail, role, state, bytes, digest), trail
# instance counts and the restores (phase, copy chosen, bytes, damaged); every restore is
# byte-identical to the source.
both_yaml() { # ENDPOINT DRIVER VAULT_AVAILABLE RESTORE SOURCE
  local s3="endpoint: \"$1\", region: us-east-1, forcePathStyle: true, credentialsSecretRef: {name: minio-credentials}"
  cat <<EOF
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: both-tapes}
spec:
  backend: {s3: {bucket: mimeo-tapes, prefix: both-$2/tapes, $s3}}
  volumeCapacity: 8Mi
  blockSize: 64Ki
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: both-vault}
spec:
  backend: {s3: {bucket: mimeo-vault, prefix: both-$2/vault, $s3}}
  volumeCapacity: 8Mi
  blockSize: 256Ki
  available: $3
---
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: both-nightly}
spec:
  mediaClassName: both-tapes
  retention: 30d
  streams: 2
  workItems:
    - {name: app-s, source: {s3: {bucket: mimeo-tapes, prefix: both-src/app-s/, $s3}}}
    - {name: app-t, source: {s3: {bucket: mimeo-tapes, prefix: both-src/app-t/, $s3}}}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: both-vault-seq}
spec: {mediaClassName: both-vault, retention: 7y, layout: Sequential}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: both-to-vault}
spec: {sourceTrails: [both-nightly], targets: [both-vault-seq]}
---
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: both-$4}
spec:
  workItem: app-s
  source: $5
  target: {s3: {bucket: mimeo-vault, prefix: both-$2/restored/$4/, $s3}}
EOF
}
# both_view: what a driver recorded (JSON Lists of entries, trails and restores on stdin, one
# per line), reduced to what both must agree on, as sorted JSON.
both_view() {
  python3 -c '
import json, sys
out = []
for line in sys.stdin:
    for i in json.loads(line)["items"]:
        k, s, st = i["kind"], i.get("spec", {}), i.get("status") or {}
        if k == "CatalogEntry" and s["trail"].startswith("both-"):
            out.append([k, s["workItem"], s["trail"], s["role"], st.get("state", "Valid"),
                        s["bytes"], s.get("fileBytes"), s["digest"]])
        elif k in ("BackupTrail", "DuplicationTrail") and i["metadata"]["name"].startswith("both-"):
            out.append([k, i["metadata"]["name"], st.get("instances")])
        elif k == "Restore" and i["metadata"]["name"].startswith("both-"):
            rf = st.get("restoredFrom") or {}
            out.append([k, i["metadata"]["name"], st.get("phase"), rf.get("role"),
                        rf.get("trail"), st.get("bytes"), st.get("damaged", [])])
print(json.dumps(sorted(out, key=str), indent=1))'
}
# both_driver_view GET...: the view of one driver, whose `GET KIND -o json` prints a List.
both_driver_view() {
  local kind
  for kind in catalogentries backuptrails duplicationtrails restores; do
    "$@" get "$kind" -o json | tr -d '\n'; echo
  done | both_view
}
both_local() { "$MIMEO_LOCAL" local --state "$WORK/both-state" "$@"; }
both_mc() { MC_CONFIG_DIR="$WORK/mc" "$BIN/mc" "$@"; }
# both_local_yaml VAULT_AVAILABLE RESTORE SOURCE: the cluster's credentials Secret, then the
# resources.
both_local_yaml() {
  k -n $QS get secret minio-credentials -o json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s["metadata"]["name"]}, "data": s["data"]}))'
  echo ---
  both_yaml "$BOTH_EP" local "$1" "$2" "$3"
}
scenario_both_drivers() {
  MIMEO_LOCAL="${MIMEO_BIN:-$ROOT/target/debug/mimeo}"
  local port
  port="$(free_port)"
  k -n $MINIO port-forward svc/minio "$port:9000" >"$WORK/both-port-forward.log" 2>&1 &
  E2E_PIDS+=("$!:port-forward-minio")
  BOTH_EP="http://127.0.0.1:$port"
  check "both: MinIO reachable through a port-forward ($BOTH_EP)" \
    wait_for 30 both_mc alias set both "$BOTH_EP" "$S3_KEY" "$S3_SECRET"
  mkdir -p "$WORK/both-src/app-s/sub" "$WORK/both-src/app-t"
  head -c 3000000 /dev/urandom >"$WORK/both-src/app-s/big.bin"
  head -c 7000 /dev/urandom >"$WORK/both-src/app-s/sub/small.bin"
  head -c 1500000 /dev/urandom >"$WORK/both-src/app-t/t.bin"
  check "both: source objects uploaded" both_mc cp --quiet --recursive "$WORK/both-src/" both/mimeo-tapes/both-src/
  # Step 1: everything at once, with a restore of the original: the operator's restore waits
  # for the trail's first backup (local mode runs the backup first).
  both_yaml "$S3_ENDPOINT" cluster true r0 Original | k -n $QS apply -f - >/dev/null
  # (Waiting is brief and may be over before it is looked at: this checks it never fails.)
  check "both: the operator's both-r0 is waiting for the first backup, or done" wait_for 60 bash -c \
    "$BIN/kubectl -n $QS get restore both-r0 -o jsonpath='{.status.conditions[0].reason} {.status.phase}' | grep -Eq 'WaitingForBackup|Succeeded'"
  check "both: the operator restored both-r0" until_eq 240 Succeeded restore_field both-r0 '{.status.phase}'
  check "both: the operator copied both items" until_eq 240 2 valid_entries $QS mimeo.dev/trail=both-vault-seq
  both_local_yaml true r0 Original >"$WORK/both-0.yaml"
  check "both: local mode restored both-r0" both_local apply -f "$WORK/both-0.yaml"
  # Step 2: a restore with Auto reads the duplicate.
  both_yaml "$S3_ENDPOINT" cluster true r1 Auto | k -n $QS apply -f - >/dev/null
  check "both: the operator restored both-r1" until_eq 240 Succeeded restore_field both-r1 '{.status.phase}'
  both_local_yaml true r1 Auto >"$WORK/both-1.yaml"
  check "both: local mode restored both-r1" both_local apply -f "$WORK/both-1.yaml"
  # Step 3: the vault away; a restore with Auto falls back to the original.
  both_yaml "$S3_ENDPOINT" cluster false r2 Auto | k -n $QS apply -f - >/dev/null
  check "both: the operator restored both-r2" until_eq 240 Succeeded restore_field both-r2 '{.status.phase}'
  both_local_yaml false r2 Auto >"$WORK/both-2.yaml"
  check "both: local mode restored both-r2" both_local apply -f "$WORK/both-2.yaml"
  both_driver_view k -n $QS >"$WORK/both-cluster.json"
  both_driver_view both_local >"$WORK/both-local.json"
  check "both: 4 catalog entries recorded" test "$(grep -c '"CatalogEntry"' "$WORK/both-local.json")" = 4
  check "both: the operator and local mode recorded the same entries, trails and restores" \
    diff -u "$WORK/both-cluster.json" "$WORK/both-local.json"
  check "both: both-r1 read the duplicate, both-r2 the original (the vault away)" python3 -c '
import json, sys
rows = {r[1]: r for r in json.load(open(sys.argv[1])) if r[0] == "Restore"}
assert rows["both-r1"][3:5] == ["Duplicate", "both-vault-seq"], rows
assert rows["both-r2"][3:5] == ["Original", "both-nightly"], rows' "$WORK/both-local.json"
  local d
  for d in cluster/restored/r0 cluster/restored/r1 cluster/restored/r2 local/restored/r0 local/restored/r1 local/restored/r2; do
    check "both: $d is byte-identical to the source" both_same "$d"
  done
}
# both_same PREFIX: the restore under mimeo-vault/both-PREFIX/ equals the source of app-s.
both_same() {
  mkdir -p "$WORK/both-out/$1"
  both_mc cp --quiet --recursive "both/mimeo-vault/both-$1/" "$WORK/both-out/$1/" >/dev/null &&
    diff -r "$WORK/both-src/app-s" "$WORK/both-out/$1"
}

ALL=(install quickstart restore encryption damaged_copy forged_copy expiry rescan invalid kill s3_outage apiserver_restart api_faults rbac changing both_drivers)
# Scenarios build on the resources of install and quickstart: those always run first.
WANT=(install quickstart "${@//-/_}")
[[ $# -gt 0 ]] || WANT=("${ALL[@]}")
for s in "${ALL[@]}"; do
  [[ " ${WANT[*]} " == *" $s "* ]] || continue
  t=$SECONDS
  echo "# $s"
  "scenario_$s"
  echo "# $s took $((SECONDS - t))s"
  if [[ ($s == install || $s == quickstart) && $FAILED -gt 0 ]]; then
    say "stopping: the other scenarios need $s"
    break
  fi
done
echo "$NAME: $PASSED passed, $FAILED failed in $((SECONDS - T0))s"
if [[ $CLUSTER == external && $FAILED -eq 0 && -z "${MIMEO_E2E_KEEP:-}" ]]; then
  say "removing the release and the namespaces from the cluster"
  "$BIN/helm" uninstall -n $SYSTEM mimeo --wait >/dev/null || true
  k delete namespace $QS $FAULTS $MINIO $SYSTEM --wait=false >/dev/null || true
fi
[[ $FAILED -eq 0 ]]
