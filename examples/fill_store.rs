//! Fills a store with synthetic exchanges for the report/gate benchmark:
//!
//!     cargo run --release --example fill_store -- target/bench-report.db 1000000 5000000
//!
//! Exchanges spread over the last 7 days, 5 routes, 50 accounts; 15 % are `diff` and carry the
//! diff rows (20 field patterns), the rest match or fail in the usual proportions.

use std::time::{Duration, SystemTime};

use shadowdiff::store;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "target/bench-report.db".into());
    let exchanges: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let diff_rows: u64 = args.next().map_or(Ok(5_000_000), |s| s.parse())?;
    let _ = std::fs::remove_file(&path);
    let mut conn = store::open(std::path::Path::new(&path))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let routes = ["directory", "individual", "company", "payments", "benefits"];
    let kinds = ["changed", "missing", "extra", "type_changed"];
    let diff_every = 100 / 15;
    let diffs_per = (diff_rows / (exchanges / diff_every as u64).max(1)).max(1);
    let now = SystemTime::now();
    let span = 7 * 86400 * 1000u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut written_diffs = 0u64;
    let batch = 20_000;
    let mut id = 0u64;
    while id < exchanges {
        let tx = conn.transaction()?;
        {
            let mut ex = tx.prepare_cached(
                "INSERT INTO exchanges(id, started_at, route, method, path, account, legacy_status, candidate_status,
                 legacy_ms, candidate_ms, outcome, diff_count) VALUES (?1, ?2, ?3, 'GET', '/p', ?4, 200, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut sum = tx.prepare_cached(
                "INSERT INTO diff_fields(exchange_id, started_at, route, field, kind, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut df = tx.prepare_cached(
                "INSERT INTO diffs(exchange_id, seq, pointer, field, kind, legacy, candidate) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for _ in 0..batch.min(exchanges - id) {
                id += 1;
                // Ids grow with time, as in a real store.
                let at = now - Duration::from_millis(span - span * id / exchanges);
                let r = next();
                let route = routes[(r % 5) as usize];
                let account = format!("account-{:02}", (r >> 8) % 50);
                let is_diff = id % diff_every as u64 == 0;
                let outcome = if is_diff {
                    "diff"
                } else {
                    match (r >> 16) % 100 {
                        0..=1 => "candidate_error",
                        2 => "candidate_timeout",
                        3 => "candidate_auth_error",
                        4 => "skipped",
                        _ => "match",
                    }
                };
                let n = if is_diff && written_diffs < diff_rows {
                    diffs_per
                } else {
                    0
                };
                let started_at = shadowdiff::record::rfc3339(at);
                ex.execute(rusqlite::params![
                    id as i64,
                    &started_at,
                    route,
                    account,
                    200,
                    5.0 + ((r >> 24) % 100) as f64,
                    8.0 + ((r >> 32) % 200) as f64,
                    outcome,
                    n as i64
                ])?;
                for seq in 0..n {
                    let f = (seq + (r >> 40)) % 20;
                    df.execute(rusqlite::params![
                        id as i64,
                        seq as i64,
                        format!("/individuals/{seq}/field_{f}"),
                        format!("/individuals/*/field_{f}"),
                        kinds[(f % 4) as usize],
                        "\"legacy value\"",
                        "\"candidate value\""
                    ])?;
                }
                let mut per_field = std::collections::BTreeMap::new();
                for seq in 0..n {
                    *per_field.entry((seq + (r >> 40)) % 20).or_insert(0i64) += 1;
                }
                for (f, count) in per_field {
                    sum.execute(rusqlite::params![
                        id as i64,
                        &started_at,
                        route,
                        format!("/individuals/*/field_{f}"),
                        kinds[(f % 4) as usize],
                        count
                    ])?;
                }
                written_diffs += n;
            }
        }
        tx.commit()?;
    }
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    println!("{path}: {exchanges} exchanges, {written_diffs} diff rows");
    Ok(())
}
