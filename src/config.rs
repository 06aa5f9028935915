//! Configuration: an optional `weft.toml` plus `WEFT_*` environment overrides.
//!
//! Reads files and the environment only; never touches the database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::dag::{DEFAULT_POOL, ValidationContext};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("bad duration \"{s}\": {e}")))
}

/// A named warehouse connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// `sqlite://path` or `postgres://...`; `${NAME}` reads an environment variable.
    pub url: String,
}

/// A pool declared in `[pools]`: `etl = 4` or `etl = { slots = 4, description = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PoolConfig {
    Slots(u32),
    Full {
        slots: u32,
        description: Option<String>,
    },
}

impl PoolConfig {
    pub fn slots(&self) -> u32 {
        match self {
            PoolConfig::Slots(n) | PoolConfig::Full { slots: n, .. } => *n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Database of record. Default: `sqlite://weft.db?mode=rwc`.
    pub database_url: String,
    /// Folder of DAG files. Default: `dags`.
    pub dags_folder: PathBuf,
    /// Web server address. Default: `127.0.0.1:8080`.
    pub bind: String,
    /// Task tries running at once in this process.
    pub parallelism: u32,
    /// How often a worker records that it is alive.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is dead: its tries are failed and retried.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a task times out or is stopped.
    #[serde(deserialize_with = "duration")]
    pub kill_grace: Duration,
    /// How long a graceful shutdown waits for running tries.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How often the DAG folder is checked for changed files.
    #[serde(deserialize_with = "duration")]
    pub dag_poll_interval: Duration,
    /// Bytes of log kept per try; the rest is replaced by a truncation marker.
    pub log_max_bytes: usize,
    /// Slots of the default pool.
    pub default_pool_slots: u32,
    pub pools: BTreeMap<String, PoolConfig>,
    pub connections: BTreeMap<String, Connection>,
    /// Anyone who can reach the web server may read pages and the read API; actions
    /// always need a login. Set false to require a login for reading too.
    pub public_read: bool,
    /// Mark session cookies Secure even without `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
}

impl Default for Config {
    fn default() -> Self {
        let mut connections = BTreeMap::new();
        connections.insert(
            "warehouse".to_string(),
            Connection {
                url: "sqlite://warehouse.db?mode=rwc".to_string(),
            },
        );
        Config {
            database_url: "sqlite://weft.db?mode=rwc".to_string(),
            dags_folder: PathBuf::from("dags"),
            bind: "127.0.0.1:8080".to_string(),
            parallelism: 32,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            dag_poll_interval: Duration::from_secs(2),
            log_max_bytes: 4 * 1024 * 1024,
            default_pool_slots: 128,
            pools: BTreeMap::new(),
            connections,
            public_read: true,
            secure_cookies: false,
        }
    }
}

/// Expands `${NAME}` from the environment; an unset variable is an error naming it.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed \"${{\" in \"{s}\""));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Loads `path` (or `./weft.toml` when present), then applies env overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default_path = Path::new("weft.toml");
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("WEFT_CONFIG").map(PathBuf::from))
            .or_else(|| default_path.exists().then(|| default_path.to_path_buf()));
        let mut cfg = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: p.display().to_string(),
                    message,
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env()?;
        Ok(cfg)
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.connections
            .entry("warehouse".to_string())
            .or_insert_with(|| Config::default().connections["warehouse"].clone());
        Ok(cfg)
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        fn num<T: std::str::FromStr>(name: &str) -> Result<Option<T>, ConfigError> {
            var(name)
                .map(|v| {
                    v.parse::<T>().map_err(|_| ConfigError::Env {
                        name: name.to_string(),
                        message: format!("\"{v}\" is not a number"),
                    })
                })
                .transpose()
        }
        if let Some(v) = var("WEFT_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = var("WEFT_DAGS_FOLDER") {
            self.dags_folder = PathBuf::from(v);
        }
        if let Some(v) = var("WEFT_BIND") {
            self.bind = v;
        }
        if let Some(v) = num("WEFT_PARALLELISM")? {
            self.parallelism = v;
        }
        if let Some(v) = num("WEFT_LOG_MAX_BYTES")? {
            self.log_max_bytes = v;
        }
        if let Some(v) = var("WEFT_WAREHOUSE_URL") {
            self.connections
                .insert("warehouse".to_string(), Connection { url: v });
        }
        if self.parallelism == 0 {
            return Err(ConfigError::Env {
                name: "parallelism".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Pools with their slots, including the default pool.
    pub fn pool_slots(&self) -> BTreeMap<String, u32> {
        let mut m: BTreeMap<String, u32> = self
            .pools
            .iter()
            .map(|(k, v)| (k.clone(), v.slots()))
            .collect();
        m.entry(DEFAULT_POOL.to_string())
            .or_insert(self.default_pool_slots);
        m
    }

    pub fn validation_context(&self) -> ValidationContext {
        ValidationContext {
            pools: self.pool_slots().into_keys().collect(),
            connections: self.connections.keys().cloned().collect::<BTreeSet<_>>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pools_connections_and_durations() {
        let cfg = Config::from_toml(
            "parallelism = 4\nheartbeat_timeout = \"1m\"\n[pools]\netl = 3\napi = { slots = 2, description = \"rate limited\" }\n",
        )
        .unwrap();
        assert_eq!(cfg.parallelism, 4);
        assert_eq!(cfg.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(cfg.pool_slots()["etl"], 3);
        assert_eq!(cfg.pool_slots()["api"], 2);
        assert_eq!(cfg.pool_slots()[DEFAULT_POOL], 128);
        assert!(cfg.connections.contains_key("warehouse"));
        let err = Config::from_toml("paralelism = 4").unwrap_err();
        assert!(err.contains("paralelism"), "{err}");
    }

    #[test]
    fn expands_env_vars_and_names_missing_ones() {
        assert_eq!(expand_env("plain").unwrap(), "plain");
        let err = expand_env("x${WEFT_SURELY_UNSET_VAR_123}").unwrap_err();
        assert!(err.contains("WEFT_SURELY_UNSET_VAR_123"));
    }
}
