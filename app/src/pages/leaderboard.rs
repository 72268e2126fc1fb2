//! Leaderboard: evaluation runs queued from the browser, and per benchmark the newest run of
//! each model with 95% bootstrap intervals drawn as bars with whiskers, and a ★ where a
//! preference-tuned variant differs significantly from its SFT base (paired bootstrap over the
//! same questions, p < 0.05).

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::EvalRun;
use serde::{Deserialize, Serialize};

use crate::charts::{IntervalBars, IntervalRow};
use crate::components::{error_text, format_time, EmptyState, ErrorBox};

/// The headline metrics, in column order: (key, label).
const HEADLINE: &[(&str, &str)] = &[("closed/accuracy", "Closed accuracy"), ("open/recall", "Open recall"), ("overall/score", "Overall")];

/// One model's row on a benchmark board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoardRow {
    pub run: EvalRun,
    pub variant: String,
    pub base_name: Option<String>,
    /// Paired bootstrap p-value of the overall score against the base's run (same items).
    pub p_value: Option<f64>,
    /// Difference of the overall score from the base (variant − base).
    pub diff: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Boards {
    /// Per benchmark, its rows by model name.
    pub boards: Vec<(String, Vec<BoardRow>)>,
    /// Queued, running and recent runs.
    pub queue: Vec<EvalRun>,
    /// (id, name) of local models, for the form.
    pub models: Vec<(i64, String)>,
    /// (benchmark, why it cannot run now).
    pub benchmarks: Vec<(String, Option<String>)>,
}

#[server]
pub async fn leaderboard() -> Result<Boards, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let runs = ctx.store.leaderboard().await.map_err(crate::ssr::store_err)?;
    let models = ctx.store.list_models().await.map_err(crate::ssr::store_err)?;
    let mut boards: Vec<(String, Vec<BoardRow>)> = Vec::new();
    for run in &runs {
        let entry = models.iter().find(|m| m.id == run.model_id);
        let parent = entry.and_then(|m| m.parent_id);
        let base_run = parent.and_then(|p| runs.iter().find(|r| r.model_id == p && r.benchmark == run.benchmark));
        let (p_value, diff) = match base_run {
            Some(b) => paired(&ctx.store, run.id, b.id).await.unwrap_or((None, None)),
            None => (None, None),
        };
        let row = BoardRow {
            run: run.clone(),
            variant: entry.map(|m| m.variant.clone()).unwrap_or_default(),
            base_name: parent.and_then(|p| models.iter().find(|m| m.id == p)).map(|m| m.name.clone()),
            p_value,
            diff,
        };
        match boards.iter_mut().find(|(b, _)| *b == run.benchmark) {
            Some((_, rows)) => rows.push(row),
            None => boards.push((run.benchmark.clone(), vec![row])),
        }
    }
    let queue = ctx.store.list_eval_runs(30).await.map_err(crate::ssr::store_err)?;
    Ok(Boards {
        boards,
        queue,
        models: models.into_iter().filter(|m| m.enabled && m.layout != crate::ssr::REMOTE_LAYOUT).map(|m| (m.id, m.name)).collect(),
        benchmarks: crate::ssr::benchmark_choices(&ctx.benchmarks),
    })
}

/// The paired bootstrap of two runs' item scores over the questions both answered.
#[cfg(feature = "ssr")]
async fn paired(store: &medpo_store::Store, run: i64, base: i64) -> Result<(Option<f64>, Option<f64>), medpo_store::Error> {
    let a = store.eval_items(run).await?;
    let b = store.eval_items(base).await?;
    let base_scores: std::collections::HashMap<&str, f64> = b.iter().map(|i| (i.item_id.as_str(), i.score)).collect();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in &a {
        if let Some(s) = base_scores.get(i.item_id.as_str()) {
            xs.push(i.score);
            ys.push(*s);
        }
    }
    if xs.is_empty() {
        return Ok((None, None));
    }
    let cfg = medpo_eval::bootstrap_ci::BootstrapConfig::default();
    Ok(match medpo_eval::paired_test::paired_bootstrap(&xs, &ys, &cfg, "leaderboard/overall") {
        Ok(t) => (Some(t.p_value), Some(t.mean_diff)),
        Err(_) => (None, None),
    })
}

