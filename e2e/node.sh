# A real Kubernetes node on this machine, made of what kind's node image is made of: containerd
# and runc (Debian's packages), the CNI bridge plugin, kubelet and kube-proxy (e2e/tools.sh, the
# API server's version), CoreDNS and local-path-provisioner as pods (e2e/cluster/addons.yaml),
# images imported from OCI archives (no registry). Sourced by e2e/lib.sh; needs root.
#
# Network, all on this machine: the bridge mimeo0 holds 10.244.0.1/24, the node's address, where
# the API server listens (start_controlplane --address); pods get 10.244.0.0/24 from the CNI
# bridge plugin, each in a network namespace of its own; Services are 10.0.0.0/24 (kube-proxy,
# iptables), cluster DNS 10.0.0.10. No masquerading and no upstream DNS: nothing routes off the
# machine. One real node at a time per machine (the bridge, iptables chains and /run state are
# the host's).
# shellcheck shell=bash

NODE_NAME=e2e-node
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
NODE_BRIDGE=mimeo0
NODE_RUN=/run/mimeo-e2e # containerd's state: runc bundles and shim sockets want short paths
CTR_SOCK="$NODE_RUN/containerd.sock"

ctr_() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# node_network: the bridge with the node's address (before the API server binds to it).
node_network() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Pod traffic to Services crosses the bridge: iptables must see it (kube-proxy's DNAT).
  modprobe br_netfilter 2>/dev/null || true
  # The host's values, put back by stop_node: forwarding stays as the machine had it.
  NODE_SYSCTLS="$(sysctl -e net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward | tr -d ' ')"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
}

# start_node DIR: containerd, kubelet and kube-proxy for the control plane in $DATA, the add-on
# images imported, CoreDNS and local-path-provisioner running. Sets NODE_DIR.
start_node() {
  NODE_DIR="$1"
  local n="$NODE_DIR"
  if [[ -S $CTR_SOCK ]] && ctr_ version >/dev/null 2>&1; then
    say "a node is running on this machine already (containerd at $CTR_SOCK): stop it first"
    NODE_DIR="" # not ours to clean up
    exit 1
  fi
  mkdir -p "$n/cni/net.d" "$n/local-path" "$NODE_RUN"
  E2E_LOGS+=("$n/kubelet.log" "$n/containerd.log" "$n/kube-proxy.log")
  : >"$n/resolv.conf" # pods with dnsPolicy Default (CoreDNS) get no upstream resolver
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd"
state = "$NODE_RUN/state"
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:e2e"
  # This machine's root lacks CAP_SYS_RESOURCE: an OOM score below containerd's own is refused.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
EOF
  cat >"$n/cni/net.d/10-mimeo.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mimeo-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$n/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  containerd --config "$n/containerd.toml" >"$n/containerd.log" 2>&1 &
  E2E_PIDS+=("$!:containerd")
  wait_for 30 ctr_ version || { say "containerd did not start"; exit 1; }
  local archive
  for archive in "$E2E/.cache/images/"*_*.tar "$E2E/.cache/mimeo-image.tar"; do
    ctr_ images import "$archive" >/dev/null
  done
  say "images: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DATA/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false # this machine has cgroup v1; 1.34 is the last minor that runs there by default
failSwapOn: false
containerRuntimeEndpoint: unix://$CTR_SOCK
clusterDNS: [10.0.0.10]
clusterDomain: cluster.local
resolvConf: $n/resolv.conf
podLogsDir: $n/pod-logs
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# Imported images cannot be pulled again: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
EOF
  "$BIN/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$DATA/node-$NODE_NAME.kubeconfig" \
    --root-dir "$n/kubelet" --cert-dir "$n/kubelet-pki" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" >"$n/kubelet.log" 2>&1 &
  E2E_PIDS+=("$!:kubelet")

  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DATA/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
EOF
  "$BIN/kube-proxy" --config "$n/kube-proxy.yaml" >"$n/kube-proxy.log" 2>&1 &
  E2E_PIDS+=("$!:kube-proxy")

  wait_for 120 k wait node/$NODE_NAME --for=condition=Ready --timeout=1s ||
    { say "node $NODE_NAME not Ready"; exit 1; }
  sed -e "s#@LOCAL_PATH@#$n/local-path#" "$E2E/cluster/addons.yaml" | k apply -f - >/dev/null
  k -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null &&
    k -n local-path-storage rollout status deploy/local-path-provisioner --timeout=120s >/dev/null ||
    { say "add-ons not ready"; k get pods -A -o wide >&2; exit 1; }
}

# stop_node: everything the node started is gone: pods' containers and shims, their network
# namespaces and mounts, kube-proxy's iptables chains, the bridge. (The processes themselves
# were stopped by cleanup, newest first.)
stop_node() {
  [[ -n "${NODE_DIR:-}" ]] || return 0
  local pid
  # containerd's shims outlive it, with the pods' processes: kill them all.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" || true); do
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  # kube-proxy's and the kubelet's chains (KUBE-*), and every rule that jumps to one.
  local t
  for t in filter nat mangle; do
    iptables-save -t "$t" | grep -v -e '^:KUBE-' -e ' -j KUBE-' -e '^-A KUBE-' | iptables-restore -T "$t" 2>/dev/null || true
  done
  local m
  # Lazily, deepest first: the kubelet's volume mounts, the snapshots, the netns files.
  for m in $(awk -v d="$NODE_DIR" -v r="$NODE_RUN" '$5 ~ "^" d || $5 ~ "^" r {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for m in $(awk '$5 ~ "^/run/netns/cni-" {print $5}' /proc/self/mountinfo); do
    umount -l "$m" 2>/dev/null || true
    rm -f "$m"
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  rm -rf "$NODE_RUN"
  [[ -z "${NODE_SYSCTLS:-}" ]] || sysctl -qw $NODE_SYSCTLS || true
}
