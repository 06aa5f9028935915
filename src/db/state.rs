//! The closed state enums of runs, task instances and tries, mirrored by CHECK
//! constraints in the migrations. See ARCHITECTURE.md for the state diagram.

use sea_orm::entity::prelude::*;
use serde::Serialize;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EnumIter, DeriveActiveEnum, Serialize)]
        #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(#[sea_orm(string_value = $s)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s,)+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// State of a task instance (domain reference, section 2). `pending` is Airflow's
    /// "no status": the task waits for its upstreams.
    TaskState {
        Pending = "pending",
        Scheduled = "scheduled",
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
        UpForRetry = "up_for_retry",
        UpstreamFailed = "upstream_failed",
        Skipped = "skipped",
        Removed = "removed",
    }
);

impl TaskState {
    /// No further transition happens without an operator (clear).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Removed
        )
    }

    /// Holding a pool slot and counted against concurrency limits.
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running)
    }
}

string_enum!(
    /// State of a DAG run.
    RunState {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
);

impl RunState {
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

string_enum!(
    /// How a run was created.
    RunType {
        Scheduled = "scheduled",
        Manual = "manual",
        Backfill = "backfill",
    }
);

string_enum!(
    /// State of one try of a task.
    TryState {
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
);

string_enum!(
    /// Role of a web user.
    Role {
        Admin = "admin",
        Operator = "operator",
        Viewer = "viewer",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_enums_match_the_check_constraints() {
        let names = |v: Vec<&'static str>| v;
        assert_eq!(
            names(TaskState::ALL.iter().map(|s| s.as_str()).collect()),
            migration::TASK_STATES
        );
        assert_eq!(
            names(RunState::ALL.iter().map(|s| s.as_str()).collect()),
            migration::RUN_STATES
        );
        assert_eq!(
            names(RunType::ALL.iter().map(|s| s.as_str()).collect()),
            migration::RUN_TYPES
        );
        assert_eq!(
            names(TryState::ALL.iter().map(|s| s.as_str()).collect()),
            migration::TRY_STATES
        );
        assert_eq!(
            names(Role::ALL.iter().map(|s| s.as_str()).collect()),
            migration::ROLES
        );
    }
}
