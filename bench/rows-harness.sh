# bench/rows-harness.sh RATE DURATION: the harness at a fixed rate on distinct pages, shadowdiff with
# every row kept (bench/all-rows.toml) and with the default (sampled rows), then each store counted.
# ORDER="default all-rows" runs them the other way round. Needs a release build and sqlite3.
cd "$(git rev-parse --show-toplevel)"; mkdir -p target/bench-bin target/bench-results; R=$1; D=$2
export TOOLS=$HOME/.cache/shadowdiff-bench ROUNDS=1 RANDOM_PAGES=1 PAGES=4096 PHASES=fixed RATE=$R DURATION=$D
cp target/release/shadowdiff target/bench-bin/shadowdiff-29
for cfg in ${ORDER:-all-rows default}; do
  rm -rf target/bench-db && mkdir -p target/bench-db
  ( PROXY_NAME=sd-$cfg CONFIGS=nginx-mirror,sd-$cfg bash bench/harness/run.sh \
    "$PWD/target/bench-bin/shadowdiff-29 serve --config bench/$cfg.toml --listen {listen} --legacy {legacy} --candidate {candidate} --db target/bench-db/$cfg-{port}.db" > target/bench-results/rows-$R-$cfg.log 2>&1 ) &
  h=$!
  # RSS and rows every 5 s while the proxy runs
  : > target/bench-results/rows-$R-$cfg.rss
  for t in $(seq 1 200); do
    pid=$(pgrep -x shadowdiff-29 | head -1)
    db=$(ls target/bench-db/*.db 2>/dev/null | head -1)
    if [[ -n $pid && -n $db ]]; then
      rows=$(sqlite3 "file:$db?mode=ro" "SELECT count(*) FROM exchanges" 2>/dev/null)
      echo "$(date +%s) $(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null) $rows" >> target/bench-results/rows-$R-$cfg.rss
    fi
    kill -0 $h 2>/dev/null || break
    sleep 5
  done
  wait $h
  for f in target/bench-db/*.db; do
    bytes=$(du -cb $f* | tail -1 | cut -f1)
    sqlite3 "$f" "SELECT '$cfg rate $R', $bytes AS file_bytes, (SELECT count(*) FROM exchanges) AS rows,
      (SELECT sum(n) FROM rollup_outcomes) AS exchanges,
      (SELECT sum(n) FROM rollup_outcomes WHERE outcome IN ('match','diff')) AS compared,
      (SELECT sum(n) FROM rollup_outcomes WHERE outcome = 'skipped') AS skipped,
      (SELECT page_count * page_size FROM pragma_page_count, pragma_page_size) AS db_bytes" >> target/bench-results/rows-stores.txt
  done
done
