//! Identifiers and the timestamp type shared by every layer.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

uuid_id!(
    /// Identifies one execution of a workflow.
    ExecutionId
);
uuid_id!(
    /// Identifies one task inside one execution (a row, not a task name).
    TaskExecutionId
);

/// Identifies a runner in the liveness table and as the owner of leases.
///
/// Either chosen by the application (a *stable* id, so a restarted process
/// takes back its own leases at once) or generated per process.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunnerId(String);

/// A runner id that breaks the rule in [`RunnerId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid runner id `{id}`: runner ids are 1-100 characters of ASCII letters, digits, `_`, `-` and `.`")]
pub struct InvalidRunnerId {
    /// The rejected id.
    pub id: String,
}

impl RunnerId {
    /// Validates a stable runner id: 1–100 characters of ASCII letters,
    /// digits, `_`, `-` and `.`.
    pub fn parse(id: &str) -> Result<Self, InvalidRunnerId> {
        let ok = !id.is_empty()
            && id.len() <= 100
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok { Ok(Self(id.to_owned())) } else { Err(InvalidRunnerId { id: id.to_owned() }) }
    }

    /// A fresh random id, `runner-<uuid>`.
    pub fn generate() -> Self {
        Self(format!("runner-{}", Uuid::new_v4().simple()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunnerId({})", self.0)
    }
}

/// A token that changes on every claim of a task. A write-back carries the
/// token it was claimed with and is refused when the token moved on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds since the Unix epoch, UTC. The unit every stored time uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock, now.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime` (times before 1970 clamp to 0).
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Self(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(&self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// `self - d`, saturating.
    pub fn minus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(ms))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z).
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// RFC 3339 with milliseconds (`2026-12-02T17:08:01.000Z`); an instant
/// before 1970 or after year 9999 (reachable only through saturating
/// arithmetic) is written as its millisecond count instead. Never fails.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match u64::try_from(self.0) {
            Ok(ms) if self.0 <= LAST_RFC3339_MS => {
                write!(f, "{}", humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)))
            }
            _ => write!(f, "{} ms since the Unix epoch", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_ids_are_validated() {
        assert!(RunnerId::parse("worker-1.eu_west").is_ok());
        assert_eq!(RunnerId::parse("bad id").unwrap_err().id, "bad id");
        assert!(RunnerId::parse("").is_err());
        assert!(RunnerId::parse(&"x".repeat(101)).is_err());
        assert!(RunnerId::parse(&RunnerId::generate().to_string()).is_ok());
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp(1_000);
        assert_eq!(t.plus(Duration::from_millis(5)), Timestamp(1_005));
        assert_eq!(t.since(Timestamp(2_000)), Duration::ZERO);
        assert_eq!(Timestamp(i64::MAX).plus(Duration::from_secs(1)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(LAST_RFC3339_MS).to_string(), "9999-12-31T23:59:59.999Z");
        // Past year 9999 (a saturated sum) the text is the raw count, never an error.
        assert_eq!(Timestamp(i64::MAX).to_string(), format!("{} ms since the Unix epoch", i64::MAX));
        assert_eq!(Timestamp(-5).to_string(), "-5 ms since the Unix epoch");
    }
}
