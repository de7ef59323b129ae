//! The counters that let a report read only the rows it changes (per task:
//! dependencies not yet terminal; per execution: tasks not yet terminal),
//! on both backends: executions written before the counters existed, or
//! whose counters disagree with their rows, still finish correctly; and
//! while executions run, the stored counters are exactly what the states
//! say.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloacina_runner::core::ports::{NewExecution, Storage};
use cloacina_runner::core::{TriggerRule, ValueCondition, WorkflowSet};
use cloacina_runner::{Context, TaskError, TaskSpec, Timestamp, Workflow, WorkflowState, task_fn};
use cloacina_testkit::QueueExt;
use common::TestDb;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

const WIDTH: usize = 5;

/// root -> m0..m4 -> join (runs only if `m4` was set, a rule that reads
/// the context) -> tail; `never` runs only if a middle task failed, so it is
/// skipped, and `after_never` (all_done) runs anyway.
fn shape(joins: Arc<AtomicUsize>) -> Workflow {
    let put = |id: &str| {
        let key = id.to_owned();
        TaskSpec::new(
            id,
            task_fn(move |mut c: Context| {
                let key = key.clone();
                async move {
                    c.set(&key, true)?;
                    Ok::<_, TaskError>(c)
                }
            }),
        )
    };
    let mids: Vec<String> = (0..WIDTH).map(|i| format!("m{i}")).collect();
    let mut b = Workflow::builder("counted").task(put("root"));
    for m in &mids {
        b = b.task(put(m).depends_on(["root"]));
    }
    let join = TaskSpec::new(
        "join",
        task_fn(move |mut c: Context| {
            let joins = joins.clone();
            async move {
                joins.fetch_add(1, Ordering::SeqCst);
                c.set("join", true)?;
                Ok::<_, TaskError>(c)
            }
        }),
    )
    .depends_on(mids.clone())
    .trigger(TriggerRule::ContextValue { key: format!("m{}", WIDTH - 1), condition: ValueCondition::Exists });
    b.task(join)
        .task(put("tail").depends_on(["join"]))
        .task(put("never").depends_on(mids.clone()).trigger(TriggerRule::OneFailed))
        .task(put("after_never").depends_on(["never"]).trigger(TriggerRule::AllDone))
        .build()
        .unwrap()
}

/// A storage of the test database, and its raw connection.
async fn storage(db: &TestDb) -> (Box<dyn Storage>, DbBackend) {
    if db.url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        (Box::new(cloacina_sqlite::open(o).await.unwrap()), DbBackend::Sqlite)
    } else {
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        (Box::new(cloacina_postgres::open(o).await.unwrap()), DbBackend::Postgres)
    }
}

async fn raw(db: &TestDb) -> (DatabaseConnection, DbBackend, Box<dyn std::any::Any>) {
    if db.url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_sqlite::open(o).await.unwrap();
        (s.backend().connection().clone(), DbBackend::Sqlite, Box::new(s))
    } else {
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_postgres::open(o).await.unwrap();
        (s.backend().connection().clone(), DbBackend::Postgres, Box::new(s))
    }
}

async fn exec_sql(c: &DatabaseConnection, backend: DbBackend, sql: &str) {
    c.execute_raw(Statement::from_string(backend, sql)).await.unwrap();
}

