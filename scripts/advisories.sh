#!/usr/bin/env bash
# `cargo deny check advisories` against the RustSec advisory database: fetched from GitHub
# when GitHub is reachable, else the dated snapshot in deny/ (the project's machines reach
# package registries only). Advisories published after the snapshot are not seen: refresh it
# where GitHub is reachable (deny/README.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if timeout 20 git ls-remote --exit-code https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  echo "advisories: RustSec database from GitHub"
  exec cargo deny check advisories
fi
snapshot="$(ls deny/advisory-db-*.tar.gz | sort | tail -1)"
# deny/advisory-db-YYYY-MM-DD-COMMIT.tar.gz
name="$(basename "$snapshot" .tar.gz)"
day="${name#advisory-db-}"; day="${day:0:10}"
export MIMEO_ADVISORY_DBS="$ROOT/target/advisory-dbs/$name"
# cargo-deny opens the database as a git checkout in a directory named after its URL.
db="$MIMEO_ADVISORY_DBS/advisory-db-3157b0e258782691"
if [[ ! -d "$db/.git" ]]; then
  rm -rf "$MIMEO_ADVISORY_DBS"
  mkdir -p "$db"
  tar -xzf "$snapshot" -C "$db"
  (cd "$db" && git init -q && git add -A &&
    GIT_AUTHOR_DATE="${day}T00:00:00Z" GIT_COMMITTER_DATE="${day}T00:00:00Z" \
      git -c user.name=mimeo -c user.email=mimeo@localhost -c commit.gpgsign=false \
      commit -qm "RustSec advisory-db snapshot $name")
fi
echo "advisories: GitHub unreachable, RustSec snapshot of $day ($snapshot)"
cargo deny --offline check advisories
