//! One error type for every way a command can fail, mapped to the SPEC's exit codes: 1 when the
//! user can fix the input, 2 when the machine or the network failed.

use crate::diag::Diagnostics;

/// What made a runtime failure happen: any error (or, for a tool's own message, its text).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Problems in the config or the inputs, all of them.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A single user mistake that is not about a config key (e.g. a file that exists already).
    #[error("{0}")]
    Usage(String),
    /// Something failed while doing the work (I/O, sockets, a tool we run).
    #[error("failed to {action}: {source}")]
    Runtime { action: String, source: Cause },
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Invalid(_) | Failure::Usage(_) => 1,
            Failure::Runtime { .. } => 2,
        }
    }

    /// A runtime failure: "failed to <action>: <cause>", keeping the cause as the source.
    pub fn runtime(action: impl Into<String>, cause: impl Into<Cause>) -> Failure {
        Failure::Runtime { action: action.into(), source: cause.into() }
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::Invalid(d)
    }
}
