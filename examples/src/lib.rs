//! Runnable examples of Cloacina. Run one with `cargo run --example NAME`:
//!
//! * `quickstart` — a four-task DAG with fan-out and fan-in on a local
//!   SQLite file;
//! * `retries_and_triggers` — a flaky task retried with backoff, and a
//!   branch skipped by a trigger rule;
//! * `recovery` — a worker process killed with SIGKILL mid-task, and a new
//!   runner that recovers and finishes its work;
//! * `cron` — a schedule every 2 seconds, a nightly one in Berlin time,
//!   and a trigger watching an inbox directory, across a runner restart;
//! * `multi_tenant` — on PostgreSQL: a legacy `public` runner beside two
//!   tenant runners, each seeing only its own executions.
