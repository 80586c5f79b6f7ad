//! The schema's steps on PostgreSQL (the list and its rules: `store/migrate.rs`).

use crate::store::migrate::MIGRATIONS;

/// What a step computes from a store's rows (in its transaction), after its SQL.
type Fill = fn(&mut postgres::Transaction<'_>) -> Result<(), postgres::Error>;

/// Each migration's SQL and fill, in [`MIGRATIONS`]' order.
const STEPS: &[(&str, Option<Fill>)] = &[
    (V1, None),
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

const V10: &str = r#"
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

const V9: &str = r#"
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

const V8: &str = r#"
CREATE TABLE replay_sets(
    name text COLLATE "C" NOT NULL,
    exchange_id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    saved_at timestamptz NOT NULL,
    PRIMARY KEY(name, exchange_id)
);
"#;

const V7: &str = r#"
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

const V6: &str = r#"
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

const V5: &str = r#"
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

const V4: &str = r#"
CREATE TABLE account_health(
    account text COLLATE "C" PRIMARY KEY,
    state text COLLATE "C" NOT NULL,
    since timestamptz NOT NULL,
    consecutive bigint NOT NULL,
    last_error text,
    updated_at timestamptz NOT NULL
);
"#;

const V3: &str = r#"
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

const V2: &str = r#"
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
const V1: &str = r#"
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

const VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_version(
    version bigint PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The advisory lock key of migrations (any constant; "sdmigrat" in ASCII).
const MIGRATE_LOCK: i64 = 0x7364_6d69_6772_6174;

/// Brings a PostgreSQL store up to [`latest`] under the migration advisory lock; returns the
/// versions applied now. Each step commits on its own with its `schema_version` row.
pub(in crate::store) fn apply(client: &mut postgres::Client) -> Result<Vec<i64>, postgres::Error> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])?;
    let applied = (|| {
        client.batch_execute(VERSIONS)?;
        let current: i64 = client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
            .get(0);
        let mut applied = Vec::new();
        for (m, (sql, fill)) in MIGRATIONS
            .iter()
            .zip(STEPS)
            .filter(|(m, _)| m.version > current)
        {
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            if let Some(fill) = fill {
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
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

/// The applied versions of a PostgreSQL store, oldest first.
pub(in crate::store) fn versions(
    client: &mut postgres::Client,
) -> Result<Vec<i64>, postgres::Error> {
    Ok(client
        .query("SELECT version FROM schema_version ORDER BY version", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
