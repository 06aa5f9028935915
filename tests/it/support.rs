//! Shared helpers for the integration tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};

pub fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).single().expect("valid test time")
}
