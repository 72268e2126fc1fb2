//! Evaluation runs, their per-item results and the leaderboard.

use medpo_types::{EvalItem, EvalRun, JobStatus};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{from_json, now_ms, to_json, Error, Result, Store};

const COLS: &str = "r.id, r.model_id, m.name AS model_name, r.benchmark, r.protocol_version, r.status, r.n_items, r.metrics_json, r.error, r.config_json, r.done_items, r.total_items, r.created_by, r.created_at, r.started_at, r.finished_at";

fn run_from_row(r: &AnyRow) -> Result<EvalRun> {
    let status: String = r.try_get("status")?;
    let metrics: String = r.try_get("metrics_json")?;
    let config: String = r.try_get("config_json")?;
    Ok(EvalRun {
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        model_name: r.try_get("model_name")?,
        benchmark: r.try_get("benchmark")?,
        protocol_version: r.try_get("protocol_version")?,
        status: JobStatus::parse(&status).ok_or_else(|| Error::Invalid { field: "eval_runs.status", reason: status.clone() })?,
        n_items: r.try_get("n_items")?,
        metrics: from_json("eval_runs.metrics_json", &metrics)?,
        error: r.try_get("error")?,
        config: from_json("eval_runs.config_json", &config)?,
        done_items: r.try_get("done_items")?,
        total_items: r.try_get("total_items")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Store {
    pub async fn create_eval_run(&self, model_id: i64, benchmark: &str, protocol_version: &str) -> Result<EvalRun> {
        self.model(model_id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO eval_runs (model_id, benchmark, protocol_version, status, created_at) VALUES ($1, $2, $3, 'running', $4) RETURNING id",
        )
        .bind(model_id)
        .bind(benchmark)
        .bind(protocol_version)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        self.eval_run(id).await
    }

    pub async fn eval_run(&self, id: i64) -> Result<EvalRun> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM eval_runs r JOIN models m ON m.id = r.model_id WHERE r.id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("evaluation run {id}")))?;
        run_from_row(&r)
    }

    /// Adds per-item results (idempotent per item id: a resumed run overwrites).
    pub async fn add_eval_items(&self, run_id: i64, items: &[EvalItem]) -> Result<()> {
        if let Some(bad) = items.iter().find(|it| !it.score.is_finite()) {
            return Err(Error::Invalid { field: "score", reason: format!("item `{}` has a non-finite score", bad.item_id) });
        }
        let mut tx = self.pool().begin().await?;
        for it in items {
            sqlx::query(
                "INSERT INTO eval_items (run_id, item_id, answer_type, category, question, gold, prediction, score) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (run_id, item_id) DO UPDATE SET prediction = excluded.prediction, score = excluded.score",
            )
            .bind(run_id)
            .bind(&it.item_id)
            .bind(&it.answer_type)
            .bind(&it.category)
            .bind(&it.question)
            .bind(&it.gold)
            .bind(&it.prediction)
            .bind(it.score)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn eval_items(&self, run_id: i64) -> Result<Vec<EvalItem>> {
        let rows = sqlx::query(
            "SELECT item_id, answer_type, category, question, gold, prediction, score FROM eval_items WHERE run_id = $1 ORDER BY item_id",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EvalItem {
                    item_id: r.try_get("item_id")?,
                    answer_type: r.try_get("answer_type")?,
                    category: r.try_get("category")?,
                    question: r.try_get("question")?,
                    gold: r.try_get("gold")?,
                    prediction: r.try_get("prediction")?,
                    score: r.try_get("score")?,
                })
            })
            .collect()
    }

    pub async fn finish_eval_run(&self, id: i64, status: JobStatus, metrics: &serde_json::Value, error: Option<&str>) -> Result<()> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM eval_items WHERE run_id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await?;
        sqlx::query("UPDATE eval_runs SET status = $1, metrics_json = $2, error = $3, n_items = $4, finished_at = $5 WHERE id = $6 AND status IN ('queued', 'running')")
            .bind(status.as_str())
            .bind(to_json(metrics))
            .bind(error)
            .bind(n)
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Queues a run for the server's evaluation worker; `config` says what to run (benchmark
    /// file, images folder, split, limits).
    pub async fn queue_eval_run(
        &self,
        model_id: i64,
        benchmark: &str,
        protocol_version: &str,
        config: &serde_json::Value,
        created_by: Option<i64>,
    ) -> Result<EvalRun> {
        self.model(model_id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO eval_runs (model_id, benchmark, protocol_version, status, config_json, created_by, created_at) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6) RETURNING id",
        )
        .bind(model_id)
        .bind(benchmark)
        .bind(protocol_version)
        .bind(to_json(config))
        .bind(created_by)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        self.eval_run(id).await
    }

    /// Moves the oldest queued run to running and returns it.
    pub async fn claim_next_eval(&self) -> Result<Option<EvalRun>> {
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE eval_runs SET status = 'running', started_at = COALESCE(started_at, $1) \
             WHERE id = (SELECT id FROM eval_runs WHERE status = 'queued' ORDER BY id LIMIT 1) AND status = 'queued' RETURNING id",
        )
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        match id {
            Some(id) => Ok(Some(self.eval_run(id).await?)),
            None => Ok(None),
        }
    }

    /// Records how many items a running evaluation has answered.
    pub async fn eval_progress(&self, id: i64, done: i64, total: i64) -> Result<()> {
        sqlx::query("UPDATE eval_runs SET done_items = $1, total_items = $2 WHERE id = $3")
            .bind(done)
            .bind(total)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Puts runs left `running` by a previous process back in the queue (startup). Items
    /// already answered are kept and skipped.
    pub async fn requeue_running_evals(&self) -> Result<u64> {
        Ok(sqlx::query("UPDATE eval_runs SET status = 'queued' WHERE status = 'running'")
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Cancels a queued run (a running one finishes its current item first: the worker checks
    /// the status between items).
    pub async fn cancel_eval_run(&self, id: i64) -> Result<EvalRun> {
        let n = sqlx::query("UPDATE eval_runs SET status = 'cancelled', finished_at = $1 WHERE id = $2 AND status IN ('queued', 'running')")
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n == 0 {
            self.eval_run(id).await?;
            return Err(Error::Invalid { field: "status", reason: format!("evaluation run {id} has already ended") });
        }
        self.eval_run(id).await
    }

    /// Every run, newest first (queue and history).
    pub async fn list_eval_runs(&self, limit: i64) -> Result<Vec<EvalRun>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM eval_runs r JOIN models m ON m.id = r.model_id ORDER BY r.id DESC LIMIT $1")))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The newest succeeded run of each (model, benchmark), by benchmark then model name.
    pub async fn leaderboard(&self) -> Result<Vec<EvalRun>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM eval_runs r JOIN models m ON m.id = r.model_id \
             WHERE r.status = 'succeeded' AND r.id = (SELECT MAX(r2.id) FROM eval_runs r2 \
                 WHERE r2.model_id = r.model_id AND r2.benchmark = r.benchmark AND r2.status = 'succeeded') \
             ORDER BY r.benchmark, m.name"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(run_from_row).collect()
    }
}
