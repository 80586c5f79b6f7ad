#!/usr/bin/env bash
# #29 roll-ups on PostgreSQL: report and gate over N exchanges (default 1M), roll-ups vs rows,
# one binary, one store. PG is a server URL without a database (postgres://postgres@127.0.0.1:5432);
# the database DB (default r1m) must exist and be empty. Build first:
#   cargo build --release --example store_load && cargo build --release
set -u
cd "$(dirname "$0")/.."
PG=${PG:?set PG to a server URL}; N=${N:-1000000}; DB=${DB:-r1m}
URL="$PG/$DB?sslmode=disable"
/usr/bin/time -f "load %e s %M KB" ./target/release/examples/store_load "$URL" "$N" report
for mode in rolled rows rolled rows; do
  if [ $mode = rows ]; then psql "$URL" -qc "UPDATE rollup_state SET covered = 0"; else psql "$URL" -qc "UPDATE rollup_state SET covered = (SELECT max(id) FROM exchanges)"; fi
  for i in 1 2 3; do /usr/bin/time -f "$mode report %e s %M KB" ./target/release/shadowdiff report --config bench/report.toml --db "$URL" --since 30d --format json > target/bench-results/pg-report-$mode.json; done
  for i in 1 2 3; do /usr/bin/time -f "$mode gate %e s %M KB" ./target/release/shadowdiff gate --config bench/report.toml --db "$URL" --phase shadow --since 30d > /dev/null; done
done
psql "$URL" -qc "UPDATE rollup_state SET covered = (SELECT max(id) FROM exchanges)"
psql "$URL" -Atc "SELECT relname, n_live_tup, pg_size_pretty(pg_total_relation_size(relid)) FROM pg_stat_user_tables WHERE relname LIKE 'rollup%' ORDER BY 1"
psql "$URL" -Atc "SELECT pg_size_pretty(pg_database_size(current_database()))"
