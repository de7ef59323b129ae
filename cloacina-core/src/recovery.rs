//! Recovery policy: leases, heartbeats, and what happens to a task whose
//! runner is gone.

use std::time::Duration;

use crate::ids::Timestamp;

/// A recovery policy that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryPolicyError {
    /// A zero lease TTL or heartbeat interval.
    #[error("{what} must be greater than zero")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
    /// The heartbeat would not renew the lease before it expires.
    #[error("heartbeat interval ({heartbeat:?}) must be shorter than the lease TTL ({lease_ttl:?})")]
    HeartbeatNotShorterThanLease {
        /// The heartbeat interval.
        heartbeat: Duration,
        /// The lease TTL.
        lease_ttl: Duration,
    },
}

/// How a runner's leases are kept alive and what happens when its runner
/// disappears.
///
/// Defaults: lease TTL 10 s, heartbeat every 2 s, at most 3 recoveries.
///
/// ```
/// use cloacina_core::{RecoveryPolicy, RecoveryDecision, OwnerStatus, Timestamp};
/// use std::time::Duration;
/// let p = RecoveryPolicy::new(Duration::from_secs(10), Duration::from_secs(2), 3)?;
/// let now = Timestamp(100_000);
/// assert_eq!(p.decide(0, OwnerStatus::Alive { expires_at: Timestamp(105_000) }, now), RecoveryDecision::Keep);
/// assert_eq!(p.decide(0, OwnerStatus::Gone, now), RecoveryDecision::Requeue { recovery_count: 1 });
/// assert_eq!(p.decide(3, OwnerStatus::Gone, now), RecoveryDecision::Abandon { recovery_count: 3 });
/// # Ok::<(), cloacina_core::RecoveryPolicyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    lease_ttl: Duration,
    heartbeat_interval: Duration,
    max_recoveries: u32,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self { lease_ttl: Duration::from_secs(10), heartbeat_interval: Duration::from_secs(2), max_recoveries: 3 }
    }
}

/// What the recovery sweep knows about the owner of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerStatus {
    /// The owner's liveness row is current until `expires_at`.
    Alive {
        /// When the owner's liveness expires unless renewed.
        expires_at: Timestamp,
    },
    /// The owner is dead: its liveness expired, it was marked dead or
    /// stopped, it restarted under the same id, or it has no row.
    Gone,
}

/// What recovery does with a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryDecision {
    /// Its owner is alive: leave it alone.
    Keep,
    /// Back to Ready with the new recovery count.
    Requeue {
        /// The task's recovery count after this recovery.
        recovery_count: u32,
    },
    /// Terminal: the task lost its runner `recovery_count` times already.
    Abandon {
        /// The recovery count (unchanged).
        recovery_count: u32,
    },
}

impl RecoveryPolicy {
    /// Validates a policy: both durations positive, heartbeat shorter than
    /// the lease TTL.
    pub fn new(
        lease_ttl: Duration,
        heartbeat_interval: Duration,
        max_recoveries: u32,
    ) -> Result<Self, RecoveryPolicyError> {
        if lease_ttl.is_zero() {
            return Err(RecoveryPolicyError::Zero { what: "lease TTL" });
        }
        if heartbeat_interval.is_zero() {
            return Err(RecoveryPolicyError::Zero { what: "heartbeat interval" });
        }
        if heartbeat_interval >= lease_ttl {
            return Err(RecoveryPolicyError::HeartbeatNotShorterThanLease { heartbeat: heartbeat_interval, lease_ttl });
        }
        Ok(Self { lease_ttl, heartbeat_interval, max_recoveries })
    }

    /// How long a lease lasts without a heartbeat.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }
    /// How often liveness is renewed.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }
    /// How many times a task may lose its runner before it is Abandoned.
    pub fn max_recoveries(&self) -> u32 {
        self.max_recoveries
    }

    /// The decision for a running task that has been recovered
    /// `recovery_count` times so far.
    pub fn decide(&self, recovery_count: u32, owner: OwnerStatus, now: Timestamp) -> RecoveryDecision {
        match owner {
            OwnerStatus::Alive { expires_at } if expires_at >= now => RecoveryDecision::Keep,
            _ if recovery_count >= self.max_recoveries => RecoveryDecision::Abandon { recovery_count },
            _ => RecoveryDecision::Requeue { recovery_count: recovery_count + 1 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_policies() {
        let s = Duration::from_secs;
        assert_eq!(RecoveryPolicy::new(s(0), s(1), 3), Err(RecoveryPolicyError::Zero { what: "lease TTL" }));
        assert_eq!(RecoveryPolicy::new(s(5), s(0), 3), Err(RecoveryPolicyError::Zero { what: "heartbeat interval" }));
        assert_eq!(
            RecoveryPolicy::new(s(5), s(5), 3),
            Err(RecoveryPolicyError::HeartbeatNotShorterThanLease { heartbeat: s(5), lease_ttl: s(5) })
        );
    }

    #[test]
    fn expired_owner_is_gone() {
        let p = RecoveryPolicy::default();
        let d = p.decide(1, OwnerStatus::Alive { expires_at: Timestamp(99) }, Timestamp(100));
        assert_eq!(d, RecoveryDecision::Requeue { recovery_count: 2 });
        let zero = RecoveryPolicy::new(Duration::from_secs(2), Duration::from_secs(1), 0).unwrap();
        assert_eq!(zero.decide(0, OwnerStatus::Gone, Timestamp(0)), RecoveryDecision::Abandon { recovery_count: 0 });
    }
}
