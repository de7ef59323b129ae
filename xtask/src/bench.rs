//! `cargo xtask bench`: builds in release, provisions a durable
//! PostgreSQL, measures the storage's own ceiling, runs every workload on
//! SQLite and PostgreSQL (a fresh database per run), and prints medians,
//! ratios to the ceiling, and the targets they meet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pg;

#[derive(Debug, Clone)]
struct Options {
    backends: Vec<&'static str>,
    workloads: Vec<String>,
    workflows: usize,
    concurrency: usize,
    runs: usize,
    quick: bool,
    json: Option<PathBuf>,
    pg_mode: Option<pg::Mode>,
    crash_seeds: usize,
    lease_ttl_ms: u64,
}

const ALL: &[&str] =
    &["simple", "pipeline", "parallel", "burn", "versions", "fanout", "chain", "latency", "recovery", "crash"];

fn parse(args: &[String]) -> Result<Options, String> {
    let value =
        |name: &str| -> Option<String> { args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()) };
    let quick = args.iter().any(|a| a == "--quick");
    let backends = match value("--backend").as_deref() {
        None | Some("all") => vec!["sqlite", "postgres"],
        Some("sqlite") => vec!["sqlite"],
        Some("postgres") => vec!["postgres"],
        Some(o) => return Err(format!("--backend {o}: expected sqlite, postgres or all")),
    };
    let workloads = match value("--workload").as_deref() {
        // The crash proof takes minutes: not part of a quick run.
        None | Some("all") => ALL.iter().filter(|w| !(quick && **w == "crash")).map(|s| s.to_string()).collect(),
        Some(list) => {
            let ws: Vec<String> = list.split(',').map(|w| w.trim().to_owned()).collect();
            if let Some(bad) = ws.iter().find(|w| !ALL.contains(&w.as_str())) {
                return Err(format!(
                    "--workload {bad}: expected one of {}, a comma-separated list of them, or all",
                    ALL.join(", ")
                ));
            }
            ws
        }
    };
    let num = |name: &str, d: usize| -> Result<usize, String> {
        match value(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name} {v}: expected a positive number"))
                .and_then(|n: usize| if n == 0 { Err(format!("{name} must be at least 1")) } else { Ok(n) }),
            None => Ok(d),
        }
    };
    Ok(Options {
        backends,
        workloads,
        workflows: num("--workflows", if quick { 1_000 } else { 10_000 })?,
        concurrency: num("--concurrency", 32)?,
        runs: num("--runs", if quick { 1 } else { 3 })?,
        quick,
        json: value("--json").map(PathBuf::from),
        pg_mode: value("--pg").map(|v| v.parse()).transpose()?,
        crash_seeds: num("--crash-seeds", 60)?,
        // Quick runs shorten the lease, so the SIGKILL recovery fits.
        lease_ttl_ms: if quick { 2_000 } else { 10_000 },
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// psql against the server, for creating and dropping databases.
fn psql(server: &pg::Server, sql: &str) -> Result<(), String> {
    let exe =
        server.local.as_ref().map(|l| l.bin_dir.join("psql")).filter(|p| p.exists()).unwrap_or_else(|| "psql".into());
    let out = Command::new(exe)
        .args([server.url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr))) }
}

fn with_database(url: &str, db: &str) -> Result<String, String> {
    let mut u = url::Url::parse(url).map_err(|e| format!("the PostgreSQL URL is not a URL ({e})"))?;
    u.set_path(&format!("/{db}"));
    Ok(u.into())
}

/// A fresh database (PostgreSQL) or file (SQLite) for one run.
struct Target {
    url: String,
    cleanup: Option<String>,
    _dir: Option<PathBuf>,
}

