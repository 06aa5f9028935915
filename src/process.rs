//! Child processes of shell tasks: each runs in its own process group so that a timeout
//! or a shutdown kills everything it started (SIGTERM, then SIGKILL after a grace).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::mpsc;

/// Where a process's output lines go: a try's log, or (for callbacks) the server log.
pub trait Output: Send {
    fn line(&mut self, line: &str) -> impl std::future::Future<Output = ()> + Send;
    fn flush(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// Output of a process that has no try to log into (a callback): each line goes to the
/// server log at debug level, at most `limit` lines, then one line saying how many more.
#[derive(Debug)]
pub struct Traced {
    pub what: String,
    pub limit: usize,
    pub seen: usize,
}

impl Output for Traced {
    async fn line(&mut self, line: &str) {
        self.seen += 1;
        if self.seen <= self.limit {
            tracing::debug!(what = %self.what, "{line}");
        }
    }

    async fn flush(&mut self) {
        if self.seen > self.limit {
            tracing::debug!(what = %self.what, "({} more lines)", self.seen - self.limit);
            self.limit = self.seen;
        }
    }
}

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
    stop_group(pgid, grace, || {}).await;
}

/// Like [`kill_group`] for a group whose leader is our child: the leader is reaped while
/// waiting (a zombie leader would otherwise keep the group "alive" for the whole grace),
/// so the wait ends as soon as every process of the group has exited.
async fn kill_child_group(child: &mut tokio::process::Child, pgid: i32, grace: Duration) {
    stop_group(pgid, grace, || {
        let _ = child.try_wait();
    })
    .await;
}

/// SIGTERM to the group, then waits (calling `reap` on each look) until the group is
/// empty or `grace` has passed, then SIGKILL.
async fn stop_group(pgid: i32, grace: Duration, mut reap: impl FnMut()) {
    signal_group(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        reap();
        if killpg(Pid::from_raw(pgid), None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal_group(pgid, Signal::SIGKILL);
}

/// The environment variables a task process starts from: what a program needs to run
/// (`PATH`, `HOME`, locale, time zone, user, temp folder) plus the names listed in
/// `pass_env`, and never the rest of the server's environment (which may hold
/// `WEFT_DATABASE_URL` or cloud credentials). The DAG's `env` and weft's `WEFT_*`
/// variables are added on top by the caller.
pub fn base_env(pass_env: &[String]) -> Vec<(String, String)> {
    const KEEP: &[&str] = &[
        "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SHELL",
        "TMPDIR",
    ];
    let mut out: Vec<(String, String)> = KEEP
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    for k in pass_env {
        if KEEP.contains(&k.as_str()) {
            continue;
        }
        if let Ok(v) = std::env::var(k) {
            out.push((k.clone(), v));
        }
    }
    out
}

/// The processes (other than this one) whose environment holds one of `markers`
/// (`NAME=value`): descendants of a try that left its process group still inherit it.
fn marked_processes(markers: &std::collections::HashSet<String>) -> Vec<i32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|kv| std::str::from_utf8(kv).is_ok_and(|kv| markers.contains(kv)))
            })
        })
        .collect()
}

