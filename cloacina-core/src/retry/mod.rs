//! Retry policy: how many attempts, how long to wait between them, and which
//! failures deserve another attempt.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::RandomSource;
use crate::task::{ErrorClass, TaskError};

/// A retry policy that cannot be built or parsed. Invalid input is always an
/// error, never a silent default.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryPolicyError {
    /// `total_attempts` was 0; a task runs at least once.
    #[error("total_attempts must be at least 1 (it counts the first run), got 0")]
    ZeroAttempts,
    /// A backoff name that does not exist.
    #[error(
        "unknown backoff `{name}`; expected fixed(<duration>), linear(<duration>) or exponential(<duration>, <multiplier>)"
    )]
    UnknownBackoff {
        /// The name found.
        name: String,
    },
    /// A retry condition name that does not exist.
    #[error("unknown retry condition `{name}`; expected never, all, transient or patterns(<text>|<text>...)")]
    UnknownCondition {
        /// The name found.
        name: String,
    },
    /// A part of the text that could not be understood.
    #[error("invalid {what} `{text}`: {reason}")]
    Invalid {
        /// Which part (backoff, duration, jitter, multiplier, ...).
        what: &'static str,
        /// The text.
        text: String,
        /// What is allowed.
        reason: String,
    },
}

/// How the delay grows from one retry to the next. `n` is the number of the
/// attempt that just failed (1 for the first run).
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// Always the same delay.
    Fixed(Duration),
    /// `step × n`.
    Linear(Duration),
    /// `base × multiplier^(n−1)`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// Growth factor (≥ 1).
        multiplier: f64,
    },
}

impl Backoff {
    /// The delay before the retry that follows failed attempt `n` (≥ 1),
    /// before capping and jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let n = n.max(1);
        match self {
            Backoff::Fixed(d) => *d,
            Backoff::Linear(step) => step.saturating_mul(n),
            Backoff::Exponential { base, multiplier } => {
                let factor = multiplier.powi(i32::try_from(n - 1).unwrap_or(i32::MAX));
                Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
            }
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

fn parse_duration(text: &str) -> Result<Duration, RetryPolicyError> {
    humantime::parse_duration(text.trim()).map_err(|e| RetryPolicyError::Invalid {
        what: "duration",
        text: text.trim().to_owned(),
        reason: format!("{e}; use forms like 500ms, 2s, 1m"),
    })
}

impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Fixed(d) => write!(f, "fixed({})", fmt_duration(*d)),
            Backoff::Linear(d) => write!(f, "linear({})", fmt_duration(*d)),
            Backoff::Exponential { base, multiplier } => {
                write!(f, "exponential({},{})", fmt_duration(*base), multiplier)
            }
        }
    }
}

fn split_call(text: &str) -> (&str, Option<&str>) {
    let text = text.trim();
    match (text.find('('), text.ends_with(')')) {
        (Some(open), true) => (text[..open].trim(), Some(&text[open + 1..text.len() - 1])),
        _ => (text, None),
    }
}

impl FromStr for Backoff {
    type Err = RetryPolicyError;
    /// Parses `fixed(1s)`, `linear(500ms)` or `exponential(1s, 2)`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, args) = split_call(text);
        let missing = |what: &'static str| RetryPolicyError::Invalid {
            what,
            text: text.to_owned(),
            reason: "arguments are missing, e.g. fixed(1s), linear(1s), exponential(1s, 2)".into(),
        };
        match name {
            "fixed" => Ok(Backoff::Fixed(parse_duration(args.ok_or_else(|| missing("backoff"))?)?)),
            "linear" => Ok(Backoff::Linear(parse_duration(args.ok_or_else(|| missing("backoff"))?)?)),
            "exponential" => {
                let args = args.ok_or_else(|| missing("backoff"))?;
                let (base, mult) = args.split_once(',').ok_or_else(|| missing("backoff"))?;
                let multiplier: f64 = mult.trim().parse().map_err(|_| RetryPolicyError::Invalid {
                    what: "multiplier",
                    text: mult.trim().to_owned(),
                    reason: "must be a number ≥ 1".into(),
                })?;
                if !(multiplier.is_finite() && multiplier >= 1.0) {
                    return Err(RetryPolicyError::Invalid {
                        what: "multiplier",
                        text: mult.trim().to_owned(),
                        reason: "must be a number ≥ 1".into(),
                    });
                }
                Ok(Backoff::Exponential { base: parse_duration(base)?, multiplier })
            }
            other => Err(RetryPolicyError::UnknownBackoff { name: other.to_owned() }),
        }
    }
}