/// Queues evaluation runs of a model on a benchmark (researchers and admins).
#[server]
pub async fn queue_eval(model_id: i64, benchmark: String) -> Result<EvalRun, ServerFnError> {
    use axum::http::StatusCode;
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    let spec = ctx
        .benchmarks
        .iter()
        .find(|b| b.name == benchmark)
        .ok_or_else(|| crate::ssr::bad_input(StatusCode::UNPROCESSABLE_ENTITY, format!("no benchmark `{benchmark}` on this server")))?;
    if let Some(why) = spec.unavailable() {
        return Err(crate::ssr::bad_input(StatusCode::UNPROCESSABLE_ENTITY, why));
    }
    let m = ctx.store.model(model_id).await.map_err(crate::ssr::store_err)?;
    if m.layout == crate::ssr::REMOTE_LAYOUT {
        return Err(crate::ssr::bad_input(StatusCode::UNPROCESSABLE_ENTITY, format!("`{}` is served by a remote server: evaluate it with `medpo eval --remote`", m.name)));
    }
    let config = serde_json::to_value(spec).map_err(|e| ServerFnError::new(e.to_string()))?;
    let run = ctx
        .store
        .queue_eval_run(model_id, &spec.name, medpo_eval::PROTOCOL_VERSION, &config, Some(user.id))
        .await
        .map_err(crate::ssr::store_err)?;
    let _ = ctx.store.audit(Some(user.id), &user.username, "evaluate", &format!("evaluation run {} of `{}` on `{}`", run.id, m.name, spec.name)).await;
    Ok(run)
}

#[server]
pub async fn cancel_eval(id: i64) -> Result<EvalRun, ServerFnError> {
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    let run = ctx.store.cancel_eval_run(id).await.map_err(crate::ssr::store_err)?;
    let _ = ctx.store.audit(Some(user.id), &user.username, "cancel", &format!("evaluation run {id}")).await;
    Ok(run)
}

/// Formats a metric value stored as a number or as `{value, lo, hi}` (a 95% CI).
fn metric_cell(v: &serde_json::Value) -> String {
    if let Some(x) = v.as_f64() {
        return format!("{:.1}", 100.0 * x);
    }
    match (v.get("value").and_then(|x| x.as_f64()), v.get("lo").and_then(|x| x.as_f64()), v.get("hi").and_then(|x| x.as_f64())) {
        (Some(x), Some(lo), Some(hi)) => format!("{:.1} [{:.1}, {:.1}]", 100.0 * x, 100.0 * lo, 100.0 * hi),
        (Some(x), _, _) => format!("{:.1}", 100.0 * x),
        _ => "—".into(),
    }
}

fn interval(v: &serde_json::Value) -> Option<(f64, Option<f64>, Option<f64>)> {
    if let Some(x) = v.as_f64() {
        return Some((x, None, None));
    }
    Some((v.get("value")?.as_f64()?, v.get("lo").and_then(|x| x.as_f64()), v.get("hi").and_then(|x| x.as_f64())))
}

