//! Integration tests: one binary, one module per area.

mod support;

mod cli;
mod db;
mod engine;
mod schedule;
mod validation;
