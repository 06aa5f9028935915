//! Child processes of shell tasks: each runs in its own process group so that a timeout
//! or a shutdown kills everything it started (SIGTERM, then SIGKILL after a grace).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::logs::LogSink;

/// Why a process stopped before it finished by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Timeout(Duration),
    /// Stopped from outside (shutdown, or an operator marked the task); the reason is
    /// in the cancel channel.
    Cancelled,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stopped: Option<Stop>,
}

/// Sends `sig` to the process group `pgid`; a group that is gone already is fine.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

/// True when a process with this pid exists.
pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// True when `pid` is still the process weft started for task instance `ti_id` (its
/// environment carries `WEFT_TI_ID`), so a recycled pid is never killed by mistake.
pub fn is_our_task_process(pid: i32, ti_id: i64) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let needle = format!("WEFT_TI_ID={ti_id}");
    env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
}

/// Kills the process group: SIGTERM, then SIGKILL after `grace` if it is still there.
pub async fn kill_group(pgid: i32, grace: Duration) {
    signal_group(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if killpg(Pid::from_raw(pgid), None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(pgid, Signal::SIGKILL);
}

/// Runs `sh -c command` in a new process group, streaming stdout and stderr lines to
/// `log`. `on_spawn` receives the pid (= process group id) once it is known.
#[allow(clippy::too_many_arguments)]
pub async fn run_shell(
    command: &str,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Option<Duration>,
    kill_grace: Duration,
    cancel: tokio::sync::watch::Receiver<Option<String>>,
    log: &mut LogSink,
    on_spawn: impl AsyncFnOnce(i32),
) -> std::io::Result<Exit> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    on_spawn(pid).await;
    // Buffered lines reach the database within a second while the command runs.
    // (The first flush comes after 50 ms, so quick tasks write their log once, at the end.)
    let mut flush_timer = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(50),
        Duration::from_secs(1),
    );

    let (tx, mut rx) = mpsc::channel::<String>(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).await.is_err() {
                    break;
                }
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let sleep = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let mut cancel = cancel;
    let mut stopped = None;
    let mut rx_open = true;
    let status = loop {
        tokio::select! {
            line = rx.recv(), if rx_open => match line {
                Some(l) => log.line(&l).await,
                None => rx_open = false,
            },
            status = child.wait() => break status?,
            _ = flush_timer.tick() => log.flush().await,
            _ = &mut sleep, if stopped.is_none() => {
                stopped = Some(Stop::Timeout(timeout.unwrap_or_default()));
                kill_group(pid, kill_grace).await;
            }
            changed = cancel.changed(), if stopped.is_none() => {
                if changed.is_ok() && cancel.borrow().is_some() {
                    stopped = Some(Stop::Cancelled);
                    kill_group(pid, kill_grace).await;
                }
            }
        }
    };
    if stopped.is_some() {
        // The shell is gone; make sure nothing it started survives it.
        signal_group(pid, Signal::SIGKILL);
    }
    // Drain what the readers still have. A background process that keeps the pipes
    // open must not hold the try hostage: give it a short grace, then move on.
    let drain = async {
        while let Some(l) = rx.recv().await {
            log.line(&l).await;
        }
    };
    if tokio::time::timeout(Duration::from_millis(500), drain)
        .await
        .is_err()
    {
        log.line("[weft] output still open after the command exited (a background process?); stopped reading").await;
    }
    for r in readers {
        r.abort();
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(Exit {
        code: status.code(),
        signal: status.signal(),
        stopped,
    })
}
