#!/usr/bin/env bash
# Installs the external tools the test suites need, skipping those already present at the pinned
# version. Safe to run repeatedly. Add a tool as an `install_<tool>` function and call it from main.
set -euo pipefail

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

# Prints the path of an installed tool: first on PATH, then in cargo's bin directory.
find_tool() {
    command -v "$1" 2>/dev/null || { [[ -x "$CARGO_BIN/$1" ]] && echo "$CARGO_BIN/$1"; } || true
}

# s3s-fs: a real S3 server on loopback for tests/s3_store.rs (tests/common/s3server.rs).
S3S_FS_VERSION=0.14.1
install_s3s_fs() {
    local bin
    bin="$(find_tool s3s-fs)"
    if [[ -n "$bin" ]] && "$bin" --version 2>/dev/null | grep -x "s3s-fs $S3S_FS_VERSION" >/dev/null; then
        echo "s3s-fs $S3S_FS_VERSION: already installed ($bin)"
        return
    fi
    echo "s3s-fs $S3S_FS_VERSION: installing (about 3 minutes)"
    cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked
}

# cargo-deny: licences, bans and sources of the dependency graph (deny.toml).
CARGO_DENY_VERSION=0.20.2
install_cargo_deny() {
    local bin
    bin="$(find_tool cargo-deny)"
    if [[ -n "$bin" ]] && "$bin" --version 2>/dev/null | grep -x "cargo-deny $CARGO_DENY_VERSION" >/dev/null; then
        echo "cargo-deny $CARGO_DENY_VERSION: already installed ($bin)"
        return
    fi
    echo "cargo-deny $CARGO_DENY_VERSION: installing (about 7 minutes)"
    cargo install "cargo-deny@$CARGO_DENY_VERSION" --locked
}

main() {
    install_s3s_fs
    install_cargo_deny
}

main "$@"
