//! Cron schedules and event-trigger firings.

use super::*;

fn cron(name: &str, expression: &str) -> cloacina_core::schedule::CronSchedule {
    cloacina_core::schedule::CronSchedule::new(name, "single", expression).expect("valid schedule")
}

/// Schedules are stored per tenant, idempotent by name; pause, resume and
/// delete work and name what is missing.
pub async fn schedules_register_update_pause_delete(t: &dyn ContractTarget) {
    use cloacina_core::schedule::CatchUp;
    let s = t.storage();
    let first = s.upsert_schedule(&cron("nightly", "0 0 2 * * *"), T0).await.unwrap();
    assert_eq!(first.last_tick, T0, "a new schedule starts at its registration");
    assert!(!first.paused);
    let next = first.next_tick.expect("has a next tick");
    assert!(next > T0 && next.0 - T0.0 <= 24 * 3600 * 1000);
    // Registering again updates in place.
    let mut ctx = Context::new();
    ctx.set("région", "ÎdF").unwrap();
    let changed = cron("nightly", "0 30 3 * * *")
        .timezone("Europe/Berlin")
        .unwrap()
        .catch_up(CatchUp::RunAll { cap: 7 })
        .unwrap()
        .input(ctx.clone());
    let updated = s.upsert_schedule(&changed, at(60_000)).await.unwrap();
    assert_eq!(updated.created_at, T0);
    assert_eq!(updated.last_tick, T0, "progress is kept");
    let listed = s.schedules().await.unwrap();
    assert_eq!(listed.len(), 1, "never a duplicate");
    let l = &listed[0];
    assert_eq!(l.schedule.expression(), "0 30 3 * * *");
    assert_eq!(l.schedule.timezone_name(), "Europe/Berlin");
    assert_eq!(l.schedule.catch_up_policy(), CatchUp::RunAll { cap: 7 });
    assert_eq!(l.schedule.input_context(), &ctx);
    assert_eq!(l.next_tick, updated.next_tick);
    // Pause: nothing fires, however late.
    assert!(s.set_schedule_paused("nightly", true, at(1)).await.unwrap().paused);
    let wf = single();
    let far = at(30 * 24 * 3600 * 1000);
    assert!(s.fire_schedules(&set(&[&wf]), far).await.unwrap().fired.is_empty());
    assert!(s.upsert_schedule(&changed, at(2)).await.unwrap().paused, "registering again keeps the pause");
    // Resume: continues from now, the paused ticks are not run.
    let resumed = s.set_schedule_paused("nightly", false, far).await.unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.last_tick, far);
    assert!(s.fire_schedules(&set(&[&wf]), far).await.unwrap().fired.is_empty());
    // Another tenant sees none of it.
    assert!(t.other_tenant().await.schedules().await.unwrap().is_empty());
    s.delete_schedule("nightly").await.unwrap();
    assert!(s.schedules().await.unwrap().is_empty());
    for e in
        [s.delete_schedule("nightly").await.unwrap_err(), s.set_schedule_paused("nightly", true, T0).await.unwrap_err()]
    {
        assert!(matches!(e, StorageError::NotFound { what: "schedule", .. }), "{e:?}");
    }
}

