//! Writes synthetic exchanges through the store's own writer (the one `serve` runs: batched
//! inserts on SQLite, `COPY` and adding upserts on PostgreSQL) and reports how fast it went:
//!
//!     cargo run --release --example store_load -- DB EXCHANGES [PROFILE] [DAYS]
//!
//! DB is a SQLite path or a `postgres://` URL. PROFILE:
//! - `report` (default): the report benchmark's store (BENCHMARKS.md §3): 5 routes, 50 accounts,
//!   every 6th exchange a `diff` with 30 differences over 20 field patterns, the rest match or
//!   fail in the usual proportions; spread over DAYS (7) days, ids growing with time;
//! - `harness`: what the load harness makes a proxy write: every exchange a `diff` of 4 field
//!   patterns (a mapping gap), 20 fields present, all within the last minute;
//! - `shed`: as `harness`, but every exchange `skipped` (shed under overload).
//!
//! `ROWS=all|differing|sampled` (default `all`) sets `[store] exchanges`.
//!
//! Exchanges are queued as fast as the writer takes them (never dropped: at most three chunks
//! are waiting). Prints exchanges/s and rows/s (exchanges + `diff_fields` + `diffs` rows).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use shadowdiff::diff::{Difference, Kind};
use shadowdiff::record::{Meta, Outcome, Record};
use shadowdiff::store::{Location, Store, WriterOptions};

const CHUNK: u64 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args
        .next()
        .ok_or("usage: store_load DB EXCHANGES [report|harness] [DAYS]")?;
    let exchanges: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let profile = args.next().unwrap_or_else(|| "report".into());
    let days: u64 = args.next().map_or(Ok(7), |s| s.parse())?;
    let harness = match profile.as_str() {
        "report" => false,
        "harness" | "shed" => true,
        other => return Err(format!("unknown profile {other}").into()),
    };
    let location = Location::parse(&db);
    let store = Store::open_at(
        &location,
        WriterOptions {
            queue: (CHUNK * 4) as usize,
            priority: shadowdiff::background::Priority::Normal,
            retention: Duration::from_secs(86400 * (days + 30)),
            max_value_len: 1024,
            examples_per_field: 3,
            exchanges: match std::env::var("ROWS").as_deref() {
                Ok("sampled") => shadowdiff::store::Rows::Sampled,
                Ok("differing") => shadowdiff::store::Rows::Differing,
                _ => shadowdiff::store::Rows::All,
            },
            rows_per_hour: 100,
            migrate: true,
            reauth_after: 3,
            id_max_pairs: Vec::new(),
            webhooks: Vec::new(),
        },
    )?;
    let handle = store.handle();
    let now = SystemTime::now();
    let span_ms = if harness { 60_000 } else { days * 86_400_000 };
    let routes = ["directory", "individual", "company", "payments", "benefits"];
    let kinds = [Kind::Changed, Kind::Missing, Kind::Extra, Kind::TypeChanged];
    let present: Arc<Vec<String>> = Arc::new(
        (0..20)
            .map(|f| format!("/individuals/*/field_{f}"))
            .collect(),
    );
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut diff_rows, mut field_rows) = (0u64, 0u64);
    let mut waiting: std::collections::VecDeque<std::thread::JoinHandle<()>> =
        std::collections::VecDeque::new();
    let started = Instant::now();
    let mut i = 0u64;
    while i < exchanges {
        for _ in 0..CHUNK.min(exchanges - i) {
            i += 1;
            let at = now - Duration::from_millis(span_ms - span_ms * i / exchanges);
            let r = next();
            let shed = profile == "shed";
            let is_diff = (harness && !shed) || (!harness && i.is_multiple_of(6));
            let outcome = if shed {
                Outcome::Skipped(shadowdiff::record::SkipReason::Overload)
            } else if is_diff {
                Outcome::Diff
            } else {
                match (r >> 16) % 100 {
                    0..=1 => Outcome::CandidateError,
                    2 => Outcome::CandidateTimeout,
                    3 => Outcome::CandidateAuthError,
                    4 => Outcome::Skipped(shadowdiff::record::SkipReason::Overload),
                    _ => Outcome::Match,
                }
            };
            let n = match (is_diff, harness) {
                (false, _) => 0,
                (true, true) => 4,
                (true, false) => 30,
            };
            let diffs: Vec<Difference> = (0..n)
                .map(|seq| {
                    let f = if harness { seq } else { (seq + (r >> 40)) % 20 };
                    Difference {
                        pointer: format!("/individuals/{seq}/field_{f}"),
                        field: format!("/individuals/*/field_{f}"),
                        kind: kinds[(f % 4) as usize],
                        legacy: Some(json!("legacy value")),
                        candidate: Some(json!("candidate value")),
                        candidate_pointer: None,
                    }
                })
                .collect();
            let mut patterns: Vec<(&str, Kind)> =
                diffs.iter().map(|d| (d.field.as_str(), d.kind)).collect();
            patterns.sort_unstable_by(|a, b| a.0.cmp(b.0));
            patterns.dedup();
            field_rows += patterns.len() as u64;
            diff_rows += diffs.len().min(patterns.len() * 3) as u64;
            let compared = matches!(outcome, Outcome::Match | Outcome::Diff);
            handle.record(Record {
                meta: Meta {
                    started_at: at,
                    request_id: format!("load-{i}"),
                    route: Some(routes[(r % 5) as usize].to_owned()),
                    method: "GET".into(),
                    path: "/p".into(),
                    account: Some(format!("account-{:02}", (r >> 8) % 50)),
                    serving: Default::default(),
                },
                legacy_status: Some(200),
                candidate_status: Some(200),
                legacy_ms: Some(5.0 + ((r >> 24) % 100) as f64),
                candidate_ms: Some(8.0 + ((r >> 32) % 200) as f64),
                outcome,
                reason: None,
                diff_count: diffs.len(),
                diffs: Arc::new(diffs),
                present: if compared {
                    present.clone()
                } else {
                    Arc::new(Vec::new())
                },
                bodies: Vec::new(),
                mapping_version: None,
                field_counts: None,
                ids: None,
            });
        }
        // At most three chunks queued: wait for the oldest one's flush.
        let h = handle.clone();
        waiting.push_back(std::thread::spawn(move || h.flush_blocking()));
        if waiting.len() >= 3 {
            let _ = waiting.pop_front().map(std::thread::JoinHandle::join);
        }
    }
    for w in waiting {
        let _ = w.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.close();
    let written = stats.written();
    let dropped = stats.dropped();
    let rows = written + field_rows + diff_rows;
    println!(
        "{location}: {written} exchanges written ({dropped} dropped), {field_rows} diff_fields and \
         {diff_rows} diffs rows, in {elapsed:.1} s: {:.0} exchanges/s, {:.0} rows/s",
        written as f64 / elapsed,
        rows as f64 / elapsed
    );
    Ok(())
}
