//! The layering checks: `cloacina-core` must not depend, directly or
//! through other crates, on a database crate or an async runtime; and the
//! workspace's crates depend on each other only along the arrows
//! ARCHITECTURE.md draws ([`LAYERS`]).

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

/// Crates the pure domain must never reach through normal dependencies.
pub(crate) const FORBIDDEN: &[&str] = &[
    "sea-orm",
    "sea-orm-migration",
    "sea-query",
    "sqlx",
    "sqlx-core",
    "sqlx-postgres",
    "sqlx-sqlite",
    "libsqlite3-sys",
    "rusqlite",
    "postgres",
    "tokio-postgres",
    "diesel",
    "tokio",
    "async-std",
    "smol",
];

/// Names of the crates `root` reaches through normal (not dev, not build)
/// dependencies, from `cargo metadata --format-version 1` output.
pub(crate) fn normal_closure(metadata: &Value, root: &str) -> Result<HashSet<String>, String> {
    let packages = metadata["packages"].as_array().ok_or("metadata has no packages")?;
    let names: HashMap<&str, &str> =
        packages.iter().filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?))).collect();
    let nodes = metadata["resolve"]["nodes"].as_array().ok_or("metadata has no resolve graph")?;
    let graph: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .filter_map(|n| {
            let id = n["id"].as_str()?;
            let deps = n["deps"]
                .as_array()
                .map(|deps| {
                    deps.iter()
                        .filter(|d| d["dep_kinds"].as_array().is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null())))
                        .filter_map(|d| d["pkg"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            Some((id, deps))
        })
        .collect();
    let start = names
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .ok_or_else(|| format!("`{root}` not in the workspace"))?;
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([start]);
    while let Some(id) = queue.pop_front() {
        for dep in graph.get(id).into_iter().flatten() {
            if seen.insert(*dep) {
                queue.push_back(dep);
            }
        }
    }
    Ok(seen.into_iter().filter_map(|id| names.get(id).map(|n| (*n).to_owned())).collect())
}

/// Fails with the offending crates if `root` reaches a forbidden one.
pub(crate) fn check(metadata: &Value, root: &str) -> Result<(), String> {
    let reached = normal_closure(metadata, root)?;
    let mut bad: Vec<&str> = FORBIDDEN.iter().copied().filter(|f| reached.contains(*f)).collect();
    bad.sort_unstable();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("`{root}` must stay pure (no database crate, no async runtime) but depends on: {}", bad.join(", ")))
    }
}

/// The workspace's crates and the workspace crates each may depend on
/// (normal dependencies; dev-dependencies are free). A crate not listed
/// here is an error too: a new crate gets its place in the map first.
pub(crate) const LAYERS: &[(&str, &[&str])] = &[
    ("cloacina-core", &[]),
    ("cloacina-sql", &["cloacina-core"]),
    ("cloacina-sqlite", &["cloacina-core", "cloacina-sql"]),
    ("cloacina-postgres", &["cloacina-core", "cloacina-sql"]),
    ("cloacina-macros", &["cloacina-core"]),
    ("cloacina-runner", &["cloacina-core", "cloacina-macros", "cloacina-sqlite", "cloacina-postgres"]),
    ("cloacina-testkit", &["cloacina-core"]),
    (
        "cloacina-harness",
        &["cloacina-core", "cloacina-runner", "cloacina-sqlite", "cloacina-postgres", "cloacina-testkit"],
    ),
    ("cloacina-examples", &["cloacina-runner"]),
    ("xtask", &[]),
];

