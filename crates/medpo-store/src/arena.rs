//! Comparisons, answers, votes with their clinical feedback, and the preference pairs that
//! votes turn into.

use medpo_types::{
    Answer, Comparison, ComparisonSummary, ErrorTag, GenerationSettings, NewAnswer, NewVote, Overview, PreferencePair, Region,
    Severity, Vote, VoteOutcome, Winner,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{from_json, now_ms, to_json, Error, Result, Store};

fn answer_from_row(r: &AnyRow) -> Result<Answer> {
    let settings: String = r.try_get("settings_json")?;
    let status: String = r.try_get("status")?;
    let error: Option<String> = r.try_get("error")?;
    Ok(Answer {
        id: r.try_get("id")?,
        comparison_id: r.try_get("comparison_id")?,
        position: r.try_get("position")?,
        model_id: r.try_get("model_id")?,
        text: r.try_get("text")?,
        settings: from_json::<GenerationSettings>("answers.settings_json", &settings)?,
        latency_ms: r.try_get("latency_ms")?,
        error: if status == "ok" { None } else { Some(error.unwrap_or_else(|| "failed".into())) },
    })
}

fn pair_from_row(r: &AnyRow) -> Result<PreferencePair> {
    let region: Option<String> = r.try_get("region_json")?;
    let tags: String = r.try_get("tags_json")?;
    Ok(PreferencePair {
        id: r.try_get("id")?,
        vote_id: r.try_get("vote_id")?,
        scan_id: r.try_get("scan_id")?,
        question: r.try_get("question")?,
        chosen: r.try_get("chosen")?,
        rejected: r.try_get("rejected")?,
        chosen_model_id: r.try_get("chosen_model_id")?,
        rejected_model_id: r.try_get("rejected_model_id")?,
        region: region.map(|s| from_json::<Region>("preference_pairs.region_json", &s)).transpose()?,
        tags: from_json("preference_pairs.tags_json", &tags)?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) const PAIR_COLS: &str = "id, vote_id, scan_id, question, chosen, rejected, chosen_model_id, rejected_model_id, region_json, tags_json, source, created_at";

impl Store {
    /// Stores a comparison and all its answers in one transaction.
    pub async fn create_comparison(
        &self,
        scan_id: i64,
        question: &str,
        blind: bool,
        created_by: Option<i64>,
        answers: &[NewAnswer],
    ) -> Result<Comparison> {
        self.create_comparison_drawn(scan_id, question, blind, created_by, answers, None).await
    }

    /// Stores a comparison, all its answers and, for a blind pair drawn by the arena, how it
    /// was drawn (`arena_samples`), in one transaction.
    pub async fn create_comparison_drawn(
        &self,
        scan_id: i64,
        question: &str,
        blind: bool,
        created_by: Option<i64>,
        answers: &[NewAnswer],
        sample: Option<&medpo_types::PairSample>,
    ) -> Result<Comparison> {
        let question = question.trim();
        if question.is_empty() {
            return Err(Error::Invalid { field: "question", reason: "must not be empty".into() });
        }
        if answers.is_empty() || answers.len() > 4 {
            return Err(Error::Invalid { field: "answers", reason: format!("need 1 to 4 answers, got {}", answers.len()) });
        }
        let turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO comparisons (scan_id, question, blind, created_by, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(scan_id)
        .bind(question)
        .bind(blind as i64)
        .bind(created_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => Error::not_found(format!("scan {scan_id}")),
            _ => Error::Db(e),
        })?;
        for (pos, a) in answers.iter().enumerate() {
            sqlx::query(
                "INSERT INTO answers (comparison_id, position, model_id, text, settings_json, latency_ms, status, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(pos as i64)
            .bind(a.model_id)
            .bind(&a.text)
            .bind(to_json(&a.settings))
            .bind(a.latency_ms)
            .bind(if a.error.is_some() { "error" } else { "ok" })
            .bind(&a.error)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    Error::not_found(format!("model {}", a.model_id))
                }
                _ => Error::Db(e),
            })?;
        }
        if let Some(sm) = sample {
            sqlx::query(
                "INSERT INTO arena_samples (comparison_id, model_a_id, model_b_id, pair_votes, candidates, probability, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(sm.model_a_id)
            .bind(sm.model_b_id)
            .bind(sm.pair_votes)
            .bind(sm.candidates)
            .bind(sm.probability)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        drop(turn);
        self.comparison(id).await
    }

    pub async fn comparison(&self, id: i64) -> Result<Comparison> {
        let r = sqlx::query("SELECT id, scan_id, question, blind, created_by, created_at FROM comparisons WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found(format!("comparison {id}")))?;
        let answers = sqlx::query(
            "SELECT id, comparison_id, position, model_id, text, settings_json, latency_ms, status, error \
             FROM answers WHERE comparison_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let blind: i64 = r.try_get("blind")?;
        Ok(Comparison {
            id,
            scan_id: r.try_get("scan_id")?,
            question: r.try_get("question")?,
            blind: blind != 0,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            answers: answers.iter().map(answer_from_row).collect::<Result<_>>()?,
        })
    }

    /// Records a vote, its error tags and the preference pairs it implies, in one
    /// transaction. Nothing is written when any check fails.
    ///
    /// Pairs: `a`/`b` give (chosen = the corrected answer if one was written, else the
    /// winner's answer; rejected = the loser's answer); `both_bad` gives two pairs, the
    /// corrected answer against each model answer; `tie` gives none.
    pub async fn record_vote(&self, v: &NewVote) -> Result<Vote> {
        let corrected = v.corrected_answer.as_deref().map(str::trim).filter(|s| !s.is_empty());
        if v.winner == Winner::BothBad && corrected.is_none() {
            return Err(Error::Invalid {
                field: "corrected_answer",
                reason: "a corrected answer is required when both answers are bad".into(),
            });
        }
        if v.answer_a_id == v.answer_b_id {
            return Err(Error::Invalid { field: "answers", reason: "A and B must be different answers".into() });
        }
        if let Some(r) = &v.region {
            let finite = [r.x, r.y, r.w, r.h].iter().all(|v| v.is_finite());
            if !(finite && r.w > 0.0 && r.h > 0.0 && r.x >= 0.0 && r.y >= 0.0) {
                return Err(Error::Invalid { field: "region", reason: format!("box {r:?} is not a positive box") });
            }
        }
        let comparison = self.comparison(v.comparison_id).await?;
        let find = |id: i64| {
            comparison
                .answers
                .iter()
                .find(|a| a.id == id)
                .cloned()
                .ok_or_else(|| Error::Invalid {
                    field: "answers",
                    reason: format!("answer {id} is not part of comparison {}", v.comparison_id),
                })
        };
        let a = find(v.answer_a_id)?;
        let b = find(v.answer_b_id)?;
        if a.error.is_some() || b.error.is_some() {
            return Err(Error::Invalid { field: "answers", reason: "cannot vote on a failed answer".into() });
        }
        for t in &v.tags {
            if !medpo_types::ERROR_TAGS.iter().any(|(k, _)| *k == t.tag) {
                return Err(Error::Invalid { field: "tags", reason: format!("unknown error tag `{}`", t.tag) });
            }
            if let Some(aid) = t.answer_id {
                if aid != a.id && aid != b.id {
                    return Err(Error::Invalid { field: "tags", reason: format!("tag names answer {aid}, not A or B") });
                }
            }
        }
        let scan = self.scan(comparison.scan_id).await?;

        let turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let region_json = v.region.as_ref().map(to_json);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO votes (comparison_id, rater_id, answer_a_id, answer_b_id, winner, rationale, corrected_answer, region_json, blind, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(v.comparison_id)
        .bind(v.rater_id)
        .bind(a.id)
        .bind(b.id)
        .bind(v.winner.as_str())
        .bind(v.rationale.trim())
        .bind(corrected)
        .bind(&region_json)
        .bind(v.blind as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => Error::not_found(format!("rater {}", v.rater_id)),
            _ => Error::Db(e),
        })?;
        for t in &v.tags {
            sqlx::query("INSERT INTO vote_tags (vote_id, answer_id, tag, severity) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(t.answer_id)
                .bind(&t.tag)
                .bind(t.severity.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let tag_names: Vec<&str> = v.tags.iter().map(|t| t.tag.as_str()).collect();
        let mut pairs: Vec<(String, Option<i64>, &Answer)> = Vec::new();
        match v.winner {
            Winner::A => pairs.push((corrected.unwrap_or(&a.text).to_string(), corrected.is_none().then_some(a.model_id), &b)),
            Winner::B => pairs.push((corrected.unwrap_or(&b.text).to_string(), corrected.is_none().then_some(b.model_id), &a)),
            Winner::BothBad => {
                let c = corrected.unwrap_or_default().to_string();
                pairs.push((c.clone(), None, &a));
                pairs.push((c, None, &b));
            }
            Winner::Tie => {}
        }
        for (chosen, chosen_model, rejected) in pairs {
            sqlx::query(
                "INSERT INTO preference_pairs (vote_id, scan_id, question, chosen, rejected, chosen_model_id, rejected_model_id, region_json, tags_json, source, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'vote', $10)",
            )
            .bind(id)
            .bind(scan.id)
            .bind(&comparison.question)
            .bind(&chosen)
            .bind(&rejected.text)
            .bind(chosen_model)
            .bind(rejected.model_id)
            .bind(&region_json)
            .bind(to_json(&tag_names))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        drop(turn);
        self.vote(id).await
    }

    pub async fn vote(&self, id: i64) -> Result<Vote> {
        let r = sqlx::query(
            "SELECT id, comparison_id, rater_id, answer_a_id, answer_b_id, winner, rationale, corrected_answer, region_json, blind, created_at \
             FROM votes WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| Error::not_found(format!("vote {id}")))?;
        let tags = sqlx::query("SELECT answer_id, tag, severity FROM vote_tags WHERE vote_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|t| {
                let sev: String = t.try_get("severity")?;
                Ok(ErrorTag {
                    answer_id: t.try_get("answer_id")?,
                    tag: t.try_get("tag")?,
                    severity: Severity::parse(&sev)
                        .ok_or_else(|| Error::Invalid { field: "vote_tags.severity", reason: sev.clone() })?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let winner: String = r.try_get("winner")?;
        let region: Option<String> = r.try_get("region_json")?;
        let blind: i64 = r.try_get("blind")?;
        Ok(Vote {
            id,
            comparison_id: r.try_get("comparison_id")?,
            rater_id: r.try_get("rater_id")?,
            answer_a_id: r.try_get("answer_a_id")?,
            answer_b_id: r.try_get("answer_b_id")?,
            winner: Winner::parse(&winner).ok_or_else(|| Error::Invalid { field: "votes.winner", reason: winner.clone() })?,
            rationale: r.try_get("rationale")?,
            corrected_answer: r.try_get("corrected_answer")?,
            region: region.map(|s| from_json("votes.region_json", &s)).transpose()?,
            blind: blind != 0,
            created_at: r.try_get("created_at")?,
            tags,
        })
    }

    /// Vote outcomes with model names, oldest first (for arena ratings), optionally only
    /// one rater's.
    pub async fn vote_outcomes(&self, rater_id: Option<i64>) -> Result<Vec<VoteOutcome>> {
        let rows = sqlx::query(
            "SELECT v.id, v.comparison_id, v.rater_id, v.winner, v.created_at, ma.name AS model_a, mb.name AS model_b, \
             ma.base AS base_a, mb.base AS base_b, u.role AS rater_role, s.modality AS modality \
             FROM votes v \
             JOIN answers aa ON aa.id = v.answer_a_id JOIN models ma ON ma.id = aa.model_id \
             JOIN answers ab ON ab.id = v.answer_b_id JOIN models mb ON mb.id = ab.model_id \
             JOIN users u ON u.id = v.rater_id \
             JOIN comparisons c ON c.id = v.comparison_id LEFT JOIN scans s ON s.id = c.scan_id \
             WHERE ($1 < 0 OR v.rater_id = $1) ORDER BY v.id",
        )
        .bind(rater_id.unwrap_or(-1))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let w: String = r.try_get("winner")?;
                Ok(VoteOutcome {
                    vote_id: r.try_get("id")?,
                    comparison_id: r.try_get("comparison_id")?,
                    rater_id: r.try_get("rater_id")?,
                    model_a: r.try_get("model_a")?,
                    model_b: r.try_get("model_b")?,
                    winner: Winner::parse(&w).ok_or_else(|| Error::Invalid { field: "votes.winner", reason: w.clone() })?,
                    created_at: r.try_get("created_at")?,
                    rater_role: r.try_get("rater_role")?,
                    modality: r.try_get("modality")?,
                    base_a: r.try_get("base_a")?,
                    base_b: r.try_get("base_b")?,
                })
            })
            .collect()
    }

    /// The newest comparisons with their models' names and vote counts.
    pub async fn recent_comparisons(&self, limit: i64) -> Result<Vec<ComparisonSummary>> {
        let rows = sqlx::query(
            "SELECT c.id, c.scan_id, c.question, c.blind, c.created_at, \
             (SELECT COUNT(*) FROM votes v WHERE v.comparison_id = c.id) AS votes \
             FROM comparisons c ORDER BY c.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let models: Vec<String> = sqlx::query_scalar(
                "SELECT m.name FROM answers a JOIN models m ON m.id = a.model_id WHERE a.comparison_id = $1 ORDER BY a.position",
            )
            .bind(id)
            .fetch_all(self.pool())
            .await?;
            let blind: i64 = r.try_get("blind")?;
            out.push(ComparisonSummary {
                id,
                scan_id: r.try_get("scan_id")?,
                question: r.try_get("question")?,
                blind: blind != 0,
                created_at: r.try_get("created_at")?,
                models,
                votes: r.try_get("votes")?,
            });
        }
        Ok(out)
    }

    /// Preference pairs, newest first.
    pub async fn preference_pairs(&self, limit: i64) -> Result<Vec<PreferencePair>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PAIR_COLS} FROM preference_pairs ORDER BY id DESC LIMIT $1")))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(pair_from_row).collect()
    }

    /// Row counts for the overview and empty states.
    pub async fn overview(&self) -> Result<Overview> {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM models) AS models, (SELECT COUNT(*) FROM scans) AS scans, \
             (SELECT COUNT(*) FROM comparisons) AS comparisons, (SELECT COUNT(*) FROM votes) AS votes, \
             (SELECT COUNT(*) FROM preference_pairs) AS pairs, (SELECT COUNT(*) FROM datasets) AS datasets, \
             (SELECT COUNT(*) FROM training_jobs) AS jobs, (SELECT COUNT(*) FROM eval_runs) AS eval_runs",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Overview {
            models: r.try_get("models")?,
            scans: r.try_get("scans")?,
            comparisons: r.try_get("comparisons")?,
            votes: r.try_get("votes")?,
            pairs: r.try_get("pairs")?,
            datasets: r.try_get("datasets")?,
            jobs: r.try_get("jobs")?,
            eval_runs: r.try_get("eval_runs")?,
        })
    }
}

pub(crate) fn pair_row(r: &AnyRow) -> Result<PreferencePair> {
    pair_from_row(r)
}

impl Store {
    /// Votes per unordered model pair, `(low id, high id, votes)`, for blind pair sampling.
    pub async fn pair_vote_counts(&self) -> Result<Vec<(i64, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT CASE WHEN aa.model_id < ab.model_id THEN aa.model_id ELSE ab.model_id END AS lo, \
                    CASE WHEN aa.model_id < ab.model_id THEN ab.model_id ELSE aa.model_id END AS hi, \
                    COUNT(*) AS n \
             FROM votes v JOIN answers aa ON aa.id = v.answer_a_id JOIN answers ab ON ab.id = v.answer_b_id \
             GROUP BY 1, 2",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("lo")?, r.try_get("hi")?, r.try_get("n")?))).collect()
    }

    /// The pair-sampling log entry of a comparison, if it was drawn blind.
    pub async fn pair_sample(&self, comparison_id: i64) -> Result<Option<medpo_types::PairSample>> {
        let r = sqlx::query(
            "SELECT model_a_id, model_b_id, pair_votes, candidates, probability FROM arena_samples WHERE comparison_id = $1",
        )
        .bind(comparison_id)
        .fetch_optional(self.pool())
        .await?;
        r.map(|r| {
            Ok(medpo_types::PairSample {
                model_a_id: r.try_get("model_a_id")?,
                model_b_id: r.try_get("model_b_id")?,
                pair_votes: r.try_get("pair_votes")?,
                candidates: r.try_get("candidates")?,
                probability: r.try_get("probability")?,
            })
        })
        .transpose()
    }

    /// Whether a rater already voted on a comparison.
    pub async fn has_voted(&self, rater_id: i64, comparison_id: i64) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM votes WHERE rater_id = $1 AND comparison_id = $2")
            .bind(rater_id)
            .bind(comparison_id)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

    /// A rater's own votes, newest first.
    pub async fn rater_history(&self, rater_id: i64, limit: i64) -> Result<Vec<medpo_types::RaterVote>> {
        let rows = sqlx::query(
            "SELECT v.id, v.comparison_id, c.question, v.winner, v.blind, v.created_at, v.region_json, \
                    ma.name AS model_a, mb.name AS model_b, \
                    (SELECT COUNT(*) FROM vote_tags t WHERE t.vote_id = v.id) AS tags \
             FROM votes v JOIN comparisons c ON c.id = v.comparison_id \
             JOIN answers aa ON aa.id = v.answer_a_id JOIN models ma ON ma.id = aa.model_id \
             JOIN answers ab ON ab.id = v.answer_b_id JOIN models mb ON mb.id = ab.model_id \
             WHERE v.rater_id = $1 ORDER BY v.id DESC LIMIT $2",
        )
        .bind(rater_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let w: String = r.try_get("winner")?;
                let blind: i64 = r.try_get("blind")?;
                let region: Option<String> = r.try_get("region_json")?;
                Ok(medpo_types::RaterVote {
                    vote_id: r.try_get("id")?,
                    comparison_id: r.try_get("comparison_id")?,
                    question: r.try_get("question")?,
                    model_a: r.try_get("model_a")?,
                    model_b: r.try_get("model_b")?,
                    winner: Winner::parse(&w).ok_or_else(|| Error::Invalid { field: "votes.winner", reason: w.clone() })?,
                    blind: blind != 0,
                    tags: r.try_get("tags")?,
                    has_region: region.is_some(),
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
