//! Integration tests: one binary, one module per area.

mod support;

mod schedule;
mod validation;
