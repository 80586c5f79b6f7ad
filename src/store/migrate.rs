//! The store's schema as one list of versioned migrations, each written for both engines, and
//! the one way to apply them: `schema_version` records what was applied, and only one process
//! applies at a time (SQLite: the write lock of `BEGIN IMMEDIATE`; PostgreSQL: an advisory lock),
//! so two instances starting at once never both migrate.

use rusqlite::Connection;

use super::schema::SCHEMA;

/// What a step computes from a PostgreSQL store's rows.
type PgFill = fn(&mut postgres::Transaction<'_>) -> Result<(), postgres::Error>;

/// One step of the schema.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    /// What the step computes from the rows it finds (in its transaction), after its SQL.
    sqlite_fill: Option<fn(&Connection) -> rusqlite::Result<()>>,
    postgres_fill: Option<PgFill>,
}

/// Every migration, oldest first. A released step is never edited: changes are new steps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "exchanges, differences per field, examples, kept bodies, presence, noise",
        sqlite: SCHEMA,
        postgres: POSTGRES_V1,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 2,
        description: "rollout: who served each exchange, fallbacks, phases, rollout_events",
        sqlite: SQLITE_V2,
        postgres: POSTGRES_V2,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 3,
        description: "rediffs: recorded traffic judged again under a new mapping version",
        sqlite: SQLITE_V3,
        postgres: POSTGRES_V3,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 4,
        description: "account_health: ok / needs_reauth per account, kept by the writer",
        sqlite: SQLITE_V4,
        postgres: POSTGRES_V4,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 5,
        description: "webhook_outbox: events waiting for, or done with, their delivery",
        sqlite: SQLITE_V5,
        postgres: POSTGRES_V5,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 6,
        description: "id crosswalk: pairs, ids seen without a partner, conflicts",
        sqlite: SQLITE_V6,
        postgres: POSTGRES_V6,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 7,
        description: "triage: marks on difference patterns and their audit trail",
        sqlite: SQLITE_V7,
        postgres: POSTGRES_V7,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 8,
        description: "replay_sets: named sets of exchanges replayed as a regression suite",
        sqlite: SQLITE_V8,
        postgres: POSTGRES_V8,
        sqlite_fill: None,
        postgres_fill: None,
    },
    Migration {
        version: 9,
        description: "roll-ups: hourly outcomes, accounts, fields and latency histograms",
        sqlite: SQLITE_V9,
        postgres: POSTGRES_V9,
        sqlite_fill: Some(super::rollup::sqlite_fill),
        postgres_fill: Some(super::rollup::pg_fill),
    },
    Migration {
        version: 10,
        description: "roll-ups: difference signatures, exchanges counted without a row",
        sqlite: SQLITE_V10,
        postgres: POSTGRES_V10,
        sqlite_fill: Some(super::rollup::sqlite_fill_signatures),
        postgres_fill: Some(super::rollup::pg_fill_signatures),
    },
];

/// Per hour, route and account, the `diff` exchanges of each difference signature (keyed by
/// its hash: a signature can be long), and per hour the exchanges that kept no row.
const SQLITE_V10: &str = "
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

const POSTGRES_V10: &str = r#"
CREATE TABLE rollup_signatures(
    route text COLLATE "C" NOT NULL,
    hour timestamptz NOT NULL,
    account text COLLATE "C" NOT NULL,
    hash bigint NOT NULL,
    signature text COLLATE "C" NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (route, hour, account, hash)
);
CREATE INDEX rollup_signatures_hour ON rollup_signatures(hour);
CREATE TABLE rollup_unkept(
    hour timestamptz PRIMARY KEY,
    n bigint NOT NULL
);
"#;

/// Hourly roll-ups kept by the writer (see `rollup.rs`); `''` stands for `NULL` in a key.
/// Per-route reads go by the primary keys; `rollup_accounts` is read by hour.
const SQLITE_V9: &str = "
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

