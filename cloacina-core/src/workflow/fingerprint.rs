//! Workflow fingerprints.

use sha2::{Digest, Sha256};

use super::TaskSpec;

/// The shape fingerprint: the name, and each task's id and dependencies.
pub(super) fn shape(name: &str, tasks: &[TaskSpec]) -> String {
    digest(name, tasks, |t, deps| format!("task {} deps=[{deps}]\n", t.id))
}

/// The first release's fingerprint, which also covered each task's retry
/// policy, trigger rule and timeout. Kept so executions it stored are
/// still served.
pub(super) fn first_release(name: &str, tasks: &[TaskSpec]) -> String {
    digest(name, tasks, |t, deps| {
        format!(
            "task {} deps=[{deps}] retry=[{}] trigger=[{}] timeout={}\n",
            t.id,
            t.retry,
            t.trigger,
            t.timeout.map(|d| d.as_millis().to_string()).unwrap_or_else(|| "none".into())
        )
    })
}

fn digest(name: &str, tasks: &[TaskSpec], line: impl Fn(&TaskSpec, &str) -> String) -> String {
    let mut sorted: Vec<&TaskSpec> = tasks.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    h.update(format!("workflow {name}\n"));
    for t in sorted {
        let mut deps = t.dependencies.clone();
        deps.sort();
        deps.dedup();
        h.update(line(t, &deps.join(",")));
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}
