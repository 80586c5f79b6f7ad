//! The triage rows (`crate::triage` is the model): `triage`, one mark per (route, field
//! pattern, kind), and `triage_log`, the audit trail, appended to in the same transaction as
//! every change. Fleet-safe: a mark is an upsert on its key, so two instances or operators
//! marking the same pattern at once leave one mark (the last) and two lines of the trail.

use super::StoreError;
use crate::triage::{Change, Mark, Pattern, Status};

/// What triage writes, per engine (`sqlite/triage.rs`, `postgres/triage.rs`).
pub(super) trait TriageConn: Send {
    /// Applies a change and appends it to the audit trail (one transaction). `false`: a clear
    /// of a pattern that has no mark (nothing changed, nothing appended).
    fn apply(&mut self, change: &Change) -> Result<bool, StoreError>;
}

#[allow(clippy::too_many_arguments)]
pub(super) fn mark(
    route: String,
    field: String,
    kind: String,
    status: &str,
    reason: String,
    ticket: Option<String>,
    by: String,
    at: String,
    expires: Option<String>,
) -> Mark {
    Mark {
        pattern: Pattern { route, field, kind },
        // A status this version does not know (written by a newer one) holds nothing back.
        status: Status::parse(status).unwrap_or(Status::FixInProgress),
        reason,
        ticket,
        by,
        at,
        expires,
    }
}

/// The condition "this `diff_fields` row `x` of exchange `e` is at a pattern whose mark is
/// `accepted` and not expired at the parameter `now`" (SQL shared by both engines but for the
/// parameter's form). The mark is [`crate::triage::mark_of`]'s: the row's kind's own mark when
/// there is one (accepted or not, expired or not), else the mark for every kind.
pub(super) fn accepted_row(now: &str) -> String {
    let at = |kind: &str| {
        format!(
            "SELECT 1 FROM triage t WHERE t.route = coalesce(e.route, '') AND t.field = x.field
                AND t.kind = {kind}"
        )
    };
    let holds = format!(
        "AND t.status = '{}' AND (t.expires IS NULL OR t.expires > {now})",
        Status::Accepted.as_str()
    );
    format!(
        "(EXISTS ({own} {holds}) OR (NOT EXISTS ({own}) AND EXISTS ({every} {holds})))",
        own = at("x.kind"),
        every = at("''"),
    )
}
