//! Configuration: built-in defaults, then `medpo.toml`, then environment variables, then
//! command-line flags (each overriding the one before). Validated once, into [`Config`].
//! Every error names the setting (as its flag), the value and the cause, on one line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// The settings every `medpo` command accepts. Each can also come from an environment
/// variable or from `medpo.toml`.
#[derive(Debug, Clone, Default, Args)]
pub struct Settings {
    /// Configuration file. Without this flag, `./medpo.toml` is read if it exists.
    #[arg(long, global = true, env = "MEDPO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the web server listens on [default: 127.0.0.1:3000]
    #[arg(long, global = true, env = "MEDPO_BIND", value_name = "HOST:PORT")]
    pub bind: Option<String>,
    /// Database: `sqlite://PATH` (embedded, the default: `sqlite://<data-dir>/medpo.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` for deployments
    #[arg(long, global = true, env = "MEDPO_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Folder for the database, uploaded scans, datasets and trained checkpoints; created
    /// if missing [default: ./data]
    #[arg(long, global = true, env = "MEDPO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Folder of model checkpoints: every sub-folder with a LLaVA-style `config.json` is
    /// registered at start-up, and hub-style names (`openai/clip-vit-large-patch14-336`)
    /// are resolved inside it [default: ./models]
    #[arg(long, global = true, env = "MEDPO_MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Folder of the built web front end (`scripts/build.sh` writes it) [default: ./target/site]
    #[arg(long, global = true, env = "MEDPO_SITE_ROOT", value_name = "DIR")]
    pub site_root: Option<PathBuf>,
    /// Largest accepted request body (uploads), in megabytes [default: 50]
    #[arg(long, global = true, env = "MEDPO_MAX_UPLOAD_MB", value_name = "MB")]
    pub max_upload_mb: Option<u64>,
    /// Log filter, in `RUST_LOG` syntax [default: info]
    #[arg(long, global = true, env = "MEDPO_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Mark the session cookie `Secure` (set this when users reach the server over HTTPS)
    #[arg(long, global = true, env = "MEDPO_SECURE_COOKIES", value_name = "true|false")]
    pub secure_cookies: Option<bool>,
    /// Requests per minute allowed to each API key on the OpenAI-compatible API (`/v1`);
    /// bursts up to this many are allowed, then requests get 429 [default: 120]
    #[arg(long, global = true, env = "MEDPO_API_RATE_LIMIT", value_name = "PER_MINUTE")]
    pub api_rate_limit: Option<u32>,
    /// Run the job queue's workers (training and evaluation) in this `serve` process. With
    /// several servers on one database, leave it on in exactly one process (or run
    /// `medpo worker` once): each worker puts jobs marked running back in the queue when it
    /// starts [default: true]
    #[arg(long, global = true, env = "MEDPO_WORKERS", value_name = "true|false")]
    pub workers: Option<bool>,
}

/// The keys `medpo.toml` may hold (all optional; unknown keys are an error, so that a typo
/// is not silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    bind: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    models_dir: Option<PathBuf>,
    site_root: Option<PathBuf>,
    max_upload_mb: Option<u64>,
    log: Option<String>,
    secure_cookies: Option<bool>,
    api_rate_limit: Option<u32>,
    workers: Option<bool>,
    /// `[[remote]]` tables: OpenAI-compatible servers whose models join the arena.
    #[serde(default)]
    remote: Vec<medpo_remote::RemoteConfig>,
    /// `[[benchmark]]` tables: VQA files (or a built-in name) and their images folder, which
    /// evaluation runs from the browser can use.
    #[serde(default)]
    benchmark: Vec<medpo_types::BenchmarkSpec>,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub site_root: PathBuf,
    pub max_upload_bytes: usize,
    pub log: String,
    pub secure_cookies: bool,
    /// Requests per minute per API key.
    pub api_rate_limit: u32,
    /// Whether `serve` runs the job queue's workers.
    pub workers: bool,
    /// Remote OpenAI-compatible backends (`[[remote]]` in `medpo.toml`), validated: each
    /// one's API key variable is set.
    pub remotes: Vec<medpo_remote::RemoteConfig>,
    /// Benchmarks evaluation runs can use: VQA-RAD, SLAKE and PathVQA (runnable once an
    /// images folder is configured) and every `[[benchmark]]` of medpo.toml.
    pub benchmarks: Vec<medpo_types::BenchmarkSpec>,
    /// Which file was read, if any.
    pub config_file: Option<PathBuf>,
}

