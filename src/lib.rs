//! weft: a workflow orchestrator for data teams. DAGs in TOML, a crash-safe scheduler,
//! and a database of record on SQLite or PostgreSQL.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod dag;
pub mod db;
pub mod kinds;
pub mod process;
pub mod scheduler;
pub mod stats;
pub mod tasklog;
pub mod web;
