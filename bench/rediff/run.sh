#!/usr/bin/env bash
# The mapping-loop benchmarks (BENCHMARKS.md §13): a 100k-exchange store with kept bodies,
# rediff over it (with the proposed mapping, and with no mapping: the floor), suggest.
#   bash bench/rediff/run.sh [EXCHANGES] [DB]
set -euo pipefail
cd "$(dirname "$0")"
n="${1:-100000}"
db="${2:-/tmp/shadowdiff-rediff-bench.db}"
root=../..
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example rediff_store)
bin="$root/target/release/shadowdiff"
rm -f "$db" "$db-wal" "$db-shm"
"$root/target/release/examples/rediff_store" "$db" "$n"
ls -l "$db" | awk '{print "store: " $5 " bytes"}'
grep -v '^mapping = ' shadowdiff.toml > /tmp/shadowdiff-rediff-nomap.toml
for i in 1 2 3; do
  /usr/bin/time -f "  wall %e s, user %U s, sys %S s, max RSS %M KB" \
    "$bin" --config shadowdiff.toml rediff --db "$db" --since 2h --mappings proposed 2>&1 | grep -E "judged|parity|wall"
  /usr/bin/time -f "  wall %e s, user %U s, sys %S s, max RSS %M KB" \
    "$bin" --config /tmp/shadowdiff-rediff-nomap.toml rediff --db "$db" --since 2h 2>&1 | grep -E "judged|wall"
done
for limit in 2000 10000; do
  for i in 1 2 3; do
    /usr/bin/time -f "  wall %e s, max RSS %M KB" \
      "$bin" --config shadowdiff.toml suggest --db "$db" --since 2h --route employee --limit "$limit" 2>&1 \
      | grep -E "kept exchanges read|every checked change|wall"
  done
done
