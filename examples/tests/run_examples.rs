//! Runs the example programs as a user would, and checks what they print.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "example binary {} not built (cargo test builds examples)", path.display());
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run example");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "example failed ({}):\n{text}", out.status);
    text
}

#[test]
fn quickstart_runs_on_a_local_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(Command::new(example("quickstart")).current_dir(dir.path()));
    assert!(first.contains("finished: Completed"), "{first}");
    assert!(first.contains("summary = \"23.25 to invoice, 1 item(s) to reorder\""), "{first}");
    assert!(dir.path().join("quickstart.db").exists());
    let second = run(Command::new(example("quickstart")).current_dir(dir.path()));
    assert!(second.contains("2 execution(s) stored"), "the file keeps earlier executions:\n{second}");
}

#[test]
fn retries_and_triggers_runs() {
    let out = run(&mut Command::new(example("retries_and_triggers")));
    assert!(out.contains("fetch_rates       Completed attempts=3"), "{out}");
    assert!(out.contains("notify_vip        Skipped"), "{out}");
    assert!(out.contains("audit             Completed"), "{out}");
}

#[tokio::test]
async fn multi_tenant_runs_on_postgres() {
    let db = cloacina_testkit::pg::TestDatabase::create("example").await;
    let out = run(Command::new(example("multi_tenant")).env("CLOACINA_EXAMPLE_DATABASE_URL", &db.url));
    for t in ["public", "tenant_acme", "tenant_globex"] {
        assert!(out.contains(&format!("report for {t}")), "{out}");
    }
    assert_eq!(out.matches("sees 1 execution(s), 0 of another tenant").count(), 3, "{out}");
    let missing = Command::new(example("multi_tenant")).env_remove("CLOACINA_EXAMPLE_DATABASE_URL").output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("needs PostgreSQL"));
}

#[test]
fn recovery_survives_a_sigkill() {
    let out = run(&mut Command::new(example("recovery")));
    assert!(out.contains("killed the worker"), "{out}");
    assert!(out.contains("5 of 5 executions completed"), "{out}");
    assert!(out.contains("recovered tasks: [\""), "some task was recovered:\n{out}");
}

#[test]
fn cron_fires_schedules_and_the_trigger_across_a_restart() {
    let out = run(&mut Command::new(example("cron")));
    assert!(out.contains("schedules: 2"), "registering again at the restart duplicates nothing:\n{out}");
    assert!(out.contains("nightly_cleanup   30 2 * * *       Europe/Berlin"), "{out}");
    assert_eq!(out.matches("  imported orders-1.csv (3 rows)").count(), 1, "{out}");
    assert_eq!(out.matches("  imported orders-2.csv (2 rows)").count(), 1, "{out}");
    // The import sleeps 300 ms and the trigger polls every 50 ms, seeing the
    // file each time until the import removes it. Suppressed, those polls
    // start nothing; only the one poll that saw the file just before it was
    // removed may start a second import, which finds nothing left. Without
    // suppression there would be about six imports per file.
    for file in ["orders-1.csv", "orders-2.csv"] {
        let again = out.matches(&format!("  already imported {file}")).count();
        assert!(again <= 1, "{file}: {again} duplicate imports ran while the first was unfinished:\n{out}");
        let line = format!("  {file}: ");
        let started = out.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or_else(|| panic!("no {line:?}:\n{out}"));
        let started: usize = started.parse().unwrap();
        assert!((1..=2).contains(&started), "{file}: {started} imports started by the trigger:\n{out}");
    }
    let line = out.lines().find(|l| l.starts_with("cron executions: ")).expect("summary line");
    let counts: Vec<usize> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    assert_eq!(counts.len(), 2, "{line}");
    assert!(counts[0] >= 4, "the example waits for two ticks before and two after the restart: {line}");
    assert_eq!(counts[0], counts[1], "one execution per tick: {line}");
}

#[test]
fn deploy_strands_nothing() {
    let out = run(&mut Command::new(example("deploy")));
    assert!(out.contains("v1 and v2 share the shape: true"), "{out}");
    assert!(out.contains("step 1: 6 of 6 orders completed, 6 transformed by v2"), "{out}");
    assert!(out.contains("stranded: 3 executions of orders v2"), "{out}");
    assert!(out.contains("refused: "), "{out}");
    assert!(out.contains("migrated 3 executions to v3"), "{out}");
    assert_eq!(out.matches("completed extract:v2 clean:v3 enrich:v3 load:v3").count(), 3, "{out}");
    assert!(out.contains("stranded now: 0"), "{out}");
}
