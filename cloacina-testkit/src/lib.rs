//! # cloacina-testkit
//!
//! Test support shared by Cloacina's crates (never a dependency of the
//! library itself):
//!
//! * [`contract`] — the storage contract suite every adapter runs, through
//!   [`storage_contract!`];
//! * [`memory`] — the in-memory reference target of that suite;
//! * [`pg`] — the provisioned PostgreSQL, and a schema or database per test.

pub mod contract;
pub mod memory;
pub mod pg;
