//! Integration tests: one binary, one module per area.

mod support;

mod browser;
mod cli;
mod db;
mod engine;
mod experiment;
mod fuzz;
mod hardening;
mod ingest;
mod maintenance;
mod schedule;
mod survey;
mod transform;
mod validation;
mod web;
