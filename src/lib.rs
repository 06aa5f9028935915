//! weft: a workflow orchestrator for data teams. DAGs in TOML, a crash-safe scheduler,
//! and a database of record on SQLite or PostgreSQL.

pub mod cli;
pub mod config;
pub mod dag;
pub mod db;
pub mod executor;
pub mod scheduler;
pub mod stats;
pub mod tasks;
pub mod web;
