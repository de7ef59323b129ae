use super::*;
use crate::context::Context;
use crate::task::{TaskError, task_fn};

fn t(id: &str) -> TaskSpec {
    TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) }))
}

#[test]
fn empty_workflow() {
    assert_eq!(Workflow::builder("w").build().unwrap_err(), WorkflowError::Empty { workflow: "w".into() });
}

#[test]
fn invalid_names_and_ids() {
    assert!(matches!(Workflow::builder("bad name").task(t("a")).build(), Err(WorkflowError::InvalidName { .. })));
    assert!(matches!(Workflow::builder("").task(t("a")).build(), Err(WorkflowError::InvalidName { .. })));
    assert!(matches!(
        Workflow::builder("w").task(t("a/b")).build(),
        Err(WorkflowError::InvalidTaskId { id, .. }) if id == "a/b"
    ));
    assert!(matches!(
        Workflow::builder("w").task(t(&"x".repeat(129))).build(),
        Err(WorkflowError::InvalidTaskId { .. })
    ));
}

#[test]
fn duplicate_ids() {
    assert_eq!(
        Workflow::builder("w").task(t("a")).task(t("a")).build().unwrap_err(),
        WorkflowError::DuplicateTask { workflow: "w".into(), id: "a".into() }
    );
}

#[test]
fn missing_dependency_suggests_nearest() {
    let err = Workflow::builder("w").task(t("extract")).task(t("load").depends_on(["extrct"])).build().unwrap_err();
    assert_eq!(
        err,
        WorkflowError::MissingDependency {
            workflow: "w".into(),
            task: "load".into(),
            dependency: "extrct".into(),
            suggestion: Some("extract".into())
        }
    );
    assert!(err.to_string().contains("did you mean `extract`?"));
    let far = Workflow::builder("w").task(t("a")).task(t("b").depends_on(["zzzzzzzz"])).build().unwrap_err();
    assert!(matches!(far, WorkflowError::MissingDependency { suggestion: None, .. }));
}

