//! Users and login sessions.

use medpo_types::{Role, User};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{conflict_as, now_ms, Error, Result, Store};

fn user_from_row(r: &AnyRow) -> Result<User> {
    let role: String = r.try_get("role")?;
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: role.parse().map_err(|reason| Error::Invalid { field: "users.role", reason })?,
        created_at: r.try_get("created_at")?,
    })
}

/// A session looked up by its token: the user and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: i64,
}

impl Store {
    /// Creates a user. `password_hash` is an argon2id PHC string made by the caller.
    pub async fn create_user(&self, username: &str, password_hash: &str, role: Role) -> Result<User> {
        let username = username.trim();
        if username.is_empty() || username.chars().count() > 64 {
            return Err(Error::Invalid { field: "username", reason: "must be 1 to 64 characters".into() });
        }
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(conflict_as(format!("user `{username}`")))?;
        Ok(User { id, username: username.to_string(), role, created_at: now })
    }

    /// The user and their password hash, for login.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT id, username, role, created_at, password_hash FROM users WHERE username = $1")
            .bind(username.trim())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(r) => Ok(Some((user_from_row(&r)?, r.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    pub async fn user(&self, id: i64) -> Result<User> {
        let r = sqlx::query("SELECT id, username, role, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("user {id}")))?;
        user_from_row(&r)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT id, username, role, created_at FROM users ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Sets a new password and ends all of the user's sessions, in one transaction.
    pub async fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let id: Option<i64> = sqlx::query_scalar("UPDATE users SET password_hash = $1 WHERE username = $2 RETURNING id")
            .bind(password_hash)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            return Err(Error::not_found(format!("user `{username}`")));
        };
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a session. `token_hash` is the sha256 of the cookie value (the cookie itself is
    /// never stored).
    pub async fn create_session(&self, token_hash: &str, user_id: i64, csrf_token: &str, ttl_ms: i64) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The live session with this token hash, if any (expired sessions are not returned).
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionInfo>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, u.created_at, s.csrf_token, s.expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) => Ok(Some(SessionInfo {
                user: user_from_row(&r)?,
                csrf_token: r.try_get("csrf_token")?,
                expires_at: r.try_get("expires_at")?,
            })),
            None => Ok(None),
        }
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes expired sessions; returns how many.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
