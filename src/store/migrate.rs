//! The store's schema as one list of versioned migrations, each written for both engines, and
//! the one way to apply them: `schema_version` records what was applied, and only one process
//! applies at a time (SQLite: the write lock of `BEGIN IMMEDIATE`; PostgreSQL: an advisory lock),
//! so two instances starting at once never both migrate. Each engine writes each step in its
//! own folder (`sqlite/migrate.rs`, `postgres/migrate.rs`), in this list's order: its `STEPS`
//! has one entry per migration (checked when it compiles).

/// One step of the schema.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
}

/// Every migration, oldest first. A released step is never edited: changes are new steps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "exchanges, differences per field, examples, kept bodies, presence, noise",
    },
    Migration {
        version: 2,
        description: "rollout: who served each exchange, fallbacks, phases, rollout_events",
    },
    Migration {
        version: 3,
        description: "rediffs: recorded traffic judged again under a new mapping version",
    },
    Migration {
        version: 4,
        description: "account_health: ok / needs_reauth per account, kept by the writer",
    },
    Migration {
        version: 5,
        description: "webhook_outbox: events waiting for, or done with, their delivery",
    },
    Migration {
        version: 6,
        description: "id crosswalk: pairs, ids seen without a partner, conflicts",
    },
    Migration {
        version: 7,
        description: "triage: marks on difference patterns and their audit trail",
    },
    Migration {
        version: 8,
        description: "replay_sets: named sets of exchanges replayed as a regression suite",
    },
    Migration {
        version: 9,
        description: "roll-ups: hourly outcomes, accounts, fields and latency histograms",
    },
    Migration {
        version: 10,
        description: "roll-ups: difference signatures, exchanges counted without a row",
    },
];

/// The newest version.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The version of this schema (the newest migration), also kept in SQLite's `user_version`.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;
