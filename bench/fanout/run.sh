#!/usr/bin/env bash
# What a fan-out costs shadowdiff: its CPU per exchange (utime + stime of the process, from
# /proc, divided by the exchanges recorded) for a plain GET and for batch reads fanned out to 1,
# 10 and 50 candidate calls, every answer the same 24 KB page (compared: `match`).
#
#   bash bench/fanout/run.sh            # N=400 requests per case, 2 client threads, paced
#
# The upstreams are Python (their speed does not enter the figure: only shadowdiff's CPU does);
# the load is paced (PACE seconds between a thread's requests, 20 ms by default) so that they keep
# up with 50 calls per request and every exchange is compared, not skipped for the budget.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-400}
THREADS=${THREADS:-2}
PACE=${PACE:-0.02}
cargo build --release --locked -q
bin=$PWD/target/release/shadowdiff
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/fanout/upstream.py 18470 & python3 bench/fanout/upstream.py 18471 &
cp bench/fanout/shadowdiff.toml "$work/"
(cd "$work" && exec "$bin" serve --config shadowdiff.toml 2>serve.log) &
for _ in $(seq 100); do curl -sf http://127.0.0.1:18490/healthz >/dev/null && break; sleep 0.1; done
pid=$(pgrep -f "$bin serve --config shadowdiff.toml" | head -1)
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
stored() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from exchanges').fetchone()[0])" "$work/fanout.db"; }
printf '| case | candidate calls / exchange | exchanges | shadowdiff CPU µs / exchange | wall s |\n|---|---:|---:|---:|---:|\n'
for case in get:0 batch:1 batch:10 batch:50; do
    name=${case%%:*}; n=${case##*:}
    if [ "$name" = get ]; then method=GET; path=/api/employees; body=""; calls=1
    else method=POST; path=/api/batch; body=$(python3 -c "import json,sys; print(json.dumps({'pages': list(range(1, int(sys.argv[1]) + 1))}))" "$n"); calls=$n; fi
    before=$(stored); c0=$(cpu)
    wall=$(python3 bench/fanout/load.py 127.0.0.1 18480 "$method" "$path" "$body" "$N" "$THREADS" "$PACE")
    for _ in $(seq 600); do [ "$(stored)" -ge $((before + N)) ] && break; sleep 0.1; done
    c1=$(cpu); after=$(stored)
    python3 -c "import sys; c0,c1,t,e=map(float,sys.argv[1:5]); print(f'| {sys.argv[5]} | {sys.argv[6]} | {int(e)} | {(c1-c0)/t/e*1e6:.0f} | {sys.argv[7]} |')" \
        "$c0" "$c1" "$ticks" "$((after - before))" "$name" "$calls" "$wall"
done
python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select route, outcome, substr(reason, 1, 60), count(*) from exchanges group by 1, 2, 3').fetchall())" "$work/fanout.db"
