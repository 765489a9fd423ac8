#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need (a real S3 server,
# s3s-fs, which the tests start on loopback), then checks formatting and lints, then runs every
# test (and that the README's benchmark figures are those of bench/results.json). One build serves clippy and the tests' dependencies (shared target/). Then the
# end-to-end suite: a real control plane and a real node (kubelet, kube-proxy, containerd, runc,
# CNI), kubectl, helm, CoreDNS, local-path-provisioner and MinIO built from Go modules or
# installed from Debian's packages (e2e/tools.sh, cached), the image built from the Dockerfile
# around the binary the tests just built (buildah, e2e/image.sh) and the add-ons' images
# (e2e/addon-images.sh), imported into containerd; the smoke checks and the scenarios
# (e2e/README.md). In between: cargo deny (licences, bans,
# sources, advisories) and the fuzz targets for MIMEO_FUZZ_SECONDS (30) each. MIMEO_SKIP_FUZZ=1 skips the
# fuzzing (its cold build takes about 13 minutes); MIMEO_SKIP_E2E=1 stops before the e2e suite.
set -euo pipefail
cd "$(dirname "$0")/.."

for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep "^$component" >/dev/null ||
        rustup component add "$component" || true
done
scripts/install-test-tools.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== the README's table of figures is the one bench/results.json gives"
python3 bench/report.py --check
# The chaos feature (API fault injection) is on in the test build: the e2e image is made from
# this build's binary, and its api_faults scenario needs the injector.
echo "== cargo clippy --all-targets --features chaos -- -D warnings"
cargo clippy --all-targets --features chaos -- -D warnings
echo "== cargo test --features chaos"
cargo test --all-targets --features chaos
echo "== cargo deny check licenses bans sources"
cargo deny check licenses bans sources
echo "== cargo deny check advisories (GitHub, or the RustSec snapshot in deny/)"
bash scripts/advisories.sh
if [[ -z "${MIMEO_SKIP_FUZZ:-}" ]]; then
    echo "== fuzzing, time-boxed (docs/fuzzing.md)"
    bash scripts/fuzz.sh "${MIMEO_FUZZ_SECONDS:-30}"
fi

if [[ -n "${MIMEO_SKIP_E2E:-}" ]]; then
    echo "== e2e skipped (MIMEO_SKIP_E2E)"
    exit 0
fi
echo "== e2e tools (control plane, kubelet, kube-proxy, kubectl, helm, add-ons from Go modules; containerd, runc, CNI from Debian)"
bash e2e/tools.sh
echo "== container images (the Dockerfile with buildah, bases from Debian packages; docs/image.md)"
MIMEO_BIN="$PWD/target/debug/mimeo" bash e2e/image.sh
bash e2e/addon-images.sh
echo "== e2e smoke"
bash e2e/smoke.sh
echo "== e2e scenarios"
bash e2e/scenarios.sh