async fn wait_all(r: &cloacina_runner::DefaultRunner, ids: &[cloacina_runner::ExecutionId]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        while r.status(*id).await.unwrap() != WorkflowState::Completed {
            assert!(Instant::now() < deadline, "execution {id} did not complete: {:?}", r.status(*id).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn check_result(res: &cloacina_runner::ExecutionResult) {
    for k in ["root", "join", "tail", "after_never"] {
        assert!(res.context.contains_key(k), "final context lacks `{k}`: {:?}", res.context);
    }
    assert!(!res.context.contains_key("never"), "`never` was skipped");
}

/// Executions whose counters are unknown (rows written before the
/// migration that added them) or wrong finish through the whole-execution
/// path, with the same result.
async fn executions_without_or_with_wrong_counters_finish(db: TestDb) {
    let joins = Arc::new(AtomicUsize::new(0));
    let wf = shape(joins.clone());
    let set: WorkflowSet = [wf.clone()].into_iter().collect();
    let news: Vec<NewExecution> =
        (0..3).map(|_| NewExecution::plan(&wf, Context::new(), "test", Timestamp::now())).collect();
    let ids: Vec<_> = news.iter().map(|n| n.id).collect();
    {
        let (s, _) = storage(&db).await;
        s.create_executions(news, None, &set, Timestamp::now()).await.unwrap();
        s.close().await;
    }
    let (c, backend, keep) = raw(&db).await;
    let id = |i: usize| match backend {
        DbBackend::Postgres => format!("'{}'", ids[i].0),
        _ => format!("X'{}'", ids[i].0.simple()),
    };
    // 0: as written before the counters existed.
    exec_sql(&c, backend, &format!("UPDATE workflow_executions SET unfinished = NULL WHERE id = {}", id(0))).await;
    exec_sql(&c, backend, &format!("UPDATE task_executions SET waiting_on = NULL WHERE execution_id = {}", id(0)))
        .await;
    // 1: the join believes one branch is left, the execution one task less.
    exec_sql(
        &c,
        backend,
        &format!("UPDATE task_executions SET waiting_on = 1 WHERE execution_id = {} AND task_name = 'join'", id(1)),
    )
    .await;
    exec_sql(&c, backend, &format!("UPDATE workflow_executions SET unfinished = unfinished - 1 WHERE id = {}", id(1)))
        .await;
    drop(keep);
    let r = db.builder().workflow(wf).build().await.unwrap();
    wait_all(&r, &ids).await;
    for id in &ids {
        check_result(&r.result(*id).await.unwrap());
    }
    assert_eq!(joins.load(Ordering::SeqCst), 3, "each join ran once");
    r.shutdown().await.unwrap();
}

/// While executions are paused half-way, the stored counters equal what
/// the task states say; resumed, they finish.
async fn counters_are_exact_while_executions_run(db: TestDb) {
    let joins = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let wf = {
        let g = gate.clone();
        // The shape, with `m3` waiting for the gate.
        let base = shape(joins.clone());
        let mut b = Workflow::builder("counted");
        for t in base.tasks() {
            let spec = if t.id() == "m3" {
                let g = g.clone();
                TaskSpec::new(
                    "m3",
                    task_fn(move |mut c: Context| {
                        let g = g.clone();
                        async move {
                            g.acquire().await.unwrap().forget();
                            c.set("m3", true)?;
                            Ok::<_, TaskError>(c)
                        }
                    }),
                )
                .depends_on(["root"])
            } else {
                t.clone()
            };
            b = b.task(spec);
        }
        b.build().unwrap()
    };
    let r = db.builder().workflow(wf.clone()).build().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(r.execute_async("counted", Context::new()).await.unwrap().id());
    }
    // Every other task that can finish before m3 has finished.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (s, backend) = storage(&db).await;
    loop {
        let mut settled = true;
        for id in &ids {
            let tasks = s.tasks(*id).await.unwrap();
            let done = tasks.iter().filter(|t| t.state.is_terminal()).count();
            settled &= done == 1 + WIDTH - 1;
        }
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "the executions did not reach m3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c, _, keep) = raw(&db).await;
    for id in &ids {
        let tasks = s.tasks(*id).await.unwrap();
        let lit = match backend {
            DbBackend::Postgres => format!("'{}'", id.0),
            _ => format!("X'{}'", id.0.simple()),
        };
        let rows = c
            .query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT task_name, waiting_on FROM task_executions WHERE execution_id = {lit} \
                     UNION ALL SELECT '', unfinished FROM workflow_executions WHERE id = {lit}"
                ),
            ))
            .await
            .unwrap();
        let stored: std::collections::HashMap<String, Option<i32>> = rows
            .iter()
            .map(|row| (row.try_get_by_index::<String>(0).unwrap(), row.try_get_by_index::<Option<i32>>(1).unwrap()))
            .collect();
        let state = |name: &str| tasks.iter().find(|t| t.name == name).unwrap().state;
        let unfinished = tasks.iter().filter(|t| !t.state.is_terminal()).count() as i32;
        assert_eq!(stored[""], Some(unfinished), "execution {id}: unfinished");
        for (i, t) in wf.tasks().iter().enumerate() {
            let waiting =
                wf.dependency_indices(i).iter().filter(|&&d| !state(wf.tasks()[d].id()).is_terminal()).count() as i32;
            assert_eq!(stored[t.id()], Some(waiting), "execution {id}: waiting_on of `{}`", t.id());
        }
    }
    drop(keep);
    s.close().await;
    gate.add_permits(ids.len());
    wait_all(&r, &ids).await;
    for id in &ids {
        check_result(&r.result(*id).await.unwrap());
    }
    assert_eq!(joins.load(Ordering::SeqCst), ids.len());
    r.shutdown().await.unwrap();
}

on_both_backends!(executions_without_or_with_wrong_counters_finish, counters_are_exact_while_executions_run);
