//! A real PostgreSQL for tests and benchmarks.
//!
//! Order of preference (unless one path is forced with `--pg`):
//! 1. `CLOACINA_TEST_DATABASE_URL` when set;
//! 2. a testcontainers PostgreSQL when a Docker engine answers (image from
//!    `CLOACINA_PG_IMAGE`, default `postgres:15`);
//! 3. a throwaway cluster from the machine's PostgreSQL binaries (initdb /
//!    pg_ctl in a temp directory, a free loopback port; the `postgres`
//!    superuser trusted, every other role checked by SCRAM password; run as
//!    the `postgres` user when we are root), stopped and removed on drop;
//! 4. otherwise an error saying how to provide one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which provisioning path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `CLOACINA_TEST_DATABASE_URL`.
    Url,
    /// testcontainers.
    Container,
    /// A local throwaway cluster.
    Local,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "url" => Ok(Mode::Url),
            "container" => Ok(Mode::Container),
            "local" => Ok(Mode::Local),
            other => Err(format!("unknown --pg value `{other}`; expected url, container or local")),
        }
    }
}

/// Durability of a local cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsync off: tests, where speed matters and power loss does not.
    Fast,
    /// fsync on, synchronous_commit on: benchmarks.
    Durable,
}

/// A local cluster's handles, for tests that restart it.
#[derive(Debug, Clone)]
pub(crate) struct LocalCluster {
    pub(crate) data_dir: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) run_as: Option<String>,
    pub(crate) port: u16,
}

/// A provisioned server; dropping it stops what it started.
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) description: String,
    pub(crate) local: Option<LocalCluster>,
    _container: Option<testcontainers::Container<testcontainers_modules::postgres::Postgres>>,
}

impl Server {
    /// The variables the fault tests use to restart this server, if it is
    /// a local cluster.
    pub(crate) fn chaos_env(&self) -> Option<Vec<(String, String)>> {
        let l = self.local.as_ref()?;
        Some(vec![
            ("CLOACINA_CHAOS_PG_URL".to_owned(), self.url.clone()),
            ("CLOACINA_CHAOS_PG_DATADIR".into(), l.data_dir.display().to_string()),
            ("CLOACINA_CHAOS_PG_BINDIR".into(), l.bin_dir.display().to_string()),
            ("CLOACINA_CHAOS_PG_RUN_AS".into(), l.run_as.clone().unwrap_or_default()),
        ])
    }

