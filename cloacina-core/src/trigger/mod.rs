//! Trigger rules: whether a task runs once its dependencies are done.
//!
//! A task is evaluated once every one of its dependencies is in a terminal
//! state. Its rule sees each dependency's final state and the context the
//! task would receive; it answers *run* (the task becomes Ready) or *skip*
//! (the task becomes Skipped, which in turn lets its own dependents be
//! evaluated). Roots are evaluated when the execution is created, over no
//! dependencies and the input context.

use std::fmt;

mod parse;

pub use parse::TriggerRuleError;

use serde_json::Value;

use crate::context::Context;
use crate::state::TaskState;

/// A comparison of one context value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueCondition {
    /// The value equals this one.
    Equals(Value),
    /// The value is absent or differs from this one.
    NotEquals(Value),
    /// Both are numbers and the value is greater (or both strings, compared
    /// lexicographically).
    GreaterThan(Value),
    /// Both are numbers and the value is smaller (or both strings).
    LessThan(Value),
    /// A string containing this string, an array containing this element,
    /// or an object containing this key.
    Contains(Value),
    /// The negation of [`Contains`](Self::Contains) (true when absent).
    NotContains(Value),
    /// The key is present.
    Exists,
    /// The key is absent.
    NotExists,
}

impl ValueCondition {
    fn holds(&self, actual: Option<&Value>) -> bool {
        match self {
            ValueCondition::Exists => actual.is_some(),
            ValueCondition::NotExists => actual.is_none(),
            ValueCondition::Equals(v) => actual == Some(v),
            ValueCondition::NotEquals(v) => actual != Some(v),
            ValueCondition::GreaterThan(v) => compare(actual, v) == Some(std::cmp::Ordering::Greater),
            ValueCondition::LessThan(v) => compare(actual, v) == Some(std::cmp::Ordering::Less),
            ValueCondition::Contains(v) => actual.is_some_and(|a| contains(a, v)),
            ValueCondition::NotContains(v) => !actual.is_some_and(|a| contains(a, v)),
        }
    }
}

fn compare(actual: Option<&Value>, expected: &Value) -> Option<std::cmp::Ordering> {
    match (actual?, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        (Value::Array(items), n) => items.contains(n),
        (Value::Object(map), Value::String(k)) => map.contains_key(k),
        _ => false,
    }
}

impl fmt::Display for ValueCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, v) = match self {
            ValueCondition::Equals(v) => ("equals", Some(v)),
            ValueCondition::NotEquals(v) => ("not_equals", Some(v)),
            ValueCondition::GreaterThan(v) => ("greater_than", Some(v)),
            ValueCondition::LessThan(v) => ("less_than", Some(v)),
            ValueCondition::Contains(v) => ("contains", Some(v)),
            ValueCondition::NotContains(v) => ("not_contains", Some(v)),
            ValueCondition::Exists => ("exists", None),
            ValueCondition::NotExists => ("not_exists", None),
        };
        match v {
            Some(v) => write!(f, "{op} {v}"),
            None => f.write_str(op),
        }
    }
}

/// When a task runs, given how its dependencies ended.
///
/// The default is [`TriggerRule::AllSuccess`].
///
/// ```
/// use cloacina_core::{TriggerRule, ValueCondition};
/// // Run the alert task if either check failed, or if the context says so.
/// let rule = TriggerRule::Any(vec![
///     TriggerRule::OneFailed,
///     TriggerRule::ContextValue { key: "force_alert".into(), condition: ValueCondition::Equals(true.into()) },
/// ]);
/// assert_eq!(rule.to_string(), "any(one_failed, context_value(force_alert, equals true))");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TriggerRule {
    /// Every dependency completed. Otherwise the task is skipped
    /// ("upstream failed or skipped").
    #[default]
    AllSuccess,
    /// Runs whatever the dependencies' outcome (also known as `always`).
    AllDone,
    /// At least one dependency completed.
    OneSuccess,
    /// At least one dependency failed or was abandoned.
    OneFailed,
    /// No dependency failed or was abandoned (skipped ones are fine).
    NoneFailed,
    /// The named dependency completed.
    TaskSuccess(String),
    /// The named dependency failed or was abandoned.
    TaskFailed(String),
    /// The named dependency was skipped.
    TaskSkipped(String),
    /// A value of the task's input context satisfies a condition.
    ContextValue {
        /// Top-level context key.
        key: String,
        /// The test.
        condition: ValueCondition,
    },
    /// Every rule holds (true when empty).
    All(Vec<TriggerRule>),
    /// At least one rule holds (false when empty).
    Any(Vec<TriggerRule>),
    /// No rule holds (true when empty).
    None(Vec<TriggerRule>),
}

