//! The two error types: [`LaunchError`] (the environment does not describe a usable job)
//! and [`RendezvousError`] (the job could not be formed, or broke while running).
//!
//! Both are one sentence meant for the user, naming the variable, the rank and what
//! happened, because they are what a user of a 64-rank job reads at 3 a.m.

use std::fmt;

/// The launcher variables (or solbench's own) are missing, malformed or inconsistent.
///
/// `Display` is one sentence that names the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    variable: String,
    message: String,
}

impl LaunchError {
    pub(crate) fn new(variable: &str, message: impl Into<String>) -> Self {
        Self {
            variable: variable.to_string(),
            message: message.into(),
        }
    }

    /// The environment variable at fault (for example `OMPI_COMM_WORLD_RANK`).
    pub fn variable(&self) -> &str {
        &self.variable
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LaunchError {}

/// What went wrong in a [`RendezvousError`], for callers that branch on it (exit codes,
/// the result file). The sentence itself is in `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// A rank did not join within the join timeout (rank 0 unreachable included).
    NeverJoined,
    /// Rank 0 refused this process: wrong world size, duplicate rank, another build.
    Rejected,
    /// A connection closed without a goodbye: that rank exited or crashed.
    PeerExited,
    /// An operation's deadline passed: a rank is hung, or much slower than the others.
    Timeout,
    /// A rank called [`crate::Rendezvous::abort`] (its collective failed, say).
    Aborted,
    /// Bytes that are not the protocol, or ranks that called different operations.
    Protocol,
    /// A local socket error (rank 0 could not listen, for example).
    Io,
    /// Bad input from the caller or the environment (payload too large, bad variables).
    Config,
}

impl FailureKind {
    /// A stable lower-case name, suitable for a result file.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::NeverJoined => "never_joined",
            FailureKind::Rejected => "rejected",
            FailureKind::PeerExited => "peer_exited",
            FailureKind::Timeout => "timeout",
            FailureKind::Aborted => "aborted",
            FailureKind::Protocol => "protocol",
            FailureKind::Io => "io",
            FailureKind::Config => "config",
        }
    }

    /// The code carried by abort frames, so every rank reports the same kind.
    pub(crate) fn code(self) -> u8 {
        match self {
            FailureKind::NeverJoined => 1,
            FailureKind::Rejected => 2,
            FailureKind::PeerExited => 3,
            FailureKind::Timeout => 4,
            FailureKind::Aborted => 5,
            FailureKind::Protocol => 6,
            FailureKind::Io => 7,
            FailureKind::Config => 8,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => FailureKind::NeverJoined,
            2 => FailureKind::Rejected,
            3 => FailureKind::PeerExited,
            4 => FailureKind::Timeout,
            5 => FailureKind::Aborted,
            6 => FailureKind::Protocol,
            7 => FailureKind::Io,
            8 => FailureKind::Config,
            _ => return None,
        })
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The job could not be formed, or a rank failed after it was. Once a rendezvous has
/// failed, every later operation returns the same error (the first failure is the cause;
/// what follows is only its consequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendezvousError {
    kind: FailureKind,
    ranks: Vec<usize>,
    message: String,
}

impl RendezvousError {
    pub(crate) fn new(kind: FailureKind, ranks: Vec<usize>, message: impl Into<String>) -> Self {
        Self {
            kind,
            ranks,
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The ranks at fault, when known (the ones that never joined, exited, timed out or
    /// aborted). Empty for local errors.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    /// The sentence (same as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RendezvousError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RendezvousError {}

impl From<LaunchError> for RendezvousError {
    fn from(e: LaunchError) -> Self {
        RendezvousError::new(FailureKind::Config, Vec::new(), e.message)
    }
}

/// "rank 3", "ranks 2 and 5", "ranks 1, 4 and 6-9": ranks named the way a person reads
/// them, compact for large jobs (a 512-rank job missing a node lists one range).
pub(crate) fn name_ranks(ranks: &[usize]) -> String {
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        // A run of two reads better as "3 and 4" than "3-4".
        if end == start {
            parts.push(start.to_string());
        } else if end == start + 1 {
            parts.push(start.to_string());
            parts.push(end.to_string());
        } else {
            parts.push(format!("{start}-{end}"));
        }
        i += 1;
    }
    let single = sorted.len() == 1;
    let list = match parts.len() {
        0 => String::from("none"),
        1 => parts[0].clone(),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    };
    if single {
        format!("rank {list}")
    } else {
        format!("ranks {list}")
    }
}

/// "2 s", "0.5 s", "120 s": how long, for messages.
pub(crate) fn seconds(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 1e-9 {
        format!("{} s", s.round() as u64)
    } else if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{} s", s.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ranks_read_like_a_person_writes_them() {
        assert_eq!(name_ranks(&[3]), "rank 3");
        assert_eq!(name_ranks(&[5, 2]), "ranks 2 and 5");
        assert_eq!(name_ranks(&[3, 4]), "ranks 3 and 4");
        assert_eq!(name_ranks(&[1, 4, 6, 7, 8, 9]), "ranks 1, 4 and 6-9");
        assert_eq!(name_ranks(&[2, 2]), "rank 2");
        assert_eq!(name_ranks(&[]), "ranks none");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(120)), "120 s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(12_400)), "12 s");
    }

    #[test]
    fn kind_codes_round_trip() {
        for kind in [
            FailureKind::NeverJoined,
            FailureKind::Rejected,
            FailureKind::PeerExited,
            FailureKind::Timeout,
            FailureKind::Aborted,
            FailureKind::Protocol,
            FailureKind::Io,
            FailureKind::Config,
        ] {
            assert_eq!(FailureKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(FailureKind::from_code(0), None);
        assert_eq!(FailureKind::from_code(200), None);
    }
}
