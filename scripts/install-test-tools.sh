#!/usr/bin/env bash
# Installs the external tools the test suites need, skipping those already present at the pinned
# version. Safe to run repeatedly. Add a tool as an `install_<tool>` function and call it from main.
set -euo pipefail

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

# Prints the path of an installed tool: first on PATH, then in cargo's bin directory.
find_tool() {
    command -v "$1" 2>/dev/null || { [[ -x "$CARGO_BIN/$1" ]] && echo "$CARGO_BIN/$1"; } || true
}

# install_crate NAME VERSION MINUTES [CARGO ARGS...]: `cargo install NAME@VERSION --locked`
# unless NAME --version already prints "NAME VERSION".
install_crate() {
    local name=$1 version=$2 minutes=$3 bin
    shift 3
    bin="$(find_tool "$name")"
    if [[ -n "$bin" ]] && "$bin" --version 2>/dev/null | grep -x "$name $version" >/dev/null; then
        echo "$name $version: already installed ($bin)"
        return
    fi
    echo "$name $version: installing (about $minutes minutes)"
    cargo install "$name@$version" --locked "$@"
}

main() {
    # s3s-fs: a real S3 server on loopback for the S3 tests (tests/common/s3server.rs).
    install_crate s3s-fs 0.14.1 3 --features binary
    # MinIO: the S3 server users name, for the S3 tests that run on it too (built from its Go
    # module into e2e/bin/, as the e2e suite's MinIO pod is; AGPL, a test server only). The
    # control plane and kubectl: the Rust tests that need a real API server
    # (tests/common/controlplane.rs). The e2e suite uses the same builds.
    bash "$(dirname "$0")/../e2e/tools.sh" minio mimeo-controlplane kubectl
    # cargo-deny: licences, bans and sources of the dependency graph (deny.toml).
    install_crate cargo-deny 0.20.2 7
}

main "$@"
