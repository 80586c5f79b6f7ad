//! Background work (candidate calls, comparisons, the store writer) runs on threads of its own at
//! a lower CPU priority, so that on a busy machine the caller's path keeps the CPU and the shadow
//! side takes what is left. Under sustained saturation shadow work then falls behind and is shed
//! (`skipped`/`overload`, dropped records), instead of slowing the caller.

use serde::Deserialize;
use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
    ThreadSchedulePolicy,
};

/// CPU priority of the background threads (`[shadow] priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The same as the caller's path.
    Normal,
    /// Lowest niceness (19): about 1/70 of a normal thread's share when the CPU is contended.
    #[default]
    Low,
    /// `SCHED_IDLE`: runs only when nothing else wants the CPU.
    Idle,
}

impl Priority {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Low => "low",
            Self::Idle => "idle",
        }
    }
}

/// Lowers the calling thread's priority. Failure (e.g. a sandbox without the syscall) is logged
/// and otherwise ignored: priority is an optimisation, not a correctness matter.
pub fn lower_current_thread(p: Priority) {
    let policy = match p {
        Priority::Normal => return,
        Priority::Low => NormalThreadSchedulePolicy::Other,
        Priority::Idle => NormalThreadSchedulePolicy::Idle,
    };
    let res = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(policy),
    );
    if let Err(e) = res {
        tracing::debug!(error = ?e, priority = ?p, "could not lower the thread priority");
    }
}
