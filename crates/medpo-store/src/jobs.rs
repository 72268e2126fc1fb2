//! Training jobs, their progress and their metrics log.

use medpo_types::{JobStatus, MetricsRow, NewTrainingJob, TrainingJob};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{from_json, now_ms, to_json, Error, Result, Store};

const COLS: &str = "id, name, objective, config_json, base_model_id, snapshot_id, device, status, step, total_steps, result_model_id, error, cancel_requested, created_by, created_at, started_at, finished_at";

fn job_from_row(r: &AnyRow) -> Result<TrainingJob> {
    let status: String = r.try_get("status")?;
    let config: String = r.try_get("config_json")?;
    Ok(TrainingJob {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        objective: r.try_get("objective")?,
        config: from_json("training_jobs.config_json", &config)?,
        base_model_id: r.try_get("base_model_id")?,
        snapshot_id: r.try_get("snapshot_id")?,
        device: r.try_get("device")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| Error::Invalid { field: "training_jobs.status", reason: status.clone() })?,
        step: r.try_get("step")?,
        total_steps: r.try_get("total_steps")?,
        result_model_id: r.try_get("result_model_id")?,
        error: r.try_get("error")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Store {
    pub async fn create_job(&self, j: &NewTrainingJob) -> Result<TrainingJob> {
        if j.name.trim().is_empty() {
            return Err(Error::Invalid { field: "name", reason: "must not be empty".into() });
        }
        self.model(j.base_model_id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO training_jobs (name, objective, config_json, base_model_id, snapshot_id, device, status, total_steps, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9) RETURNING id",
        )
        .bind(j.name.trim())
        .bind(&j.objective)
        .bind(to_json(&j.config))
        .bind(j.base_model_id)
        .bind(j.snapshot_id)
        .bind(&j.device)
        .bind(j.total_steps)
        .bind(j.created_by)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        self.job(id).await
    }

    pub async fn job(&self, id: i64) -> Result<TrainingJob> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM training_jobs WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("training job {id}")))?;
        job_from_row(&r)
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self) -> Result<Vec<TrainingJob>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM training_jobs ORDER BY id DESC")))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Moves a queued job to running. Fails if it is not queued (so two workers never run
    /// the same job).
    pub async fn start_job(&self, id: i64) -> Result<()> {
        let n = sqlx::query("UPDATE training_jobs SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'queued'")
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::Invalid { field: "status", reason: format!("training job {id} is not queued") });
        }
        Ok(())
    }

    /// Records one optimizer step's metrics and moves the progress counter.
    pub async fn record_step(&self, id: i64, step: i64, metrics: &serde_json::Value) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO training_metrics (job_id, step, metrics_json, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id, step) DO UPDATE SET metrics_json = excluded.metrics_json",
        )
        .bind(id)
        .bind(step)
        .bind(to_json(metrics))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE training_jobs SET step = $1 WHERE id = $2")
            .bind(step)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Metrics rows with `step > after_step`, in step order (for live charts).
    pub async fn job_metrics(&self, id: i64, after_step: i64) -> Result<Vec<MetricsRow>> {
        let rows = sqlx::query("SELECT step, metrics_json FROM training_metrics WHERE job_id = $1 AND step > $2 ORDER BY step")
            .bind(id)
            .bind(after_step)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let m: String = r.try_get("metrics_json")?;
                Ok(MetricsRow { step: r.try_get("step")?, metrics: from_json("training_metrics.metrics_json", &m)? })
            })
            .collect()
    }

    /// Ends a job. `status` must be final.
    pub async fn finish_job(&self, id: i64, status: JobStatus, error: Option<&str>, result_model_id: Option<i64>) -> Result<()> {
        if !status.is_final() {
            return Err(Error::Invalid { field: "status", reason: format!("`{}` is not a final status", status.as_str()) });
        }
        let n = sqlx::query(
            "UPDATE training_jobs SET status = $1, error = $2, result_model_id = $3, finished_at = $4 \
             WHERE id = $5 AND status IN ('queued', 'running')",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(result_model_id)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Error::Invalid { field: "status", reason: format!("training job {id} has already ended or does not exist") });
        }
        Ok(())
    }

    /// The queue: moves the oldest queued job of `device` to running and returns it, unless a
    /// job is already running there (one job per device; a unique index on running jobs per
    /// device makes a second claim fail even from another server process).
    pub async fn claim_next_job(&self, device: &str) -> Result<Option<TrainingJob>> {
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE training_jobs SET status = 'running', started_at = COALESCE(started_at, $1) \
             WHERE id = (SELECT id FROM training_jobs WHERE status = 'queued' AND device = $2 ORDER BY id LIMIT 1) \
             AND status = 'queued' \
             AND NOT EXISTS (SELECT 1 FROM training_jobs r WHERE r.status = 'running' AND r.device = $2) \
             RETURNING id",
        )
        .bind(now_ms())
        .bind(device)
        .fetch_optional(self.pool())
        .await
        .or_else(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Ok(None),
            _ => Err(e),
        })?;
        match id {
            Some(id) => Ok(Some(self.job(id).await?)),
            None => Ok(None),
        }
    }

    /// Puts jobs left `running` by a previous process (killed, crashed, restarted) back at the
    /// head of the queue; the worker resumes each from its last checkpoint. Called at startup.
    pub async fn requeue_running_jobs(&self) -> Result<u64> {
        Ok(sqlx::query("UPDATE training_jobs SET status = 'queued' WHERE status = 'running'")
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Cancels a job: a queued one ends at once; a running one is flagged and its worker stops
    /// at the next step boundary (with a checkpoint). Ended jobs cannot be cancelled.
    pub async fn request_cancel(&self, id: i64) -> Result<TrainingJob> {
        let job = self.job(id).await?;
        match job.status {
            JobStatus::Queued => {
                let n = sqlx::query(
                    "UPDATE training_jobs SET status = 'cancelled', cancel_requested = 1, error = 'cancelled before it started', finished_at = $1 \
                     WHERE id = $2 AND status = 'queued'",
                )
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?
                .rows_affected();
                if n == 0 {
                    // It started in between: flag it instead.
                    return Box::pin(self.request_cancel(id)).await;
                }
            }
            JobStatus::Running => {
                sqlx::query("UPDATE training_jobs SET cancel_requested = 1 WHERE id = $1")
                    .bind(id)
                    .execute(self.pool())
                    .await?;
            }
            s => {
                return Err(Error::Invalid { field: "status", reason: format!("training job {id} has already ended ({})", s.as_str()) });
            }
        }
        self.job(id).await
    }

    /// Whether a cancel was asked for (read by the worker between steps).
    pub async fn cancel_requested(&self, id: i64) -> Result<bool> {
        let v: i64 = sqlx::query_scalar("SELECT cancel_requested FROM training_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("training job {id}")))?;
        Ok(v != 0)
    }

    /// Records an action of a user (launch, cancel, export, register).
    pub async fn audit(&self, user_id: Option<i64>, username: &str, action: &str, target: &str) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (user_id, username, action, target, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(user_id)
            .bind(username)
            .bind(action)
            .bind(target)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The newest recorded actions first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<medpo_types::AuditEntry>> {
        let rows = sqlx::query("SELECT id, user_id, username, action, target, created_at FROM audit_log ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(medpo_types::AuditEntry {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    username: r.try_get("username")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
