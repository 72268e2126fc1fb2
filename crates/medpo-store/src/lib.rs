//! MedPO Arena's storage: one [`Store`] over SQLite (the embedded default) or Postgres.
//!
//! Every query of the product lives in this crate, as a typed async function grouped by
//! table family (`users`, `models`, `scans`, `arena`, `datasets`, `jobs`, `evals`). The SQL
//! is written once, in the common dialect of both databases (`$1` placeholders, `BIGINT`
//! columns, `RETURNING id`), and runs through sqlx's `Any` driver; the two migration folders
//! (`migrations/sqlite`, `migrations/postgres`) differ only in id and type spellings.
//!
//! Conventions: ids and times are `i64` (times in UTC milliseconds since the Unix epoch);
//! JSON columns are `TEXT` holding serde_json; booleans are `0`/`1` integers.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub mod api_keys;
pub mod arena;
pub mod datasets;
pub mod evals;
pub mod jobs;
pub mod models;
pub mod remotes;
pub mod scans;
pub mod users;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// Errors of the storage layer. Messages name the setting or the row involved and never
/// contain a database password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database URL `{url}` is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot connect to {backend} database `{url}`: {source}")]
    Connect {
        backend: Backend,
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the {backend} database failed: {0}", backend = .1)]
    Migrate(#[source] sqlx::migrate::MigrateError, Backend),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored JSON in {column} is malformed: {source}")]
    Json {
        column: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// True when the error is a unique-constraint violation (a duplicate name, say).
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Conflict { .. } => true,
            Error::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a unique violation to [`Error::Conflict`] naming `what`.
pub(crate) fn conflict_as(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => Error::Conflict { what: what.into() },
        _ => Error::Db(e),
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _pw)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// The current time in UTC milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The handle to the product's database. Cheap to clone (it wraps a pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time; a writer that finds the lock taken sleeps in SQLite's
    /// busy handler (up to 100 ms a try), which makes tail latency under load. Write
    /// transactions on SQLite queue here instead, in arrival order.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Parses `url`, connects, and runs the migrations of its backend.
    ///
    /// `sqlite://PATH` creates the file if missing; `sqlite::memory:` is a private in-memory
    /// database; `postgres://user:pass@host:port/db` needs a reachable server.
    pub async fn open(url: &str, settings: &ConnectSettings) -> Result<Self> {
        let store = Self::connect(url, settings).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str, settings: &ConnectSettings) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let mut url_s = url.to_string();
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        if backend == Backend::Sqlite && !memory && !url.contains("mode=") {
            url_s.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        let opts = AnyConnectOptions::from_str(&url_s).map_err(|e| Error::BadUrl {
            url: redact_url(url),
            reason: e.to_string(),
        })?;
        let opts = opts.log_statements(tracing::log::LevelFilter::Trace);
        let mut pool_opts = AnyPoolOptions::new()
            .max_connections(if memory { 1 } else { settings.max_connections })
            .acquire_timeout(settings.acquire_timeout);
        if memory {
            // One connection that never closes, or the in-memory database vanishes.
            pool_opts = pool_opts.min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        if backend == Backend::Sqlite {
            pool_opts = pool_opts.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // Foreign keys are on by sqlx's default; make it explicit. WAL lets readers
                    // run beside the writer; NORMAL sync in WAL mode survives a process crash.
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    if !memory {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = pool_opts
            .connect_with(opts)
            .await
            .map_err(|source| Error::Connect {
                backend,
                url: redact_url(url),
                source,
            })?;
        Ok(Self { pool, backend, writer: Default::default() })
    }

    /// Held for the length of a write transaction: on SQLite it queues writers in order (see
    /// `writer`); on Postgres it is a no-op.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Runs the migrations of this store's backend (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("../../migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("../../migrations/postgres"),
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| Error::Migrate(e, self.backend))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The SQLite journal mode (`wal` expected), or `None` on Postgres.
    pub async fn sqlite_journal_mode(&self) -> Result<Option<String>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&self.pool).await?;
        Ok(Some(mode))
    }

    /// Whether SQLite enforces foreign keys on this store's connections (`None` on Postgres).
    pub async fn sqlite_foreign_keys(&self) -> Result<Option<bool>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&self.pool).await?;
        Ok(Some(on == 1))
    }

    /// Closes every connection (waits for running queries).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Which backend a URL names, or a clear error.
pub fn backend_of(url: &str) -> Result<Backend> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        "" => Err(Error::BadUrl {
            url: redact_url(url),
            reason: "expected `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`".into(),
        }),
        other => Err(Error::BadUrl {
            url: redact_url(url),
            reason: format!(
                "unsupported scheme `{other}`; expected `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`"
            ),
        }),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| Error::Json { column, source })
}
