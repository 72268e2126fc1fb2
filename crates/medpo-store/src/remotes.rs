//! OpenAI-compatible servers registered from the Models page.

use medpo_types::RemoteEndpoint;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{conflict_as, now_ms, Error, Result, Store};

fn remote_from_row(r: &AnyRow) -> Result<RemoteEndpoint> {
    let models: String = r.try_get("models")?;
    Ok(RemoteEndpoint {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        base_url: r.try_get("base_url")?,
        api_key_env: r.try_get("api_key_env")?,
        models: serde_json::from_str(&models).map_err(|source| Error::Json { column: "remotes.models", source })?,
        timeout_s: r.try_get("timeout_s")?,
        max_concurrency: r.try_get("max_concurrency")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Stores a remote (the caller has validated it); `id` and `created_at` are assigned.
    pub async fn create_remote(&self, r: &RemoteEndpoint, created_by: Option<i64>) -> Result<RemoteEndpoint> {
        let models = serde_json::to_string(&r.models).map_err(|source| Error::Json { column: "remotes.models", source })?;
        let now = now_ms();
        let _turn = self.write_turn().await;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO remotes (name, base_url, api_key_env, models, timeout_s, max_concurrency, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&r.name)
        .bind(&r.base_url)
        .bind(&r.api_key_env)
        .bind(models)
        .bind(r.timeout_s)
        .bind(r.max_concurrency)
        .bind(created_by)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(conflict_as(format!("remote `{}`", r.name)))?;
        Ok(RemoteEndpoint { id, created_at: now, ..r.clone() })
    }

    pub async fn list_remotes(&self) -> Result<Vec<RemoteEndpoint>> {
        let rows = sqlx::query(
            "SELECT id, name, base_url, api_key_env, models, timeout_s, max_concurrency, created_at FROM remotes ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(remote_from_row).collect()
    }

    pub async fn remote_named(&self, name: &str) -> Result<Option<RemoteEndpoint>> {
        let row = sqlx::query(
            "SELECT id, name, base_url, api_key_env, models, timeout_s, max_concurrency, created_at FROM remotes WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(remote_from_row).transpose()
    }
}
