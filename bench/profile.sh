#!/usr/bin/env bash
# Profiles Mimeo's data paths with perf and draws a flame graph of each (issue 14: profile
# first, then fix what the profile shows):
#
#   bash bench/profile.sh [OUT_DIR]     # default bench/flame
#
# On tmpfs (the software's own cost, no writeback): 8 work items x 64 MiB of pseudo-random data
# backed up with 4 interleaved streams onto 256Mi volumes with 1Mi blocks; then, each under
# `perf record` (DWARF call graphs, 997 Hz), a logical duplication of all 8 items (Sequential),
# a Media-mode duplication of every volume, and a restore of one item from the Sequential
# duplicate. Writes OUT_DIR/<name>.svg (inferno) and OUT_DIR/<name>.txt (the top functions by
# self time, as `perf report` prints them).
#
# Builds the release binary (it keeps line tables, Cargo.toml); installs perf (Debian's
# linux-perf) and inferno (cargo) if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/flame}"
ITEM_MIB="${MIMEO_PROFILE_ITEM_MIB:-64}"
mkdir -p "$OUT"

command -v perf >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
}
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
command -v inferno-flamegraph >/dev/null || cargo install inferno@0.12.3 --locked
cargo build --release
BIN="$PWD/target/release/mimeo"

WORK="$(mktemp -d /dev/shm/mimeo-profile.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
for i in $(seq 1 8); do
    mkdir -p "$WORK/src/item-$i"
    head -c "$((ITEM_MIB << 20))" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:item-$i" >"$WORK/src/item-$i/data.bin"
done

class() { # NAME DIR
    printf 'apiVersion: mimeo.dev/v1alpha1\nkind: MediaClass\nmetadata: {name: %s}\n' "$1"
    printf 'spec: {backend: {filesystem: {path: %s}}, volumeCapacity: 256Mi, blockSize: 1Mi}\n' "$2"
}
{
    class src "$WORK/media/src"
    echo ---
    printf 'apiVersion: mimeo.dev/v1alpha1\nkind: BackupTrail\nmetadata: {name: nightly}\n'
    printf 'spec:\n  mediaClassName: src\n  retention: 30d\n  streams: 4\n  workItems:\n'
    for i in $(seq 1 8); do
        printf '    - {name: item-%s, source: {path: %s}}\n' "$i" "$WORK/src/item-$i"
    done
} >"$WORK/backup.yaml"
"$BIN" local --state "$WORK/state" apply -f "$WORK/backup.yaml" >/dev/null

policy() { # MODE TARGET
    class "dst-$2" "$WORK/media/$2"
    echo ---
    printf 'apiVersion: mimeo.dev/v1alpha1\nkind: DuplicationTrail\nmetadata: {name: %s}\n' "$2"
    printf 'spec: {mediaClassName: dst-%s, retention: 7d, layout: Sequential}\n---\n' "$2"
    printf 'apiVersion: mimeo.dev/v1alpha1\nkind: DuplicationPolicy\nmetadata: {name: to-%s}\n' "$2"
    printf 'spec: {sourceTrails: [nightly], targets: [%s], mode: %s}\n' "$2" "$1"
}

# profile NAME YAML: perf record of one `mimeo local apply`, folded into a flame graph.
profile() {
    local name=$1 yaml=$2 data="$WORK/$1.perf"
    echo "== $name"
    perf record -q -F 997 --call-graph dwarf,16384 -o "$data" -- \
        "$BIN" local --state "$WORK/state" apply -f "$yaml" >/dev/null
    perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$WORK/$name.folded"
    inferno-flamegraph --title "mimeo: $name (${ITEM_MIB} MiB items, tmpfs)" \
        <"$WORK/$name.folded" >"$OUT/$name.svg"
    perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | sed -n '1,25p' >"$OUT/$name.txt"
    sed -n '1,12p' "$OUT/$name.txt"
    rm -f "$data"
}

policy Logical logical >"$WORK/logical.yaml"
profile duplication-logical "$WORK/logical.yaml"
policy Media media >"$WORK/media.yaml"
profile duplication-media "$WORK/media.yaml"
printf 'apiVersion: mimeo.dev/v1alpha1\nkind: Restore\nmetadata: {name: r}\n' >"$WORK/restore.yaml"
printf 'spec: {workItem: item-1, source: {trail: logical}, target: {path: %s}}\n' \
    "$WORK/restored" >>"$WORK/restore.yaml"
profile restore-duplicate "$WORK/restore.yaml"
echo "flame graphs in $OUT"