#[test]
fn cycle_reports_path() {
    let err = Workflow::builder("w")
        .task(t("a").depends_on(["c"]))
        .task(t("b").depends_on(["a"]))
        .task(t("c").depends_on(["b"]))
        .task(t("d"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        WorkflowError::Cycle { workflow: "w".into(), path: vec!["a".into(), "b".into(), "c".into(), "a".into()] }
    );
    let self_loop = Workflow::builder("w").task(t("a").depends_on(["a"])).build().unwrap_err();
    assert_eq!(self_loop, WorkflowError::Cycle { workflow: "w".into(), path: vec!["a".into(), "a".into()] });
}

#[test]
fn trigger_must_reference_dependency() {
    let err = Workflow::builder("w")
        .task(t("a"))
        .task(t("b"))
        .task(t("c").depends_on(["a"]).trigger(TriggerRule::TaskFailed("b".into())))
        .build()
        .unwrap_err();
    assert_eq!(err, WorkflowError::TriggerReferencesNonDependency { task: "c".into(), referenced: "b".into() });
}

#[test]
fn zero_timeout() {
    assert_eq!(
        Workflow::builder("w").task(t("a").timeout(Duration::ZERO)).build().unwrap_err(),
        WorkflowError::ZeroTimeout { task: "a".into() }
    );
}

#[test]
fn topology_and_fingerprint() {
    let build = |order: &[&str]| {
        let mut b = Workflow::builder("diamond");
        for id in order {
            b = b.task(match *id {
                "b" | "c" => t(id).depends_on(["a"]),
                "d" => t(id).depends_on(["c", "b"]),
                _ => t(id),
            });
        }
        b.build().unwrap()
    };
    let w1 = build(&["a", "b", "c", "d"]);
    let w2 = build(&["d", "c", "b", "a"]);
    assert_eq!(w1.topological_order(), ["a", "b", "c", "d"]);
    assert_eq!(w2.topological_order(), ["a", "b", "c", "d"]);
    assert_eq!(w1.version(), w2.version(), "insertion order does not change the fingerprint");
    assert_eq!(w1.roots(), ["a"]);
    assert_eq!(w1.dependents_of("a"), ["b", "c"]);
    let changed = Workflow::builder("diamond")
        .task(t("a"))
        .task(t("b").depends_on(["a"]))
        .task(t("c").depends_on(["a"]))
        .task(t("d").depends_on(["c", "b"]).retry(RetryPolicy::none()))
        .build()
        .unwrap();
    assert_eq!(changed.version(), w1.version(), "policies are behaviour, not shape");
    assert_ne!(changed.legacy_version(), w1.legacy_version(), "the first release's fingerprint covered policies");
    let timeout = Workflow::builder("diamond")
        .task(t("a").timeout(std::time::Duration::from_secs(3)))
        .task(t("b").depends_on(["a"]))
        .task(t("c").depends_on(["a"]))
        .task(t("d").depends_on(["c", "b"]))
        .build()
        .unwrap();
    assert_eq!(timeout.version(), w1.version(), "timeouts are behaviour");
    let behaviour = Workflow::builder("diamond")
        .task(TaskSpec::new(
            "a",
            task_fn(|mut c: Context| async move {
                c.set("other", "body")?;
                Ok::<_, TaskError>(c)
            }),
        ))
        .task(t("b").depends_on(["a"]))
        .task(t("c").depends_on(["a"]))
        .task(t("d").depends_on(["c", "b"]).trigger(crate::trigger::TriggerRule::AllDone))
        .build()
        .unwrap();
    assert_eq!(behaviour.version(), w1.version(), "bodies and trigger rules are behaviour");
    let labelled = Workflow::builder("diamond")
        .version("v9")
        .task(t("a"))
        .task(t("b").depends_on(["a"]))
        .task(t("c").depends_on(["a"]))
        .task(t("d").depends_on(["c", "b"]))
        .build()
        .unwrap();
    assert_eq!((labelled.version(), labelled.label()), (w1.version(), Some("v9")), "labels are for people");
    let edge = Workflow::builder("diamond")
        .task(t("a"))
        .task(t("b").depends_on(["a"]))
        .task(t("c").depends_on(["a"]))
        .task(t("d").depends_on(["c"]))
        .build()
        .unwrap();
    assert_ne!(edge.version(), w1.version(), "a dependency is shape");
    let renamed = build(&["a", "b", "c", "e"]);
    assert_ne!(renamed.version(), w1.version(), "a task id is shape");
    let other_name = Workflow::builder("diamond2").task(t("a")).build().unwrap();
    assert_ne!(other_name.version(), Workflow::builder("diamond").task(t("a")).build().unwrap().version());
    assert!(matches!(
        Workflow::builder("diamond").version("bad label").task(t("a")).build(),
        Err(WorkflowError::InvalidLabel { .. })
    ));
}

/// Registering a shape again with other policies serves every reference of
/// that shape — its first-release fingerprints included — with the new
/// definition; another shape is added beside it and becomes current.
#[test]
fn a_set_serves_each_shape_with_its_latest_definition() {
    let v1 = Workflow::builder("etl").task(t("a")).build().unwrap();
    let v1b = Workflow::builder("etl").version("b").task(t("a").retry(RetryPolicy::none())).build().unwrap();
    assert_eq!(v1.version(), v1b.version());
    assert_ne!(v1.legacy_version(), v1b.legacy_version());
    let mut set = WorkflowSet::new();
    assert!(set.insert(v1.clone()).is_none());
    assert!(set.insert(v1b.clone()).is_some(), "the same shape replaces");
    let old_legacy = WorkflowRef { name: "etl".into(), version: v1.legacy_version().into() };
    assert_eq!(set.get(&old_legacy).unwrap().label(), Some("b"), "old rows are served by the new definition");
    let v2 = Workflow::builder("etl").task(t("a")).task(t("z").depends_on(["a"])).build().unwrap();
    set.insert(v2.clone());
    assert_eq!(set.by_name("etl").unwrap().version(), v2.version());
    assert_eq!(set.len(), 2);
    assert_eq!(set.versions("etl").iter().map(|w| w.version()).collect::<Vec<_>>(), [v2.version(), v1.version()]);
    assert_eq!(set.refs().len(), 5, "two shapes, and three first-release fingerprints");
}
