//! A real browser (headless Chromium through chromedriver) against `weft serve`: log
//! in, trigger a DAG, watch the grid until the run finishes, open the failed task's
//! log, see a survey's NPS chart drawn; the same pages in dark mode under a dark system
//! theme. Screenshots go to target/screenshots/. Skips with a reason when chromedriver is
//! missing, unless WEFT_REQUIRE_BROWSER=1 (CI).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub(crate) fn find(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

fn wait_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const DEMO: &str = r#"
description = "browser test"
schedule = "none"
[tasks.extract]
kind = "shell"
command = "echo extracting"
[tasks.boom]
kind = "shell"
command = "echo 'this task fails on purpose'; exit 7"
depends_on = ["extract"]
[tasks.report]
kind = "shell"
command = "echo report"
depends_on = ["extract"]
"#;

const SLOW: &str = r#"
description = "a task that takes a few seconds"
schedule = "none"
[tasks.nap]
kind = "shell"
command = "echo starting; sleep 5; echo woke up"
"#;

const NPS: &str = r#"
description = "survey from an export"
schedule = "none"
[tasks.sync]
kind = "survey_sync"
provider = "csv"
form_id = "fb"
path = "fb.csv"
nps_field = "nps"
"#;

#[tokio::test]
async fn log_in_trigger_watch_the_grid_and_read_a_failed_log() {
    let required = std::env::var("WEFT_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) = (
        find("chromedriver"),
        find("chromium").or_else(|| find("chromium-browser")),
    ) else {
        assert!(
            !required,
            "WEFT_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed"
        );
        eprintln!(
            "skipping the browser test: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let web_port = free_port();
    std::fs::create_dir_all(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/demo.toml"), DEMO).expect("dag");
    std::fs::write(dir.path().join("dags/nps.toml"), NPS).expect("dag");
    std::fs::write(dir.path().join("dags/slow.toml"), SLOW).expect("dag");
    std::fs::write(
        dir.path().join("dags/fb.csv"),
        "token,submitted_at,nps\na,2026-03-02 10:00:00,10\nb,2026-03-03 10:00:00,9\nc,2026-03-04 10:00:00,3\nd,2026-03-10 10:00:00,8\ne,2026-03-11 10:00:00,2\nf,2026-03-17 10:00:00,10\ng,2026-03-18 10:00:00,6\n",
    )
    .expect("csv");
    std::fs::write(
        dir.path().join("weft.toml"),
        format!("bind = \"127.0.0.1:{web_port}\"\nheartbeat_interval = \"500ms\"\n"),
    )
    .expect("config");
    let weft = env!("CARGO_BIN_EXE_weft");
    let mut create = Command::new(weft)
        .current_dir(dir.path())
        .args([
            "users",
            "create",
            "ada",
            "--role",
            "operator",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("users create");
    {
        use std::io::Write;
        create
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"correct horse battery\n")
            .expect("password");
    }
    assert!(create.wait().expect("wait").success());
    let _serve = Kill(
        Command::new(weft)
            .current_dir(dir.path())
            .env("WEFT_LOG", "warn")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let driver_port = free_port();
    let _driver = Kill(
        Command::new(driver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
    );
    wait_port(web_port, Duration::from_secs(30));
    wait_port(driver_port, Duration::from_secs(30));

    // A browser session; `extra` adds Chromium flags (a dark system theme, say).
    let session = async |extra: &[&str]| {
        let profile = tempfile::tempdir().expect("profile");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .expect("webdriver session");
        (client, profile)
    };
    let (client, _profile) = session(&[]).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let base = format!("http://127.0.0.1:{web_port}");
    let result = async {
        client.goto(&format!("{base}/login")).await?;
        client
            .find(Locator::Css("input[name=username]"))
            .await?
            .send_keys("ada")
            .await?;
        client
            .find(Locator::Css("input[name=password]"))
            .await?
            .send_keys("correct horse battery")
            .await?;
        client
            .find(Locator::Id("login-submit"))
            .await?
            .click()
            .await?;
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("#dags a.dag-link"))
            .await?;
        let who = client.find(Locator::Css(".who span")).await?.text().await?;
        assert!(who.contains("ada"), "logged in as {who}");
        // A light system theme keeps the light pages.
        let bg = client
            .execute(
                "return getComputedStyle(document.body).backgroundColor;",
                vec![],
            )
            .await?;
        assert_eq!(bg, "rgb(250, 250, 250)");
        std::fs::write(shots.join("01-dags.png"), client.screenshot().await?).expect("png");

        // What is typed in the search box survives the page's auto-refresh (every 5 s),
        // focused or not.
        let search = client.find(Locator::Css("input[name=q]")).await?;
        search.send_keys("dem").await?;
        client
            .execute("document.activeElement.blur(); return null;", vec![])
            .await?;
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        let kept = client
            .find(Locator::Css("input[name=q]"))
            .await?
            .prop("value")
            .await?
            .unwrap_or_default();
        assert_eq!(kept, "dem", "the refresh wiped the search box");

        client.goto(&format!("{base}/dags/demo/trigger")).await?;
        client
            .find(Locator::Id("trigger-submit"))
            .await?
            .click()
            .await?;
        let state = client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("run-state"))
            .await?;
        let _ = state.text().await?;
        let run_url = client.current_url().await?;
        std::fs::write(shots.join("02-run.png"), client.screenshot().await?).expect("png");

        // The grid shows the run finishing (the page refreshes itself; reload anyway).
        client.goto(&format!("{base}/dags/demo")).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if !client
                .find_all(Locator::Css("#grid a.cell.s-failed"))
                .await?
                .is_empty()
                && !client
                    .find_all(Locator::Css("#grid a.cell.s-success"))
                    .await?
                    .is_empty()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the grid never showed the finished run"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.refresh().await?;
        }
        std::fs::write(shots.join("03-grid.png"), client.screenshot().await?).expect("png");

        client
            .find(Locator::Css("#grid a.cell.s-failed"))
            .await?
            .click()
            .await?;
        let log = client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("log"))
            .await?;
        let text = log.text().await?;
        assert!(text.contains("this task fails on purpose"), "log: {text}");
        assert!(text.contains("command exited with code 7"), "log: {text}");
        std::fs::write(shots.join("04-failed-log.png"), client.screenshot().await?).expect("png");
        // Its command, as the try rendered it, one click away.
        client
            .find(Locator::Css("#rendered summary"))
            .await?
            .click()
            .await?;
        let rendered = client
            .find(Locator::Css("#rendered pre"))
            .await?
            .text()
            .await?;
        assert!(rendered.contains("exit 7"), "rendered: {rendered}");

        // The grid's run columns say when on hover; the Gantt spans the page.
        client.goto(&format!("{base}/dags/demo")).await?;
        let title = client
            .find(Locator::Css("#grid th.run-head a"))
            .await?
            .attr("title")
            .await?
            .unwrap_or_default();
        assert!(title.contains("logical date"), "grid column title: {title}");
        client.goto(run_url.as_str()).await?;
        let (_, _, gantt_w, _) = client.find(Locator::Id("gantt")).await?.rectangle().await?;
        let (_, _, main_w, _) = client.find(Locator::Css("main")).await?.rectangle().await?;
        assert!(
            gantt_w > 0.8 * main_w,
            "the Gantt uses the page width: {gantt_w} of {main_w}"
        );

        // A clear's scope, chosen on the confirmation page, changes the preview there.
        let run_path = run_url.path().to_string();
        let run_id = run_path.rsplit('/').next().unwrap_or_default().to_string();
        client
            .goto(&format!(
                "{base}/confirm?action=clear&dag=demo&run={run_id}&task=extract"
            ))
            .await?;
        let previewed = |c: fantoccini::Client| async move {
            let mut out = Vec::new();
            for row in c
                .find_all(Locator::Css("#preview tbody tr td:first-child"))
                .await?
            {
                out.push(row.text().await?);
            }
            Ok::<Vec<String>, fantoccini::error::CmdError>(out)
        };
        assert_eq!(previewed(client.clone()).await?, ["extract"]);
        client
            .find(Locator::Css("#scope-form input[name=downstream]"))
            .await?
            .click()
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = previewed(client.clone()).await.unwrap_or_default();
            if rows.len() == 3 {
                assert_eq!(rows[0], "extract", "{rows:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the preview did not widen: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::fs::write(
            shots.join("05-clear-preview.png"),
            client.screenshot().await?,
        )
        .expect("png");

        // A followed log's page shows the try's end without a reload.
        client.goto(&format!("{base}/dags/slow/trigger")).await?;
        client
            .find(Locator::Id("trigger-submit"))
            .await?
            .click()
            .await?;
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("run-state"))
            .await?;
        let slow_run = client.current_url().await?;
        client
            .goto(&format!("{base}{}/tasks/nap", slow_run.path()))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen_running = false;
        loop {
            let badge = client.find(Locator::Id("task-state")).await?.text().await?;
            if badge == "success" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the task page still says {badge}"
            );
            seen_running |= badge == "running";
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !seen_running {
                // Not started yet: look again (only a running try is followed).
                client.refresh().await?;
            }
        }
        assert!(seen_running, "the try ended before its page was open");
        let log = client.find(Locator::Id("log")).await?.text().await?;
        assert!(log.contains("woke up"), "{log}");

        // A survey synced from a CSV export: the page draws the NPS trend with its band.
        client.goto(&format!("{base}/dags/nps/trigger")).await?;
        client
            .find(Locator::Id("trigger-submit"))
            .await?
            .click()
            .await?;
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("run-state"))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            client.goto(&format!("{base}/surveys/csv/fb")).await?;
            if !client
                .find_all(Locator::Css("#nps-trend polygon.band"))
                .await?
                .is_empty()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the survey page never showed the trend"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (_, _, w, band_h) = client
            .find(Locator::Css("#nps-trend polygon.band"))
            .await?
            .rectangle()
            .await?;
        let (_, _, _, line_h) = client
            .find(Locator::Css("#nps-trend polyline.line"))
            .await?
            .rectangle()
            .await?;
        assert!(
            w > 50.0 && band_h > line_h + 10.0,
            "the CI band is drawn around the line: {w} x {band_h} (line {line_h})"
        );
        let bars = client.find_all(Locator::Css("#scores rect")).await?;
        assert_eq!(bars.len(), 11, "one bar per score 0-10");
        std::fs::write(shots.join("06-survey.png"), client.screenshot().await?).expect("png");

        // The calendar: today's square (runs ended today) leads to today's runs.
        client.goto(&format!("{base}/calendar")).await?;
        let today = chrono::Utc::now()
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        let (_, _, cal_w, _) = client
            .find(Locator::Id("calendar"))
            .await?
            .rectangle()
            .await?;
        assert!(cal_w > 600.0, "a year of weeks: {cal_w}");
        client
            .find(Locator::Css(&format!("a[href^='/runs?day={today}'] rect")))
            .await?
            .click()
            .await?;
        let listed = client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#day-runs a.run-link"))
            .await?;
        assert!(!listed.text().await?.is_empty());
        let bars = client.find_all(Locator::Css("#timeline rect.bar")).await?;
        assert!(!bars.is_empty(), "the day's timeline draws its runs");
        let (_, _, tl_w, _) = client
            .find(Locator::Id("timeline"))
            .await?
            .rectangle()
            .await?;
        assert!(tl_w > 600.0, "the timeline spans the page: {tl_w}");
        std::fs::write(
            shots.join("07-calendar-day.png"),
            client.screenshot().await?,
        )
        .expect("png");
        Ok::<(), fantoccini::error::CmdError>(())
    }
    .await;
    let _ = client.close().await;
    result.expect("browser flow");

    // With a dark system theme the pages are dark too.
    let (dark, _dark_profile) = session(&["--force-dark-mode"]).await;
    let colours = async {
        dark.goto(&format!("{base}/dags")).await?;
        let v = dark
            .execute(
                "return [getComputedStyle(document.body).backgroundColor, getComputedStyle(document.querySelector('table.list')).backgroundColor];",
                vec![],
            )
            .await?;
        Ok::<serde_json::Value, fantoccini::error::CmdError>(v)
    }
    .await;
    let _ = dark.close().await;
    let colours = colours.expect("dark session");
    assert_eq!(colours[0], "rgb(13, 17, 23)", "page: {colours}");
    assert_eq!(colours[1], "rgb(22, 27, 34)", "tables: {colours}");
}