    /// Environment for child processes (tests, benchmarks).
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![("CLOACINA_TEST_DATABASE_URL".to_owned(), self.url.clone())];
        if let Some(l) = &self.local {
            v.push(("CLOACINA_TEST_PG_DATADIR".into(), l.data_dir.display().to_string()));
            v.push(("CLOACINA_TEST_PG_BINDIR".into(), l.bin_dir.display().to_string()));
            v.push(("CLOACINA_TEST_PG_RUN_AS".into(), l.run_as.clone().unwrap_or_default()));
            v.push(("CLOACINA_TEST_PG_PORT".into(), l.port.to_string()));
        }
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(l) = &self.local {
            let _ = pg_cmd(l, "pg_ctl", &["-D", &l.data_dir.display().to_string(), "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(l.data_dir.parent().unwrap_or(&l.data_dir));
        }
    }
}

/// Provisions a server: `forced` path, or the first that works.
pub(crate) fn provision(forced: Option<Mode>, durability: Durability) -> Result<Server, String> {
    provision_inner(forced, durability)
}

/// A local cluster, whatever else is available: the fault tests restart it.
pub(crate) fn provision_local(durability: Durability) -> Result<Server, String> {
    local(durability)
}

fn provision_inner(forced: Option<Mode>, durability: Durability) -> Result<Server, String> {
    match forced {
        Some(Mode::Url) => from_env().ok_or_else(|| "--pg url: CLOACINA_TEST_DATABASE_URL is not set".to_owned()),
        Some(Mode::Container) => container(),
        Some(Mode::Local) => local(durability),
        None => {
            if let Some(s) = from_env() {
                return Ok(s);
            }
            if docker_answers() {
                match container() {
                    Ok(s) => return Ok(s),
                    Err(e) => {
                        eprintln!("xtask: Docker answers but the container did not start ({e}); trying a local cluster")
                    }
                }
            }
            local(durability).map_err(|e| {
                format!(
                    "no PostgreSQL for the tests: {e}\n\
                     Provide one of: CLOACINA_TEST_DATABASE_URL=postgres://user:pass@host:port/db (a superuser, tests create \
                     schemas, roles and databases); a Docker engine (image CLOACINA_PG_IMAGE, default postgres:15); or the \
                     PostgreSQL server binaries (initdb, pg_ctl; Debian: apt-get install postgresql)."
                )
            })
        }
    }
}

fn from_env() -> Option<Server> {
    let url = std::env::var("CLOACINA_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())?;
    Some(Server { description: "CLOACINA_TEST_DATABASE_URL (path 1)".into(), url, local: None, _container: None })
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn container() -> Result<Server, String> {
    use testcontainers::ImageExt;
    use testcontainers::runners::SyncRunner;
    if !docker_answers() {
        return Err("no Docker engine answers (`docker version` failed)".into());
    }
    let image = std::env::var("CLOACINA_PG_IMAGE").unwrap_or_else(|_| "postgres:15".into());
    let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let c = testcontainers_modules::postgres::Postgres::default()
        .with_name(name)
        .with_tag(tag)
        .start()
        .map_err(|e| format!("cannot start container {image}: {e}"))?;
    let port = c.get_host_port_ipv4(5432).map_err(|e| format!("container port: {e}"))?;
    let host = c.get_host().map_err(|e| format!("container host: {e}"))?;
    let url = format!("postgres://postgres:postgres@{host}:{port}/postgres");
    wait_accepting(&host.to_string(), port, Duration::from_secs(60))?;
    Ok(Server {
        description: format!("testcontainers {image} at {host}:{port} (path 2)"),
        url,
        local: None,
        _container: Some(c),
    })
}

fn wait_accepting(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect((host, port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{host}:{port} did not accept connections within {timeout:?}"))
}

fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").is_file()).collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().ok_or_else(|| "initdb and pg_ctl were not found on PATH or under /usr/lib/postgresql/*/bin".into())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A command for a PostgreSQL binary, as the cluster's user.
pub(crate) fn pg_cmd(l: &LocalCluster, bin: &str, args: &[&str]) -> Command {
    let exe = l.bin_dir.join(bin);
    match &l.run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(exe).args(args);
            c
        }
        None => {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn local(durability: Durability) -> Result<Server, String> {
    let bin_dir = find_bin_dir()?;
    let root = std::env::temp_dir().join(format!("cloacina-pg-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let data_dir = root.join("data");
    let run_as = if is_root() { Some("postgres".to_owned()) } else { None };
    if let Some(user) = &run_as {
        let ok = Command::new("chown").args([&format!("{user}:{user}"), &root.display().to_string()]).status();
        if !ok.map(|s| s.success()).unwrap_or(false) {
            let _ = std::fs::remove_dir_all(&root);
            return Err(format!("running as root, but cannot hand {} to the `{user}` user", root.display()));
        }
    }
    let port = free_port()?;
    let cluster = LocalCluster { data_dir: data_dir.clone(), bin_dir, run_as, port };
    // From here on, dropping the server cleans up.
    let server = Server {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        description: format!(
            "local throwaway cluster on 127.0.0.1:{port} from {} ({}; path 3)",
            cluster.bin_dir.display(),
            match durability {
                Durability::Fast => "fsync off",
                Durability::Durable => "fsync on",
            }
        ),
        local: Some(cluster.clone()),
        _container: None,
    };
    let d = data_dir.display().to_string();
    let out = pg_cmd(
        &cluster,
        "initdb",
        &["-D", &d, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
    )
    .output()
    .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // The superuser logs in without a password; every other role (tenant
    // roles) must give its real password, checked with SCRAM, as on a
    // production server.
    let hba = "local all all trust\n\
               host all postgres 127.0.0.1/32 trust\n\
               host all all 127.0.0.1/32 scram-sha-256\n";
    std::fs::write(data_dir.join("pg_hba.conf"), hba).map_err(|e| format!("cannot write pg_hba.conf: {e}"))?;
    // The settings go into the cluster's own configuration (not `pg_ctl -o`),
    // so a test that stops and starts the server keeps them.
    let mut conf = format!(
        "\n# cloacina test cluster\nport = {port}\nunix_socket_directories = '{}'\nlisten_addresses = '127.0.0.1'\n\
         max_connections = 400\nshared_buffers = 128MB\n",
        root.display()
    );
    if durability == Durability::Fast {
        conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
    }
    let conf_path = data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path).map_err(|e| format!("cannot read postgresql.conf: {e}"))?;
    text.push_str(&conf);
    std::fs::write(&conf_path, text).map_err(|e| format!("cannot write postgresql.conf: {e}"))?;
    let log = root.join("server.log").display().to_string();
    let out = pg_cmd(&cluster, "pg_ctl", &["-D", &d, "-l", &log, "-w", "-t", "60", "start"])
        .output()
        .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
    if !out.status.success() {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!("pg_ctl start failed: {}\n{log_text}", String::from_utf8_lossy(&out.stderr)));
    }
    wait_accepting("127.0.0.1", port, Duration::from_secs(30))?;
    Ok(server)
}