/// A configuration problem, printed as one line: `error: <setting> `<value>`: <cause>`.
#[derive(Debug, thiserror::Error)]
#[error("{setting} `{value}`: {cause}")]
pub struct ConfigError {
    pub setting: String,
    pub value: String,
    pub cause: String,
}

fn err(setting: &str, value: impl std::fmt::Display, cause: impl std::fmt::Display) -> ConfigError {
    ConfigError { setting: setting.into(), value: value.to_string(), cause: cause.to_string() }
}

impl Settings {
    /// Merges flags/env (already in `self`) over `medpo.toml` over the defaults, and checks
    /// what can be checked without side effects.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let (file, config_file) = read_file(self.config.as_deref())?;
        let bind_s = self.bind.clone().or(file.bind).unwrap_or_else(|| "127.0.0.1:3000".into());
        let bind: SocketAddr = bind_s.trim().parse().map_err(|_| {
            err("--bind", &bind_s, "not a socket address; expected HOST:PORT such as 127.0.0.1:3000 or 0.0.0.0:8080")
        })?;
        let data_dir = self.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let models_dir = self.models_dir.clone().or(file.models_dir).unwrap_or_else(|| PathBuf::from("models"));
        let site_root = self.site_root.clone().or(file.site_root).unwrap_or_else(|| PathBuf::from("target/site"));
        let database_url = self
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("medpo.db").display()));
        medpo_store::backend_of(&database_url)
            .map_err(|e| err("--database-url", medpo_store::redact_url(&database_url), short_cause(&e.to_string())))?;
        let mb = self.max_upload_mb.or(file.max_upload_mb).unwrap_or(50);
        if mb == 0 || mb > 4096 {
            return Err(err("--max-upload-mb", mb, "must be between 1 and 4096"));
        }
        // Precedence as for every setting: flag / MEDPO_LOG, then medpo.toml, then RUST_LOG.
        let log = self
            .log
            .clone()
            .or(file.log)
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| err("--log", &log, e))?;
        let api_rate_limit = self.api_rate_limit.or(file.api_rate_limit).unwrap_or(120);
        if api_rate_limit == 0 || api_rate_limit > 1_000_000 {
            return Err(err("--api-rate-limit", api_rate_limit, "must be between 1 and 1000000 requests per minute"));
        }
        let config_name = config_file.as_ref().map_or("medpo.toml".to_string(), |p| p.display().to_string());
        let mut names = std::collections::HashSet::new();
        for r in &file.remote {
            r.validate().map_err(|cause| err("--config", &config_name, cause))?;
            if !names.insert(r.name.clone()) {
                return Err(err("--config", &config_name, format!("two remotes are named `{}`", r.name)));
            }
        }
        let mut benchmarks: Vec<medpo_types::BenchmarkSpec> = medpo_eval::bench::KNOWN_BENCHMARKS
            .iter()
            .map(|(n, _)| medpo_types::BenchmarkSpec { name: n.to_string(), questions: n.to_string(), images: None, limit: None })
            .collect();
        for mut b in file.benchmark {
            if b.name.trim().is_empty() {
                return Err(err("--config", &config_name, "a [[benchmark]] has an empty name"));
            }
            if b.questions.is_empty() {
                b.questions = b.name.clone();
            }
            if b.limit == Some(0) {
                return Err(err("--config", &config_name, format!("benchmark `{}`: limit must be at least 1", b.name)));
            }
            match benchmarks.iter_mut().find(|k| k.name == b.name) {
                Some(k) => *k = b,
                None => benchmarks.push(b),
            }
        }
        Ok(Config {
            bind,
            database_url,
            data_dir,
            models_dir,
            site_root,
            max_upload_bytes: (mb as usize) << 20,
            log,
            secure_cookies: self.secure_cookies.or(file.secure_cookies).unwrap_or(false),
            api_rate_limit,
            workers: self.workers.or(file.workers).unwrap_or(true),
            remotes: file.remote,
            benchmarks,
            config_file,
        })
    }
}

fn short_cause(msg: &str) -> String {
    // The store's message repeats the URL; keep only the reason.
    msg.split_once(": ").map(|(_, r)| r.to_string()).unwrap_or_else(|| msg.to_string())
}

fn read_file(explicit: Option<&Path>) -> Result<(FileSettings, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from("medpo.toml");
            if !p.exists() {
                return Ok((FileSettings::default(), None));
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err("--config", path.display(), e))?;
    let file: FileSettings =
        toml::from_str(&text).map_err(|e| err("--config", path.display(), e.message().to_string()))?;
    Ok((file, Some(path)))
}

