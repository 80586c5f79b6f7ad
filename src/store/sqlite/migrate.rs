//! The schema's steps on SQLite (the list and its rules: `store/migrate.rs`).

use rusqlite::Connection;

use crate::store::migrate::{latest, MIGRATIONS};

/// What a step computes from the rows it finds (in its transaction), after its SQL.
type Fill = fn(&Connection) -> rusqlite::Result<()>;

/// Each migration's SQL and fill, in [`MIGRATIONS`]' order.
const STEPS: &[(&str, Option<Fill>)] = &[
    (SCHEMA, None),
    (V2, None),
    (V3, None),
    (V4, None),
    (V5, None),
    (V6, None),
    (V7, None),
    (V8, None),
    (V9, Some(super::rollup::fill)),
    (V10, Some(super::rollup::fill_signatures)),
];
const _: () = assert!(STEPS.len() == MIGRATIONS.len());

pub(in crate::store) const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS exchanges(
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    route TEXT,
    method TEXT,
    path TEXT,
    account TEXT,
    legacy_status INTEGER,
    candidate_status INTEGER,
    legacy_ms REAL,
    candidate_ms REAL,
    outcome TEXT NOT NULL,
    diff_count INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    request_id TEXT,
    mapping_version TEXT
);
-- Windows (prune, overall latency), per-route windows (trend, latency), and counts per
-- (route, outcome) and (account, outcome) without sorting.
CREATE INDEX IF NOT EXISTS exchanges_started_at ON exchanges(started_at);
CREATE INDEX IF NOT EXISTS exchanges_route_started_at ON exchanges(route, started_at);
CREATE INDEX IF NOT EXISTS exchanges_route_outcome ON exchanges(route, outcome, started_at);
CREATE INDEX IF NOT EXISTS exchanges_account_outcome ON exchanges(account, outcome, started_at);
-- One row per (exchange, field pattern, kind) with the number of differences: what reports
-- aggregate, read in index order per route without touching the diffs themselves.
CREATE TABLE IF NOT EXISTS diff_fields(
    exchange_id INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    route TEXT,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(exchange_id, field, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS diff_fields_route ON diff_fields(route, field, kind, started_at, n);
-- Clustered by exchange: one b-tree insert per row, and an exchange's rows are adjacent.
CREATE TABLE IF NOT EXISTS diffs(
    exchange_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    pointer TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    legacy TEXT,
    candidate TEXT,
    PRIMARY KEY(exchange_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bodies(
    exchange_id INTEGER NOT NULL,
    side TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    blob_id INTEGER,
    PRIMARY KEY(exchange_id, side)
);
CREATE INDEX IF NOT EXISTS bodies_blob_id ON bodies(blob_id);
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    body TEXT NOT NULL
);
-- Per route, field pattern and hour (`2026-11-29T13`): compared exchanges where the field was
-- present in either body. The denominator of the classification (systematic / sporadic).
CREATE TABLE IF NOT EXISTS field_presence(
    route TEXT NOT NULL,
    field TEXT NOT NULL,
    hour TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(route, field, hour)
) WITHOUT ROWID;
-- Noise learned from second legacy calls ([diff.noise]): per route, how many pairs of legacy
-- answers were compared, and per field pattern how many of them differed there.
CREATE TABLE IF NOT EXISTS noise_samples(
    route TEXT PRIMARY KEY,
    samples INTEGER NOT NULL,
    last_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS noise_fields(
    route TEXT NOT NULL,
    field TEXT NOT NULL,
    differed INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY(route, field)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS exchange_bodies AS
    SELECT b.exchange_id, b.side, b.status, b.headers, blobs.body
    FROM bodies b LEFT JOIN blobs ON blobs.id = b.blob_id;
";

/// Per hour, route and account, the `diff` exchanges of each difference signature (keyed by
/// its hash: a signature can be long), and per hour the exchanges that kept no row.
const V10: &str = "
CREATE TABLE rollup_signatures(
    route TEXT NOT NULL,
    hour TEXT NOT NULL,
    account TEXT NOT NULL,
    hash INTEGER NOT NULL,
    signature TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(route, hour, account, hash)
) WITHOUT ROWID;
CREATE INDEX rollup_signatures_hour ON rollup_signatures(hour);
CREATE TABLE rollup_unkept(
    hour TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Hourly roll-ups kept by the writer (see `rollup.rs`); `''` stands for `NULL` in a key.
/// Per-route reads go by the primary keys; `rollup_accounts` is read by hour.
const V9: &str = "
CREATE TABLE rollup_outcomes(
    route TEXT NOT NULL,
    hour TEXT NOT NULL,
    outcome TEXT NOT NULL,
    mapping_version TEXT NOT NULL,
    served_by TEXT NOT NULL,
    fallback TEXT NOT NULL,
    skip_reason TEXT NOT NULL,
    n INTEGER NOT NULL,
    shadow_calls INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY(route, hour, outcome, mapping_version, served_by, fallback, skip_reason)
) WITHOUT ROWID;
CREATE INDEX rollup_outcomes_hour ON rollup_outcomes(hour);
CREATE TABLE rollup_accounts(
    hour TEXT NOT NULL,
    route TEXT NOT NULL,
    account TEXT NOT NULL,
    outcome TEXT NOT NULL,
    mapping_version TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(hour, route, account, outcome, mapping_version)
) WITHOUT ROWID;
CREATE TABLE rollup_fields(
    route TEXT NOT NULL,
    hour TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    diffs INTEGER NOT NULL,
    exchanges INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    PRIMARY KEY(route, hour, field, kind)
) WITHOUT ROWID;
CREATE INDEX rollup_fields_hour ON rollup_fields(hour);
CREATE TABLE rollup_latency(
    route TEXT NOT NULL,
    side TEXT NOT NULL,
    hour TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(route, side, hour, bucket)
) WITHOUT ROWID;
CREATE INDEX rollup_latency_hour ON rollup_latency(hour);
CREATE TABLE rollup_state(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    covered INTEGER NOT NULL
);
";

/// Saved replay sets (see `replay_sets.rs`).
const V8: &str = "
CREATE TABLE IF NOT EXISTS replay_sets(
    name TEXT NOT NULL,
    exchange_id INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    PRIMARY KEY(name, exchange_id)
);
";

/// Triage (see `triage.rs`): one mark per (route, field pattern, kind), `kind` '' for every
/// kind; the audit trail is only appended to.
const V7: &str = "
CREATE TABLE IF NOT EXISTS triage(
    route TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    ticket TEXT,
    marked_by TEXT NOT NULL,
    at TEXT NOT NULL,
    expires TEXT,
    PRIMARY KEY(route, field, kind)
);
CREATE TABLE IF NOT EXISTS triage_log(
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    route TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT,
    reason TEXT,
    ticket TEXT,
    marked_by TEXT NOT NULL,
    expires TEXT
);
";

/// The id crosswalk (see `ids.rs`): ids only, never the natural keys' values.
const V6: &str = "
CREATE TABLE IF NOT EXISTS id_pairs(
    seq INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    legacy_id TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    numbers INTEGER NOT NULL DEFAULT 0,
    learned_at TEXT NOT NULL,
    UNIQUE(account, kind, legacy_id),
    UNIQUE(account, kind, candidate_id)
);
CREATE TABLE IF NOT EXISTS id_unpaired(
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    side TEXT NOT NULL,
    id TEXT NOT NULL,
    seen INTEGER NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY(account, kind, side, id)
);
CREATE TABLE IF NOT EXISTS id_conflicts(
    seq INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    legacy_id TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    held_legacy_id TEXT NOT NULL,
    held_candidate_id TEXT NOT NULL,
    seen INTEGER NOT NULL DEFAULT 1,
    at TEXT NOT NULL,
    UNIQUE(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
);
";

/// The webhook outbox (see `outbox.rs`).
const V5: &str = "
CREATE TABLE IF NOT EXISTS webhook_outbox(
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at TEXT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_pending ON webhook_outbox(endpoint, id) WHERE state = 'pending';
";

/// Account health (see `health.rs`): one row per account that had a candidate auth error.
const V4: &str = "
CREATE TABLE IF NOT EXISTS account_health(
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since TEXT NOT NULL,
    consecutive INTEGER NOT NULL,
    last_error TEXT,
    updated_at TEXT NOT NULL
);
";

/// `rediff --record`: per run and route, the mapping version it ran, the window, and the
/// parity it reached next to the recorded one (`detail`: the per-field figures and the ids of
/// the exchanges that changed verdict, JSON). Never pruned: a few rows per run, no bodies.
const V3: &str = "
CREATE TABLE IF NOT EXISTS rediffs(
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    route TEXT NOT NULL,
    mapping_version TEXT,
    window_from TEXT NOT NULL,
    window_to TEXT NOT NULL,
    exchanges INTEGER NOT NULL,
    recorded_matched INTEGER NOT NULL,
    matched INTEGER NOT NULL,
    fixed INTEGER NOT NULL,
    broken INTEGER NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Rollout phases (the partial index holds the candidate cohort's rows only: the report's
/// served and fallback counts read it, and the other rows cost nothing more to write): each exchange says which vendor answered the caller (`served_by`), why a
/// request of the candidate cohort fell back to legacy (`fallback`), and the phase in force;
/// `rollout_events` keeps every change of phase (never pruned: it is the audit trail).
const V2: &str = "
ALTER TABLE exchanges ADD COLUMN served_by TEXT;
ALTER TABLE exchanges ADD COLUMN fallback TEXT;
ALTER TABLE exchanges ADD COLUMN phase TEXT;
CREATE INDEX IF NOT EXISTS exchanges_cohort ON exchanges(started_at)
    WHERE served_by = 'candidate' OR fallback IS NOT NULL;
CREATE TABLE IF NOT EXISTS rollout_events(
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    from_phase TEXT,
    to_phase TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    evidence TEXT
);
";

const VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_version(
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// Brings a SQLite store up to [`latest`]; returns the versions applied now (empty when it was
/// current). A store that is current is only read, so a read-only current store opens.
pub(in crate::store) fn apply(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    if version(conn)? == latest() {
        return Ok(Vec::new());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        // Another process may have migrated while this one waited for the lock.
        let current = version(conn)?;
        if current == 0 {
            before_versions(conn)?;
        }
        conn.execute_batch(VERSIONS)?;
        let mut applied = Vec::new();
        for (m, (sql, fill)) in MIGRATIONS
            .iter()
            .zip(STEPS)
            .filter(|(m, _)| m.version > current)
        {
            conn.execute_batch(sql)?;
            if let Some(fill) = fill {
                fill(conn)?;
            }
            conn.execute(
                "INSERT INTO schema_version(version, description, applied_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    m.version,
                    m.description,
                    crate::record::rfc3339(std::time::SystemTime::now())
                ],
            )?;
            applied.push(m.version);
        }
        Ok(applied)
    })();
    match applied {
        Ok(v) => {
            conn.execute_batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The newest applied version (0: none recorded).
fn version(conn: &Connection) -> rusqlite::Result<i64> {
    let has: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

/// Stores written before `schema_version` existed: the columns added since, so that version 1's
/// indexes find them.
fn before_versions(conn: &Connection) -> rusqlite::Result<()> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exchanges')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(());
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('exchanges')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !columns.iter().any(|c| c == "mapping_version") {
        conn.execute_batch("ALTER TABLE exchanges ADD COLUMN mapping_version TEXT")?;
    }
    Ok(())
}
