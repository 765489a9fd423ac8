#!/usr/bin/env bash
# Builds the Mimeo image from the repository's Dockerfile with buildah, without any image
# registry: the base images are made here from Debian packages with mmdebstrap and passed
# through the Dockerfile's build arguments (docs/image.md).
#
#   bash e2e/image.sh          # the Dockerfile's `prebuilt` target: the runtime stage around a
#                              # binary built on this host (MIMEO_BIN, default target/release/mimeo)
#   bash e2e/image.sh --full   # the whole Dockerfile: cargo build --release in the builder stage,
#                              # on a builder base holding this host's Rust toolchain
#
# Then it runs the image once with buildah (runc): `mimeo --version` as the image's own user.
# Output: localhost/mimeo:dev in buildah's storage (vfs driver: no kernel overlay needed) and
# e2e/.cache/mimeo-image.tar, an OCI archive for `ctr -n k8s.io images import`.
# Needs root (buildah's storage, mmdebstrap's chroot); installs buildah and mmdebstrap from
# Debian's packages when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/e2e/.cache"
SUITE="${DEBIAN_SUITE:-bookworm}"   # the glibc of the host binary and of the runtime base
IMAGE="${MIMEO_IMAGE:-localhost/mimeo:dev}"
RUNTIME_BASE="localhost/mimeo-runtime-base:$SUITE"
RUST_BASE="localhost/mimeo-rust-base:$SUITE"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
FULL=0
[[ "${1:-}" == --full ]] && FULL=1
mkdir -p "$CACHE"
T0=$SECONDS
phase() { echo "image.sh: $* ($((SECONDS - T0))s)"; }

if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
  phase "installing buildah and mmdebstrap from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    buildah mmdebstrap uidmap >/dev/null
fi

# image_exists NAME
image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# base_image NAME TARBALL [buildah config args]: an image holding exactly the root
# filesystem in TARBALL.
base_image() {
  local name="$1" tarball="$2" ctr
  shift 2
  ctr="$(buildah from scratch)"
  buildah add "$ctr" "$tarball" / >/dev/null
  if [[ $# -gt 0 ]]; then buildah config "$@" "$ctr"; fi
  buildah commit -q "$ctr" "$name" >/dev/null
  buildah rm "$ctr" >/dev/null
}

# The runtime base, what distroless/cc gives: glibc, libgcc_s and CA certificates; packages
# extracted only (no shell, no package manager, no maintainer scripts), so the certificate
# bundle is the host's, made by its ca-certificates package, copied in (the extract variant
# runs no hooks). The tag holds a hash of the recipe and of that bundle: a base made another
# way is never reused.
RUNTIME_RECIPE=(--variant=extract --include=libc6,libgcc-s1,ca-certificates)
RUNTIME_BASE="$RUNTIME_BASE-$( { printf '%s\n' "${RUNTIME_RECIPE[@]}"; cat /etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-12)"
if ! image_exists "$RUNTIME_BASE"; then
  phase "making $RUNTIME_BASE with mmdebstrap"
  mmdebstrap --quiet "${RUNTIME_RECIPE[@]}" "$SUITE" "$CACHE/runtime-base.tar"
  ctr="$(buildah from scratch)"
  buildah add "$ctr" "$CACHE/runtime-base.tar" / >/dev/null
  buildah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  buildah commit -q "$ctr" "$RUNTIME_BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -f "$CACHE/runtime-base.tar"
fi
# The image must trust what the host trusts (HTTPS to S3 and the API server): checked, not assumed.
ctr="$(buildah from "$RUNTIME_BASE")"
if ! cmp -s "$(buildah mount "$ctr")/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt; then
  echo "image.sh: $RUNTIME_BASE lacks this host's CA bundle" >&2
  exit 1
fi
buildah umount "$ctr" >/dev/null && buildah rm "$ctr" >/dev/null

args=(--build-arg "RUNTIME_IMAGE=$RUNTIME_BASE")
if ((FULL)); then
  # The builder base, what rust:1.95-bookworm gives: a C toolchain for build scripts and this
  # host's Rust toolchain under /usr/local (CARGO_HOME=/usr/local/cargo as in that image), and
  # the host's CA bundle, so cargo reaches the crate registry the way the host does (through
  # a proxy with its own CA, on these machines).
  if ! image_exists "$RUST_BASE"; then
    sysroot="$(rustc --print sysroot)"
    phase "making $RUST_BASE with mmdebstrap and the toolchain at $sysroot"
    mmdebstrap --quiet --variant=apt --include=gcc,libc6-dev,binutils,ca-certificates \
      --customize-hook="mkdir -p \"\$1/usr/local/cargo/bin\" && cp -a '$sysroot' \"\$1/usr/local/rust\" && ln -s /usr/local/rust/bin/cargo /usr/local/rust/bin/rustc \"\$1/usr/local/cargo/bin/\"" \
      --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"' \
      "$SUITE" "$CACHE/rust-base.tar"
    base_image "$RUST_BASE" "$CACHE/rust-base.tar" \
      --env CARGO_HOME=/usr/local/cargo \
      --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -f "$CACHE/rust-base.tar"
  fi
  args+=(--build-arg "RUST_IMAGE=$RUST_BASE")
else
  bin="${MIMEO_BIN:-$ROOT/target/release/mimeo}"
  [[ -x "$bin" ]] || { echo "image.sh: no binary at $bin (cargo build --release, or MIMEO_BIN)" >&2; exit 1; }
  mkdir -p "$ROOT/dist"
  strip --strip-debug -o "$ROOT/dist/mimeo" "$bin"
  args+=(--target prebuilt)
fi

phase "building $IMAGE from the Dockerfile"
buildah bud --quiet --network host --layers "${args[@]}" -t "$IMAGE" "$ROOT" >/dev/null
phase "running $IMAGE once"
ctr="$(buildah from "$IMAGE")"
user="$(buildah inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")"
# No network: the check needs none, and buildah would otherwise set up a CNI bridge.
version="$(buildah run --network none --user "$user" "$ctr" -- /usr/local/bin/mimeo --version)"
buildah rm "$ctr" >/dev/null
echo "image.sh: $IMAGE runs as $user: $version"
rm -f "$CACHE/mimeo-image.tar"
buildah push -q "$IMAGE" "oci-archive:$CACHE/mimeo-image.tar:$IMAGE"
phase "done: $IMAGE, $(du -h "$CACHE/mimeo-image.tar" | cut -f1) as $CACHE/mimeo-image.tar"
