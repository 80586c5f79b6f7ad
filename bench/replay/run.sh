#!/usr/bin/env bash
# `shadowdiff replay` throughput (BENCHMARKS.md §19): EXCHANGES distinct ~20 KB pages recorded
# through the proxy with every body kept (the harness's legacy and candidate upstreams), then
# replayed three times against the local candidate: requests sent per second, CPU, RSS.
#   bash bench/replay/run.sh [EXCHANGES]
set -euo pipefail
cd "$(dirname "$0")"
n="${1:-5000}"
root=$(cd ../.. && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$root" && cargo build --release --quiet)
cargo build --release --quiet --manifest-path "$root/bench/harness/upstream/Cargo.toml" \
  --target-dir "$root/target/bench-upstream"
up="$root/target/bench-upstream/release/bench-upstream"
bin="$root/target/release/shadowdiff"
"$up" --listen 127.0.0.1:18181 --variant legacy --pages "$n" >/dev/null 2>&1 &
"$up" --listen 127.0.0.1:18182 --variant candidate --pages "$n" >/dev/null 2>&1 &
cat > "$work/sd.toml" <<TOML
[proxy]
listen = "127.0.0.1:18180"
[admin]
listen = ""
[legacy]
base_url = "http://127.0.0.1:18181"
[candidate]
base_url = "http://127.0.0.1:18182"
[store]
path = "$work/replay.db"
bodies = "always"
body_sample = 1.0
match_sample = 1.0
body_budget = "4GiB"
[shadow]
max_in_flight = 4096
TOML
for port in 18181 18182; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
done
"$bin" --config "$work/sd.toml" serve 2>/dev/null &
serve=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:18180/health" && break; sleep 0.05; done
python3 - "$n" <<'PY'
import http.client, sys
n = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", 18180)
for page in range(1, n + 1):
    c.request("GET", f"/api/v1/employees?page={page}")
    c.getresponse().read()
PY
kill -TERM "$serve"; wait "$serve" || true
sqlite3 "$work/replay.db" "select outcome, coalesce(reason, ''), count(*) from exchanges group by 1, 2"
echo "recorded: $(sqlite3 "$work/replay.db" "select count(*) from exchanges") exchanges, $(sqlite3 "$work/replay.db" "select count(*) from bodies where side = 'request'") with their request"
cat > "$work/show.py" <<'PY'
import json, sys
o = json.load(sys.stdin)
s = o["summary"]
print(f"replay: sent {o['sent']} in {o['seconds']:.2f} s = {o['per_second']:.0f}/s; judged {s['exchanges']}, skipped {s['skipped']}")
PY
for i in 1 2 3; do
  /usr/bin/time -f "  wall %e s, user %U s, sys %S s, max RSS %M KB" \
    "$bin" --config "$work/sd.toml" replay --since 1h --limit "$n" --format json 2>"$work/time" >"$work/out.json" || true
  python3 "$work/show.py" <"$work/out.json" || head -c 600 "$work/out.json"
  tail -3 "$work/time"
done
