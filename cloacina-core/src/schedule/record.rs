//! A schedule as stored, and the changes registering and pausing make.

use super::CronSchedule;
use crate::ids::Timestamp;

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    /// The definition.
    pub schedule: CronSchedule,
    /// Paused schedules start nothing.
    pub paused: bool,
    /// Ticks at or before this time are processed (run or skipped). A new
    /// schedule starts at its registration time; a resumed one at its
    /// resumption (ticks missed while paused are not caught up).
    pub last_tick: Timestamp,
    /// The next tick to process (`None`: the expression has no more).
    pub next_tick: Option<Timestamp>,
    /// When it was first registered.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl ScheduleRecord {
    /// The record of `schedule` registered at `now`: new, or replacing the
    /// definition of a stored one whose paused flag, last processed tick
    /// and creation time (`previous`) are kept.
    pub fn registered(schedule: &CronSchedule, previous: Option<(bool, Timestamp, Timestamp)>, now: Timestamp) -> Self {
        let (paused, last_tick, created_at) = previous.unwrap_or((false, now, now));
        Self {
            schedule: schedule.clone(),
            paused,
            last_tick,
            next_tick: schedule.next_after(last_tick),
            created_at,
            updated_at: now,
        }
    }

    /// Whether the schedule is *stalled* at `now`: unpaused, with a tick
    /// that is due by more than its misfire threshold — no runner has
    /// been firing it (none that registers its workflow is running).
    pub fn is_stalled(&self, now: Timestamp) -> bool {
        !self.paused && self.next_tick.is_some_and(|t| now.since(t) > self.schedule.misfire())
    }

    /// Pauses or resumes at `now`; a resumed schedule continues from `now`.
    /// Returns whether anything changed.
    pub fn set_paused(&mut self, paused: bool, now: Timestamp) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        self.updated_at = now;
        if !paused {
            self.last_tick = now;
            self.next_tick = self.schedule.next_after(now);
        }
        true
    }
}