const POSTGRES_V9: &str = r#"
CREATE TABLE rollup_outcomes(
    route text COLLATE "C" NOT NULL,
    hour timestamptz NOT NULL,
    outcome text COLLATE "C" NOT NULL,
    mapping_version text COLLATE "C" NOT NULL,
    served_by text COLLATE "C" NOT NULL,
    fallback text COLLATE "C" NOT NULL,
    skip_reason text COLLATE "C" NOT NULL,
    n bigint NOT NULL,
    shadow_calls bigint NOT NULL,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    PRIMARY KEY (route, hour, outcome, mapping_version, served_by, fallback, skip_reason)
);
CREATE INDEX rollup_outcomes_hour ON rollup_outcomes(hour);
CREATE TABLE rollup_accounts(
    hour timestamptz NOT NULL,
    route text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    outcome text COLLATE "C" NOT NULL,
    mapping_version text COLLATE "C" NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (hour, route, account, outcome, mapping_version)
);
CREATE TABLE rollup_fields(
    route text COLLATE "C" NOT NULL,
    hour timestamptz NOT NULL,
    field text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    diffs bigint NOT NULL,
    exchanges bigint NOT NULL,
    first_id bigint NOT NULL,
    PRIMARY KEY (route, hour, field, kind)
);
CREATE INDEX rollup_fields_hour ON rollup_fields(hour);
CREATE TABLE rollup_latency(
    route text COLLATE "C" NOT NULL,
    side text COLLATE "C" NOT NULL,
    hour timestamptz NOT NULL,
    bucket integer NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (route, side, hour, bucket)
);
CREATE INDEX rollup_latency_hour ON rollup_latency(hour);
CREATE TABLE rollup_state(
    id integer PRIMARY KEY CHECK (id = 1),
    covered bigint NOT NULL
);
"#;

/// Saved replay sets (see `replay_sets.rs`).
const SQLITE_V8: &str = "
CREATE TABLE IF NOT EXISTS replay_sets(
    name TEXT NOT NULL,
    exchange_id INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    PRIMARY KEY(name, exchange_id)
);
";

const POSTGRES_V8: &str = r#"
CREATE TABLE replay_sets(
    name text COLLATE "C" NOT NULL,
    exchange_id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    saved_at timestamptz NOT NULL,
    PRIMARY KEY(name, exchange_id)
);
"#;

/// Triage (see `triage.rs`): one mark per (route, field pattern, kind), `kind` '' for every
/// kind; the audit trail is only appended to.
const SQLITE_V7: &str = "
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

const POSTGRES_V7: &str = r#"
CREATE TABLE triage(
    route text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    status text NOT NULL,
    reason text NOT NULL,
    ticket text,
    marked_by text NOT NULL,
    at timestamptz NOT NULL,
    expires timestamptz,
    PRIMARY KEY(route, field, kind)
);
CREATE TABLE triage_log(
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    action text NOT NULL,
    route text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    status text,
    reason text,
    ticket text,
    marked_by text NOT NULL,
    expires timestamptz
);
"#;

/// The id crosswalk (see `ids.rs`): ids only, never the natural keys' values.
const SQLITE_V6: &str = "
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

