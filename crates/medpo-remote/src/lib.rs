//! A client for OpenAI-compatible chat-completion servers: vLLM or TGI serving a checkpoint,
//! or another MedPO Arena server. Blocking (callers run it on a worker thread, as they do
//! local generation), with what a remote needs to never stall its caller:
//!
//! - **timeouts**: connect (5 s) and per-read (`timeout_s`), so a silent server fails;
//! - **bounded retries with backoff** (`retries`, 250 ms doubling) on connection errors,
//!   timeouts and 5xx/429 answers, only before the first token was received (a broken
//!   stream is reported, not replayed);
//! - **a circuit breaker**: after `breaker_failures` failed requests in a row the remote is
//!   marked unavailable for `breaker_cooldown_s`; calls then fail at once with that message,
//!   and the first call after the cool-down tries again (one success closes the breaker);
//! - **a concurrency bound** (`max_concurrency` requests in flight; more wait their turn);
//! - **garbage detection**: an answer that is not OpenAI's shape is an error naming what was
//!   wrong.
//!
//! No web framework and no model code: the server uses it for remote arena models, the
//! evaluation engine's NLI judge for its judge calls.

#[cfg(feature = "test-support")]
pub mod testing;

use std::io::{BufRead, BufReader};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// OpenAI's `messages` for one question about one image: a user message with the text and
/// the image as a base64 `data:` URL, its media type read from the magic bytes (JPEG, else
/// PNG, which is what scans are stored as).
pub fn image_question(question: &str, image: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let mime = if image.starts_with(&[0xFF, 0xD8, 0xFF]) { "image/jpeg" } else { "image/png" };
    let url = format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(image));
    serde_json::json!([{"role": "user", "content": [
        {"type": "text", "text": question},
        {"type": "image_url", "image_url": {"url": url}},
    ]}])
}

/// One remote server, as written in `medpo.toml` (`[[remote]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// A short name: its models appear as `<name>/<model>`.
    pub name: String,
    /// The OpenAI-compatible base URL, e.g. `http://10.0.0.5:8000/v1`.
    pub base_url: String,
    /// Environment variable holding the API key (never the key itself in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model names served there.
    pub models: Vec<String>,
    /// Seconds to wait for each read (and the whole non-streamed answer).
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Requests in flight at most.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Retries after the first try (before any token arrived).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failed requests in a row that open the breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds the breaker stays open.
    #[serde(default = "default_cooldown")]
    pub breaker_cooldown_s: u64,
}

fn default_timeout() -> u64 {
    60
}
fn default_concurrency() -> usize {
    4
}
fn default_retries() -> u32 {
    2
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_cooldown() -> u64 {
    30
}

impl RemoteConfig {
    /// A remote with the defaults.
    pub fn new(name: &str, base_url: &str, models: Vec<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            api_key_env: None,
            models,
            timeout_s: default_timeout(),
            max_concurrency: default_concurrency(),
            retries: default_retries(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_s: default_cooldown(),
        }
    }

    /// Checks the fields and resolves the key from its environment variable.
    pub fn validate(&self) -> Result<Option<String>, String> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            return Err(format!("remote name `{}` must be non-empty and without `/`", self.name));
        }
        let scheme = self.base_url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("http") => {}
            Some("https") if cfg!(feature = "tls") => {}
            Some("https") => {
                return Err(format!(
                    "remote `{}`: `{}` is https, but this build has no TLS; build with `--features tls` or reach it over http on a private network",
                    self.name, self.base_url
                ))
            }
            _ => return Err(format!("remote `{}`: base_url `{}` must start with http:// or https://", self.name, self.base_url)),
        }
        if self.models.is_empty() {
            return Err(format!("remote `{}` lists no models", self.name));
        }
        if self.timeout_s == 0 || self.max_concurrency == 0 || self.breaker_failures == 0 {
            return Err(format!("remote `{}`: timeout_s, max_concurrency and breaker_failures must be at least 1", self.name));
        }
        match &self.api_key_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => Ok(Some(k)),
                _ => Err(format!("remote `{}`: environment variable `{var}` (its API key) is not set", self.name)),
            },
        }
    }
}

/// Why a remote call failed. Messages name the remote.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{remote}` is unavailable after {failures} failed requests in a row; retrying after {retry_in_s} s")]
    Unavailable { remote: String, failures: u32, retry_in_s: u64 },
    #[error("remote `{remote}` did not answer: {message}")]
    Unreachable { remote: String, message: String },
    #[error("remote `{remote}` answered HTTP {status}: {message}")]
    Status { remote: String, status: u16, message: String },
    #[error("remote `{remote}` sent something that is not an OpenAI chat completion: {message}")]
    Garbage { remote: String, message: String },
    #[error("remote `{remote}` broke off its answer: {message}")]
    Broken { remote: String, message: String },
}

impl RemoteError {
    /// Whether another try may help (and whether the breaker counts it).
    fn retryable(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } => true,
            RemoteError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// A streamed or whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub finish_reason: Option<String>,
    /// `usage.completion_tokens` when the server sent it.
    pub completion_tokens: Option<u64>,
}

