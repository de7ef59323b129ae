//! # cloacina-testkit
//!
//! Test support shared by Cloacina's crates (never a dependency of the
//! library itself):
//!
//! * [`contract`] — the storage contract suite every adapter runs, through
//!   [`storage_contract!`];
//! * [`pg`] — the provisioned PostgreSQL, and a schema or database per test;
//! * [`queue`] — [`QueueExt`]: one kind of write per call, for tests and benchmarks.

pub mod contract;
pub mod pg;
pub mod queue;

pub use queue::QueueExt;
