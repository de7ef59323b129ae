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
//!
//! # What a value may be
//!
//! Anything that serializes to JSON, with two limits checked where the
//! value enters ([`insert`](Context::insert), [`update`](Context::update),
//! [`set`](Context::set), [`TryFrom<Value>`](Context#impl-TryFrom<Value>-for-Context)):
//! numbers must be finite (JSON has no NaN or infinity; they are refused,
//! never stored as `null`), and arrays / objects may nest at most
//! [`Context::MAX_DEPTH`] levels deep (a deeper value could be stored but
//! not read back).

mod key;
mod probe;

pub use key::{Key, ReadKey, WriteKey};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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
    /// A value nested deeper than [`Context::MAX_DEPTH`].
    #[error("value for context key `{key}` nests arrays / objects deeper than the limit of {max} levels")]
    TooDeep {
        /// The key.
        key: String,
        /// The limit ([`Context::MAX_DEPTH`]).
        max: usize,
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
///
/// Cloning a context is cheap: clones share their data until one of them
/// is changed (copy on write), so handing a large context from a task to
/// its dependents, to storage and to waiters copies it once at most.
#[derive(Clone, PartialEq, Eq)]
pub struct Context {
    data: Arc<BTreeMap<String, Value>>,
}

/// The data of every empty context until it is written.
static EMPTY: std::sync::LazyLock<Arc<BTreeMap<String, Value>>> = std::sync::LazyLock::new(Default::default);

impl Default for Context {
    fn default() -> Self {
        Self { data: EMPTY.clone() }
    }
}

impl Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.as_ref().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Context {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, Value>::deserialize(d).map(|m| Self { data: Arc::new(m) })
    }
}

impl Context {
    /// How deep a value may nest arrays and objects (100 levels): deeper
    /// values are refused with [`ContextError::TooDeep`].
    pub const MAX_DEPTH: usize = 100;

    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The data, to change: copied first if another clone shares it.
    fn map(&mut self) -> &mut BTreeMap<String, Value> {
        Arc::make_mut(&mut self.data)
    }

    fn to_value<T: Serialize>(key: &str, value: T) -> Result<Value, ContextError> {
        probe::probe(&value, Self::MAX_DEPTH).map_err(|p| match p {
            probe::Problem::TooDeep => ContextError::TooDeep { key: key.to_owned(), max: Self::MAX_DEPTH },
            other => ContextError::NotSerializable { key: key.to_owned(), message: other.to_string() },
        })?;
        serde_json::to_value(value)
            .map_err(|e| ContextError::NotSerializable { key: key.to_owned(), message: e.to_string() })
    }

    /// Checks every value against [`Context::MAX_DEPTH`], without
    /// recursion (a context built by deserializing may hold anything).
    pub fn check(&self) -> Result<(), ContextError> {
        for (key, value) in self.data.iter() {
            if depth_exceeds(value, Self::MAX_DEPTH) {
                return Err(ContextError::TooDeep { key: key.clone(), max: Self::MAX_DEPTH });
            }
        }
        Ok(())
    }

    /// Adds a new key. Fails with [`ContextError::KeyExists`] if the key is
    /// already present (the existing value is kept). `key` is a string or
    /// a typed [`Key`].
    ///
    /// `insert` is for a key that must be new: it fails when the key is
    /// already in the task's input — written by an upstream task, or given
    /// in the execution's input (an input built from an earlier result, a
    /// cron or trigger context that grew a key). A retry or recovery runs
    /// the task on its input again, so what decides is the input, not the
    /// earlier attempt. To write a key whatever is already there, use
    /// [`set`](Self::set), which cannot fail for that reason; the examples
    /// use `set`.
    pub fn insert<K: WriteKey<V>, V: Serialize>(&mut self, key: K, value: V) -> Result<(), ContextError> {
        let key = key.into_name();
        if self.data.contains_key(&key) {
            return Err(ContextError::KeyExists { key });
        }
        let value = Self::to_value(&key, value)?;
        self.map().insert(key, value);
        Ok(())
    }

