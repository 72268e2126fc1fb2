//! API keys (stored as SHA-256 hashes) and the log of API calls.

use medpo_types::{ApiKey, User};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{conflict_as, now_ms, Error, Result, Store};

fn key_from_row(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// One logged API call (no request or image content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    pub key_id: i64,
    pub endpoint: String,
    pub model: Option<String>,
    pub status: i64,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

impl Store {
    /// Stores a new key for `user_id`: its label, display prefix and SHA-256 hex hash.
    pub async fn create_api_key(&self, user_id: i64, name: &str, prefix: &str, key_hash: &str) -> Result<ApiKey> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(Error::Invalid { field: "API key name", reason: "must be 1 to 64 characters".into() });
        }
        let now = now_ms();
        let _turn = self.write_turn().await;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(prefix)
        .bind(key_hash)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(conflict_as(format!("API key `{prefix}`")))?;
        Ok(ApiKey {
            id,
            user_id,
            name: name.to_string(),
            prefix: prefix.to_string(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// The key with this hash and its owner, if the key exists and is not revoked.
    pub async fn active_api_key(&self, key_hash: &str) -> Result<Option<(ApiKey, User)>> {
        let row = sqlx::query(
            "SELECT k.id, k.user_id, k.name, k.prefix, k.created_at, k.last_used_at, k.revoked_at, \
             u.username, u.role, u.created_at AS user_created_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let key = key_from_row(&r)?;
        let role: String = r.try_get("role")?;
        let user = User {
            id: key.user_id,
            username: r.try_get("username")?,
            role: role.parse().map_err(|reason| Error::Invalid { field: "users.role", reason })?,
            created_at: r.try_get("user_created_at")?,
        };
        Ok(Some((key, user)))
    }

    /// A user's keys, newest first (revoked ones included, marked).
    pub async fn api_keys_of(&self, user_id: i64) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys WHERE user_id = $1 ORDER BY id DESC")
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one of `user_id`'s keys (admins may pass `None` to revoke anyone's). Revoking
    /// twice is harmless; a key that is not the user's is "not found".
    pub async fn revoke_api_key(&self, key_id: i64, user_id: Option<i64>) -> Result<ApiKey> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND ($3 < 0 OR user_id = $3) \
             RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at",
        )
        .bind(now_ms())
        .bind(key_id)
        .bind(user_id.unwrap_or(-1))
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| Error::not_found(format!("API key {key_id}")))?;
        key_from_row(&row)
    }

    /// Records one call and the key's last use, in one transaction.
    pub async fn log_api_call(&self, call: &ApiCall) -> Result<()> {
        let now = now_ms();
        let _turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO api_calls (key_id, endpoint, model, status, prompt_tokens, completion_tokens, latency_ms, error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(call.key_id)
        .bind(&call.endpoint)
        .bind(&call.model)
        .bind(call.status)
        .bind(call.prompt_tokens)
        .bind(call.completion_tokens)
        .bind(call.latency_ms)
        .bind(&call.error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(call.key_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` calls made with a key.
    pub async fn api_calls_of(&self, key_id: i64, limit: i64) -> Result<Vec<ApiCall>> {
        let rows = sqlx::query(
            "SELECT key_id, endpoint, model, status, prompt_tokens, completion_tokens, latency_ms, error \
             FROM api_calls WHERE key_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(key_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiCall {
                    key_id: r.try_get("key_id")?,
                    endpoint: r.try_get("endpoint")?,
                    model: r.try_get("model")?,
                    status: r.try_get("status")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    latency_ms: r.try_get("latency_ms")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}
