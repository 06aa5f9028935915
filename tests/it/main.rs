//! Integration tests: one binary, one module per area.

mod support;

mod browser;
mod cli;
mod db;
mod engine;
mod hardening;
mod experiment;
mod ingest;
mod schedule;
mod survey;
mod transform;
mod validation;
mod web;