/// Kills, soon after, every process that still carries a try's marker in its
/// environment: the ones that escaped the process group with `setsid` or a double
/// fork. Markers go to one reaper thread that scans /proc once for every batch arriving
/// within 50 ms, so a fan-out of a hundred tries costs a few scans, not a hundred, and
/// no try waits for it. (Linux, /proc; a process that also clears its environment
/// escapes; run weft under systemd with `KillMode=control-group` for a hard guarantee.)
pub fn reap_marked(marker: String) {
    type Sender = std::sync::Mutex<std::sync::mpsc::Sender<String>>;
    static REAPER: std::sync::OnceLock<Sender> = std::sync::OnceLock::new();
    let tx = REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let spawned = std::thread::Builder::new()
            .name("weft-reaper".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut markers = std::collections::HashSet::from([first]);
                    let until = std::time::Instant::now() + Duration::from_millis(50);
                    while let Some(left) =
                        until.checked_duration_since(std::time::Instant::now())
                    {
                        match rx.recv_timeout(left) {
                            Ok(m) => {
                                markers.insert(m);
                            }
                            Err(_) => break,
                        }
                    }
                    let pids = marked_processes(&markers);
                    for pid in &pids {
                        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                    if !pids.is_empty() {
                        tracing::info!(
                            ?pids,
                            "killed processes that tries left running outside their process groups"
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the reaper thread; setsid children of tasks will not be killed");
        }
        std::sync::Mutex::new(tx)
    });
    let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(marker);
}

/// The longest line kept in memory; a longer one is logged in pieces of this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Reads a pipe as lines (bytes split at `\n`, at most [`MAX_LINE_BYTES`] each) and
/// sends them as text, decoding invalid UTF-8 lossily. Reading never stops before the
/// pipe closes, so a task is never blocked or killed (SIGPIPE) by its own output.
async fn pump_lines(mut r: impl tokio::io::AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut open = true;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let (piece, ended) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], Some(i + 1)),
                None => (rest, None),
            };
            let room = MAX_LINE_BYTES - line.len();
            let take = piece.len().min(room);
            line.extend_from_slice(&piece[..take]);
            let consumed = match ended {
                Some(e) if take == piece.len() => e,
                _ => take,
            };
            rest = &rest[consumed..];
            if ended.is_some() && take == piece.len() || line.len() >= MAX_LINE_BYTES {
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                if open && tx.send(text).await.is_err() {
                    // Nobody listens any more: keep draining so the writer never blocks.
                    open = false;
                }
            }
        }
    }
    if !line.is_empty() && open {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned()).await;
    }
}

/// The environment variable that marks every process of a try (its value is unique
/// to the try): how leftovers are found when the try ends.
pub const MARKER: &str = "WEFT_TRY_MARKER";

/// Runs `sh -c command` in a new process group, streaming its stdout and stderr lines
/// (one pipe, in the order written) to `log`. `on_spawn` receives the pid (= process
/// group id) once it is known.
#[allow(clippy::too_many_arguments)]
pub async fn run_shell(
    command: &str,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Option<Duration>,
    kill_grace: Duration,
    cancel: tokio::sync::watch::Receiver<Option<String>>,
    log: &mut impl Output,
    on_spawn: impl AsyncFnOnce(i32),
) -> std::io::Result<Exit> {
    // The shell by its path, as system(3) does: no search of the task's PATH.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // stdout and stderr share one pipe, as on a terminal: the log keeps the order the
    // command wrote its lines in (two pipes read by two readers interleave at random).
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd.spawn()?;
    // The command holds this process's copies of the write end: dropped, the pipe
    // ends when the command and what it started close theirs.
    drop(cmd);
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    on_spawn(pid).await;
    // Buffered lines reach the database within a second while the command runs.
    // (The first flush comes after 50 ms, so quick tasks write their log once, at the end.)
    let mut flush_timer = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(50),
        Duration::from_secs(1),
    );

    let (tx, mut rx) = mpsc::channel::<String>(256);
    let output =
        tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))?;
    let readers = [tokio::spawn(pump_lines(output, tx))];

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
                kill_child_group(&mut child, pid, kill_grace).await;
            }
            changed = cancel.changed(), if stopped.is_none() => {
                if changed.is_ok() && cancel.borrow().is_some() {
                    stopped = Some(Stop::Cancelled);
                    kill_child_group(&mut child, pid, kill_grace).await;
                }
            }
        }
    };
    // The shell is gone; nothing it started outlives the try: first its process group
    // (`cmd &`, `nohup`), then whatever left the group but still carries the marker.
    if killpg(Pid::from_raw(pid), None).is_ok() {
        kill_group(pid, kill_grace.min(Duration::from_secs(1))).await;
    }
    if let Some((k, v)) = env.iter().find(|(k, _)| k == MARKER) {
        reap_marked(format!("{k}={v}"));
    }
    // Drain what the readers still have. A background process that keeps the pipes
    // open must not hold the try hostage: give it a short grace, then move on.
    // Only the wait for more output is bounded, never the writing of lines already
    // read: cancelling a log write midway would lose lines and leave its database
    // connection in the middle of a statement.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(l)) => log.line(&l).await,
            Ok(None) => break,
            Err(_) => {
                while let Ok(l) = rx.try_recv() {
                    log.line(&l).await;
                }
                log.line("[weft] output still open after the command exited (a background process?); stopped reading").await;
                break;
            }
        }
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