/// Ten ticks of an every-second schedule, fired at the same instants by
/// four callers over two pools: ten executions, one per tick.
pub async fn each_tick_fires_once_across_callers(t: &dyn ContractTarget) {
    let pools = [t.storage(), t.reopen().await];
    let wf = single();
    let wfs = Arc::new(set(&[&wf]));
    pools[0].upsert_schedule(&cron("every_second", "* * * * * *"), T0).await.unwrap();
    let mut fired = Vec::new();
    for i in 1..=10 {
        let now = at(i * 1000 + 250);
        let calls = (0..4).map(|k| {
            let s = pools[k % 2].clone();
            let wfs = wfs.clone();
            tokio::spawn(async move { s.fire_schedules(&wfs, now).await.expect("fire") })
        });
        for r in futures::future::join_all(calls).await {
            fired.extend(r.expect("joined").fired);
        }
    }
    assert_eq!(fired.len(), 10, "{fired:?}");
    let ticks: HashSet<Timestamp> = fired.iter().map(|f| f.tick).collect();
    assert_eq!(ticks, (1..=10).map(|i| at(i * 1000)).collect::<HashSet<_>>());
    let execs = pools[1]
        .list_executions(&ExecutionFilter { workflow: Some("single".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(execs.len(), 10);
    assert!(execs.iter().all(|e| e.origin.starts_with("cron:every_second@")), "{:?}", execs[0].origin);
    for f in &fired {
        assert!(execs.iter().any(|e| e.id == f.execution));
    }
    let rec = pools[0].schedules().await.unwrap().remove(0);
    assert_eq!(rec.last_tick, at(10_000));
    assert_eq!(rec.next_tick, Some(at(11_000)));
}

/// Five missed ticks: `skip` runs one, `run_all` all five; a schedule
/// whose workflow the caller does not know is left for another runner.
pub async fn catch_up_after_downtime(t: &dyn ContractTarget) {
    use cloacina_core::schedule::CatchUp;
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let minute = 60_000;
    // T0 is at second 20 of its minute: these tick at T0 + k minutes.
    s.upsert_schedule(&cron("skipper", "20 * * * * *"), T0).await.unwrap();
    s.upsert_schedule(&cron("runner_all", "20 * * * * *").catch_up(CatchUp::run_all()).unwrap(), T0).await.unwrap();
    let other = cloacina_core::schedule::CronSchedule::new("foreign", "not_here", "0 * * * * *").unwrap();
    s.upsert_schedule(&other, T0).await.unwrap();
    // Nobody fires for five minutes and five seconds: ticks 1-4 are missed,
    // tick 5 is on time.
    let back = at(5 * minute + 5_000);
    let report = s.fire_schedules(&wfs, back).await.unwrap();
    let of = |name: &str| report.fired.iter().filter(|f| f.schedule == name).map(|f| f.tick).collect::<Vec<_>>();
    assert_eq!(of("skipper"), vec![at(5 * minute)]);
    assert_eq!(of("runner_all"), (1..=5).map(|i| at(i * minute)).collect::<Vec<_>>());
    assert_eq!(report.skipped_ticks, 4);
    assert_eq!(report.unknown_workflow, vec!["foreign".to_owned()]);
    assert!(s.fire_schedules(&wfs, back).await.unwrap().fired.is_empty(), "nothing twice");
    let n = s.list_executions(&ExecutionFilter::default()).await.unwrap().len();
    assert_eq!(n, 6);
    let foreign = s.schedules().await.unwrap().into_iter().find(|r| r.schedule.name() == "foreign").unwrap();
    assert_eq!(foreign.last_tick, T0, "left untouched");
}

/// A trigger's identical firing is suppressed while the first is
/// unfinished (also when racing); different contexts, concurrent triggers
/// and finished firings go through.
pub async fn trigger_firings_are_deduplicated(t: &dyn ContractTarget) {
    use cloacina_core::schedule::firing_key;
    let pools = [t.storage(), t.reopen().await];
    let wf = single();
    let wfs = Arc::new(set(&[&wf]));
    let firing = |trigger: &str, n: i64, concurrent: bool| {
        let ctx = input(n);
        TriggerFiring {
            trigger: trigger.to_owned(),
            key: firing_key(trigger, &ctx),
            allow_concurrent: concurrent,
            execution: NewExecution::plan(&wf, ctx, format!("trigger:{trigger}"), T0),
        }
    };
    // Eight identical firings at once: one execution.
    let calls = (0..8).map(|k| {
        let s = pools[k % 2].clone();
        let wfs = wfs.clone();
        let f = firing("inbox", 1, false);
        tokio::spawn(async move { s.fire_trigger(f, &wfs, T0).await.expect("fire") })
    });
    let outcomes: Vec<TriggerOutcome> =
        futures::future::join_all(calls).await.into_iter().map(|r| r.expect("joined")).collect();
    let fired: Vec<ExecutionId> = outcomes
        .iter()
        .filter_map(|o| match o {
            TriggerOutcome::Fired { execution, .. } => Some(*execution),
            TriggerOutcome::Suppressed { .. } => None,
        })
        .collect();
    assert_eq!(fired.len(), 1, "{outcomes:?}");
    let first = fired[0];
    for o in &outcomes {
        if let TriggerOutcome::Suppressed { running } = o {
            assert_eq!(*running, first);
        }
    }
    let s = &pools[0];
    let e = s.execution(first).await.unwrap().unwrap();
    assert_eq!(e.origin, "trigger:inbox");
    assert_eq!(e.input, input(1));
    // A different context, another trigger, a trigger allowing concurrency.
    assert!(matches!(s.fire_trigger(firing("inbox", 2, false), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    assert!(matches!(s.fire_trigger(firing("other", 1, false), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    assert!(matches!(s.fire_trigger(firing("fanout", 1, true), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    assert!(matches!(s.fire_trigger(firing("fanout", 1, true), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    // Once the first is finished, the same firing starts a new execution.
    s.cancel(first, "done with it", at(1)).await.unwrap();
    match s.fire_trigger(firing("inbox", 1, false), &wfs, at(2)).await.unwrap() {
        TriggerOutcome::Fired { execution, .. } => assert_ne!(execution, first),
        other => panic!("expected a new firing, got {other:?}"),
    }
    assert_eq!(s.list_executions(&ExecutionFilter::default()).await.unwrap().len(), 6);
}

/// A tick that already has its record starts nothing and is reported; the
/// other due schedules fire as usual in the same call.
pub async fn a_duplicate_tick_skips_only_its_schedule(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    s.upsert_schedule(&cron("dup", "* * * * * *"), T0).await.unwrap();
    let first = s.fire_schedules(&wfs, at(1_100)).await.unwrap();
    assert_eq!(first.fired.iter().map(|f| f.tick).collect::<Vec<_>>(), vec![at(1_000)]);
    // A runner whose clock is behind resumes it before that tick: the tick
    // at 1 s is due again, but its record exists.
    s.set_schedule_paused("dup", true, at(1_200)).await.unwrap();
    s.set_schedule_paused("dup", false, at(500)).await.unwrap();
    s.upsert_schedule(&cron("other", "* * * * * *"), at(500)).await.unwrap();
    let again = s.fire_schedules(&wfs, at(1_300)).await.unwrap();
    assert_eq!(again.duplicate_ticks, vec![DuplicateTick { schedule: "dup".into(), tick: at(1_000) }]);
    assert_eq!(
        again.fired.iter().map(|f| (f.schedule.as_str(), f.tick)).collect::<Vec<_>>(),
        vec![("other", at(1_000))],
        "the other schedule fired"
    );
    assert_eq!(s.list_executions(&ExecutionFilter::default()).await.unwrap().len(), 2, "no second run of the tick");
    // And the duplicated schedule goes on with its next tick.
    let next = s.fire_schedules(&wfs, at(2_100)).await.unwrap();
    assert!(next.fired.iter().any(|f| f.schedule == "dup" && f.tick == at(2_000)), "{next:?}");
}

/// A trigger firing retried after its commit's answer was lost (the same
/// execution id) is recorded once.
pub async fn a_retried_trigger_firing_is_recorded_once(t: &dyn ContractTarget) {
    use cloacina_core::schedule::firing_key;
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let ctx = input(5);
    let firing = TriggerFiring {
        trigger: "inbox".into(),
        key: firing_key("inbox", &ctx),
        allow_concurrent: true,
        execution: NewExecution::plan(&wf, ctx, "trigger:inbox", T0),
    };
    let id = firing.execution.id;
    for _ in 0..3 {
        match s.fire_trigger(firing.clone(), &wfs, T0).await.unwrap() {
            TriggerOutcome::Fired { execution, .. } => assert_eq!(execution, id),
            other => panic!("expected Fired, got {other:?}"),
        }
    }
    assert_eq!(s.list_executions(&ExecutionFilter::default()).await.unwrap().len(), 1);
}
