//! Every `#[task]` argument form, and what each builds.

use std::time::Duration;

use cloacina_runner::{Backoff, Context, RetryPolicy, TaskError, TriggerRule, ValueCondition, workflow};

fn my_policy() -> RetryPolicy {
    RetryPolicy::builder().total_attempts(7).build().unwrap()
}

#[workflow]
mod forms {
    use super::*;

    #[task(id = "first-task", retry = none, timeout = 250ms)]
    async fn first(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set("first", 1)?;
        Ok(())
    }

    #[task(depends_on = ["first-task"], retry = exponential(3, 100ms), timeout = 30s)]
    async fn exp2(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = ["first-task"], retry = exponential(4, 1s, 1.5), timeout = 5min)]
    async fn exp3(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [exp2], retry = fixed(5, 1s), timeout = 1h)]
    async fn fixed(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [exp2, exp3], retry = linear(2, 500ms), timeout = "1m 30s", trigger = all_done)]
    async fn linear(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [fixed, linear], retry = "total_attempts=4; backoff=fixed(2s); retry_on=transient",
           trigger = any(task_failed(fixed), context_value(force, equals true)))]
    async fn string_policy(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = string_policy, retry = my_policy, trigger = "none_failed")]
    async fn path_policy(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {
    let wf = forms::workflow();
    assert_eq!(forms::WORKFLOW_NAME, "forms");
    assert_eq!(wf.name(), "forms");
    assert_eq!(wf.label(), None);
    assert_eq!(wf.topological_order(), ["first-task", "exp2", "exp3", "fixed", "linear", "string_policy", "path_policy"]);

    let t = |id: &str| wf.task(id).unwrap_or_else(|| panic!("task {id}"));
    assert_eq!(t("first-task").retry_policy(), &RetryPolicy::none());
    assert_eq!(t("first-task").timeout_duration(), Some(Duration::from_millis(250)));
    assert!(t("first-task").dependencies().is_empty());

    assert_eq!(t("exp2").retry_policy().total_attempts(), 3);
    assert_eq!(t("exp2").retry_policy().backoff(), &Backoff::Exponential { base: Duration::from_millis(100), multiplier: 2.0 });
    assert_eq!(t("exp2").timeout_duration(), Some(Duration::from_secs(30)));
    assert_eq!(t("exp2").dependencies(), ["first-task"]);

    assert_eq!(t("exp3").retry_policy().backoff(), &Backoff::Exponential { base: Duration::from_secs(1), multiplier: 1.5 });
    assert_eq!(t("exp3").timeout_duration(), Some(Duration::from_secs(300)));

    assert_eq!(t("fixed").retry_policy().total_attempts(), 5);
    assert_eq!(t("fixed").retry_policy().backoff(), &Backoff::Fixed(Duration::from_secs(1)));
    assert_eq!(t("fixed").timeout_duration(), Some(Duration::from_secs(3600)));

    assert_eq!(t("linear").retry_policy().backoff(), &Backoff::Linear(Duration::from_millis(500)));
    assert_eq!(t("linear").timeout_duration(), Some(Duration::from_secs(90)));
    assert_eq!(t("linear").trigger_rule(), &TriggerRule::AllDone);
    assert_eq!(t("linear").dependencies(), ["exp2", "exp3"]);

    let string_policy: RetryPolicy = "total_attempts=4; backoff=fixed(2s); retry_on=transient".parse().unwrap();
    assert_eq!(t("string_policy").retry_policy(), &string_policy);
    assert_eq!(
        t("string_policy").trigger_rule(),
        &TriggerRule::Any(vec![
            TriggerRule::TaskFailed("fixed".into()),
            TriggerRule::ContextValue { key: "force".into(), condition: ValueCondition::Equals(true.into()) },
        ])
    );
    assert_eq!(t("string_policy").timeout_duration(), None);

    assert_eq!(t("path_policy").retry_policy(), &my_policy());
    assert_eq!(t("path_policy").trigger_rule(), &TriggerRule::NoneFailed);
    assert_eq!(t("path_policy").dependencies(), ["string_policy"]);

    // Every task has a code fingerprint, and different bodies differ.
    let codes: std::collections::HashSet<&str> = wf.tasks().iter().map(|t| t.code().expect("a code fingerprint")).collect();
    assert_eq!(codes.len(), wf.len());
}