    /// Replaces the value of an existing key. Fails with
    /// [`ContextError::KeyNotFound`] if the key is absent.
    pub fn update<K: WriteKey<V>, V: Serialize>(&mut self, key: K, value: V) -> Result<(), ContextError> {
        let key = key.into_name();
        if !self.data.contains_key(&key) {
            return Err(ContextError::KeyNotFound { key });
        }
        let value = Self::to_value(&key, value)?;
        self.map().insert(key, value);
        Ok(())
    }

    /// Inserts or replaces a key; returns the previous value, if any. It
    /// fails only for a value that is not JSON (see the [module
    /// docs](self)), never because of what the context already holds.
    pub fn set<K: WriteKey<V>, V: Serialize>(&mut self, key: K, value: V) -> Result<Option<Value>, ContextError> {
        let key = key.into_name();
        let value = Self::to_value(&key, value)?;
        Ok(self.map().insert(key, value))
    }

    /// Reads a key. With a string key: its raw JSON value, if present.
    /// With a typed [`Key<T>`]: the value as a `T`, or
    /// [`ContextError::KeyNotFound`] / [`ContextError::TypeMismatch`].
    ///
    /// ```
    /// use cloacina_core::context::{Context, Key};
    /// const TOTAL: Key<u64> = Key::new("total");
    /// let mut ctx = Context::new();
    /// ctx.set(TOTAL, 42)?;
    /// assert_eq!(ctx.get(TOTAL)?, 42);
    /// assert_eq!(ctx.get("total"), Some(&serde_json::json!(42)));
    /// # Ok::<(), cloacina_core::ContextError>(())
    /// ```
    pub fn get<'c, K: ReadKey<'c>>(&'c self, key: K) -> K::Output {
        key.read(self)
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
    pub fn remove(&mut self, key: impl AsRef<str>) -> Option<Value> {
        if !self.data.contains_key(key.as_ref()) {
            return None;
        }
        self.map().remove(key.as_ref())
    }

    /// Whether the key is present.
    pub fn contains_key(&self, key: impl AsRef<str>) -> bool {
        self.data.contains_key(key.as_ref())
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
        serde_json::to_string(self.data.as_ref()).unwrap_or_else(|_| String::from("{}"))
    }

    /// Parses JSON text that must be an object.
    pub fn from_json(text: &str) -> Result<Self, ContextError> {
        serde_json::from_str::<BTreeMap<String, Value>>(text)
            .map(|data| Self { data: Arc::new(data) })
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
        match serde_json::to_writer(&mut counter, self.data.as_ref()) {
            Ok(()) => counter.0,
            Err(_) => 0,
        }
    }

    /// Overlays `other` on `self`: every key of `other` replaces the same
    /// key of `self` (shallow, by top-level key).
    pub fn overlay(&mut self, other: &Context) {
        if self.data.is_empty() {
            // Shared, not copied.
            self.data = other.data.clone();
            return;
        }
        if other.data.is_empty() {
            return;
        }
        let map = self.map();
        for (k, v) in other.data.iter() {
            map.insert(k.clone(), v.clone());
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

/// Whether `value` nests arrays / objects deeper than `max`, found with an
/// explicit stack (the value may be too deep to recurse into).
fn depth_exceeds(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        if depth + 1 > max {
            return true;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

/// An object becomes a context; its values are checked against
/// [`Context::MAX_DEPTH`].
impl TryFrom<Value> for Context {
    type Error = ContextError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::Object(map) => {
                let ctx = Self { data: Arc::new(map.into_iter().collect()) };
                ctx.check()?;
                Ok(ctx)
            }
            other => {
                Err(ContextError::InvalidJson { message: format!("expected an object, found {}", json_kind(&other)) })
            }
        }
    }
}

impl From<Context> for Value {
    fn from(mut ctx: Context) -> Self {
        let data = std::mem::replace(&mut ctx.data, EMPTY.clone());
        Value::Object(Arc::unwrap_or_clone(data).into_iter().collect())
    }
}

/// Values are taken apart with an explicit stack: a deeply nested value
/// (which the checks refuse, but which a task may still hand back) would
/// otherwise overflow the stack of the thread that drops it. Only the
/// last clone sharing the data takes it apart.
impl Drop for Context {
    fn drop(&mut self) {
        let data = std::mem::replace(&mut self.data, EMPTY.clone());
        let Some(data) = Arc::into_inner(data) else { return };
        let mut stack: Vec<Value> = Vec::new();
        for (_, v) in data {
            if matches!(v, Value::Array(_) | Value::Object(_)) {
                stack.push(v);
            }
            while let Some(v) = stack.pop() {
                match v {
                    Value::Array(a) => {
                        stack.extend(a.into_iter().filter(|c| matches!(c, Value::Array(_) | Value::Object(_))))
                    }
                    Value::Object(m) => stack.extend(
                        m.into_iter().map(|(_, c)| c).filter(|c| matches!(c, Value::Array(_) | Value::Object(_))),
                    ),
                    _ => {}
                }
            }
        }
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
    fn clones_share_until_written_and_never_see_each_others_writes() {
        let mut a = Context::new();
        a.set("x", 1).unwrap();
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.data, &b.data), "a clone shares the data");
        b.set("y", 2).unwrap();
        b.update("x", 3).unwrap();
        assert_eq!((a.get_as::<i32>("x").unwrap(), a.contains_key("y")), (1, false));
        assert_eq!((b.get_as::<i32>("x").unwrap(), b.get_as::<i32>("y").unwrap()), (3, 2));
        let c = a.clone();
        assert_eq!(a.remove("missing"), None);
        assert!(Arc::ptr_eq(&a.data, &c.data), "removing nothing copies nothing");
        a.remove("x");
        assert!(!a.contains_key("x") && c.contains_key("x"));
        let mut merged = Context::new();
        merged.overlay(&b);
        assert!(Arc::ptr_eq(&merged.data, &b.data), "an overlay on an empty context shares");
        merged.overlay(&c);
        assert_eq!(merged.get_as::<i32>("x").unwrap(), 1);
        assert_eq!(b.get_as::<i32>("x").unwrap(), 3, "the shared source is not written through");
        assert_eq!(Context::from_json(&b.to_json()).unwrap(), b);
    }

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

    fn nested(depth: usize) -> Value {
        let mut v = Value::from(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn non_finite_numbers_are_refused_not_stored_as_null() {
        let mut c = Context::new();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = c.set("x", bad).unwrap_err();
            assert!(
                matches!(&e, ContextError::NotSerializable { key, message } if key == "x" && message.contains("finite")),
                "{e}"
            );
        }
        // Nested inside a structure, and as f32, too.
        assert!(matches!(c.insert("v", vec![1.0, f64::NAN]), Err(ContextError::NotSerializable { .. })));
        assert!(matches!(c.insert("f", Some(f32::INFINITY)), Err(ContextError::NotSerializable { .. })));
        assert!(c.is_empty(), "nothing was stored");
        c.set("ok", 1.5f64).unwrap();
        assert_eq!(c.get_as::<f64>("ok").unwrap(), 1.5);
    }

    #[test]
    fn values_nested_past_the_limit_are_refused() {
        let mut c = Context::new();
        c.set("at_limit", nested(Context::MAX_DEPTH)).unwrap();
        let text = c.to_json();
        assert_eq!(Context::from_json(&text).unwrap(), c, "a value at the limit reads back");
        assert_eq!(
            c.set("over", nested(Context::MAX_DEPTH + 1)),
            Err(ContextError::TooDeep { key: "over".into(), max: Context::MAX_DEPTH })
        );
        let mut obj = serde_json::Map::new();
        obj.insert("deep".into(), nested(Context::MAX_DEPTH + 1));
        assert!(matches!(Context::try_from(Value::Object(obj)), Err(ContextError::TooDeep { .. })));
    }

    #[test]
    fn a_value_ten_thousand_deep_is_refused_on_a_small_stack() {
        // A runtime worker's stack (2 MiB) must survive the check: the
        // probe stops at the limit instead of recursing all the way down.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deep = nested(10_000);
                let mut c = Context::new();
                assert!(matches!(c.set("deep", &deep), Err(ContextError::TooDeep { .. })));
                // A context holding it (as a deserialized one could) is
                // refused by the check and dropped without recursion.
                let mut obj = serde_json::Map::new();
                obj.insert("deep".into(), deep);
                assert!(matches!(Context::try_from(Value::Object(obj)), Err(ContextError::TooDeep { .. })));
                let held: Context = serde_json::from_value(serde_json::json!({"ok": 1})).unwrap();
                assert!(held.check().is_ok());
            })
            .unwrap()
            .join()
            .unwrap();
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
