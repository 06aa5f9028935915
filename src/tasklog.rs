//! The log of one try: lines are buffered in memory and written to the database in
//! chunks (by size or age), capped at `log_max_bytes` with a truncation marker.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::db::{Db, tasks};

/// Chunks are written when they reach this size, or when they are this old.
const CHUNK_BYTES: usize = 64 * 1024;
const CHUNK_AGE: Duration = Duration::from_secs(1);

/// The last chunk of a try's log, written with the try's result.
#[derive(Debug, Clone)]
pub struct LogTail {
    pub seq: i32,
    pub content: String,
}

/// The length of a line's time stamp (`2026-03-01T10:00:00.123Z `).
const STAMP_LEN: usize = 25;

/// Collects the output of one try.
#[derive(Debug)]
pub struct LogSink {
    db: Db,
    try_id: i64,
    seq: i32,
    buf: String,
    first_buffered: Option<Instant>,
    written: usize,
    max_bytes: usize,
    truncated: bool,
    /// Values replaced by `***` in every line (connection passwords).
    secrets: std::sync::Arc<Vec<String>>,
}

impl LogSink {
    pub fn new(db: Db, try_id: i64, max_bytes: usize) -> Self {
        LogSink {
            db,
            try_id,
            seq: 0,
            buf: String::new(),
            first_buffered: None,
            written: 0,
            max_bytes,
            truncated: false,
            secrets: std::sync::Arc::new(Vec::new()),
        }
    }

    /// Redacts these values from every line.
    pub fn with_secrets(mut self, secrets: std::sync::Arc<Vec<String>>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Adds a line, after the time it was written (`2026-03-01T10:00:00.123Z `) and
    /// before a newline.
    pub async fn line(&mut self, line: &str) {
        if self.truncated {
            return;
        }
        // PostgreSQL text cannot hold NUL: shown as U+FFFD like other undecodable bytes.
        let mut line: std::borrow::Cow<'_, str> = if line.contains('\0') {
            line.replace('\0', "\u{FFFD}").into()
        } else {
            line.into()
        };
        if self.secrets.iter().any(|s| line.contains(s.as_str())) {
            line = crate::config::redact(&line, &self.secrets).into();
        }
        let line = line.as_ref();
        // Each line carries when it was read, in UTC to the millisecond.
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ ");
        let len = STAMP_LEN + line.len() + 1;
        if self.written + self.buf.len() + len > self.max_bytes {
            self.buf.push_str(&format!(
                "[weft] log truncated: this try's log reached the limit of {} bytes (log_max_bytes)\n",
                self.max_bytes
            ));
            self.truncated = true;
            self.flush().await;
            return;
        }
        use std::fmt::Write as _;
        let _ = write!(self.buf, "{stamp}");
        self.buf.push_str(line);
        self.buf.push('\n');
        self.first_buffered.get_or_insert_with(Instant::now);
        if self.buf.len() >= CHUNK_BYTES
            || self
                .first_buffered
                .is_some_and(|t| t.elapsed() >= CHUNK_AGE)
        {
            self.flush().await;
        }
    }

    /// What is still buffered, as the log's next chunk, for the caller to write in a
    /// transaction of its own (the end of a try is written with its result).
    pub fn take_tail(&mut self) -> Option<LogTail> {
        if self.buf.is_empty() {
            return None;
        }
        let chunk = std::mem::take(&mut self.buf);
        self.first_buffered = None;
        let tail = LogTail {
            seq: self.seq,
            content: chunk,
        };
        self.seq += 1;
        self.written += tail.content.len();
        Some(tail)
    }

    /// Writes what is buffered. A failed write is logged, not fatal: the try goes on.
    pub async fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.buf);
        self.first_buffered = None;
        match tasks::append_log(&self.db.conn, self.try_id, self.seq, &chunk, Utc::now()).await {
            Ok(()) => {
                self.seq += 1;
                self.written += chunk.len();
            }
            Err(e) => {
                tracing::error!(try_id = self.try_id, error = %e, "could not store a log chunk")
            }
        }
    }
}

impl crate::process::Output for LogSink {
    async fn line(&mut self, line: &str) {
        LogSink::line(self, line).await;
    }

    async fn flush(&mut self) {
        LogSink::flush(self).await;
    }
}
