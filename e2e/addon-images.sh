#!/usr/bin/env bash
# Builds the images of the e2e cluster's add-ons without any image registry, as OCI archives in
# e2e/.cache/images/ for `ctr images import` on the real node (e2e/node.sh):
#   localhost/e2e-tools:dev     busybox (Debian's busybox-static): the suite's data and check pods,
#                               and local-path-provisioner's helper pods
#   localhost/pause:e2e         the pod sandbox: catatonit -P (Debian's catatonit, what podman uses)
#   localhost/coredns:e2e       CoreDNS, cluster DNS
#   localhost/local-path-provisioner:e2e  kind's default StorageClass
#   localhost/minio:e2e, localhost/mc:e2e  the suite's S3 server and its client (AGPL: test only)
# Each is one busybox layer (from the Debian packages, extracted) and, where it has one, a layer
# holding its binary from e2e/bin (e2e/tools.sh). buildah (vfs storage) assembles them.
# Cached: an archive is rebuilt only when its inputs change.
set -euo pipefail
E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${MIMEO_E2E_BIN:-$E2E/bin}"
OUT="$E2E/.cache/images"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
mkdir -p "$OUT"
T0=$SECONDS

if ! command -v buildah >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah uidmap >/dev/null
fi

# The busybox root filesystem, from Debian's packages (downloaded, not installed on the host).
DEBS="$E2E/.cache/debs"
if [[ ! -f "$OUT/base.tar" ]]; then
  rm -rf "$DEBS" && mkdir -p "$DEBS"
  (cd "$DEBS" && apt-get download busybox-static catatonit >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$DEBS" && apt-get download busybox-static catatonit >/dev/null)
  }
  rootfs="$DEBS/rootfs"
  mkdir -p "$rootfs/tmp" "$rootfs/etc"
  for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$rootfs"; done
  chroot "$rootfs" /bin/busybox --install -s /bin
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  tar -C "$rootfs" -cf "$OUT/base.tar.tmp" . && mv "$OUT/base.tar.tmp" "$OUT/base.tar"
  rm -rf "$DEBS"
fi

# image NAME BINARY|- ENTRYPOINT-JSON: builds NAME from the busybox layer (and BINARY in
# /usr/local/bin) into $OUT/NAME.tar, unless that archive was built from the same inputs.
image() {
  local name="$1" binary="$2" entrypoint="$3" file stamp ctr
  file="$OUT/$(echo "${name#localhost/}" | tr ':/' '__').tar"
  stamp="$( { sha256sum "$OUT/base.tar" | cut -d' ' -f1; [[ $binary == - ]] || sha256sum "$binary" | cut -d' ' -f1; echo "$entrypoint"; } | sha256sum | cut -d' ' -f1)"
  if [[ -f "$file" && "$(cat "$file.stamp" 2>/dev/null)" == "$stamp" ]]; then return 0; fi
  [[ $binary == - || -x $binary ]] || { echo "addon-images.sh: $binary missing: run bash e2e/tools.sh" >&2; exit 1; }
  ctr="$(buildah from scratch)"
  buildah add "$ctr" "$OUT/base.tar" / >/dev/null
  [[ $binary == - ]] || buildah copy --chmod 0755 "$ctr" "$binary" "/usr/local/bin/$(basename "$binary")" >/dev/null
  buildah config --env PATH=/usr/local/bin:/usr/bin:/bin --entrypoint "$entrypoint" --cmd '' "$ctr"
  buildah commit -q "$ctr" "$name" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -f "$file"
  buildah push -q --disable-compression "$name" "oci-archive:$file:$name"
  echo "$stamp" >"$file.stamp"
  echo "addon-images.sh: $name ($(du -h "$file" | cut -f1), $((SECONDS - T0))s)"
}

image localhost/e2e-tools:dev - '[]'
image localhost/pause:e2e - '["/usr/bin/catatonit", "-P"]'
image localhost/coredns:e2e "$BIN/coredns" '["/usr/local/bin/coredns"]'
image localhost/local-path-provisioner:e2e "$BIN/local-path-provisioner" '[]'
image localhost/minio:e2e "$BIN/minio" '["/usr/local/bin/minio"]'
image localhost/mc:e2e "$BIN/mc" '[]'
echo "addon-images.sh: images ready in $((SECONDS - T0))s"