impl Config {
    /// Creates the data folder and checks it is writable (leaves nothing behind).
    pub fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let d = &self.data_dir;
        if d.exists() && !d.is_dir() {
            return Err(err("--data-dir", d.display(), "exists and is not a folder"));
        }
        std::fs::create_dir_all(d).map_err(|e| err("--data-dir", d.display(), format!("cannot create it: {e}")))?;
        let probe = d.join(format!(".medpo-write-test-{}", std::process::id()));
        std::fs::write(&probe, b"ok").map_err(|e| err("--data-dir", d.display(), format!("not writable: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        for sub in ["scans", "datasets", "checkpoints"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| err("--data-dir", d.display(), format!("cannot create `{sub}/`: {e}")))?;
        }
        Ok(())
    }

    /// The database URL with any password hidden.
    pub fn database_url_redacted(&self) -> String {
        medpo_store::redact_url(&self.database_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        // A config path that does not exist would be an error; point at an empty file.
        let dir = std::env::temp_dir().join(format!("medpo-cfg-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("medpo.toml");
        std::fs::write(&f, "").unwrap();
        Settings { config: Some(f), ..Default::default() }
    }

    #[test]
    fn defaults() {
        let c = settings().resolve().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(c.database_url, "sqlite://data/medpo.db");
        assert_eq!(c.max_upload_bytes, 50 << 20);
    }

    #[test]
    fn file_then_flags() {
        let s = settings();
        let f = s.config.clone().unwrap();
        std::fs::write(&f, "bind = \"0.0.0.0:8080\"\ndata_dir = \"/tmp/x\"\nmax_upload_mb = 10\n").unwrap();
        let c = s.resolve().unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(c.database_url, "sqlite:///tmp/x/medpo.db");
        let c = Settings { bind: Some("127.0.0.1:9".into()), ..s }.resolve().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:9");
    }

    #[test]
    fn errors_name_setting_value_and_cause() {
        let e = Settings { bind: Some("localhost".into()), ..settings() }.resolve().unwrap_err().to_string();
        assert!(e.starts_with("--bind `localhost`: not a socket address"), "{e}");
        let e = Settings { database_url: Some("mysql://u:pw@h/db".into()), ..settings() }.resolve().unwrap_err().to_string();
        assert!(e.starts_with("--database-url `mysql://u:***@h/db`: unsupported scheme `mysql`"), "{e}");
        let e = Settings { max_upload_mb: Some(0), ..settings() }.resolve().unwrap_err().to_string();
        assert!(e.contains("--max-upload-mb `0`"), "{e}");
        let s = settings();
        std::fs::write(s.config.as_ref().unwrap(), "bnd = 1\n").unwrap();
        let e = s.resolve().unwrap_err().to_string();
        assert!(e.starts_with("--config `") && e.contains("unknown field `bnd`"), "{e}");
        let e = Settings { config: Some("/nonexistent/medpo.toml".into()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.starts_with("--config `/nonexistent/medpo.toml`"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn remotes_are_read_and_checked() {
        let s = settings();
        let f = s.config.clone().unwrap();
        std::fs::write(&f, "[[remote]]\nname = \"vllm\"\nbase_url = \"http://10.0.0.5:8000/v1\"\nmodels = [\"llava-med-7b\"]\ntimeout_s = 30\n").unwrap();
        let c = s.resolve().unwrap();
        assert_eq!(c.remotes.len(), 1);
        assert_eq!((c.remotes[0].name.as_str(), c.remotes[0].timeout_s, c.remotes[0].max_concurrency), ("vllm", 30, 4));
        std::fs::write(&f, "[[remote]]\nname = \"v\"\nbase_url = \"http://h/v1\"\nmodels = [\"m\"]\napi_key_env = \"MEDPO_TEST_UNSET_REMOTE_KEY\"\n").unwrap();
        let e = s.resolve().unwrap_err().to_string();
        assert!(e.starts_with("--config `") && e.contains("MEDPO_TEST_UNSET_REMOTE_KEY"), "{e}");
        std::fs::write(&f, "[[remote]]\nname = \"v\"\nbase_url = \"http://h/v1\"\nmodels = [\"m\"]\ncolour = 1\n").unwrap();
        assert!(s.resolve().unwrap_err().to_string().contains("unknown field `colour`"));
    }

    #[test]
    fn data_dir_that_is_a_file() {
        let f = std::env::temp_dir().join(format!("medpo-file-{}", rand::random::<u32>()));
        std::fs::write(&f, "x").unwrap();
        let c = Settings { data_dir: Some(f.clone()), ..settings() }.resolve().unwrap();
        let e = c.prepare_data_dir().unwrap_err().to_string();
        assert!(e.contains("--data-dir") && e.contains("not a folder"), "{e}");
    }
}
