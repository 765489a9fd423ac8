#!/usr/bin/env bash
# Builds the end-to-end tools into e2e/bin/ from Go modules (no binary downloads):
#   mimeo-controlplane  etcd (embedded) + kube-apiserver + kube-controller-manager + kube-scheduler (e2e/controlplane)
#   kubectl, kubelet, kube-proxy  k8s.io/kubernetes/cmd/..., the API server's version (e2e/controlplane's go.mod)
#   helm                helm.sh/helm/v3/cmd/helm@$HELM_VERSION
#   coredns             github.com/coredns/coredns@$COREDNS_VERSION   (cluster DNS, as a pod)
#   local-path-provisioner  github.com/rancher/local-path-provisioner@$LPP_VERSION (kind's StorageClass)
#   minio, mc           github.com/minio/minio and github.com/minio/mc at pinned module versions: the
#                       suite's S3 server, as a pod (AGPL: a test server only, never linked or shipped)
# and installs the real node's runtime from Debian's packages when missing: containerd, runc,
# the CNI plugins, iptables and conntrack (kube-proxy).
#
# Idempotent and cached: a binary is rebuilt only when its inputs (sources, go.mod, go.sum,
# versions, flags) change; Go's own build cache (GOCACHE) makes a rebuild incremental.
# Usage: bash e2e/tools.sh            (prints how long each build took)
#        bash e2e/tools.sh minio      (only the named tools, no packages: the Rust tests' MinIO)
#        MIMEO_E2E_FORCE=1 bash e2e/tools.sh   (ignore the stamps, still uses GOCACHE)
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${MIMEO_E2E_BIN:-$E2E/bin}"
CP="$E2E/controlplane"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
LPP_VERSION="${LPP_VERSION:-v0.0.30}"
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
MC_VERSION="${MC_VERSION:-v0.0.0-20250313080218-cf909e1063a9}"
# Keep in step with the k8s.io/kubernetes version in controlplane/go.mod.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$CP/go.mod")"
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"

ONLY=" $* "
command -v go >/dev/null || { echo "tools.sh: go is not installed (Go >= 1.24 needed)" >&2; exit 1; }
mkdir -p "$BIN"
if [[ -z "$*" ]] && ! command -v containerd >/dev/null || ! command -v runc >/dev/null || [[ ! -x /usr/lib/cni/bridge ]] ||
  ! command -v iptables >/dev/null || ! command -v conntrack >/dev/null; then
  echo "tools.sh: installing containerd, runc, the CNI plugins, iptables and conntrack from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    containerd runc containernetworking-plugins iptables conntrack >/dev/null
fi
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# The default GOPROXY is needed (the module proxy is reachable, direct VCS is not).
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

stamp_of() { # inputs... -> hash
  { go version; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1
}

# build NAME STAMP CMD...: run CMD unless bin/NAME exists with the same stamp.
build() {
  local name="$1" stamp="$2"; shift 2
  local sfile="$BIN/.$name.stamp"
  [[ "$ONLY" == "  " || "$ONLY" == *" $name "* ]] || return 0
  if [[ -z "${MIMEO_E2E_FORCE:-}" && -x "$BIN/$name" && -f "$sfile" && "$(cat "$sfile")" == "$stamp" ]]; then
    echo "tools.sh: $name up to date (0s)"
    return 0
  fi
  local t0=$SECONDS
  echo "tools.sh: building $name ..."
  rm -f "$sfile"
  "$@"
  echo "$stamp" > "$sfile"
  echo "tools.sh: built $name in $((SECONDS - t0))s"
}

VERSION_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  VERSION_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR -X $pkg.gitTreeState=clean"
done
K8S_LDFLAGS="-s -w$VERSION_LDFLAGS"

cp_inputs() {
  (cd "$CP" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)
}

T0=$SECONDS
CP_STAMP="$(stamp_of controlplane "$(cp_inputs)" "$K8S_LDFLAGS")"
build mimeo-controlplane "$CP_STAMP" \
  bash -c 'cd "$1" && go build -ldflags "$2" -o "$3" .' _ "$CP" "$K8S_LDFLAGS" "$BIN/mimeo-controlplane"

# kubectl, kubelet and kube-proxy: `tool` lines of the control plane's go.mod, so they are exactly
# the API server's version.
for tool in kubectl kubelet kube-proxy; do
  build "$tool" "$(stamp_of "$tool" "$(cd "$CP" && cat go.mod go.sum | sha256sum)" "$K8S_LDFLAGS")" \
    bash -c 'cd "$1" && go build -ldflags "$2" -o "$3" "k8s.io/kubernetes/cmd/$4"' _ "$CP" "$K8S_LDFLAGS" "$BIN/$tool" "$tool"
done

# helm is built from its own module (its own go.mod and go.sum, checked by the checksum
# database), with the ldflags its Makefile sets.
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR"
HELM_STAMP="$(stamp_of helm "$HELM_VERSION" "$HELM_LDFLAGS")"
build helm "$HELM_STAMP" \
  env GOBIN="$BIN" go install -ldflags "$HELM_LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

# The cluster's add-ons, each from its own module (go.mod and go.sum checked by the checksum
# database), static (their images hold no C library) and stripped.
build coredns "$(stamp_of static-coredns "$COREDNS_VERSION")" \
  env GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
build local-path-provisioner "$(stamp_of static-lpp "$LPP_VERSION")" \
  env GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "-s -w" "github.com/rancher/local-path-provisioner@$LPP_VERSION"
build minio "$(stamp_of static-minio "$MINIO_VERSION")" \
  env GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
build mc "$(stamp_of static-mc "$MC_VERSION")" \
  env GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "-s -w" "github.com/minio/mc@$MC_VERSION"

echo "tools.sh: all tools ready in $((SECONDS - T0))s: $(ls "$BIN" | tr '\n' ' ')"
[[ "$ONLY" == "  " ]] || exit 0
"$BIN/kubectl" version --client 2>/dev/null
"$BIN/helm" version --short
