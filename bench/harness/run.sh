#!/usr/bin/env bash
# Shadow-proxy benchmark harness.
#
#   bench/run.sh                         # direct, nginx, nginx-mirror
#   bench/run.sh 'PROXY COMMAND'         # ... plus the proxy under test
#
# The proxy command is run through `bash -c` pinned to the SUT CPU(s), with
# these placeholders substituted (and the same values exported as env vars):
#   {listen}  127.0.0.1:PORT        ($LISTEN_ADDR)   address it must listen on
#   {port}    PORT                  ($PROXY_PORT)
#   {legacy}  http://127.0.0.1:L    ($LEGACY_URL)    primary upstream
#   {candidate} http://127.0.0.1:C  ($CANDIDATE_URL) shadow upstream
#   {legacy_addr} / {candidate_addr}  host:port forms ($LEGACY_ADDR / $CANDIDATE_ADDR)
# e.g. bench/run.sh './target/release/shadow-proxy --listen {listen} --legacy {legacy} --candidate {candidate}'
#
# All knobs are environment variables; see README.md. Results go to
# ./target/bench-results/<timestamp>/ (index.jsonl = every measurement, summary.md = tables).
set -euo pipefail
set -m   # every background job gets its own process group (clean kill of nginx/proxy trees)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shadowdiff-bench}   # writable even when this folder is not
TOOLS=${TOOLS:-$CACHE/tools}
BUILD=${BUILD:-$CACHE/build}
OHA_VERSION=${OHA_VERSION:-1.16.0}

PROXY_CMD=${1:-${PROXY_CMD:-}}
PROXY_NAME=${PROXY_NAME:-proxy}
DURATION=${DURATION:-10}          # seconds per measurement
ROUNDS=${ROUNDS:-3}               # interleaved rounds per phase
CONNS=${CONNS:-64}                # concurrent connections (closed loop and fixed rate)
WARMUP=${WARMUP:-2}               # seconds of warm-up per config before phase "closed"
SETTLE=${SETTLE:-1}               # pause after each measurement (lets shadow traffic drain)
RATE=${RATE:-}                    # fixed-rate req/s; default RATE_FRACTION x nginx-mirror max
RATE_FRACTION=${RATE_FRACTION:-0.5}
SLOW_MS=${SLOW_MS:-200}           # delay of the slow candidate (phase "slow")
SLOW_RATE=${SLOW_RATE:-}          # fixed rate for phase "slow"; default = RATE
MIRROR_TIMEOUT=${MIRROR_TIMEOUT:-60s}          # nginx mirror location timeouts (nginx default 60s)
MITIGATED_TIMEOUT=${MITIGATED_TIMEOUT:-20ms}   # extra slow-phase config "nginx-mirror-slow-t"
PHASES=${PHASES:-closed,fixed,slow}
LOADGEN=${LOADGEN:-oha}           # oha | wrk  (wrk: closed loop only; fixed-rate phases always use oha)
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
SUT_CPUS=${SUT_CPUS:-1}
UPSTREAM_CPUS=${UPSTREAM_CPUS:-1}
UPSTREAM_THREADS=${UPSTREAM_THREADS:-1}
UPSTREAM_DELAY_MS=${UPSTREAM_DELAY_MS:-0}      # added latency on legacy and candidate (e.g. 5)
LEGACY_DELAY_MS=${LEGACY_DELAY_MS:-$UPSTREAM_DELAY_MS}        # legacy's alone (unequal delays: the served path
CANDIDATE_DELAY_MS=${CANDIDATE_DELAY_MS:-$UPSTREAM_DELAY_MS}  # waits for the later of the two)
URL_PATH=${URL_PATH:-/api/v1/employees?page=1}
PAGES=${PAGES:-20}                # distinct pages each upstream serves (pre-rendered, ~24 KB each)
RANDOM_PAGES=${RANDOM_PAGES:-0}   # 1: every request asks for a random page (1000..9999, modulo PAGES), so
                                  # repeated-pair caches in the proxy under test stop hiding parse/diff cost
if [[ $RANDOM_PAGES == 1 ]]; then
    MEASURE_PATH='/api/v1/employees\?page=[1-9][0-9]{3}'; URL_REGEX_FLAG=--url-regex
else
    MEASURE_PATH=$URL_PATH; URL_REGEX_FLAG=