#[component]
fn Board(name: String, rows: Vec<BoardRow>) -> impl IntoView {
    let protocol = rows.first().map(|r| r.run.protocol_version.clone()).unwrap_or_default();
    let charts = HEADLINE
        .iter()
        .filter_map(|(key, label)| {
            let bars: Vec<IntervalRow> = rows
                .iter()
                .filter_map(|r| {
                    let (value, lo, hi) = interval(r.run.metrics.get(*key)?)?;
                    Some(IntervalRow { label: r.run.model_name.clone(), value, lo, hi, significant: r.p_value.is_some_and(|p| p < 0.05) })
                })
                .collect();
            (!bars.is_empty()).then(|| view! { <IntervalBars title=format!("{label} (95% CI)") rows=bars/> })
        })
        .collect_view();
    view! {
        <section class="board" data-testid=format!("board-{name}")>
            <h2>{name.clone()} <small class="muted">{format!(" protocol {protocol}")}</small></h2>
            <div class="charts">{charts}</div>
            <table class="table">
                <thead><tr><th>"Model"</th><th>"Variant of"</th>{HEADLINE.iter().map(|(_, l)| view! { <th>{*l}</th> }).collect_view()}<th>"vs base"</th><th>"Items"</th><th>"Finished"</th></tr></thead>
                <tbody>
                    {rows.into_iter().map(|r| view! {
                        <tr>
                            <td><a href="/models">{r.run.model_name.clone()}</a> " " <span class="muted">{r.variant.clone()}</span></td>
                            <td>{r.base_name.clone().unwrap_or_else(|| "—".into())}</td>
                            {HEADLINE.iter().map(|(k, _)| view! { <td>{metric_cell(r.run.metrics.get(*k).unwrap_or(&serde_json::Value::Null))}</td> }).collect_view()}
                            <td>{match (r.diff, r.p_value) {
                                (Some(d), Some(p)) => format!("{:+.1} (p = {:.3}){}", 100.0 * d, p, if p < 0.05 { " ★" } else { "" }),
                                _ => "—".into(),
                            }}</td>
                            <td>{r.run.n_items}</td>
                            <td>{r.run.finished_at.map(format_time).unwrap_or_default()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
pub fn LeaderboardPage() -> impl IntoView {
    let queue = ServerAction::<QueueEval>::new();
    let cancel = ServerAction::<CancelEval>::new();
    let data = Resource::new(move || (queue.version().get(), cancel.version().get()), |_| leaderboard());
    // While runs are queued or running, refresh every 2 s.
    Effect::new(move |_| {
        let busy = data.get().and_then(|r| r.ok()).is_some_and(|b| b.queue.iter().any(|r| !r.status.is_final()));
        if busy {
            set_timeout(move || data.refetch(), std::time::Duration::from_secs(2));
        }
    });
    view! {
        <Title text="Leaderboard — MedPO Arena"/>
        <h1>"Leaderboard"</h1>
        <p class="lead">"VQA-RAD, SLAKE, PathVQA and the server's own benchmarks under one pinned protocol, with 95% bootstrap confidence intervals. ★: differs significantly from its SFT base (paired bootstrap, p < 0.05). Blind-vote ratings are on the " <a href="/arena">"Arena"</a> " page."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || data.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(b) => {
                    let Boards { boards, queue: runs, models, benchmarks } = b;
                    view! {
                        <section class="panel">
                            <h2>"Evaluate a model"</h2>
                            <ActionForm action=queue attr:class="form-grid" attr:data-testid="eval-form">
                                <label>"Model" <select name="model_id">{models.iter().map(|(id, n)| view! { <option value=*id>{n.clone()}</option> }).collect_view()}</select></label>
                                <label>"Benchmark" <select name="benchmark">
                                    {benchmarks.iter().map(|(n, why)| view! {
                                        <option value=n.clone() title=why.clone().unwrap_or_default()>{match why { Some(_) => format!("{n} (needs an images folder)"), None => n.clone() }}</option>
                                    }).collect_view()}
                                </select></label>
                                <button type="submit">"Queue the evaluation"</button>
                            </ActionForm>
                            {move || queue.value().get().and_then(|r| r.err()).map(|e| view! { <ErrorBox message=error_text(&e)/> })}
                            {(!runs.is_empty()).then(|| view! {
                                <table class="table" data-testid="eval-queue">
                                    <thead><tr><th>"#"</th><th>"Model"</th><th>"Benchmark"</th><th>"Status"</th><th>"Progress"</th><th>"Created"</th><th></th></tr></thead>
                                    <tbody>
                                        {runs.into_iter().map(|r| {
                                            let id = r.id;
                                            view! {
                                                <tr>
                                                    <td>{r.id}</td><td>{r.model_name}</td><td>{r.benchmark}</td>
                                                    <td><span class=format!("status status-{}", r.status.as_str())>{r.status.as_str()}</span>
                                                        {r.error.map(|e| view! { <div class="error small">{e}</div> })}</td>
                                                    <td><progress max=r.total_items.max(1) value=r.done_items></progress>{format!(" {}/{}", r.done_items, r.total_items)}</td>
                                                    <td>{format_time(r.created_at)}</td>
                                                    <td>{(!r.status.is_final()).then(|| view! {
                                                        <ActionForm action=cancel><input type="hidden" name="id" value=id/><button type="submit" class="secondary">"Cancel"</button></ActionForm>
                                                    })}</td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            })}
                        </section>
                        {if boards.is_empty() {
                            view! { <EmptyState title="No evaluation run yet"><p>"Queue one above, or launch a training job with “Evaluate when done”. From the command line: " <code>"medpo eval --model DIR --bench vqa-rad --images DIR"</code> "."</p></EmptyState> }.into_any()
                        } else {
                            boards.into_iter().map(|(name, rows)| view! { <Board name=name rows=rows/> }).collect_view().into_any()
                        }}
                    }.into_any()
                }
            })}
        </Transition>
    }
}