/// Which failures are retried (a [`TaskError::Fatal`] never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryCondition {
    /// No failure is retried.
    Never,
    /// Every failure but fatal ones.
    AllErrors,
    /// Only transient failures (including timeouts and retry-after requests).
    TransientOnly,
    /// Failures whose message (with its sources) contains one of the texts.
    MessagePatterns(Vec<String>),
}

impl RetryCondition {
    /// Whether `error` qualifies for a retry.
    pub fn matches(&self, error: &TaskError) -> bool {
        if error.class() == ErrorClass::Fatal {
            return false;
        }
        match self {
            RetryCondition::Never => false,
            RetryCondition::AllErrors => true,
            RetryCondition::TransientOnly => error.class() == ErrorClass::Transient,
            RetryCondition::MessagePatterns(p) => {
                let msg = error.chain_message();
                p.iter().any(|pat| msg.contains(pat.as_str()))
            }
        }
    }
}

impl fmt::Display for RetryCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryCondition::Never => f.write_str("never"),
            RetryCondition::AllErrors => f.write_str("all"),
            RetryCondition::TransientOnly => f.write_str("transient"),
            RetryCondition::MessagePatterns(p) => write!(f, "patterns({})", p.join("|")),
        }
    }
}

impl FromStr for RetryCondition {
    type Err = RetryPolicyError;
    /// Parses `never`, `all`, `transient` or `patterns(timeout|reset)`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match split_call(text) {
            ("never", None) => Ok(Self::Never),
            ("all", None) => Ok(Self::AllErrors),
            ("transient", None) => Ok(Self::TransientOnly),
            ("patterns", Some(args)) => {
                let pats: Vec<String> =
                    args.split('|').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                if pats.is_empty() {
                    return Err(RetryPolicyError::Invalid {
                        what: "retry condition",
                        text: text.to_owned(),
                        reason: "patterns(...) needs at least one non-empty text".into(),
                    });
                }
                Ok(Self::MessagePatterns(pats))
            }
            (name, _) => Err(RetryPolicyError::UnknownCondition { name: name.to_owned() }),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Run again after `delay`.
    Retry {
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// The task fails for good.
    GiveUp {
        /// Why no retry.
        reason: GiveUpReason,
    },
}

/// Why a failure is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// Every allowed attempt was used.
    AttemptsExhausted,
    /// The policy's condition does not cover this failure.
    NotRetryable,
}

/// How a task is retried.
///
/// Defaults: 3 total attempts (the first run and up to 2 retries),
/// exponential backoff from 1 s doubling, capped at 60 s, 10 % jitter,
/// every non-fatal error retried.
///
/// ```
/// use cloacina_core::{Backoff, FixedRandom, RetryCondition, RetryDecision, RetryPolicy, TaskError};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .total_attempts(4)
///     .backoff(Backoff::Exponential { base: Duration::from_millis(100), multiplier: 2.0 })
///     .max_delay(Duration::from_secs(1))
///     .jitter(0.0)
///     .condition(RetryCondition::TransientOnly)
///     .build()?;
/// let err = TaskError::transient("reset");
/// let rng = FixedRandom(0.5);
/// assert_eq!(policy.decide(1, &err, &rng), RetryDecision::Retry { delay: Duration::from_millis(100) });
/// assert_eq!(policy.decide(3, &err, &rng), RetryDecision::Retry { delay: Duration::from_millis(400) });
/// assert!(matches!(policy.decide(4, &err, &rng), RetryDecision::GiveUp { .. }));
///
/// // The same policy as text:
/// let parsed: RetryPolicy =
///     "total_attempts=4; backoff=exponential(100ms, 2); max_delay=1s; jitter=0; retry_on=transient".parse()?;
/// assert_eq!(parsed, policy);
/// # Ok::<(), cloacina_core::RetryPolicyError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    total_attempts: u32,
    backoff: Backoff,
    max_delay: Duration,
    jitter: f64,
    condition: RetryCondition,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            total_attempts: 3,
            backoff: Backoff::Exponential { base: Duration::from_secs(1), multiplier: 2.0 },
            max_delay: Duration::from_secs(60),
            jitter: 0.1,
            condition: RetryCondition::AllErrors,
        }
    }
}

impl RetryPolicy {
    /// The longest `max_delay` a policy accepts: 365 days. (A retry time is
    /// a stored instant; an unbounded delay would put it past year 9999.)
    pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

    /// A policy that runs a task once and never retries it.
    pub fn none() -> Self {
        Self { total_attempts: 1, condition: RetryCondition::Never, ..Self::default() }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder { policy: Self::default() }
    }

