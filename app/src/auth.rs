//! Accounts in the browser: sign in, sign out, who is signed in, and role checks for server
//! functions.
//!
//! Sessions: a random 256-bit token in an `HttpOnly; SameSite=Strict` cookie; the database
//! keeps only its sha256. Passwords: argon2id. Failed sign-ins are rate-limited per user name.
//! Cross-site request forgery: the cookie is `SameSite=Strict`, and the server rejects every
//! state-changing request whose `Origin` or `Sec-Fetch-Site` says it came from another site
//! (see `server/src/lib.rs`, `same_origin_guard`).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use medpo_types::User;

/// The signed-in user, if any.
#[server]
pub async fn current_user() -> Result<Option<User>, ServerFnError> {
    Ok(ssr::session().await?.map(|s| s.user))
}

/// Checks the password and starts a session (sets the cookie). `POST /api/login`.
#[server(endpoint = "login")]
pub async fn login(username: String, password: String) -> Result<User, ServerFnError> {
    ssr::login(&username, &password).await
}

/// Ends the session (clears the cookie).
#[server]
pub async fn logout() -> Result<(), ServerFnError> {
    ssr::logout().await
}

/// The sign-in page. `?next=/path` says where to go afterwards.
#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let query = use_query_map();
    let next = move || {
        let n = query.read().get("next").unwrap_or_default();
        // Only local paths: never redirect to another site.
        let local = n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(|c| c.is_control());
        if local { n } else { "/".to_string() }
    };
    Effect::new(move |_| {
        if let Some(Ok(_)) = login.value().get() {
            let _ = window().location().set_href(&next());
        }
    });
    view! {
        <Title text="Sign in — MedPO Arena"/>
        <section class="login">
            <h1>"Sign in"</h1>
            <p class="lead">"Clinicians vote, researchers train and export, viewers read. An admin creates accounts with " <code>"medpo user add"</code> "."</p>
            <ActionForm action=login attr:class="login-form" attr:data-testid="login-form">
                <label>"User name" <input name="username" autocomplete="username" required autofocus/></label>
                <label>"Password" <input name="password" type="password" autocomplete="current-password" required/></label>
                <button type="submit">"Sign in"</button>
            </ActionForm>
            {move || login.value().get().map(|r| match r {
                Ok(u) => view! { <p class="ok" role="status">"Signed in as " {u.username} "."</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{crate::components::error_text(&e)}</p> }.into_any(),
            })}
        </section>
    }
}

/// The account corner of the top bar: a sign-in link, or the user and a sign-out button.
#[component]
pub fn AccountMenu() -> impl IntoView {
    let user = Resource::new(|| (), |_| current_user());
    let logout = ServerAction::<Logout>::new();
    Effect::new(move |_| {
        if let Some(Ok(())) = logout.value().get() {
            let _ = window().location().set_href("/");
        }
    });
    view! {
        <div class="account">
            <Transition fallback=|| ()>
                {move || user.get().map(|r| match r {
                    Ok(Some(u)) => view! {
                        <a href="/account" class="who" data-testid="signed-in-as">{u.username.clone()} " · " <em>{u.role.as_str()}</em></a>
                        <ActionForm action=logout attr:class="inline">
                            <button type="submit" class="link">"Sign out"</button>
                        </ActionForm>
                    }.into_any(),
                    _ => view! { <a href="/login" class="signin">"Sign in"</a> }.into_any(),
                })}
            </Transition>
        </div>
    }
}

#[cfg(feature = "ssr")]
pub mod ssr {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use argon2::Argon2;
    use axum::http::{header, HeaderValue, StatusCode};
    use leptos::prelude::*;
    use medpo_types::{Role, User};
    use sha2::{Digest, Sha256};

    use crate::ssr::{bad_input, ctx, store_err};