fi
PORT_BASE=${PORT_BASE:-18080}
CONFIGS=${CONFIGS:-}              # optional filter: comma list of config names
if [[ $EUID -eq 0 ]]; then NICE=${NICE:--10}; else NICE=${NICE:-0}; fi  # priority of all benchmark processes
OUT=${OUT:-$PWD/target/bench-results/$(date +%Y%m%d-%H%M%S)}

LEGACY_PORT=$((PORT_BASE + 1)); CAND_PORT=$((PORT_BASE + 2)); SLOW_PORT=$((PORT_BASE + 3))
NGINX_PORT=$((PORT_BASE + 10)); MIRROR_PORT=$((PORT_BASE + 11)); PROXY_PORT_=$((PORT_BASE + 12))
MIRROR_SLOW_PORT=$((PORT_BASE + 13)); PROXY_SLOW_PORT=$((PORT_BASE + 14)); MIRROR_SLOW_T_PORT=$((PORT_BASE + 15))

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
has_phase() { [[ ",$PHASES," == *",$1,"* ]]; }
want() { [[ -z "$CONFIGS" || ",$CONFIGS," == *",$1,"* ]]; }

# ---------------------------------------------------------------- setup
APT_UPDATED=
apt_install() {
    command -v apt-get >/dev/null || die "need $* but apt-get is not available"
    if [[ -z "$APT_UPDATED" ]]; then log "apt-get update"; apt-get update -qq >/dev/null; APT_UPDATED=1; fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
ensure_tools() {
    local need=()
    command -v nginx >/dev/null || need+=(nginx)
    command -v python3 >/dev/null || need+=(python3)
    command -v curl >/dev/null || need+=(curl)
    command -v taskset >/dev/null || need+=(util-linux)
    [[ "$LOADGEN" == wrk ]] && ! command -v wrk >/dev/null && need+=(wrk)
    if ((${#need[@]})); then apt_install "${need[@]}"; fi
    # Debian's nginx package may start a system nginx on :80; harmless, we use our own ports/configs.
    nginx -V 2>&1 | grep -q -- '--without-http_mirror_module' && die "this nginx lacks ngx_http_mirror_module"
    command -v cargo >/dev/null || die "cargo (Rust) is required to build oha and the upstream server"
    OHA=$TOOLS/bin/oha
    if [[ ! -x "$OHA" ]] || ! "$OHA" --version 2>/dev/null | grep -q " $OHA_VERSION"; then
        log "cargo install oha $OHA_VERSION (first run only, several minutes on 2 cores)"
        cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS" >"$TOOLS/oha-install.log" 2>&1 \
            || { tail -20 "$TOOLS/oha-install.log"; die "oha install failed"; }
    fi
    log "building upstream (cargo build --release)"
    (cd "$HERE/upstream" && CARGO_TARGET_DIR=$BUILD/upstream cargo build --release --locked -q) \
        || die "upstream build failed"
    UPSTREAM_BIN=$BUILD/upstream/release/bench-upstream
}

# ---------------------------------------------------------------- processes
declare -A PGID=()
start_bg() {  # NAME CPUS CMD... ; the job's PID is its process group id (set -m)
    local name=$1 cpus=$2; shift 2
    nice -n "$NICE" taskset -c "$cpus" "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    PGID[$name]=$!
}
stop_bg() {
    local name=$1 pg=${PGID[$1]:-}
    [[ -n "$pg" ]] || return 0
    kill -TERM -- "-$pg" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pg" 2>/dev/null || true
    wait "$pg" 2>/dev/null || true
    unset "PGID[$name]"
}
AG_ORIG=
boost_priority() {
    # Linux autogroups: processes of different sessions share the CPU per session, so plain
    # `nice` only reorders our own processes. Raise this session's autogroup weight instead
    # (restored on exit), so other tenants of a shared machine disturb the run less.
    [[ "$NICE" != 0 && -w /proc/self/autogroup ]] || return 0
    AG_ORIG=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\).*/\1/p' "/proc/$$/autogroup")
    if echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null; then
        log "autogroup nice $NICE for this session (was $AG_ORIG; restored on exit)"
    else
        AG_ORIG=
    fi
}
cleanup() {
    local rc=$?
    set +e +m
    for n in "${!PGID[@]}"; do stop_bg "$n"; done
    [[ -n "$AG_ORIG" ]] && echo "$AG_ORIG" >"/proc/$$/autogroup" 2>/dev/null
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {  # URL NAME [TIMEOUT_S]
    local url=$1 name=$2 t=${3:-30} i
    for ((i = 0; i < t * 10; i++)); do
        curl -sf -o /dev/null --max-time 2 "$url" && return 0
        if [[ -n "${PGID[$name]:-}" ]] && ! kill -0 "${PGID[$name]}" 2>/dev/null; then
            tail -20 "$RUN/$name.log" >&2; die "$name exited during start-up"
        fi
        sleep 0.1
    done
    tail -20 "$RUN/$name.log" >&2; die "$name did not answer $url within ${t}s"
}

start_upstream() {  # NAME PORT VARIANT DELAY_MS
    start_bg "$1" "$UPSTREAM_CPUS" "$UPSTREAM_BIN" --listen "127.0.0.1:$2" --variant "$3" \
        --delay-ms "$4" --threads "$UPSTREAM_THREADS" --pages "$PAGES"
    wait_http "http://127.0.0.1:$2/health" "$1"
}

start_nginx() {  # NAME PORT MIRROR(0|1) CANDIDATE_PORT MIRROR_TIMEOUT
    local name=$1 port=$2 mirror=$3 cport=$4 mt=$5 conf="$RUN/$1.conf" m=""
    mkdir -p "$RUN/$name.tmp"
    if [[ "$mirror" == 1 ]]; then
        m='            mirror /__mirror;\n            mirror_request_body on;'
    fi
    sed -e "s#@NAME@#$name#g" -e "s#@RUN@#$RUN#g" -e "s#@PORT@#$port#g" -e "s#@WORKERS@#$NGINX_WORKERS#g" \
        -e "s#@LEGACY@#127.0.0.1:$LEGACY_PORT#g" -e "s#@CANDIDATE@#127.0.0.1:$cport#g" \
        -e "s#@MIRROR_TIMEOUT@#$mt#g" -e "s#@MIRROR@#$m#" "$HERE/nginx.conf.tmpl" >"$conf"
    nginx -t -q -p "$RUN" -c "$conf" 2>"$RUN/$name.t.log" || { cat "$RUN/$name.t.log" >&2; die "nginx -t failed for $name"; }
    start_bg "$name" "$SUT_CPUS" nginx -p "$RUN" -c "$conf"
    wait_http "http://127.0.0.1:$port/health" "$name"
}

start_proxy() {  # NAME PORT CANDIDATE_PORT
    local name=$1 port=$2 cport=$3 cmd=$PROXY_CMD
    cmd=${cmd//\{listen\}/127.0.0.1:$port}
    cmd=${cmd//\{port\}/$port}
    cmd=${cmd//\{legacy\}/http://127.0.0.1:$LEGACY_PORT}
    cmd=${cmd//\{candidate\}/http://127.0.0.1:$cport}
    cmd=${cmd//\{legacy_addr\}/127.0.0.1:$LEGACY_PORT}
    cmd=${cmd//\{candidate_addr\}/127.0.0.1:$cport}
    echo "$cmd" >"$RUN/$name.cmd"
    LISTEN_ADDR=127.0.0.1:$port PROXY_PORT=$port LEGACY_URL=http://127.0.0.1:$LEGACY_PORT \
    CANDIDATE_URL=http://127.0.0.1:$cport LEGACY_ADDR=127.0.0.1:$LEGACY_PORT CANDIDATE_ADDR=127.0.0.1:$cport \
        start_bg "$name" "$SUT_CPUS" bash -c "exec $cmd"
    wait_http "http://127.0.0.1:$port/health" "$name" 60
}

check_same_body() {  # NAME PORT : the SUT must return exactly the legacy body
    local want got
    want=$(curl -sf "http://127.0.0.1:$LEGACY_PORT$URL_PATH" | sha256sum)
    got=$(curl -sf "http://127.0.0.1:$2$URL_PATH" | sha256sum) || got="(request failed)"
    if [[ "$want" != "$got" ]]; then
        log "WARNING: $1 does not return the legacy body byte-for-byte"
        echo "$1" >>"$OUT/body_mismatch.txt"
    fi
}

# ---------------------------------------------------------------- measurement
measure() {  # PHASE ROUND CONFIG PORT [RATE] [LOADGEN]
    local phase=$1 round=$2 cfg=$3 port=$4 rate=${5:-0} lg=${6:-$LOADGEN}
    local pg=() n
    for n in "${!PGID[@]}"; do pg+=("$n=${PGID[$n]}"); done
    python3 "$HERE/lib/measure.py" run --out "$OUT" --phase "$phase" --round "$round" --config "$cfg" \
        --url "http://127.0.0.1:$port$MEASURE_PATH" --rate "$rate" --duration "$DURATION" --conns "$CONNS" $URL_REGEX_FLAG \
        --loadgen "$lg" --oha "$OHA" --cpus "$LOADGEN_CPUS" --settle "$SETTLE" --nice "$NICE" \
        --stats "legacy=http://127.0.0.1:$LEGACY_PORT/__stats" "candidate=http://127.0.0.1:$CAND_PORT/__stats" \
                "candidate_slow=http://127.0.0.1:$SLOW_PORT/__stats" \
        --pgid "${pg[@]}" </dev/null
}

rotate() {  # ROUND ITEMS... -> items rotated by ROUND-1 (A/B interleaving, each config in each slot)
    local r=$1; shift
    local a=("$@") n=$# i
    for ((i = 0; i < n; i++)); do echo "${a[$(((i + r - 1) % n))]}"; done
}

median_rps() {  # PHASE CONFIG
    python3 - "$OUT/index.jsonl" "$1" "$2" <<'EOF'
import json, statistics, sys
f, ph, cfg = sys.argv[1:]
v = [r["rps"] for r in map(json.loads, open(f)) if r.get("phase") == ph and r.get("config") == cfg and r.get("rps")]
print(int(statistics.median(v)) if v else 0)
EOF
}

# ---------------------------------------------------------------- main
mkdir -p "$OUT"
RUN=$OUT/run
mkdir -p "$RUN" "$TOOLS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # nginx and the proxy inherit it
ensure_tools
boost_priority

NCPU=$(nproc)
NGINX_WORKERS=$(taskset -c "$SUT_CPUS" nproc)   # one nginx worker per SUT CPU (a tokio proxy sees the same count)
{
    echo "date: $(date -Is)"; echo "host: $(uname -srm), $NCPU CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "nginx: $(nginx -v 2>&1)"; echo "oha: $("$OHA" --version)"; command -v wrk >/dev/null && echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "layout: loadgen cpus=$LOADGEN_CPUS, sut cpus=$SUT_CPUS (nginx workers $NGINX_WORKERS), upstream cpus=$UPSTREAM_CPUS (threads $UPSTREAM_THREADS), nice $NICE"
    echo "load: duration=${DURATION}s rounds=$ROUNDS conns=$CONNS url=$MEASURE_PATH pages=$PAGES legacy_delay=${LEGACY_DELAY_MS}ms candidate_delay=${CANDIDATE_DELAY_MS}ms loadgen=$LOADGEN"
    echo "proxy: ${PROXY_CMD:-(none)}"
    echo "loadavg before: $(cat /proc/loadavg)"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2
if [[ $(cut -d' ' -f1 /proc/loadavg | cut -d. -f1) -ge 1 ]]; then
    log "WARNING: load average $(cut -d' ' -f1-3 /proc/loadavg): something else is using the CPUs; numbers will be noisy"
fi
((NCPU >= 2)) || log "WARNING: only $NCPU CPU: load generator and SUT will share it"

log "starting upstreams"
start_upstream legacy "$LEGACY_PORT" legacy "$LEGACY_DELAY_MS"
start_upstream candidate "$CAND_PORT" candidate "$CANDIDATE_DELAY_MS"

CFG_NAMES=(); CFG_PORTS=()
add_cfg() { if want "$1"; then CFG_NAMES+=("$1"); CFG_PORTS+=("$2"); fi; }
add_cfg direct "$LEGACY_PORT"
if want nginx; then start_nginx nginx "$NGINX_PORT" 0 "$CAND_PORT" "$MIRROR_TIMEOUT"; add_cfg nginx "$NGINX_PORT"; fi
if want nginx-mirror; then start_nginx nginx-mirror "$MIRROR_PORT" 1 "$CAND_PORT" "$MIRROR_TIMEOUT"; add_cfg nginx-mirror "$MIRROR_PORT"; fi
if [[ -n "$PROXY_CMD" ]] && want "$PROXY_NAME"; then
    log "starting proxy under test: $PROXY_CMD"
    start_proxy "$PROXY_NAME" "$PROXY_PORT_" "$CAND_PORT"; add_cfg "$PROXY_NAME" "$PROXY_PORT_"
fi
for i in "${!CFG_NAMES[@]}"; do check_same_body "${CFG_NAMES[$i]}" "${CFG_PORTS[$i]}"; done

if has_phase closed; then
    log "warm-up ${WARMUP}s per config"
    for i in "${!CFG_NAMES[@]}"; do
        nice -n "$NICE" taskset -c "$LOADGEN_CPUS" "$OHA" --no-tui -z "${WARMUP}s" -c "$CONNS" "http://127.0.0.1:${CFG_PORTS[$i]}$URL_PATH" >/dev/null 2>&1 || true
    done
    log "phase closed: closed loop, $CONNS connections, ${DURATION}s x $ROUNDS rounds, loadgen=$LOADGEN"
    for ((r = 1; r <= ROUNDS; r++)); do
        while read -r i; do measure closed "$r" "${CFG_NAMES[$i]}" "${CFG_PORTS[$i]}"; done \
            < <(rotate "$r" "${!CFG_NAMES[@]}")
    done
fi

if [[ -z "$RATE" ]]; then
    base=$(median_rps closed nginx-mirror 2>/dev/null || echo 0)
    RATE=$(python3 -c "print(int($base * $RATE_FRACTION))")
    if ((RATE <= 0)); then RATE=2000; log "no nginx-mirror closed-loop result; RATE defaults to $RATE"; fi
fi
echo "fixed rate: $RATE req/s" >>"$OUT/env.txt"

if has_phase fixed; then
    log "phase fixed: open model at $RATE req/s (oha -q, latency correction), ${DURATION}s x $ROUNDS rounds"
    for ((r = 1; r <= ROUNDS; r++)); do
        while read -r i; do measure fixed "$r" "${CFG_NAMES[$i]}" "${CFG_PORTS[$i]}" "$RATE" oha; done \
            < <(rotate "$r" "${!CFG_NAMES[@]}")
    done
fi

if has_phase slow; then
    SLOW_RATE=${SLOW_RATE:-$RATE}
    log "phase slow: candidate answers after ${SLOW_MS} ms"
    start_upstream candidate_slow "$SLOW_PORT" candidate "$((SLOW_MS + CANDIDATE_DELAY_MS))"
    SC=(); SP=()
    if want nginx-mirror; then
        start_nginx nginx-mirror-slow "$MIRROR_SLOW_PORT" 1 "$SLOW_PORT" "$MIRROR_TIMEOUT"; SC+=(nginx-mirror-slow); SP+=("$MIRROR_SLOW_PORT")
        start_nginx nginx-mirror-slow-t "$MIRROR_SLOW_T_PORT" 1 "$SLOW_PORT" "$MITIGATED_TIMEOUT"; SC+=(nginx-mirror-slow-t); SP+=("$MIRROR_SLOW_T_PORT")
    fi
    if [[ -n "$PROXY_CMD" ]] && want "$PROXY_NAME"; then
        start_proxy "$PROXY_NAME-slow" "$PROXY_SLOW_PORT" "$SLOW_PORT"; SC+=("$PROXY_NAME-slow"); SP+=("$PROXY_SLOW_PORT")
    fi
    for i in "${!SC[@]}"; do
        check_same_body "${SC[$i]}" "${SP[$i]}"
        python3 "$HERE/lib/measure.py" probe --out "$OUT" --config "${SC[$i]}" --url "http://127.0.0.1:${SP[$i]}$URL_PATH" -n 10 </dev/null
    done
    for i in "${!SC[@]}"; do measure slow-closed 1 "${SC[$i]}" "${SP[$i]}" 0 oha; done
    for i in "${!SC[@]}"; do measure slow-fixed 1 "${SC[$i]}" "${SP[$i]}" "$SLOW_RATE" oha; done
fi

log "summary"
python3 "$HERE/lib/summarize.py" "$OUT" | tee "$OUT/summary.md"
log "results in $OUT"
