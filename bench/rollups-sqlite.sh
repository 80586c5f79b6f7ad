#!/usr/bin/env bash
# #29 roll-ups: report and gate over 1M exchanges, roll-ups vs rows, one binary, one store.
set -u
cd "$(dirname "$0")/.."
DB=target/bench-db/r1m.db
rm -f $DB $DB-wal $DB-shm
/usr/bin/time -f "load %e s %M KB" ./target/release/examples/store_load $DB 1000000 report
ls -la $DB
for mode in rolled rows rolled rows; do
  if [ $mode = rows ]; then sqlite3 $DB "UPDATE rollup_state SET covered = 0"; else sqlite3 $DB "UPDATE rollup_state SET covered = (SELECT max(id) FROM exchanges)"; fi
  for i in 1 2 3; do /usr/bin/time -f "$mode report %e s %M KB" ./target/release/shadowdiff report --config bench/report.toml --db $DB --since 30d --format json > /tmp/b29/report-$mode.json; done
  for i in 1 2 3; do /usr/bin/time -f "$mode gate %e s %M KB" ./target/release/shadowdiff gate --config bench/report.toml --db $DB --phase shadow --since 30d > /tmp/b29/gate-$mode.txt; done
done
sqlite3 $DB "UPDATE rollup_state SET covered = (SELECT max(id) FROM exchanges)"
sqlite3 $DB "SELECT 'rollup_outcomes', count(*) FROM rollup_outcomes UNION ALL SELECT 'rollup_accounts', count(*) FROM rollup_accounts UNION ALL SELECT 'rollup_fields', count(*) FROM rollup_fields UNION ALL SELECT 'rollup_latency', count(*) FROM rollup_latency"
sqlite3 $DB "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC" 2>/dev/null | head -20