/// A dependency's final state, as a trigger rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyOutcome<'a> {
    /// The dependency's task id.
    pub task: &'a str,
    /// Its terminal state.
    pub state: TaskState,
}

/// The result of evaluating a trigger rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerDecision {
    /// The task becomes Ready.
    Run,
    /// The task becomes Skipped, for this reason.
    Skip(String),
}

fn failed(s: TaskState) -> bool {
    matches!(s, TaskState::Failed | TaskState::Abandoned)
}

impl TriggerRule {
    /// An alias of [`TriggerRule::AllDone`].
    pub fn always() -> Self {
        TriggerRule::AllDone
    }

    /// Task ids the rule names (they must be dependencies of the task).
    pub fn referenced_tasks(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }

    fn collect_refs<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            TriggerRule::TaskSuccess(t) | TriggerRule::TaskFailed(t) | TriggerRule::TaskSkipped(t) => out.push(t),
            TriggerRule::All(rs) | TriggerRule::Any(rs) | TriggerRule::None(rs) => {
                rs.iter().for_each(|r| r.collect_refs(out));
            }
            _ => {}
        }
    }

    /// Whether evaluation reads the context (so storage must provide it).
    pub fn needs_context(&self) -> bool {
        match self {
            TriggerRule::ContextValue { .. } => true,
            TriggerRule::All(rs) | TriggerRule::Any(rs) | TriggerRule::None(rs) => rs.iter().any(Self::needs_context),
            _ => false,
        }
    }

    /// Whether the rule holds.
    pub fn holds(&self, deps: &[DependencyOutcome<'_>], ctx: &Context) -> bool {
        let state_of = |id: &str| deps.iter().find(|d| d.task == id).map(|d| d.state);
        match self {
            TriggerRule::AllSuccess => deps.iter().all(|d| d.state == TaskState::Completed),
            TriggerRule::AllDone => true,
            TriggerRule::OneSuccess => deps.iter().any(|d| d.state == TaskState::Completed),
            TriggerRule::OneFailed => deps.iter().any(|d| failed(d.state)),
            TriggerRule::NoneFailed => !deps.iter().any(|d| failed(d.state)),
            TriggerRule::TaskSuccess(t) => state_of(t) == Some(TaskState::Completed),
            TriggerRule::TaskFailed(t) => state_of(t).is_some_and(failed),
            TriggerRule::TaskSkipped(t) => state_of(t) == Some(TaskState::Skipped),
            TriggerRule::ContextValue { key, condition } => condition.holds(ctx.get(key)),
            TriggerRule::All(rs) => rs.iter().all(|r| r.holds(deps, ctx)),
            TriggerRule::Any(rs) => rs.iter().any(|r| r.holds(deps, ctx)),
            TriggerRule::None(rs) => !rs.iter().any(|r| r.holds(deps, ctx)),
        }
    }

    /// Evaluates the rule into a decision with a readable skip reason.
    ///
    /// ```
    /// use cloacina_core::{Context, DependencyOutcome, TaskState, TriggerDecision, TriggerRule};
    /// let deps = [DependencyOutcome { task: "extract", state: TaskState::Failed }];
    /// assert_eq!(
    ///     TriggerRule::AllSuccess.evaluate(&deps, &Context::new()),
    ///     TriggerDecision::Skip("trigger rule `all_success` not met (upstream failed or skipped: extract)".into())
    /// );
    /// assert_eq!(TriggerRule::OneFailed.evaluate(&deps, &Context::new()), TriggerDecision::Run);
    /// ```
    pub fn evaluate(&self, deps: &[DependencyOutcome<'_>], ctx: &Context) -> TriggerDecision {
        if self.holds(deps, ctx) {
            return TriggerDecision::Run;
        }
        let mut reason = format!("trigger rule `{self}` not met");
        if *self == TriggerRule::AllSuccess {
            let bad: Vec<&str> = deps.iter().filter(|d| d.state != TaskState::Completed).map(|d| d.task).collect();
            reason.push_str(&format!(" (upstream failed or skipped: {})", bad.join(", ")));
        }
        TriggerDecision::Skip(reason)
    }
}

impl fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, rs: &[TriggerRule]| {
            write!(f, "{name}(")?;
            for (i, r) in rs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{r}")?;
            }
            f.write_str(")")
        };
        match self {
            TriggerRule::AllSuccess => f.write_str("all_success"),
            TriggerRule::AllDone => f.write_str("all_done"),
            TriggerRule::OneSuccess => f.write_str("one_success"),
            TriggerRule::OneFailed => f.write_str("one_failed"),
            TriggerRule::NoneFailed => f.write_str("none_failed"),
            TriggerRule::TaskSuccess(t) => write!(f, "task_success({t})"),
            TriggerRule::TaskFailed(t) => write!(f, "task_failed({t})"),
            TriggerRule::TaskSkipped(t) => write!(f, "task_skipped({t})"),
            TriggerRule::ContextValue { key, condition } => {
                write!(f, "context_value({key}, {condition})")
            }
            TriggerRule::All(rs) => list(f, "all", rs),
            TriggerRule::Any(rs) => list(f, "any", rs),
            TriggerRule::None(rs) => list(f, "none", rs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;
    use serde_json::json;

    fn deps(states: &[(&'static str, TaskState)]) -> Vec<DependencyOutcome<'static>> {
        states.iter().map(|(t, s)| DependencyOutcome { task: t, state: *s }).collect()
    }

    #[test]
    fn state_rules() {
        let ctx = Context::new();
        let ok_fail = deps(&[("a", Completed), ("b", Failed)]);
        let ok_skip = deps(&[("a", Completed), ("b", Skipped)]);
        let all_ok = deps(&[("a", Completed), ("b", Completed)]);
        assert!(TriggerRule::AllSuccess.holds(&all_ok, &ctx));
        assert!(!TriggerRule::AllSuccess.holds(&ok_skip, &ctx));
        assert!(TriggerRule::AllSuccess.holds(&[], &ctx), "roots run");
        assert!(TriggerRule::always().holds(&ok_fail, &ctx));
        assert!(TriggerRule::OneSuccess.holds(&ok_fail, &ctx));
        assert!(!TriggerRule::OneSuccess.holds(&deps(&[("a", Failed)]), &ctx));
        assert!(TriggerRule::OneFailed.holds(&ok_fail, &ctx));
        assert!(TriggerRule::OneFailed.holds(&deps(&[("a", Abandoned)]), &ctx));
        assert!(!TriggerRule::NoneFailed.holds(&ok_fail, &ctx));
        assert!(TriggerRule::NoneFailed.holds(&ok_skip, &ctx));
        assert!(TriggerRule::TaskSuccess("a".into()).holds(&ok_fail, &ctx));
        assert!(TriggerRule::TaskFailed("b".into()).holds(&ok_fail, &ctx));
        assert!(TriggerRule::TaskSkipped("b".into()).holds(&ok_skip, &ctx));
        assert!(!TriggerRule::TaskSkipped("zzz".into()).holds(&ok_skip, &ctx));
    }

    #[test]
    fn context_rules() {
        let mut ctx = Context::new();
        ctx.set("n", 5).unwrap();
        ctx.set("s", "hello world").unwrap();
        ctx.set("list", json!([1, 2])).unwrap();
        ctx.set("obj", json!({"k": 1})).unwrap();
        let cv = |key: &str, condition| TriggerRule::ContextValue { key: key.into(), condition };
        use ValueCondition as C;
        let cases = [
            (cv("n", C::Equals(json!(5))), true),
            (cv("n", C::NotEquals(json!(5))), false),
            (cv("missing", C::NotEquals(json!(5))), true),
            (cv("n", C::GreaterThan(json!(4.5))), true),
            (cv("n", C::LessThan(json!(5))), false),
            (cv("s", C::GreaterThan(json!("a"))), true),
            (cv("s", C::LessThan(json!(3))), false),
            (cv("s", C::Contains(json!("world"))), true),
            (cv("list", C::Contains(json!(2))), true),
            (cv("obj", C::Contains(json!("k"))), true),
            (cv("list", C::NotContains(json!(3))), true),
            (cv("missing", C::NotContains(json!(3))), true),
            (cv("n", C::Exists), true),
            (cv("missing", C::Exists), false),
            (cv("missing", C::NotExists), true),
        ];
        for (rule, expected) in cases {
            assert_eq!(rule.holds(&[], &ctx), expected, "{rule}");
            assert!(rule.needs_context());
        }
    }

    #[test]
    fn combinators() {
        let ctx = Context::new();
        let d = deps(&[("a", Completed)]);
        let t = TriggerRule::AllDone;
        let f = TriggerRule::OneFailed;
        assert!(TriggerRule::All(vec![t.clone(), t.clone()]).holds(&d, &ctx));
        assert!(!TriggerRule::All(vec![t.clone(), f.clone()]).holds(&d, &ctx));
        assert!(TriggerRule::Any(vec![f.clone(), t.clone()]).holds(&d, &ctx));
        assert!(!TriggerRule::Any(vec![]).holds(&d, &ctx));
        assert!(TriggerRule::None(vec![f.clone()]).holds(&d, &ctx));
        assert!(!TriggerRule::None(vec![t]).holds(&d, &ctx));
        let nested = TriggerRule::All(vec![
            TriggerRule::TaskSuccess("a".into()),
            TriggerRule::None(vec![TriggerRule::TaskFailed("b".into())]),
        ]);
        assert_eq!(nested.referenced_tasks(), vec!["a", "b"]);
        assert!(!nested.needs_context());
    }
}
