//! Registered model checkpoints.

use medpo_types::{ModelEntry, NewModel};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{conflict_as, from_json, now_ms, to_json, Error, Result, Store};

const COLS: &str = "id, name, base, variant, layout, parent_id, path, files_json, card, params, enabled, created_at";

fn model_from_row(r: &AnyRow) -> Result<ModelEntry> {
    let files: String = r.try_get("files_json")?;
    let enabled: i64 = r.try_get("enabled")?;
    Ok(ModelEntry {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        base: r.try_get("base")?,
        variant: r.try_get("variant")?,
        layout: r.try_get("layout")?,
        parent_id: r.try_get("parent_id")?,
        path: r.try_get("path")?,
        files: from_json("models.files_json", &files)?,
        card: r.try_get("card")?,
        params: r.try_get("params")?,
        enabled: enabled != 0,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Registers a checkpoint. Names are unique.
    pub async fn register_model(&self, m: &NewModel) -> Result<ModelEntry> {
        for (field, v) in [("name", &m.name), ("base", &m.base), ("variant", &m.variant), ("layout", &m.layout), ("path", &m.path)] {
            if v.trim().is_empty() {
                return Err(Error::Invalid { field, reason: "must not be empty".into() });
            }
        }
        if let Some(p) = m.parent_id {
            self.model(p).await?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO models (name, base, variant, layout, parent_id, path, files_json, card, params, enabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10) RETURNING id",
        )
        .bind(m.name.trim())
        .bind(m.base.trim())
        .bind(m.variant.trim())
        .bind(m.layout.trim())
        .bind(m.parent_id)
        .bind(m.path.trim())
        .bind(to_json(&m.files))
        .bind(&m.card)
        .bind(m.params)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await
        .map_err(conflict_as(format!("model `{}`", m.name.trim())))?;
        self.model(id).await
    }

    pub async fn model(&self, id: i64) -> Result<ModelEntry> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM models WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("model {id}")))?;
        model_from_row(&r)
    }

    pub async fn model_by_name(&self, name: &str) -> Result<Option<ModelEntry>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM models WHERE name = $1")))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        r.as_ref().map(model_from_row).transpose()
    }

    /// Every model, grouped by base (bases alphabetically, SFT first inside a base).
    pub async fn list_models(&self) -> Result<Vec<ModelEntry>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM models ORDER BY base, CASE WHEN variant = 'sft' THEN 0 ELSE 1 END, name"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(model_from_row).collect()
    }

    pub async fn set_model_enabled(&self, id: i64, enabled: bool) -> Result<()> {
        let n = sqlx::query("UPDATE models SET enabled = $1 WHERE id = $2")
            .bind(enabled as i64)
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::not_found(format!("model {id}")));
        }
        Ok(())
    }
}
