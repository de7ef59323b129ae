//! The data a workflow carries from task to task.
//!
//! A [`Context`] is a JSON object: string keys, [`serde_json::Value`] values,
//! kept in key order (a `BTreeMap`), so its serialized form is deterministic.
//!
//! # How a task's input is built
//!
//! * A root task (no dependencies) receives the execution's input context.
//! * A task with dependencies receives the **merge of its completed
//!   dependencies' output contexts**, see [`Context::merge_outputs`]: the
//!   outputs are applied in the workflow's topological order (ties broken by
//!   task id), each one overlaying the keys of the ones before it. A key
//!   written by a later dependency therefore wins; merging is shallow (by
//!   top-level key). Dependencies that did not complete contribute nothing.
//!   When no dependency completed (possible with trigger rules such as
//!   `all_done`) the task receives the execution's input context.
//!
//! A task's output context is its input context as the task left it, so data
//! flows down the graph and accumulates.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why an operation on a [`Context`] failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ContextError {
    /// [`Context::insert`] was given a key that already exists.
    #[error("context key `{key}` already exists; use `update` or `set` to overwrite it")]
    KeyExists {
        /// The key.
        key: String,
    },
    /// [`Context::update`] or a typed read was given a key that does not exist.
    #[error("context key `{key}` does not exist")]
    KeyNotFound {
        /// The key.
        key: String,
    },
    /// A value could not be converted to JSON.
    #[error("value for context key `{key}` cannot be represented as JSON: {message}")]
    NotSerializable {
        /// The key.
        key: String,
        /// What serde said.
        message: String,
    },
    /// A stored value did not have the requested type.
    #[error("context key `{key}` does not hold a `{expected}`: {message}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// The Rust type that was asked for.
        expected: &'static str,
        /// What serde said.
        message: String,
    },
    /// A serialized context was not a JSON object.
    #[error("a context must be a JSON object: {message}")]
    InvalidJson {
        /// What was wrong.
        message: String,
    },
}

/// A JSON key/value map passed between tasks. See the [module docs](self)
/// for how contexts flow through a workflow.
///
/// ```
/// use cloacina_core::Context;
///
/// let mut ctx = Context::new();
/// ctx.insert("order_id", 42)?;
/// ctx.set("status", "new")?;
/// ctx.update("status", "paid")?;
/// assert_eq!(ctx.get_as::<u64>("order_id")?, 42);
/// assert_eq!(ctx.get_as::<String>("status")?, "paid");
/// assert!(ctx.insert("order_id", 7).is_err()); // insert never overwrites
/// # Ok::<(), cloacina_core::ContextError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Context {
    data: BTreeMap<String, Value>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    fn to_value<T: Serialize>(key: &str, value: T) -> Result<Value, ContextError> {
        serde_json::to_value(value)
            .map_err(|e| ContextError::NotSerializable { key: key.to_owned(), message: e.to_string() })
    }

    /// Adds a new key. Fails with [`ContextError::KeyExists`] if the key is
    /// already present (the existing value is kept).
    pub fn insert<T: Serialize>(&mut self, key: impl Into<String>, value: T) -> Result<(), ContextError> {
        let key = key.into();
        if self.data.contains_key(&key) {
            return Err(ContextError::KeyExists { key });
        }
        let value = Self::to_value(&key, value)?;
        self.data.insert(key, value);
        Ok(())
    }

    /// Replaces the value of an existing key. Fails with
    /// [`ContextError::KeyNotFound`] if the key is absent.
    pub fn update<T: Serialize>(&mut self, key: impl Into<String>, value: T) -> Result<(), ContextError> {
        let key = key.into();
        if !self.data.contains_key(&key) {
            return Err(ContextError::KeyNotFound { key });
        }
        let value = Self::to_value(&key, value)?;
        self.data.insert(key, value);
        Ok(())
    }

    /// Inserts or replaces a key; returns the previous value, if any.
    pub fn set<T: Serialize>(&mut self, key: impl Into<String>, value: T) -> Result<Option<Value>, ContextError> {
        let key = key.into();
        let value = Self::to_value(&key, value)?;
        Ok(self.data.insert(key, value))
    }

    /// The raw JSON value of a key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// The value of a key, deserialized into `T`.
    ///
    /// Fails with [`ContextError::KeyNotFound`] or
    /// [`ContextError::TypeMismatch`].
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, ContextError> {
        let value = self.data.get(key).ok_or_else(|| ContextError::KeyNotFound { key: key.to_owned() })?;
        T::deserialize(value).map_err(|e| ContextError::TypeMismatch {
            key: key.to_owned(),
            expected: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// Removes a key and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.data.remove(key)
    }

    /// Whether the key is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.data.contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }

    /// Key/value pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.data.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The context as compact JSON text (deterministic: keys in order).
    pub fn to_json(&self) -> String {
        // A map of strings to JSON values always serializes.
        serde_json::to_string(&self.data).unwrap_or_else(|_| String::from("{}"))
    }

    /// Parses JSON text that must be an object.
    pub fn from_json(text: &str) -> Result<Self, ContextError> {
        serde_json::from_str::<BTreeMap<String, Value>>(text)
            .map(|data| Self { data })
            .map_err(|e| ContextError::InvalidJson { message: e.to_string() })
    }

    /// Size in bytes of [`to_json`](Self::to_json), computed without
    /// allocating the text.
    pub fn serialized_size(&self) -> usize {
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        match serde_json::to_writer(&mut counter, &self.data) {
            Ok(()) => counter.0,
            Err(_) => 0,
        }
    }

    /// Overlays `other` on `self`: every key of `other` replaces the same
    /// key of `self` (shallow, by top-level key).
    pub fn overlay(&mut self, other: &Context) {
        for (k, v) in &other.data {
            self.data.insert(k.clone(), v.clone());
        }
    }

    /// Merges dependency outputs for a task's input: the outputs must be
    /// given in the workflow's topological order; later ones win on
    /// conflicting keys. See the [module docs](self).
    ///
    /// ```
    /// use cloacina_core::Context;
    /// let mut a = Context::new();
    /// a.set("x", 1)?; a.set("from_a", true)?;
    /// let mut b = Context::new();
    /// b.set("x", 2)?;
    /// let merged = Context::merge_outputs([&a, &b]);
    /// assert_eq!(merged.get_as::<i32>("x")?, 2);
    /// assert!(merged.contains_key("from_a"));
    /// # Ok::<(), cloacina_core::ContextError>(())
    /// ```
    pub fn merge_outputs<'a>(outputs: impl IntoIterator<Item = &'a Context>) -> Context {
        let mut merged = Context::new();
        for out in outputs {
            merged.overlay(out);
        }
        merged
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.data.iter()).finish()
    }
}

