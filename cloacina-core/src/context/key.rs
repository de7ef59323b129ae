//! Typed context keys: a key that names its value's type, so a producer and
//! a consumer that disagree on the type do not compile.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Context, ContextError};

/// A context key that carries the type of its value.
///
/// Declare it once, as a `const`, and use it wherever the value is written
/// or read: [`Context::set`], [`Context::insert`] and [`Context::update`]
/// take only a `T` under a `Key<T>`, and [`Context::get`] returns a `T`.
/// A task that writes `Vec<Row>` and one that reads a `String` under the
/// same key is a compile error, not a run-time
/// [`ContextError::TypeMismatch`]. The value is stored as JSON under
/// [`name`](Self::name), so string keys and typed keys see the same data.
///
/// ```
/// use cloacina_core::context::{Context, Key};
///
/// const ROWS: Key<Vec<u32>> = Key::new("rows");
///
/// let mut ctx = Context::new();
/// ctx.set(ROWS, vec![1, 2, 3])?;
/// let rows: Vec<u32> = ctx.get(ROWS)?;
/// assert_eq!(rows, [1, 2, 3]);
/// assert!(ctx.get("rows").is_some()); // the string API sees it too
/// # Ok::<(), cloacina_core::ContextError>(())
/// ```
///
/// A value of another type does not compile:
///
/// ```compile_fail
/// use cloacina_core::context::{Context, Key};
/// const ROWS: Key<Vec<u32>> = Key::new("rows");
/// let mut ctx = Context::new();
/// ctx.set(ROWS, "three rows").unwrap();
/// ```
pub struct Key<T> {
    name: &'static str,
    // `fn() -> T`: the key neither owns a `T` nor needs `T: Send + Sync`.
    value: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    /// A key named `name`, holding values of type `T`.
    pub const fn new(name: &'static str) -> Self {
        Self { name, value: PhantomData }
    }

    /// The key's name: where its value is stored in the context.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Key<T> {}

impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<T> Eq for Key<T> {}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key<{}>({:?})", std::any::type_name::<T>(), self.name)
    }
}

impl<T> AsRef<str> for Key<T> {
    fn as_ref(&self) -> &str {
        self.name
    }
}

/// What a value of type `V` can be written under: a string (any
/// `Serialize` value) or a [`Key<V>`] (only a `V`: one impl per key type,
/// so the key also tells the compiler the value's type, as in
/// `ctx.set(TOTAL, items.iter().sum())`).
#[diagnostic::on_unimplemented(
    message = "a value of type `{V}` cannot be written under `{Self}`",
    label = "this key does not hold `{V}`",
    note = "a `Key<T>` takes only a `T`; string keys take any `Serialize` value"
)]
pub trait WriteKey<V> {
    /// The key's name.
    fn into_name(self) -> String;
}

macro_rules! string_keys {
    ($($t:ty),*) => {$(
        impl<V: Serialize> WriteKey<V> for $t {
            fn into_name(self) -> String {
                self.into()
            }
        }
    )*};
}

string_keys!(&str, String, &String, &mut str, Box<str>, std::borrow::Cow<'_, str>);

impl<T: Serialize> WriteKey<T> for Key<T> {
    fn into_name(self) -> String {
        self.name.to_owned()
    }
}

/// What [`Context::get`] reads: a string key gives the raw JSON value
/// (`Option<&Value>`), a [`Key<T>`] gives a `T` (`Result<T, ContextError>`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a context key",
    note = "use a reference to a string (`&str`, `&String`, `&Cow<str>`, …) or a typed `Key<T>`"
)]
pub trait ReadKey<'c> {
    /// What reading it returns.
    type Output;
    /// Reads it from `ctx`.
    fn read(self, ctx: &'c Context) -> Self::Output;
}

impl<'c, S: AsRef<str> + ?Sized> ReadKey<'c> for &S {
    type Output = Option<&'c Value>;
    fn read(self, ctx: &'c Context) -> Self::Output {
        ctx.data.get(self.as_ref())
    }
}

impl<'c, T: DeserializeOwned> ReadKey<'c> for Key<T> {
    type Output = Result<T, ContextError>;
    fn read(self, ctx: &'c Context) -> Self::Output {
        ctx.get_as(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        id: u32,
    }

    const ROWS: Key<Vec<Row>> = Key::new("rows");
    const COUNT: Key<u64> = Key::new("count");

    #[test]
    fn typed_keys_write_and_read_their_type() {
        let mut ctx = Context::new();
        assert_eq!(ctx.set(ROWS, vec![Row { id: 1 }]).unwrap(), None);
        let rows = vec![Row { id: 2 }];
        assert!(ctx.set(ROWS, vec![Row { id: 2 }]).unwrap().is_some(), "set overwrites and returns the old value");
        assert_eq!(ctx.get(ROWS).unwrap(), rows);
        assert_eq!(ctx.get("rows"), Some(&serde_json::json!([{ "id": 2 }])), "the string API sees the same value");
    }

    #[test]
    fn the_key_gives_the_value_its_type() {
        let mut ctx = Context::new();
        ctx.set(COUNT, [1u64, 2, 3].iter().sum()).unwrap(); // `sum` needs its output type: the key gives it
        assert_eq!(ctx.get(COUNT).unwrap(), 6);
    }

    #[test]
    fn insert_and_update_keep_their_rules_with_typed_keys() {
        let mut ctx = Context::new();
        ctx.insert(COUNT, 1).unwrap();
        assert_eq!(ctx.insert(COUNT, 2), Err(ContextError::KeyExists { key: "count".into() }));
        ctx.update(COUNT, 3).unwrap();
        assert_eq!(ctx.get(COUNT).unwrap(), 3);
        let mut empty = Context::new();
        assert_eq!(empty.update(COUNT, 1), Err(ContextError::KeyNotFound { key: "count".into() }));
    }

    #[test]
    fn a_typed_read_of_a_missing_or_foreign_value_is_an_error() {
        let mut ctx = Context::new();
        assert_eq!(ctx.get(COUNT), Err(ContextError::KeyNotFound { key: "count".into() }));
        ctx.set("count", "not a number").unwrap();
        assert!(matches!(ctx.get(COUNT), Err(ContextError::TypeMismatch { expected: "u64", .. })));
    }

    #[test]
    fn keys_are_values() {
        let copy = ROWS;
        assert_eq!(copy, ROWS);
        assert_eq!(copy.name(), "rows");
        assert_eq!(format!("{COUNT:?}"), "Key<u64>(\"count\")");
        let mut ctx = Context::new();
        ctx.set(COUNT, 1).unwrap();
        assert!(ctx.contains_key(COUNT));
        // Any reference to a string reads the raw value.
        let names = ["count"];
        for name in names.iter() {
            assert!(ctx.get(name).is_some(), "a `&&str`");
        }
        assert!(ctx.get(&std::borrow::Cow::Borrowed("count")).is_some());
        assert!(ctx.get(&std::sync::Arc::<str>::from("count")).is_some());
        assert!(ctx.remove(COUNT).is_some());
        assert!(!ctx.contains_key("count"));
    }
}
