#!/usr/bin/env bash
# Fuzzes Mimeo's parsers of untrusted bytes with cargo-fuzz (libFuzzer) on stable Rust:
# builds every target in fuzz/fuzz_targets once, runs each for SECONDS_PER_TARGET (default 60),
# prints per target the runs executed, the corpus size and "0 crashes" or the crash input, and
# exits non-zero if any target crashed. See docs/fuzzing.md.
#
#   bash scripts/fuzz.sh            # CI time box: 60 s per target
#   bash scripts/fuzz.sh 3600       # a longer session
#
# Environment: FUZZ_TARGETS="a b" runs only those targets; MIMEO_FUZZ_SANITIZER=none builds
# without AddressSanitizer (faster, but -malloc_limit_mb then cannot see single allocations).
# libFuzzer's own output goes to fuzz/logs/<target>.log; the corpus grows in fuzz/corpus/<target>
# (seeded at start from Mimeo's own writers) and crash inputs land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
CARGO_FUZZ_VERSION=0.13.2
SANITIZER="${MIMEO_FUZZ_SANITIZER:-address}"
FUZZ_DIR=fuzz
TARGET_DIR="$FUZZ_DIR/target"
LOG_DIR="$FUZZ_DIR/logs"
# cargo-fuzz passes -Z flags (sanitizer, coverage instrumentation) that stable rustc accepts only
# with RUSTC_BOOTSTRAP=1; set here for the fuzz build only, which has its own target dir.
export RUSTC_BOOTSTRAP=1
# Keep a CARGO_TARGET_DIR meant for the main build away from the instrumented one.
unset CARGO_TARGET_DIR

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! cargo fuzz --version 2>/dev/null | grep -x "cargo-fuzz $CARGO_FUZZ_VERSION" >/dev/null; then
    echo "cargo-fuzz $CARGO_FUZZ_VERSION: installing (about 1 minute)"
    cargo install "cargo-fuzz@$CARGO_FUZZ_VERSION" --locked
    export PATH="$CARGO_BIN:$PATH"
fi

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    targets=()
    for source in "$FUZZ_DIR"/fuzz_targets/*.rs; do
        targets+=("$(basename "$source" .rs)")
    done
fi
mkdir -p "$LOG_DIR"

echo "== cargo fuzz build (sanitizer $SANITIZER, debug assertions; log $LOG_DIR/build.log)"
started=$SECONDS
if ! cargo fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" --debug-assertions \
    --sanitizer "$SANITIZER" >"$LOG_DIR/build.log" 2>&1; then
    tail -40 "$LOG_DIR/build.log" >&2
    echo "fuzz build failed (full log: $LOG_DIR/build.log)" >&2
    exit 1
fi
echo "built in $((SECONDS - started)) s"

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$TARGET_DIR/$host/release"

# Prints the value of libFuzzer's final "stat::NAME: value" line, or "?".
stat() {
    local value
    value="$(sed -n "s/^stat::$1: *//p" "$2" | tail -n 1)"
    echo "${value:-?}"
}

failed=()
echo "== fuzzing ${#targets[@]} targets for ${SECONDS_PER_TARGET} s each"
for target in "${targets[@]}"; do
    corpus="$FUZZ_DIR/corpus/$target"
    artifacts="$FUZZ_DIR/artifacts/$target/"
    log="$LOG_DIR/$target.log"
    mkdir -p "$corpus" "$artifacts"
    extra=()
    case "$target" in
    archive_*) extra+=("-dict=$FUZZ_DIR/dicts/archive.dict") ;;
    esac
    rc=0
    # -malloc_limit_mb: any single allocation over 256 MiB is a failure ("unbounded allocation");
    # -rss_limit_mb: so is a process over 1 GiB. -timeout: one input running 30 s is a hang.
    MIMEO_FUZZ_SEEDS="$corpus" "$bin_dir/$target" "$corpus" "${extra[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -malloc_limit_mb=256 \
        -timeout=30 -print_final_stats=1 -artifact_prefix="$artifacts" >"$log" 2>&1 || rc=$?
    runs="$(stat number_of_executed_units "$log")"
    rate="$(stat average_exec_per_sec "$log")"
    files="$(find "$corpus" -type f | wc -l)"
    bytes="$(du -sk "$corpus" | cut -f1)"
    line="$(printf '%-15s %10s runs (%s/s)  corpus %s inputs (%s KiB)' \
        "$target" "$runs" "$rate" "$files" "$bytes")"
    if [[ $rc -eq 0 ]]; then
        echo "$line  0 crashes"
        continue
    fi
    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    echo "$line  CRASH (exit $rc): ${crash:-no input written}"
    grep -m 3 -E '^==[0-9]+==ERROR|panicked at|^SUMMARY|out-of-memory|malloc\(' "$log" |
        sed 's/^/    /' || true
    echo "    log: $log"
    [[ -n "$crash" ]] && echo "    reproduce: $bin_dir/$target $crash"
    failed+=("$target")
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzzing passed: ${#targets[@]} targets, 0 crashes"
