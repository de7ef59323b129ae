//! # cloacina-testkit
//!
//! Test support shared by Cloacina's crates (never a dependency of the
//! library itself):
//!
//! * [`contract`] — the storage contract suite every adapter runs, through
//!   [`storage_contract!`];
//! * [`pg`] — the provisioned PostgreSQL, and a schema or database per test.

pub mod contract;
pub mod pg;
