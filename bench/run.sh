#!/usr/bin/env bash
# The Mimeo benchmark, in one command (see bench/README.md):
#
#   bench/run.sh              # 8 work items x 256Mi, 3 runs per figure (~20 min on 2 cores)
#   bench/run.sh --quick      # smoke run: 16Mi items (~3 min plus the build)
#   bench/run.sh --scale 1Gi  # bigger items; bench/run.sh --help lists every option
#
# Installs what it needs (rclone and GNU time from the distribution, s3s-fs with cargo via
# scripts/install-test-tools.sh), builds the release binary, runs bench/bench.py (which writes
# bench/results.json), then bench/report.py (bench/results.md and bench/results.svg).
#
# Disk: the work directory (--dir, default /tmp/mimeo-bench) needs about 5 x the data of one
# scale (8 x 256Mi -> ~10 GiB; the 4Gi memory run adds 4 GiB); tmpfs (/dev/shm) needs about
# 3 x the data (~6 GiB, 8 GiB during the 4Gi memory run). --fast-dir none keeps everything on disk.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
        exec python3 bench/bench.py --help
    fi
done

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
[[ -x /usr/bin/time ]] || need_apt+=(time)
command -v python3 >/dev/null || need_apt+=(python3)
command -v openssl >/dev/null || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
scripts/install-test-tools.sh
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

if [[ -z "${MIMEO_BIN:-}" ]]; then
    echo "== cargo build --release"
    cargo build --release
    MIMEO_BIN=target/release/mimeo
fi

echo "== benchmark"
python3 bench/bench.py --mimeo "$MIMEO_BIN" "$@"
out=bench
prev=""
for arg in "$@"; do
    [[ "$prev" == "--out" ]] && out="$arg"
    [[ "$arg" == --out=* ]] && out="${arg#--out=}"
    prev="$arg"
done
python3 bench/report.py "$out/results.json"