    pub const COOKIE: &str = "medpo_session";
    const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
    const MAX_FAILURES: usize = 5;
    const FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);

    /// Hashes a password with argon2id and a random salt (a PHC string).
    pub fn hash_password(password: &str) -> Result<String, String> {
        let bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    }

    /// Prefix of every API key; a key is `mpo_` + 40 hex characters (160 random bits).
    pub const API_KEY_PREFIX: &str = "mpo_";

    /// A new API key: `(secret, display prefix, SHA-256 hex to store)`. The secret is shown
    /// once and never stored.
    pub fn new_api_key() -> (String, String, String) {
        let secret = format!("{API_KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 20]>()));
        let prefix = secret[..API_KEY_PREFIX.len() + 8].to_string();
        let hash = api_key_hash(&secret);
        (secret, prefix, hash)
    }

    /// The stored form of an API key.
    pub fn api_key_hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }

    /// Checks a password against a stored PHC string.
    pub fn verify_password(password: &str, phc: &str) -> bool {
        PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    }

    /// Failed sign-ins per user name, for rate limiting.
    #[derive(Debug, Default, Clone)]
    pub struct LoginLimiter {
        failures: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    }

    impl LoginLimiter {
        /// Counts an attempt for `username` before its password is checked (so parallel
        /// attempts cannot slip past the limit), or says how many seconds to wait. A
        /// successful attempt is then forgotten with [`LoginLimiter::clear`].
        pub fn attempt(&self, username: &str) -> Result<(), u64> {
            let Ok(mut map) = self.failures.lock() else { return Ok(()) };
            if map.len() > 10_000 {
                map.retain(|_, list| list.iter().any(|t| t.elapsed() < FAILURE_WINDOW));
            }
            let list = map.entry(username.to_lowercase()).or_default();
            list.retain(|t| t.elapsed() < FAILURE_WINDOW);
            if list.len() >= MAX_FAILURES {
                return Err(list.first().map(|t| FAILURE_WINDOW.saturating_sub(t.elapsed()).as_secs() + 1).unwrap_or(1));
            }
            list.push(Instant::now());
            Ok(())
        }
        pub fn clear(&self, username: &str) {
            if let Ok(mut map) = self.failures.lock() {
                map.remove(&username.to_lowercase());
            }
        }
    }

    fn token_hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn cookie_token() -> Option<String> {
        let parts = use_context::<axum::http::request::Parts>()?;
        token_in(&parts.headers)
    }

    /// The session token in a request's cookies, if any.
    pub fn token_in(headers: &axum::http::HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
    }

    fn set_cookie(value: &str, max_age: i64) {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            let secure = ctx().map(|c| c.secure_cookies).unwrap_or(false);
            let cookie = format!(
                "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
                if secure { "; Secure" } else { "" }
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.append_header(header::SET_COOKIE, v);
            }
        }
    }

    /// The live session of this request, if any.
    pub async fn session() -> Result<Option<medpo_store::users::SessionInfo>, ServerFnError> {
        let Some(token) = cookie_token() else { return Ok(None) };
        let c = ctx()?;
        c.store.session(&token_hash(&token)).await.map_err(store_err)
    }

    /// The live session of a plain axum request (the upload and streaming endpoints), if any.
    pub async fn session_of(
        store: &medpo_store::Store,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<medpo_store::users::SessionInfo>, medpo_store::Error> {
        match token_in(headers) {
            Some(token) => store.session(&token_hash(&token)).await,
            None => Ok(None),
        }
    }

    /// The signed-in user, or a 401 (not signed in) / 403 (role not allowed) error. Admins
    /// may do everything.
    pub async fn require(roles: &[Role]) -> Result<User, ServerFnError> {
        allowed(session().await?.map(|s| s.user), roles).map_err(|(status, msg)| bad_input(status, msg))
    }

    /// The role rule behind [`require`] and the server's JSON endpoints: the user if signed in
    /// with one of `roles` (admins always), else 401 or 403 with a message.
    pub fn allowed(user: Option<User>, roles: &[Role]) -> Result<User, (StatusCode, String)> {
        match user {
            None => Err((StatusCode::UNAUTHORIZED, "sign in first (your session may have expired)".into())),
            Some(u) if u.role == Role::Admin || roles.contains(&u.role) => Ok(u),
            Some(u) if roles.is_empty() => {
                Err((StatusCode::FORBIDDEN, format!("a {} account cannot do this; only admins can", u.role.as_str())))
            }
            Some(u) => Err((
                StatusCode::FORBIDDEN,
                format!(
                    "a {} account cannot do this; it needs one of: {}",
                    u.role.as_str(),
                    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    pub async fn login(username: &str, password: &str) -> Result<User, ServerFnError> {
        let c = ctx()?;
        let username = username.trim();
        if password.len() > 1024 {
            return Err(bad_input(StatusCode::UNPROCESSABLE_ENTITY, "the password is too long"));
        }
        if let Err(secs) = c.login_limiter.attempt(username) {
            return Err(bad_input(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed sign-ins for `{username}`; try again in {secs} s"),
            ));
        }
        let found = c.store.user_with_hash(username).await.map_err(store_err)?;
        // Verify against a dummy hash when the user does not exist, so timing does not tell.
        // argon2 is slow on purpose: keep it off the async workers.
        let (user, phc) = match found {
            Some((u, phc)) => (Some(u), phc),
            None => (None, dummy_hash().to_string()),
        };
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
            .await
            .map_err(|_| ServerFnError::new("password check failed"))?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::warn!(%username, "failed sign-in");
            return Err(bad_input(StatusCode::UNAUTHORIZED, "wrong user name or password"));
        };
        c.login_limiter.clear(username);
        let token = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 16]>());
        c.store
            .create_session(&token_hash(&token), user.id, &csrf, SESSION_TTL.as_millis() as i64)
            .await
            .map_err(store_err)?;
        set_cookie(&token, SESSION_TTL.as_secs() as i64);
        tracing::info!(username = %user.username, role = user.role.as_str(), "signed in");
        Ok(user)
    }

    pub async fn logout() -> Result<(), ServerFnError> {
        if let Some(token) = cookie_token() {
            let c = ctx()?;
            c.store.delete_session(&token_hash(&token)).await.map_err(store_err)?;
        }
        set_cookie("", 0);
        Ok(())
    }

    /// An argon2id hash of a random password, verified against when the user is unknown.
    fn dummy_hash() -> &'static str {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        DUMMY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default())
    }
}
