//! The layering check: `cloacina-core` must not depend, directly or
//! through other crates, on a database crate or an async runtime.

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

    #[test]
    fn dev_dependencies_do_not_count() {
        assert!(check(&metadata(&[("tokio", Some("dev")), ("sqlx", Some("dev"))]), "cloacina-core").is_ok());
    }
}
