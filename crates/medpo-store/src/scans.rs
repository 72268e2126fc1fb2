//! Uploaded scans, content-addressed by sha256.

use medpo_types::{NewScan, Scan, SourceFormat};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, Error, Result, Store};

const COLS: &str = "id, sha256, path, size_bytes, width, height, source_format, modality, body_part, view, uploaded_by, created_at";

fn scan_from_row(r: &AnyRow) -> Result<Scan> {
    let fmt: String = r.try_get("source_format")?;
    Ok(Scan {
        id: r.try_get("id")?,
        sha256: r.try_get("sha256")?,
        path: r.try_get("path")?,
        size_bytes: r.try_get("size_bytes")?,
        width: r.try_get("width")?,
        height: r.try_get("height")?,
        source_format: SourceFormat::parse(&fmt)
            .ok_or_else(|| Error::Invalid { field: "scans.source_format", reason: fmt.clone() })?,
        modality: r.try_get("modality")?,
        body_part: r.try_get("body_part")?,
        view: r.try_get("view")?,
        uploaded_by: r.try_get("uploaded_by")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Inserts a scan, or returns the existing row with the same sha256 (the same scan
    /// uploaded twice is stored once). The boolean is true when the row is new.
    pub async fn insert_scan(&self, s: &NewScan) -> Result<(Scan, bool)> {
        if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid { field: "sha256", reason: format!("`{}` is not a hex sha256", s.sha256) });
        }
        if let Some(existing) = self.scan_by_sha(&s.sha256).await? {
            return Ok((existing, false));
        }
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO scans (sha256, path, size_bytes, width, height, source_format, modality, body_part, view, uploaded_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (sha256) DO NOTHING RETURNING id",
        )
        .bind(&s.sha256)
        .bind(&s.path)
        .bind(s.size_bytes)
        .bind(s.width)
        .bind(s.height)
        .bind(s.source_format.as_str())
        .bind(&s.modality)
        .bind(&s.body_part)
        .bind(&s.view)
        .bind(s.uploaded_by)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        match inserted {
            Some(id) => Ok((self.scan(id).await?, true)),
            // Lost a race with an identical upload: return the winner's row.
            None => Ok((self.scan_by_sha(&s.sha256).await?.ok_or_else(|| Error::not_found("scan"))?, false)),
        }
    }

    pub async fn scan(&self, id: i64) -> Result<Scan> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM scans WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("scan {id}")))?;
        scan_from_row(&r)
    }

    pub async fn scan_by_sha(&self, sha256: &str) -> Result<Option<Scan>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM scans WHERE sha256 = $1")))
            .bind(sha256)
            .fetch_optional(self.pool())
            .await?;
        r.as_ref().map(scan_from_row).transpose()
    }

    pub async fn recent_scans(&self, limit: i64) -> Result<Vec<Scan>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM scans ORDER BY id DESC LIMIT $1")))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(scan_from_row).collect()
    }
}
