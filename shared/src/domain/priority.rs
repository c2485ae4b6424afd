use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A priority lane. P0 is emergency broadcast and never waits behind another lane; P2 and P3 are
/// the bulk lanes that may use only a share of shared budgets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum Priority {
    P0,
    P1,
    P2,
    P3,
    P4,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::P0,
        Priority::P1,
        Priority::P2,
        Priority::P3,
        Priority::P4,
    ];

    /// Position in the order of claim on shared budgets: P0 first, then P1, P4 (transactional, never
    /// starved), and the bulk lanes last.
    pub fn rank(self) -> usize {
        match self {
            Priority::P0 => 0,
            Priority::P1 => 1,
            Priority::P4 => 2,
            Priority::P2 => 3,
            Priority::P3 => 4,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Priority> {
        Priority::ALL.get(i).copied()
    }

    pub fn is_bulk(self) -> bool {
        matches!(self, Priority::P2 | Priority::P3)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
            Priority::P4 => "P4",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