    /// Attempts in total, counting the first run (1 = no retry).
    pub fn total_attempts(&self) -> u32 {
        self.total_attempts
    }
    /// The backoff.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
    /// The cap on any delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
    /// Jitter fraction in `[0, 1]`: a delay `d` becomes `d × (1 − jitter × r)`.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }
    /// Which failures are retried.
    pub fn condition(&self) -> &RetryCondition {
        &self.condition
    }

    /// Decides what follows the failure of attempt `attempt` (1-based).
    pub fn decide(&self, attempt: u32, error: &TaskError, rng: &dyn RandomSource) -> RetryDecision {
        if !self.condition.matches(error) {
            return RetryDecision::GiveUp { reason: GiveUpReason::NotRetryable };
        }
        if attempt >= self.total_attempts {
            return RetryDecision::GiveUp { reason: GiveUpReason::AttemptsExhausted };
        }
        let raw = error.requested_delay().unwrap_or_else(|| self.backoff.delay(attempt));
        let capped = raw.min(self.max_delay);
        let factor = 1.0 - self.jitter * rng.next_unit();
        RetryDecision::Retry { delay: capped.mul_f64(factor.clamp(0.0, 1.0)) }
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total_attempts={}; backoff={}; max_delay={}; jitter={}; retry_on={}",
            self.total_attempts,
            self.backoff,
            fmt_duration(self.max_delay),
            self.jitter,
            self.condition
        )
    }
}

impl FromStr for RetryPolicy {
    type Err = RetryPolicyError;
    /// Parses `key=value` pairs separated by `;`. Keys: `total_attempts`,
    /// `backoff`, `max_delay`, `jitter`, `retry_on`. Missing keys keep their
    /// defaults; unknown keys are errors.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut b = RetryPolicy::builder();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| RetryPolicyError::Invalid {
                what: "retry policy entry",
                text: part.to_owned(),
                reason: "expected key=value".into(),
            })?;
            let value = value.trim();
            b = match key.trim() {
                "total_attempts" => b.total_attempts(value.parse().map_err(|_| RetryPolicyError::Invalid {
                    what: "total_attempts",
                    text: value.to_owned(),
                    reason: "must be a whole number ≥ 1".into(),
                })?),
                "backoff" => b.backoff(value.parse()?),
                "max_delay" => b.max_delay(parse_duration(value)?),
                "jitter" => b.jitter(value.parse().map_err(|_| RetryPolicyError::Invalid {
                    what: "jitter",
                    text: value.to_owned(),
                    reason: "must be a number in [0, 1]".into(),
                })?),
                "retry_on" => b.condition(value.parse()?),
                other => {
                    return Err(RetryPolicyError::Invalid {
                        what: "retry policy key",
                        text: other.to_owned(),
                        reason: "expected total_attempts, backoff, max_delay, jitter or retry_on".into(),
                    });
                }
            };
        }
        b.build()
    }
}

/// Builds a [`RetryPolicy`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl RetryPolicyBuilder {
    /// Attempts in total, **counting the first run**. Default 3. Must be ≥ 1.
    pub fn total_attempts(mut self, n: u32) -> Self {
        self.policy.total_attempts = n;
        self
    }
    /// Default: exponential from 1 s, doubling.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.policy.backoff = b;
        self
    }
    /// Cap on every delay. Default 60 s. At most [`RetryPolicy::MAX_DELAY`]
    /// (365 days).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.policy.max_delay = d;
        self
    }
    /// Jitter fraction in `[0, 1]`. Default 0.1.
    pub fn jitter(mut self, j: f64) -> Self {
        self.policy.jitter = j;
        self
    }
    /// Which failures are retried. Default: all non-fatal ones.
    pub fn condition(mut self, c: RetryCondition) -> Self {
        self.policy.condition = c;
        self
    }
    /// Validates and returns the policy.
    pub fn build(self) -> Result<RetryPolicy, RetryPolicyError> {
        let p = self.policy;
        if p.total_attempts == 0 {
            return Err(RetryPolicyError::ZeroAttempts);
        }
        if p.max_delay > RetryPolicy::MAX_DELAY {
            return Err(RetryPolicyError::Invalid {
                what: "max_delay",
                text: fmt_duration(p.max_delay),
                reason: format!("must be at most {} (365 days)", fmt_duration(RetryPolicy::MAX_DELAY)),
            });
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return Err(RetryPolicyError::Invalid {
                what: "jitter",
                text: p.jitter.to_string(),
                reason: "must be a number in [0, 1]".into(),
            });
        }
        if let Backoff::Exponential { multiplier, .. } = p.backoff
            && !(multiplier.is_finite() && multiplier >= 1.0)
        {
            return Err(RetryPolicyError::Invalid {
                what: "multiplier",
                text: multiplier.to_string(),
                reason: "must be a number ≥ 1".into(),
            });
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests;
