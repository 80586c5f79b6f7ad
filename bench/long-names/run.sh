#!/bin/bash
# Peak memory of one proxy comparing hostile pages (BENCHMARKS.md §20.9):
#   bench/long-names/run.sh BINARY NAME_LEN MEMBERS [REQUESTS]
# Two loopback upstreams answer a page of one NAME_LEN-byte member name above MEMBERS members
# (differing at every member; SHAPE=records: a list of MEMBERS records differing in two members
# each, see up.py); REQUESTS requests go one at a time through a fresh proxy with
# [store] exchanges = "all". Prints the proxy's peak RSS (VmHWM), its CPU seconds in all, and
# what the store holds.
set -euo pipefail
BIN=$(realpath "$1"); NAME_LEN=$2; MEMBERS=$3; REQS=${4:-6}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$D"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); CP=$(port); PP=$(port)
python3 "$HERE/up.py" "$LP" 1 "$NAME_LEN" "$MEMBERS" & python3 "$HERE/up.py" "$CP" 2 "$NAME_LEN" "$MEMBERS" &
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$LP/" && curl -sf -o /dev/null "http://127.0.0.1:$CP/" && break; sleep 0.1; done
cat > "$D/c.toml" <<EOC
[proxy]
listen = "127.0.0.1:$PP"
[admin]
listen = ""
[legacy]
base_url = "http://127.0.0.1:$LP"
[candidate]
base_url = "http://127.0.0.1:$CP"
[store]
path = "$D/s.db"
exchanges = "all"
[[routes]]
name = "r"
path = "/p/{id}"
EOC
"$BIN" serve --config "$D/c.toml" > "$D/log" 2>&1 & P=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PP/p/0" && break; sleep 0.1; done
for i in $(seq "$REQS"); do curl -s -o /dev/null "http://127.0.0.1:$PP/p/$i"; done
# Until the shadow side is idle (its CPU time stops moving), at most 10 minutes.
prev=""; for _ in $(seq 1200); do cur=$(awk '{print $14+$15}' /proc/$P/stat); [ "$cur" = "$prev" ] && break; prev=$cur; sleep 0.5; done
echo "name_len=$NAME_LEN members=$MEMBERS peak_rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$P/status)" \
  "cpu_s=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/hz}' /proc/$P/stat)"
kill -INT $P; wait $P || true
sqlite3 "$D/s.db" "SELECT 'exchanges=' || count(*) || ' diff_count=' || sum(diff_count) FROM exchanges;
  SELECT 'overflow_n=' || coalesce(sum(n), 0) FROM diff_fields WHERE kind = 'overflow';"
grep -o "stopped (.*" "$D/log" || true
