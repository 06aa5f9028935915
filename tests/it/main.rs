//! Integration tests: one binary, one module per area.

mod support;

mod db;
mod engine;
mod schedule;
mod validation;