fn target(backend: &str, server: Option<&pg::Server>, n: usize) -> Result<Target, String> {
    if backend == "sqlite" {
        let dir = std::env::temp_dir().join(format!("cloacina-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok(Target { url: format!("sqlite://{}", dir.join("bench.db").display()), cleanup: None, _dir: Some(dir) })
    } else {
        let server = server.ok_or("no PostgreSQL")?;
        let db = format!("cloacina_bench_{}_{n}", std::process::id());
        psql(server, &format!("DROP DATABASE IF EXISTS {db}"))?;
        psql(server, &format!("CREATE DATABASE {db}"))?;
        Ok(Target { url: with_database(&server.url, &db)?, cleanup: Some(db), _dir: None })
    }
}

fn drop_target(t: Target, server: Option<&pg::Server>) {
    if let (Some(db), Some(s)) = (t.cleanup, server) {
        let _ = psql(s, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
    if let Some(d) = t._dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn run_bench(bin: &Path, args: &[String]) -> Result<Value, String> {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("benchmark {args:?} failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| format!("no result from {args:?}: {text}"))?;
    serde_json::from_str(line).map_err(|e| format!("bad result {line}: {e}"))
}

fn pgbench(server: &pg::Server, quick: bool) -> Result<f64, String> {
    let exe = server
        .local
        .as_ref()
        .map(|l| l.bin_dir.join("pgbench"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "pgbench".into());
    let db = format!("cloacina_bench_pgbench_{}", std::process::id());
    psql(server, &format!("DROP DATABASE IF EXISTS {db}"))?;
    psql(server, &format!("CREATE DATABASE {db}"))?;
    let url = with_database(&server.url, &db)?;
    let init = Command::new(&exe).args(["-i", "-q", "-s", "10", &url]).output().map_err(|e| format!("pgbench: {e}"))?;
    if !init.status.success() {
        return Err(format!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr)));
    }
    let secs = if quick { "3" } else { "10" };
    let out = Command::new(&exe)
        .args(["-N", "-c", "8", "-j", "2", "-T", secs, &url])
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let _ = psql(server, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {text}"))
}

/// One workload's runs on one backend: (name, runs of its JSON result).
type Rows = BTreeMap<(String, String), Vec<Value>>;

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let started = Instant::now();
    eprintln!("==> building the benchmark programs (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "cloacina-harness", "--bins"])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("release build failed".into());
    }
    let bin_dir = root().join("target").join("release");
    let bench_bin = bin_dir.join("cloacina-bench");
    let runner_bin = bin_dir.join("cloacina-harness-runner");

    let server = if o.backends.contains(&"postgres") {
        eprintln!("==> provisioning PostgreSQL (durable: fsync on)");
        let s = pg::provision(o.pg_mode, pg::Durability::Durable)?;
        eprintln!("PostgreSQL: {}", s.description);
        Some(s)
    } else {
        None
    };

    let mut reference: BTreeMap<&str, f64> = BTreeMap::new();
    let mut results: Rows = BTreeMap::new();
    let plan: Vec<(&str, String)> = o
        .backends
        .iter()
        .flat_map(|b| o.workloads.iter().filter(|w| *w != "crash").map(move |w| (*b, w.clone())))
        .collect();
    let total_runs = plan.len() * o.runs + o.backends.len();
    let bar = indicatif::ProgressBar::new(total_runs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    for backend in &o.backends {
        bar.set_message(format!("{backend}: reference"));
        let r = if *backend == "sqlite" {
            let t = target("sqlite", None, 0)?;
            let v =
                run_bench(&bench_bin, &["--workload".into(), "sqlite-commits".into(), "--url".into(), t.url.clone()])?;
            drop_target(t, None);
            v["commits_per_s"].as_f64().unwrap_or(f64::NAN)
        } else {
            pgbench(server.as_ref().ok_or("no PostgreSQL")?, o.quick)?
        };
        reference.insert(backend, r);
        bar.inc(1);
    }

    let mut n = 0;
    for (backend, workload) in &plan {
        for run in 0..o.runs {
            bar.set_message(format!("{backend}: {workload} (run {})", run + 1));
            let variants: Vec<(String, Vec<String>)> = match workload.as_str() {
                "simple" | "pipeline" | "parallel" => vec![(
                    workload.clone(),
                    vec![
                        "--workload".into(),
                        workload.clone(),
                        "--workflows".into(),
                        o.workflows.to_string(),
                        "--concurrency".into(),
                        o.concurrency.to_string(),
                    ],
                )],
                "burn" => {
                    let big = if o.quick { 10_000 } else { 100_000 };
                    [1_000usize, big]
                        .iter()
                        .map(|q| {
                            (
                                format!("burn_{q}"),
                                vec!["--workload".into(), "burn".into(), "--queued".into(), q.to_string()],
                            )
                        })
                        .collect()
                }
                "versions" => {
                    // The same backlog spread over 1 or 10 registered
                    // versions, beside as many ready rows of a version
                    // nobody serves.
                    let (queued, rounds) = if o.quick { (2_000, "3") } else { (10_000, "3") };
                    [1usize, 10]
                        .iter()
                        .map(|v| {
                            (
                                format!("versions_{v}"),
                                ["--workload", "versions", "--rounds", rounds]
                                    .iter()
                                    .map(|s| s.to_string())
                                    .chain(["--versions".into(), v.to_string(), "--queued".into(), queued.to_string()])
                                    .collect(),
                            )
                        })
                        .collect()
                }
                "fanout" => {
                    // One wide execution, and many at once.
                    let shapes: [(usize, usize); 2] =
                        if o.quick { [(500, 1), (100, 10)] } else { [(2_000, 1), (500, 20)] };
                    shapes
                        .iter()
                        .map(|(w, e)| {
                            (
                                format!("fanout_{w}x{e}"),
                                ["--workload", "fanout"]
                                    .iter()
                                    .map(|s| s.to_string())
                                    .chain(["--width".into(), w.to_string(), "--executions".into(), e.to_string()])
                                    .collect(),
                            )
                        })
                        .collect()
                }
                "chain" => {
                    let depths: [usize; 2] = if o.quick { [200, 1_000] } else { [1_000, 5_000] };
                    depths
                        .iter()
                        .map(|d| {
                            (
                                format!("chain_{d}"),
                                vec!["--workload".into(), "chain".into(), "--depth".into(), d.to_string()],
                            )
                        })
                        .collect()
                }
                "latency" => vec![("latency".into(), vec!["--workload".into(), "latency".into()])],
                "recovery" => [("recovery_sigkill", "recovery"), ("recovery_graceful", "recovery-graceful")]
                    .iter()
                    .map(|(name, w)| {
                        (
                            (*name).to_owned(),
                            vec![
                                "--workload".into(),
                                (*w).into(),
                                "--runner".into(),
                                runner_bin.display().to_string(),
                                "--lease-ttl-ms".into(),
                                o.lease_ttl_ms.to_string(),
                            ],
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for (name, mut args) in variants {
                n += 1;
                let t = target(backend, server.as_ref(), n)?;
                args.extend(["--url".into(), t.url.clone()]);
                let v = run_bench(&bench_bin, &args);
                drop_target(t, server.as_ref());
                results.entry((backend.to_string(), name)).or_default().push(v?);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut crash = Value::Null;
    if o.workloads.iter().any(|w| w == "crash") {
        let seeds = o.crash_seeds;
        eprintln!("==> crash proof with {seeds} seeds per backend (release)");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["test", "--release", "-p", "cloacina-harness", "--test", "proofs", "crash", "--", "--nocapture"]);
        cmd.env("CLOACINA_CRASH_SEEDS", seeds.to_string());
        if let Some(s) = &server {
            cmd.envs(s.env());
        }
        let t = Instant::now();
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        crash = json!({"seeds_per_backend": seeds, "passed": ok, "seconds": t.elapsed().as_secs_f64()});
        if !ok {
            eprintln!("crash proof FAILED");
        }
    }
    let pg_description = server.as_ref().map(|s| s.description.clone());
    drop(server);

    let report = report(&o, &reference, &results, &crash, pg_description.as_deref(), started.elapsed());
    println!("{}", report.0);
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.1).unwrap_or_default())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    if crash["passed"] == Value::Bool(false) {
        return Err("the crash proof failed".into());
    }
    Ok(())
}

fn metric(runs: &[Value], key: &str) -> f64 {
    median(runs.iter().filter_map(|v| v[key].as_f64()).collect())
}

/// The markdown table and the JSON document.
fn report(
    o: &Options,
    reference: &BTreeMap<&str, f64>,
    results: &Rows,
    crash: &Value,
    pg: Option<&str>,
    took: Duration,
) -> (String, Value) {
    let mut md = String::new();
    md.push_str(&format!(
        "runs per row: {} (median shown); workflows {}; concurrency {}; total {:.0?}\n\n",
        o.runs, o.workflows, o.concurrency, took
    ));
    for (b, r) in reference {
        let what = if *b == "sqlite" {
            "single-row commits/s (WAL, synchronous=NORMAL)"
        } else {
            "pgbench -N, 8 clients, TPS"
        };
        md.push_str(&format!("reference {b}: {r:.0} {what}\n"));
    }
    if let Some(pg) = pg {
        md.push_str(&format!("PostgreSQL: {pg}\n"));
    }
    md.push_str("\n| backend | workload | result | ratio to reference | peak RSS | target | met |\n|---|---|---|---|---|---|---|\n");
    let mut rows_json = Vec::new();
    for ((backend, name), runs) in results {
        let rss = metric(runs, "peak_rss_kib") / 1024.0;
        let r = reference.get(backend.as_str()).copied().unwrap_or(f64::NAN);
        let (result, ratio, target, met) = match name.as_str() {
            "simple" | "pipeline" | "parallel" => {
                let tps = metric(runs, "tasks_per_s");
                let wps = metric(runs, "workflows_per_s");
                let want = match (backend.as_str(), name.as_str()) {
                    ("postgres", "simple") => 2000.0,
                    ("sqlite", "simple") => 5000.0,
                    ("postgres", _) => 1500.0,
                    _ => 4000.0,
                };
                (
                    format!("{tps:.0} tasks/s ({wps:.0} workflows/s)"),
                    format!("{:.2}", tps / r),
                    format!("≥ {want:.0} tasks/s"),
                    tps >= want,
                )
            }
            n if n.starts_with("burn_") => {
                let tps = metric(runs, "tasks_per_s");
                let small = results.get(&(backend.clone(), "burn_1000".into())).map(|r| metric(r, "tasks_per_s"));
                let (target, met) = if n == "burn_1000" {
                    ("baseline".to_owned(), true)
                } else {
                    let rel = small.map(|s| tps / s).unwrap_or(f64::NAN);
                    (format!("≥ 80 % of burn_1000 (is {:.0} %); RSS ≤ 150 MB", rel * 100.0), rel >= 0.8 && rss <= 150.0)
                };
                (format!("{tps:.0} tasks/s"), format!("{:.2}", tps / r), target, met)
            }
            n if n.starts_with("versions_") => {
                let tps = metric(runs, "tasks_per_s");
                let one = results.get(&(backend.clone(), "versions_1".into())).map(|r| metric(r, "tasks_per_s"));
                let (target, met) = if n == "versions_1" {
                    ("baseline (1 version; as many unserved rows beside)".to_owned(), true)
                } else {
                    let rel = one.map(|s| tps / s).unwrap_or(f64::NAN);
                    (format!("≥ 80 % of versions_1 (is {:.0} %)", rel * 100.0), rel >= 0.8)
                };
                (format!("{tps:.0} tasks/s"), format!("{:.2}", tps / r), target, met)
            }
            n if n.starts_with("fanout_") || n.starts_with("chain_") => {
                let tps = metric(runs, "tasks_per_s");
                let rows = metric(runs, "rows_read_per_report");
                let bytes = metric(runs, "output_bytes_per_task");
                let simple = results.get(&(backend.clone(), "simple".into())).map(|r| metric(r, "tasks_per_s"));
                let rel = simple.map(|s| tps / s).unwrap_or(f64::NAN);
                (
                    format!("{tps:.0} tasks/s; {rows:.1} task rows read per report; {bytes:.0} output bytes per task"),
                    format!("{:.2}", tps / r),
                    format!("≥ 50 % of simple (is {:.0} %)", rel * 100.0),
                    rel >= 0.5,
                )
            }
            "latency" => {
                let (p50, p95, p99) =
                    (metric(runs, "start_p50_ms"), metric(runs, "start_p95_ms"), metric(runs, "start_p99_ms"));
                let (c50, c99) = (metric(runs, "complete_p50_ms"), metric(runs, "complete_p99_ms"));
                (
                    format!(
                        "start p50 {p50:.2} / p95 {p95:.2} / p99 {p99:.2} ms; complete p50 {c50:.2} / p99 {c99:.2} ms"
                    ),
                    "—".into(),
                    "start p50 ≤ 5 ms, p99 ≤ 25 ms".into(),
                    p50 <= 5.0 && p99 <= 25.0,
                )
            }
            "recovery_sigkill" => {
                let s = metric(runs, "seconds_to_complete");
                let ttl = o.lease_ttl_ms as f64 / 1000.0;
                (
                    format!("200 in-flight tasks done {s:.2} s after SIGKILL"),
                    "—".into(),
                    format!("≤ lease TTL ({ttl:.0} s) + 2 s"),
                    s <= ttl + 2.0,
                )
            }
            "recovery_graceful" => {
                let s = metric(runs, "seconds_to_complete");
                (format!("200 in-flight tasks done {s:.3} s after shutdown"), "—".into(), "≤ 1 s".into(), s <= 1.0)
            }
            _ => ("?".into(), "—".into(), "—".into(), true),
        };
        md.push_str(&format!(
            "| {backend} | {name} | {result} | {ratio} | {rss:.0} MB | {target} | {} |\n",
            if met { "yes" } else { "**no**" }
        ));
        rows_json.push(json!({"backend": backend, "workload": name, "runs": runs, "met": met, "target": target}));
    }
    if !crash.is_null() {
        md.push_str(&format!(
            "\ncrash proof: {} seeds per backend, {} ({:.0} s)\n",
            crash["seeds_per_backend"],
            if crash["passed"] == Value::Bool(true) { "passed" } else { "FAILED" },
            crash["seconds"].as_f64().unwrap_or(0.0)
        ));
    }
    let doc = json!({
        "reference": reference,
        "postgres": pg,
        "runs_per_row": o.runs,
        "workflows": o.workflows,
        "concurrency": o.concurrency,
        "rows": rows_json,
        "crash": crash,
    });
    (md, doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse(&a(&["--backend", "mysql"])).is_err());
        assert!(parse(&a(&["--workload", "nope"])).is_err());
        assert!(parse(&a(&["--workload", "simple,nope"])).is_err());
        assert_eq!(parse(&a(&["--workload", "simple,chain"])).unwrap().workloads, ["simple", "chain"]);
        assert!(parse(&a(&["--workflows", "0"])).is_err());
        let q = parse(&a(&["--quick", "--backend", "sqlite"])).unwrap();
        assert_eq!((q.runs, q.workflows, q.backends.clone()), (1, 1_000, vec!["sqlite"]));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
