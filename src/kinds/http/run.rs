//! `http`: one request; the status must be expected (any 2xx by default). The response
//! status and the start of its body go to the log.

use std::sync::OnceLock;
use std::time::Duration;

use super::HttpSpec;
use crate::db::tasks::TryOutcome;
use crate::kinds::env::{RunContext, failure};

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
}

/// Sends a request with an optional body and timeout; used by tasks and callbacks.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<String>,
    timeout: Option<Duration>,
) -> Result<(u16, String), String> {
    let m = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("bad method {method}"))?;
    let mut req = client().request(m, url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    req = req.timeout(timeout.unwrap_or(Duration::from_secs(300)));
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{method} {url}: timed out")
        } else {
            format!("{method} {url}: {}", with_causes(&e))
        }
    })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((status, text))
}

pub async fn run(ctx: &mut RunContext<'_>, spec: &HttpSpec) -> TryOutcome {
    let url = match ctx.render(&spec.url) {
        Ok(u) => u,
        Err(e) => return failure(e),
    };
    let mut headers = Vec::new();
    for (k, v) in &spec.headers {
        match ctx.render(v) {
            Ok(v) => headers.push((k.clone(), v)),
            Err(e) => return failure(format!("header {k}: {e}")),
        }
    }
    let body = match spec.body.as_deref().map(|b| ctx.render(b)).transpose() {
        Ok(b) => b,
        Err(e) => return failure(e),
    };
    ctx.log.line(&format!("[weft] {} {url}", spec.method)).await;
    let started = std::time::Instant::now();
    let (status, text) = match send(&spec.method, &url, &headers, body, ctx.task.timeout).await {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let ms = started.elapsed().as_millis();
    ctx.log
        .line(&format!(
            "[weft] HTTP {status} in {ms} ms, {} bytes",
            text.len()
        ))
        .await;
    let preview: String = text.chars().take(2000).collect();
    for line in preview.lines() {
        ctx.log.line(line).await;
    }
    let ok = if spec.expected_status.is_empty() {
        (200..300).contains(&status)
    } else {
        spec.expected_status.contains(&status)
    };
    if ok {
        TryOutcome::success()
    } else {
        let want = if spec.expected_status.is_empty() {
            "2xx".to_string()
        } else {
            spec.expected_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        failure(format!(
            "HTTP {status} from {} {url} (expected {want})",
            spec.method
        ))
    }
}

/// An error with its causes (`error sending request: client error (Connect): tcp connect
/// error: Connection refused`): reqwest's own message alone hides why.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