/// A client for one remote.
pub struct Client {
    cfg: RemoteConfig,
    key: Option<String>,
    agent: ureq::Agent,
    breaker: Mutex<Breaker>,
    in_flight: Mutex<usize>,
    turn: Condvar,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("name", &self.cfg.name).field("base_url", &self.cfg.base_url).finish()
    }
}

/// Holds one of the remote's concurrency slots.
struct Slot<'a>(&'a Client);
impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        self.0.turn.notify_one();
    }
}

impl Client {
    /// A client; `validate` must have passed (it gives the key).
    pub fn new(cfg: RemoteConfig, key: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(cfg.timeout_s))
            .build();
        Self { cfg, key, agent, breaker: Mutex::new(Breaker::default()), in_flight: Mutex::new(0), turn: Condvar::new() }
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.cfg
    }

    /// The chat-completions URL (`base_url` + `/chat/completions`, unless it already ends so).
    pub fn endpoint(&self) -> String {
        let u = self.cfg.base_url.trim_end_matches('/');
        if u.ends_with("/chat/completions") {
            u.to_string()
        } else {
            format!("{u}/chat/completions")
        }
    }

    fn err_unreachable(&self, message: impl Into<String>) -> RemoteError {
        RemoteError::Unreachable { remote: self.cfg.name.clone(), message: message.into() }
    }
    fn err_garbage(&self, message: impl Into<String>) -> RemoteError {
        RemoteError::Garbage { remote: self.cfg.name.clone(), message: message.into() }
    }

    /// Fails at once while the breaker is open.
    fn check_breaker(&self) -> Result<(), RemoteError> {
        let b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = b.open_until {
            let now = Instant::now();
            if now < until {
                return Err(RemoteError::Unavailable {
                    remote: self.cfg.name.clone(),
                    failures: b.failures,
                    retry_in_s: (until - now).as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            if b.open_until.is_some() {
                tracing::info!(remote = %self.cfg.name, "remote answers again; breaker closed");
            }
            *b = Breaker::default();
        } else {
            b.failures += 1;
            if b.failures >= self.cfg.breaker_failures {
                b.open_until = Some(Instant::now() + Duration::from_secs(self.cfg.breaker_cooldown_s));
                tracing::warn!(remote = %self.cfg.name, failures = b.failures, cooldown_s = self.cfg.breaker_cooldown_s, "remote marked unavailable");
            }
        }
    }

    fn slot(&self) -> Slot<'_> {
        let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= self.cfg.max_concurrency {
            n = self.turn.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Slot(self)
    }

    /// Sends the request once.
    fn send(&self, body: &serde_json::Value) -> Result<ureq::Response, RemoteError> {
        let mut req = self.agent.post(&self.endpoint()).set("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        match req.send_json(body) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
                    .unwrap_or_else(|| text.chars().take(300).collect());
                Err(RemoteError::Status { remote: self.cfg.name.clone(), status, message })
            }
            Err(e) => Err(self.err_unreachable(e.to_string())),
        }
    }

    /// Runs `attempt` with the breaker, the concurrency bound and the retries. `attempt`
    /// returns whether it got any token (then no retry).
    fn with_retries<T>(&self, mut attempt: impl FnMut() -> (Result<T, RemoteError>, bool)) -> Result<T, RemoteError> {
        self.check_breaker()?;
        let _slot = self.slot();
        let mut backoff = Duration::from_millis(250);
        let mut tries = 0;
        loop {
            let (r, started) = attempt();
            match r {
                Ok(v) => {
                    self.record(true);
                    return Ok(v);
                }
                Err(e) if e.retryable() && !started && tries < self.cfg.retries => {
                    tries += 1;
                    tracing::warn!(remote = %self.cfg.name, error = %e, try_ = tries, "remote call failed; retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Err(e) => {
                    // Bad requests are the caller's fault, not the remote's.
                    let counts = !matches!(e, RemoteError::Status { status, .. } if (400..500).contains(&status) && status != 429);
                    if counts {
                        self.record(false);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A whole (non-streamed) chat completion; `body` is OpenAI's request (without `stream`).
    pub fn complete(&self, body: &serde_json::Value) -> Result<Answer, RemoteError> {
        self.with_retries(|| {
            let r = self.send(body).and_then(|resp| {
                let v: serde_json::Value = resp.into_json().map_err(|e| self.err_garbage(format!("the body is not JSON: {e}")))?;
                let text = v
                    .pointer("/choices/0/message/content")
                    .and_then(|c| c.as_str())
                    .ok_or_else(|| self.err_garbage("no `choices[0].message.content`"))?;
                Ok(Answer {
                    text: text.to_string(),
                    finish_reason: v.pointer("/choices/0/finish_reason").and_then(|f| f.as_str()).map(str::to_string),
                    completion_tokens: v.pointer("/usage/completion_tokens").and_then(|t| t.as_u64()),
                })
            });
            (r, false)
        })
    }

    /// A streamed chat completion: `on_delta` gets each piece of text and returns `false` to
    /// stop reading (the caller went away). The answer must end with `data: [DONE]`; a stream
    /// that breaks off first is an error.
    pub fn stream(&self, body: &serde_json::Value, on_delta: &mut dyn FnMut(&str) -> bool) -> Result<Answer, RemoteError> {
        let mut body = body.clone();
        body["stream"] = serde_json::Value::Bool(true);
        body["stream_options"] = serde_json::json!({ "include_usage": true });
        self.with_retries(|| {
            let mut started = false;
            let r = (|| {
                let resp = self.send(&body)?;
                let ct = resp.header("content-type").unwrap_or("").to_string();
                if !ct.starts_with("text/event-stream") {
                    return Err(self.err_garbage(format!("expected an event stream, got `{ct}`")));
                }
                let mut answer = Answer { text: String::new(), finish_reason: None, completion_tokens: None };
                for line in BufReader::new(resp.into_reader()).lines() {
                    let line = line.map_err(|e| RemoteError::Broken { remote: self.cfg.name.clone(), message: e.to_string() })?;
                    let Some(data) = line.strip_prefix("data:") else { continue };
                    let data = data.trim();
                    if data == "[DONE]" {
                        return Ok(answer);
                    }
                    let v: serde_json::Value =
                        serde_json::from_str(data).map_err(|e| self.err_garbage(format!("an event is not JSON ({e}): {}", data.chars().take(120).collect::<String>())))?;
                    if let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str()) {
                        return Err(RemoteError::Broken { remote: self.cfg.name.clone(), message: m.to_string() });
                    }
                    if let Some(t) = v.pointer("/usage/completion_tokens").and_then(|t| t.as_u64()) {
                        answer.completion_tokens = Some(t);
                    }
                    let Some(choice) = v.pointer("/choices/0") else {
                        if v.get("choices").is_some() || v.get("usage").is_some() {
                            continue;
                        }
                        return Err(self.err_garbage("an event has no `choices`"));
                    };
                    if let Some(f) = choice.get("finish_reason").and_then(|f| f.as_str()) {
                        answer.finish_reason = Some(f.to_string());
                    }
                    if let Some(d) = choice.pointer("/delta/content").and_then(|c| c.as_str()) {
                        if !d.is_empty() {
                            started = true;
                            answer.text.push_str(d);
                            if !on_delta(d) {
                                return Ok(answer);
                            }
                        }
                    }
                }
                Err(RemoteError::Broken { remote: self.cfg.name.clone(), message: "the stream ended without `data: [DONE]`".into() })
            })();
            (r, started)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_questions_carry_the_image_type() {
        let m = image_question("Is there a nodule?", &[0xFF, 0xD8, 0xFF, 0xE0]);
        assert_eq!(m[0]["role"], "user");
        assert_eq!(m[0]["content"][0]["text"], "Is there a nodule?");
        assert_eq!(m[0]["content"][1]["image_url"]["url"], "data:image/jpeg;base64,/9j/4A==");
        let png = image_question("q", b"\x89PNG");
        assert!(png[0]["content"][1]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
    }

    #[test]
    fn config_is_checked() {
        let ok = RemoteConfig::new("vllm", "http://127.0.0.1:8000/v1", vec!["m".into()]);
        assert_eq!(ok.validate(), Ok(None));
        let bad = |f: &dyn Fn(&mut RemoteConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(&|c| c.base_url = "ftp://x".into()).contains("http://"));
        assert!(bad(&|c| c.models.clear()).contains("no models"));
        assert!(bad(&|c| c.name = "a/b".into()).contains("without `/`"));
        assert!(bad(&|c| c.api_key_env = Some("MEDPO_TEST_SURELY_UNSET_KEY".into())).contains("MEDPO_TEST_SURELY_UNSET_KEY"));
        let t: RemoteConfig = serde_json::from_str(r#"{"name": "x", "base_url": "http://h/v1", "models": ["a"]}"#).unwrap();
        assert_eq!((t.timeout_s, t.max_concurrency, t.retries), (60, 4, 2));
    }

    #[test]
    fn a_dead_remote_opens_the_breaker_and_fails_fast() {
        // A port nobody listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cfg = RemoteConfig::new("dead", &format!("http://127.0.0.1:{port}/v1"), vec!["m".into()]);
        cfg.retries = 1;
        cfg.breaker_failures = 2;
        let c = Client::new(cfg, None);
        let body = serde_json::json!({"model": "m", "messages": []});
        for _ in 0..2 {
            assert!(matches!(c.complete(&body), Err(RemoteError::Unreachable { .. })));
        }
        let t = Instant::now();
        let e = c.stream(&body, &mut |_| true).unwrap_err();
        assert!(matches!(e, RemoteError::Unavailable { failures: 2, .. }), "{e}");
        assert!(t.elapsed() < Duration::from_millis(50), "fails fast while open");
        assert!(e.to_string().contains("`dead` is unavailable"));
    }
}
