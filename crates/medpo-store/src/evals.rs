//! Evaluation runs, their per-item results and the leaderboard.

use medpo_types::{EvalItem, EvalRun, JobStatus};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{from_json, now_ms, to_json, Error, Result, Store};

const COLS: &str = "r.id, r.model_id, m.name AS model_name, r.benchmark, r.protocol_version, r.status, r.n_items, r.metrics_json, r.error, r.created_at, r.finished_at";

fn run_from_row(r: &AnyRow) -> Result<EvalRun> {
    let status: String = r.try_get("status")?;
    let metrics: String = r.try_get("metrics_json")?;
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
        created_at: r.try_get("created_at")?,
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
        sqlx::query("UPDATE eval_runs SET status = $1, metrics_json = $2, error = $3, n_items = $4, finished_at = $5 WHERE id = $6")
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
