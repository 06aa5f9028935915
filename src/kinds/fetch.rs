//! GET of JSON pages with the retry policy every HTTP source shares: 429, 5xx and
//! connection errors are retried with exponential backoff, honouring `Retry-After`
//! (seconds, capped at 60); 401/403/404 fail at once. Errors name the URL without its
//! query string (which may carry a key) and never the credentials.

/// Why a GET of JSON failed. `url` is the address without its query string. Transport
/// and decoding errors keep their source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status} after {attempts} attempts")]
    GaveUp {
        url: String,
        status: u16,
        attempts: u32,
    },
    #[error("GET {url}: HTTP {status}{hint}")]
    Refused {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("GET {url}: the body was cut off or could not be read: {source}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: the body is not JSON ({bytes} bytes): {source}")]
    NotJson {
        url: String,
        bytes: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// An API key in a named header.
    Header(&'a str, &'a str),
}

/// GET with retries: 429 and 5xx (and connection errors) are retried with backoff,
/// honouring `Retry-After`; 401/403/404 fail at once.
pub async fn get_json(
    url: &reqwest::Url,
    auth: Auth<'_>,
    shown: &str,
) -> Result<serde_json::Value, FetchError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap_or_default()
    });
    let mut delay = std::time::Duration::from_secs(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client.get(url.clone());
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.bearer_auth(t),
            Auth::Header(name, value) => req = req.header(name, value),
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if attempt < 6 => {
                tracing::warn!(url = %shown, error = %e, "GET failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            Err(source) => {
                return Err(FetchError::Transport {
                    url: shown.to_string(),
                    source,
                });
            }
        };
        let status = resp.status().as_u16();
        if status == 429 || status >= 500 {
            if attempt == 6 {
                return Err(FetchError::GaveUp {
                    url: shown.to_string(),
                    status,
                    attempts: attempt,
                });
            }
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, chrono::Utc::now()))
                .unwrap_or(delay);
            tokio::time::sleep(wait).await;
            delay *= 2;
            continue;
        }
        if !(200..300).contains(&status) {
            let hint = match status {
                401 | 403 => " (check the token)",
                404 => " (check the url)",
                _ => "",
            };
            return Err(FetchError::Refused {
                url: shown.to_string(),
                status,
                hint,
            });
        }
        // A body cut off midway (the connection dropped, a short Content-Length) fails
        // the try at once, saying so; it is never read as the end of the data.
        let bytes = resp.bytes().await.map_err(|source| FetchError::Body {
            url: shown.to_string(),
            source,
        })?;
        return serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|source| {
            FetchError::NotJson {
                url: shown.to_string(),
                bytes: bytes.len(),
                source,
            }
        });
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date; capped at
/// 60 s so a confused server cannot park a task for hours.
fn retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<std::time::Duration> {
    let v = v.trim();
    let secs = match v.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            u64::try_from((at.with_timezone(&chrono::Utc) - now).num_seconds()).unwrap_or(0)
        }
    };
    Some(std::time::Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:50Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let s = |x: u64| Some(std::time::Duration::from_secs(x));
        assert_eq!(retry_after("3", now), s(3));
        assert_eq!(retry_after("3600", now), s(60), "capped");
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), s(10));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            s(0),
            "in the past"
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
