//! Preference datasets and their immutable, versioned snapshots.

use medpo_types::{Dataset, DatasetSnapshot, PreferencePair, Region};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::arena::{pair_row, PAIR_COLS};
use crate::{conflict_as, now_ms, to_json, Error, Result, Store};

fn snapshot_from_row(r: &AnyRow) -> Result<DatasetSnapshot> {
    Ok(DatasetSnapshot {
        id: r.try_get("id")?,
        dataset_id: r.try_get("dataset_id")?,
        version: r.try_get("version")?,
        pair_count: r.try_get("pair_count")?,
        sha256: r.try_get("sha256")?,
        note: r.try_get("note")?,
        origin: r.try_get("origin")?,
        created_at: r.try_get("created_at")?,
    })
}


/// A pair to import from a file (not from a vote).
#[derive(Debug, Clone)]
pub struct ImportedPair {
    pub scan_id: Option<i64>,
    pub question: String,
    pub chosen: String,
    pub rejected: String,
    pub region: Option<Region>,
}

/// The content hash of a snapshot: sha256 over each pair's id, question, chosen and
/// rejected text, in id order, length-prefixed so that no two pair lists collide.
pub fn snapshot_hash(pairs: &[PreferencePair]) -> String {
    let mut h = Sha256::new();
    for p in pairs {
        for field in [p.id.to_string().as_str(), &p.question, &p.chosen, &p.rejected] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// Inserts a pair that came from a file (source `import`); returns its id.
async fn insert_import(conn: &mut sqlx::AnyConnection, p: &ImportedPair, now: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO preference_pairs (vote_id, scan_id, question, chosen, rejected, region_json, tags_json, source, created_at) \
         VALUES (NULL, $1, $2, $3, $4, $5, '[]', 'import', $6) RETURNING id",
    )
    .bind(p.scan_id)
    .bind(&p.question)
    .bind(&p.chosen)
    .bind(&p.rejected)
    .bind(p.region.as_ref().map(to_json))
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// Writes the next version of `dataset_id` holding exactly `pairs`, inside the caller's
/// transaction: the snapshot row (count, hash, note, origin) and its pair list.
async fn freeze(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dataset_id: i64,
    pairs: &[PreferencePair],
    note: &str,
    origin: &str,
    created_by: Option<i64>,
) -> Result<DatasetSnapshot> {
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM dataset_snapshots WHERE dataset_id = $1")
        .bind(dataset_id)
        .fetch_one(&mut **tx)
        .await?;
    let sha = snapshot_hash(pairs);
    let now = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dataset_snapshots (dataset_id, version, pair_count, sha256, note, origin, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(dataset_id)
    .bind(version)
    .bind(pairs.len() as i64)
    .bind(&sha)
    .bind(note.trim())
    .bind(origin)
    .bind(created_by)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(conflict_as(format!("version {version} of dataset {dataset_id}")))?;
    for p in pairs {
        sqlx::query("INSERT INTO snapshot_pairs (snapshot_id, pair_id) VALUES ($1, $2)").bind(id).bind(p.id).execute(&mut **tx).await?;
    }
    Ok(DatasetSnapshot { id, dataset_id, version, pair_count: pairs.len() as i64, sha256: sha, note: note.trim().into(), origin: origin.into(), created_at: now })
}

impl Store {
    pub async fn create_dataset(&self, name: &str, description: &str, created_by: Option<i64>) -> Result<Dataset> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Error::Invalid { field: "name", reason: "must be 1 to 100 characters".into() });
        }
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO datasets (name, description, created_by, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(description.trim())
        .bind(created_by)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(conflict_as(format!("dataset `{name}`")))?;
        Ok(Dataset { id, name: name.into(), description: description.trim().into(), created_at: now, snapshots: vec![] })
    }

    /// Every dataset with its snapshots (newest version first).
    pub async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        let rows = sqlx::query("SELECT id, name, description, created_at FROM datasets ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        let snaps = sqlx::query(
            "SELECT id, dataset_id, version, pair_count, sha256, note, origin, created_at FROM dataset_snapshots ORDER BY version DESC",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(snapshot_from_row)
        .collect::<Result<Vec<_>>>()?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(Dataset {
                    id,
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    created_at: r.try_get("created_at")?,
                    snapshots: snaps.iter().filter(|s| s.dataset_id == id).cloned().collect(),
                })
            })
            .collect()
    }

    /// Adds a pair that came from a file rather than a vote.
    pub async fn import_pair(&self, p: &ImportedPair) -> Result<i64> {
        if p.chosen.trim().is_empty() || p.rejected.trim().is_empty() {
            return Err(Error::Invalid { field: "pair", reason: "chosen and rejected must not be empty".into() });
        }
        let mut conn = self.pool().acquire().await?;
        insert_import(&mut conn, p, now_ms()).await
    }

    /// Freezes every preference pair that exists now into the dataset's next version. A
    /// snapshot never changes afterwards; training jobs name the snapshot they used.
    pub async fn snapshot_dataset(&self, dataset_id: i64, note: &str, created_by: Option<i64>) -> Result<DatasetSnapshot> {
        // SQLite: take the write lock up front, so a concurrent vote waits (busy_timeout)
        // instead of failing the snapshot's read-then-write upgrade.
        let mut tx = match self.backend() {
            crate::Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            crate::Backend::Postgres => self.pool().begin().await?,
        };
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM datasets WHERE id = $1")
            .bind(dataset_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::not_found(format!("dataset {dataset_id}")));
        }
        // Pairs of uploaded files belong to their own snapshots only.
        let pairs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAIR_COLS} FROM preference_pairs WHERE id NOT IN \
             (SELECT sp.pair_id FROM snapshot_pairs sp JOIN dataset_snapshots ds ON ds.id = sp.snapshot_id WHERE ds.origin = 'upload') \
             ORDER BY id"
        )))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(pair_row)
            .collect::<Result<Vec<_>>>()?;
        if pairs.is_empty() {
            return Err(Error::Invalid {
                field: "snapshot",
                reason: "there are no preference pairs yet: vote in the arena or import pairs first".into(),
            });
        }
        let snap = freeze(&mut tx, dataset_id, &pairs, note, "votes", created_by).await?;
        tx.commit().await?;
        Ok(snap)
    }

    /// Stores the pairs of an uploaded preference file and freezes exactly them as the
    /// dataset's next version, in one transaction: a failure stores nothing.
    pub async fn upload_snapshot(&self, dataset_id: i64, pairs: &[ImportedPair], note: &str, created_by: Option<i64>) -> Result<DatasetSnapshot> {
        if pairs.is_empty() {
            return Err(Error::Invalid { field: "file", reason: "it holds no preference pair".into() });
        }
        if let Some((i, _)) = pairs.iter().enumerate().find(|(_, p)| p.chosen.trim().is_empty() || p.rejected.trim().is_empty()) {
            return Err(Error::Invalid { field: "pair", reason: format!("pair {} has an empty chosen or rejected answer", i + 1) });
        }
        let mut tx = match self.backend() {
            crate::Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            crate::Backend::Postgres => self.pool().begin().await?,
        };
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM datasets WHERE id = $1").bind(dataset_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(Error::not_found(format!("dataset {dataset_id}")));
        }
        let now = now_ms();
        let mut stored = Vec::with_capacity(pairs.len());
        for p in pairs {
            let id = insert_import(&mut tx, p, now).await?;
            stored.push(PreferencePair {
                id,
                vote_id: None,
                scan_id: p.scan_id,
                question: p.question.clone(),
                chosen: p.chosen.clone(),
                rejected: p.rejected.clone(),
                chosen_model_id: None,
                rejected_model_id: None,
                region: p.region.clone(),
                tags: vec![],
                source: "import".into(),
                created_at: now,
            });
        }
        let snap = freeze(&mut tx, dataset_id, &stored, note, "upload", created_by).await?;
        tx.commit().await?;
        Ok(snap)
    }

    /// A snapshot's pairs with their rater, scan modality, model names and the highest
    /// severity among the vote's tags (for browsing, filtering and counts).
    pub async fn snapshot_details(&self, snapshot_id: i64) -> Result<Vec<medpo_types::SnapshotPair>> {
        self.snapshot(snapshot_id).await?;
        let cols = PAIR_COLS.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {cols}, u.username AS rater, s.modality AS modality, cm.name AS chosen_name, rm.name AS rejected_name \
             FROM snapshot_pairs sp JOIN preference_pairs p ON p.id = sp.pair_id \
             LEFT JOIN votes v ON v.id = p.vote_id LEFT JOIN users u ON u.id = v.rater_id \
             LEFT JOIN scans s ON s.id = p.scan_id \
             LEFT JOIN models cm ON cm.id = p.chosen_model_id LEFT JOIN models rm ON rm.id = p.rejected_model_id \
             WHERE sp.snapshot_id = $1 ORDER BY p.id"
        )))
        .bind(snapshot_id)
        .fetch_all(self.pool())
        .await?;
        let sev = sqlx::query(
            "SELECT t.vote_id AS vote_id, t.severity AS severity FROM vote_tags t \
             JOIN preference_pairs p ON p.vote_id = t.vote_id JOIN snapshot_pairs sp ON sp.pair_id = p.id WHERE sp.snapshot_id = $1",
        )
        .bind(snapshot_id)
        .fetch_all(self.pool())
        .await?;
        let rank = |s: &str| match s {
            "critical" => 3,
            "major" => 2,
            "minor" => 1,
            _ => 0,
        };
        let mut worst: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
        for r in &sev {
            let (v, s): (i64, String) = (r.try_get("vote_id")?, r.try_get("severity")?);
            let e = worst.entry(v).or_default();
            if rank(&s) > rank(e) {
                *e = s;
            }
        }
        rows.iter()
            .map(|r| {
                let pair = pair_row(r)?;
                let severity = pair.vote_id.and_then(|v| worst.get(&v).cloned());
                Ok(medpo_types::SnapshotPair {
                    rater: r.try_get("rater")?,
                    modality: r.try_get("modality")?,
                    chosen_model: r.try_get("chosen_name")?,
                    rejected_model: r.try_get("rejected_name")?,
                    severity,
                    pair,
                })
            })
            .collect()
    }

    pub async fn snapshot(&self, id: i64) -> Result<DatasetSnapshot> {
        let r = sqlx::query("SELECT id, dataset_id, version, pair_count, sha256, note, origin, created_at FROM dataset_snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("dataset snapshot {id}")))?;
        snapshot_from_row(&r)
    }

    /// The pairs frozen in a snapshot, in id order.
    pub async fn snapshot_pairs(&self, snapshot_id: i64) -> Result<Vec<PreferencePair>> {
        let cols = PAIR_COLS.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {cols} FROM snapshot_pairs s JOIN preference_pairs p ON p.id = s.pair_id WHERE s.snapshot_id = $1 ORDER BY p.id"
        )))
        .bind(snapshot_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(pair_row).collect()
    }
}