/// Fails with every workspace dependency not allowed by [`LAYERS`].
pub(crate) fn check_layers(metadata: &Value) -> Result<(), String> {
    let members: HashSet<&str> = metadata["workspace_members"]
        .as_array()
        .ok_or("metadata has no workspace members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = metadata["packages"].as_array().ok_or("metadata has no packages")?;
    let mut bad = Vec::new();
    for p in packages.iter().filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id))) {
        let name = p["name"].as_str().unwrap_or("?");
        let Some((_, allowed)) = LAYERS.iter().find(|(n, _)| *n == name) else {
            bad.push(format!("`{name}` is not in the layer map (xtask/src/deps.rs LAYERS, ARCHITECTURE.md)"));
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or("?");
            let normal = d["kind"].is_null();
            let internal = LAYERS.iter().any(|(n, _)| *n == dep);
            if normal && internal && !allowed.contains(&dep) {
                bad.push(format!("`{name}` depends on `{dep}`; it may depend on: {}", allowed.join(", ")));
            }
        }
    }
    if bad.is_empty() { Ok(()) } else { Err(format!("layering broken:\n  {}", bad.join("\n  "))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(core_deps: &[(&str, Option<&str>)]) -> Value {
        let mut packages = vec![json!({"id": "core-id", "name": "cloacina-core"})];
        let mut deps = Vec::new();
        for (name, kind) in core_deps {
            packages.push(json!({"id": format!("{name}-id"), "name": name}));
            deps.push(json!({"pkg": format!("{name}-id"), "dep_kinds": [{"kind": kind}]}));
        }
        let mut nodes = vec![json!({"id": "core-id", "deps": deps})];
        // serde -> tokio shows that transitive dependencies count.
        packages.push(json!({"id": "tokio-id", "name": "tokio"}));
        nodes.push(json!({"id": "sneaky-id", "deps": [{"pkg": "tokio-id", "dep_kinds": [{"kind": null}]}]}));
        json!({"packages": packages, "resolve": {"nodes": nodes}})
    }

    #[test]
    fn pure_core_passes() {
        assert!(check(&metadata(&[("serde", None), ("proptest", Some("dev"))]), "cloacina-core").is_ok());
    }

    #[test]
    fn a_direct_database_dependency_fails() {
        let err = check(&metadata(&[("sea-orm", None)]), "cloacina-core").unwrap_err();
        assert!(err.contains("sea-orm"), "{err}");
    }

    #[test]
    fn a_transitive_runtime_dependency_fails() {
        let err = check(&metadata(&[("sneaky", None)]), "cloacina-core").unwrap_err();
        assert!(err.contains("tokio"), "{err}");
    }

    fn workspace(deps: &[(&str, &str, Option<&str>)]) -> Value {
        let mut packages = Vec::new();
        for (name, _) in LAYERS {
            let own: Vec<Value> = deps
                .iter()
                .filter(|(from, _, _)| from == name)
                .map(|(_, to, kind)| json!({"name": to, "kind": kind}))
                .collect();
            packages.push(json!({"id": format!("{name}-id"), "name": name, "dependencies": own}));
        }
        let members: Vec<Value> = LAYERS.iter().map(|(n, _)| json!(format!("{n}-id"))).collect();
        json!({"packages": packages, "workspace_members": members})
    }

    #[test]
    fn allowed_arrows_pass() {
        let m = workspace(&[("cloacina-sql", "cloacina-core", None), ("cloacina-runner", "cloacina-sqlite", None)]);
        assert!(check_layers(&m).is_ok());
    }

    #[test]
    fn an_arrow_against_the_layers_fails() {
        let m = workspace(&[("cloacina-core", "cloacina-sql", None), ("cloacina-sqlite", "cloacina-postgres", None)]);
        let err = check_layers(&m).unwrap_err();
        assert!(err.contains("`cloacina-core` depends on `cloacina-sql`"), "{err}");
        assert!(err.contains("`cloacina-sqlite` depends on `cloacina-postgres`"), "{err}");
    }

    #[test]
    fn test_crates_as_dev_dependencies_are_fine_but_not_as_normal_ones() {
        let dev = workspace(&[("cloacina-sqlite", "cloacina-testkit", Some("dev"))]);
        assert!(check_layers(&dev).is_ok());
        let normal = workspace(&[("cloacina-runner", "cloacina-testkit", None)]);
        assert!(check_layers(&normal).unwrap_err().contains("`cloacina-runner` depends on `cloacina-testkit`"));
    }

    #[test]
    fn dev_dependencies_do_not_count() {
        assert!(check(&metadata(&[("tokio", Some("dev")), ("sqlx", Some("dev"))]), "cloacina-core").is_ok());
    }
}
