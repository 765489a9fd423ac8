#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need (a real S3 server,
# s3s-fs, which the tests start on loopback), then checks formatting and lints, then runs every
# test. One build serves clippy and the tests' dependencies (shared target/).
set -euo pipefail
cd "$(dirname "$0")/.."

for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" ||
        rustup component add "$component" || true
done
scripts/install-test-tools.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