impl TryFrom<Value> for Context {
    type Error = ContextError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::Object(map) => Ok(Self { data: map.into_iter().collect() }),
            other => {
                Err(ContextError::InvalidJson { message: format!("expected an object, found {}", json_kind(&other)) })
            }
        }
    }
}

impl From<Context> for Value {
    fn from(ctx: Context) -> Self {
        Value::Object(ctx.data.into_iter().collect())
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn insert_refuses_existing_key() {
        let mut c = Context::new();
        c.insert("a", 1).unwrap();
        assert_eq!(c.insert("a", 2), Err(ContextError::KeyExists { key: "a".into() }));
        assert_eq!(c.get_as::<i32>("a").unwrap(), 1);
    }

    #[test]
    fn update_refuses_missing_key() {
        let mut c = Context::new();
        assert_eq!(c.update("a", 1), Err(ContextError::KeyNotFound { key: "a".into() }));
    }

    #[test]
    fn set_get_remove() {
        let mut c = Context::new();
        assert_eq!(c.set("a", "x").unwrap(), None);
        assert_eq!(c.set("a", "y").unwrap(), Some(Value::from("x")));
        assert_eq!(c.remove("a"), Some(Value::from("y")));
        assert!(c.is_empty());
    }

    #[test]
    fn typed_get_reports_mismatch() {
        let mut c = Context::new();
        c.set("n", "not a number").unwrap();
        assert!(matches!(c.get_as::<u32>("n"), Err(ContextError::TypeMismatch { key, .. }) if key == "n"));
        assert!(matches!(c.get_as::<u32>("missing"), Err(ContextError::KeyNotFound { .. })));
    }

    #[test]
    fn non_json_values_are_rejected() {
        // A map with non-string keys cannot be a JSON object.
        let mut m = HashMap::new();
        m.insert(vec![1u8], 1);
        let mut c = Context::new();
        assert!(matches!(c.insert("bad", m), Err(ContextError::NotSerializable { key, .. }) if key == "bad"));
        assert!(!c.contains_key("bad"));
    }

    #[test]
    fn json_round_trip_and_size() {
        let mut c = Context::new();
        c.set("ünïcødé", "日本語 🚀").unwrap();
        c.set("n", 3).unwrap();
        let text = c.to_json();
        assert_eq!(c.serialized_size(), text.len());
        assert_eq!(Context::from_json(&text).unwrap(), c);
        assert!(matches!(Context::from_json("[1]"), Err(ContextError::InvalidJson { .. })));
    }

    #[test]
    fn merge_is_ordered_later_wins() {
        let mut a = Context::new();
        a.set("k", 1).unwrap();
        a.set("a", 1).unwrap();
        let mut b = Context::new();
        b.set("k", 2).unwrap();
        let m = Context::merge_outputs([&a, &b]);
        assert_eq!(m.get_as::<i32>("k").unwrap(), 2);
        let m2 = Context::merge_outputs([&b, &a]);
        assert_eq!(m2.get_as::<i32>("k").unwrap(), 1);
    }
}