const POSTGRES_V6: &str = r#"
CREATE TABLE id_pairs(
    seq bigserial PRIMARY KEY,
    account text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    legacy_id text COLLATE "C" NOT NULL,
    candidate_id text COLLATE "C" NOT NULL,
    numbers integer NOT NULL DEFAULT 0,
    learned_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE(account, kind, legacy_id),
    UNIQUE(account, kind, candidate_id)
);
CREATE TABLE id_unpaired(
    account text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    side text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    seen bigint NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY(account, kind, side, id)
);
CREATE TABLE id_conflicts(
    seq bigserial PRIMARY KEY,
    account text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    legacy_id text COLLATE "C" NOT NULL,
    candidate_id text COLLATE "C" NOT NULL,
    held_legacy_id text COLLATE "C" NOT NULL,
    held_candidate_id text COLLATE "C" NOT NULL,
    seen bigint NOT NULL DEFAULT 1,
    at timestamptz NOT NULL DEFAULT now(),
    UNIQUE(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
);
"#;

/// The webhook outbox (see `outbox.rs`).
const SQLITE_V5: &str = "
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

const POSTGRES_V5: &str = r#"
CREATE TABLE webhook_outbox(
    id bigserial PRIMARY KEY,
    endpoint text COLLATE "C" NOT NULL,
    event text COLLATE "C" NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL,
    attempts integer NOT NULL,
    next_at timestamptz NOT NULL,
    state text COLLATE "C" NOT NULL,
    last_error text,
    delivered_at timestamptz
);
CREATE INDEX webhook_outbox_pending ON webhook_outbox(endpoint, id) WHERE state = 'pending';
"#;

/// Account health (see `health.rs`): one row per account that had a candidate auth error.
const SQLITE_V4: &str = "
CREATE TABLE IF NOT EXISTS account_health(
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since TEXT NOT NULL,
    consecutive INTEGER NOT NULL,
    last_error TEXT,
    updated_at TEXT NOT NULL
);
";

const POSTGRES_V4: &str = r#"
CREATE TABLE account_health(
    account text COLLATE "C" PRIMARY KEY,
    state text COLLATE "C" NOT NULL,
    since timestamptz NOT NULL,
    consecutive bigint NOT NULL,
    last_error text,
    updated_at timestamptz NOT NULL
);
"#;

/// `rediff --record`: per run and route, the mapping version it ran, the window, and the
/// parity it reached next to the recorded one (`detail`: the per-field figures and the ids of
/// the exchanges that changed verdict, JSON). Never pruned: a few rows per run, no bodies.
const SQLITE_V3: &str = "
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

const POSTGRES_V3: &str = r#"
CREATE TABLE rediffs(
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    route text COLLATE "C" NOT NULL,
    mapping_version text COLLATE "C",
    window_from timestamptz NOT NULL,
    window_to timestamptz NOT NULL,
    exchanges bigint NOT NULL,
    recorded_matched bigint NOT NULL,
    matched bigint NOT NULL,
    fixed bigint NOT NULL,
    broken bigint NOT NULL,
    source text NOT NULL,
    detail text NOT NULL
);
"#;

/// Rollout phases (the partial index holds the candidate cohort's rows only: the report's
/// served and fallback counts read it, and the other rows cost nothing more to write): each exchange says which vendor answered the caller (`served_by`), why a
/// request of the candidate cohort fell back to legacy (`fallback`), and the phase in force;
/// `rollout_events` keeps every change of phase (never pruned: it is the audit trail).
const SQLITE_V2: &str = "
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

const POSTGRES_V2: &str = r#"
ALTER TABLE exchanges ADD COLUMN served_by text COLLATE "C",
    ADD COLUMN fallback text COLLATE "C",
    ADD COLUMN phase text COLLATE "C";
CREATE INDEX exchanges_cohort ON exchanges(started_at)
    WHERE served_by = 'candidate' OR fallback IS NOT NULL;
CREATE TABLE rollout_events(
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    from_phase text COLLATE "C",
    to_phase text COLLATE "C" NOT NULL,
    actor text COLLATE "C" NOT NULL,
    reason text COLLATE "C",
    evidence text COLLATE "C"
);
"#;

/// The newest version.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// PostgreSQL's first schema. Choices (docs/store.md, "A fleet on PostgreSQL"):
/// - ids: one sequence, taken by the writers in ranges (one `nextval` round trip per batch, not
///   per row), so ids are unique across instances and increase roughly with time;
/// - `started_at timestamptz`, and the per-exchange tables partitioned by day on it (retention
///   drops a day's partitions); each carries `started_at` so its partitions line up;
/// - kept body texts are addressed by their xxh3-128 (`bytea`): writers insert them with
///   `ON CONFLICT DO NOTHING`, no id to read back;
/// - counters several instances bump (`field_presence`, `noise_*`) are upserts that add;
/// - text columns compare bytewise (`COLLATE "C"`): the same order as SQLite's, so reports sort
///   alike on both engines whatever the database's locale, and index comparisons skip the
///   locale's collation (a third of the writer's server time under `C.UTF-8`).
const POSTGRES_V1: &str = r#"
CREATE SEQUENCE exchange_ids AS bigint;
CREATE TABLE exchanges(
    id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    route text COLLATE "C",
    method text COLLATE "C",
    path text COLLATE "C",
    account text COLLATE "C",
    legacy_status integer,
    candidate_status integer,
    legacy_ms double precision,
    candidate_ms double precision,
    outcome text COLLATE "C" NOT NULL,
    diff_count integer NOT NULL DEFAULT 0,
    reason text COLLATE "C",
    request_id text COLLATE "C",
    mapping_version text COLLATE "C",
    PRIMARY KEY (started_at, id)
) PARTITION BY RANGE (started_at);
CREATE INDEX exchanges_route_started_at ON exchanges(route, started_at);
CREATE INDEX exchanges_route_outcome ON exchanges(route, outcome, started_at);
CREATE INDEX exchanges_account_outcome ON exchanges(account, outcome, started_at);
CREATE INDEX exchanges_id ON exchanges(id);
CREATE TABLE diff_fields(
    exchange_id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    route text COLLATE "C",
    field text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    n integer NOT NULL,
    PRIMARY KEY (started_at, exchange_id, field, kind)
) PARTITION BY RANGE (started_at);
CREATE INDEX diff_fields_route ON diff_fields(route, field, kind, started_at) INCLUDE (n, exchange_id);
CREATE TABLE diffs(
    exchange_id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    seq integer NOT NULL,
    pointer text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    legacy text COLLATE "C",
    candidate text COLLATE "C",
    PRIMARY KEY (started_at, exchange_id, seq)
) PARTITION BY RANGE (started_at);
CREATE INDEX diffs_exchange ON diffs(exchange_id);
CREATE TABLE bodies(
    exchange_id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    side text COLLATE "C" NOT NULL,
    status integer,
    headers text COLLATE "C",
    blob_hash bytea,
    PRIMARY KEY (started_at, exchange_id, side)
) PARTITION BY RANGE (started_at);
CREATE INDEX bodies_exchange ON bodies(exchange_id);
CREATE TABLE blobs(
    hash bytea PRIMARY KEY,
    body text COLLATE "C" NOT NULL,
    first_at timestamptz NOT NULL
);
CREATE TABLE field_presence(
    route text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    hour timestamptz NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (route, field, hour)
);
CREATE TABLE noise_samples(
    route text COLLATE "C" PRIMARY KEY,
    samples bigint NOT NULL,
    last_at timestamptz NOT NULL
);
CREATE TABLE noise_fields(
    route text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    differed bigint NOT NULL,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    PRIMARY KEY (route, field)
);
CREATE VIEW exchange_bodies AS
    SELECT b.exchange_id, b.side, b.status, b.headers, blobs.body
    FROM bodies b LEFT JOIN blobs ON blobs.hash = b.blob_hash;
"#;

const SQLITE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_version(
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

const POSTGRES_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_version(
    version bigint PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The advisory lock key of migrations (any constant; "sdmigrat" in ASCII).
const PG_MIGRATE_LOCK: i64 = 0x7364_6d69_6772_6174;

/// Brings a SQLite store up to [`latest`]; returns the versions applied now (empty when it was
/// current). A store that is current is only read, so a read-only current store opens.
pub(super) fn apply_sqlite(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    if sqlite_version(conn)? == latest() {
        return Ok(Vec::new());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        // Another process may have migrated while this one waited for the lock.
        let current = sqlite_version(conn)?;
        if current == 0 {
            before_versions(conn)?;
        }
        conn.execute_batch(SQLITE_VERSIONS)?;
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            conn.execute_batch(m.sqlite)?;
            if let Some(fill) = m.sqlite_fill {
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
fn sqlite_version(conn: &Connection) -> rusqlite::Result<i64> {
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

/// Brings a PostgreSQL store up to [`latest`] under the migration advisory lock; returns the
/// versions applied now. Each step commits on its own with its `schema_version` row.
pub(super) fn apply_postgres(client: &mut postgres::Client) -> Result<Vec<i64>, postgres::Error> {
    client.execute("SELECT pg_advisory_lock($1)", &[&PG_MIGRATE_LOCK])?;
    let applied = (|| {
        client.batch_execute(POSTGRES_VERSIONS)?;
        let current: i64 = client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
            .get(0);
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            let mut tx = client.transaction()?;
            tx.batch_execute(m.postgres)?;
            if let Some(fill) = m.postgres_fill {
                fill(&mut tx)?;
            }
            tx.execute(
                "INSERT INTO schema_version(version, description) VALUES ($1, $2)",
                &[&m.version, &m.description],
            )?;
            tx.commit()?;
            applied.push(m.version);
        }
        Ok(applied)
    })();
    // The lock also ends with the session; unlocking here lets the next instance go at once.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&PG_MIGRATE_LOCK]);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

/// The applied versions of a PostgreSQL store, oldest first.
pub(super) fn postgres_versions(
    client: &mut postgres::Client,
) -> Result<Vec<i64>, postgres::Error> {
    Ok(client
        .query("SELECT version FROM schema_version ORDER BY version", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
