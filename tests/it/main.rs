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
mod scale;
mod schedule;
mod survey;
mod tidy;
mod transform;
mod validation;
mod web;

/// What this run of the suite leaves out, said on the terminal even without
/// `--nocapture` (written to the process's stderr, which the test harness does not
/// capture); in CI (`WEFT_REQUIRE_*=1`) nothing may be left out.
#[test]
fn what_this_run_skips() {
    use std::io::Write;
    let postgres = std::env::var("WEFT_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty());
    let browser = browser::find("chromedriver").is_some()
        && (browser::find("chromium").is_some() || browser::find("chromium-browser").is_some());
    let mut skipped = Vec::new();
    if !postgres {
        skipped.push("the PostgreSQL half of the backend tests (set WEFT_TEST_POSTGRES_URL)");
    }
    if !browser {
        skipped.push("the browser test (apt-get install chromium chromium-driver)");
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "\nnote: this run skips {}\n",
            skipped.join(" and ")
        );
    }
    let required = |k: &str| std::env::var(k).is_ok_and(|v| v == "1");
    assert!(
        postgres || !required("WEFT_REQUIRE_POSTGRES"),
        "WEFT_REQUIRE_POSTGRES=1 without a PostgreSQL URL"
    );
    assert!(
        browser || !required("WEFT_REQUIRE_BROWSER"),
        "WEFT_REQUIRE_BROWSER=1 without Chromium"
    );
}
