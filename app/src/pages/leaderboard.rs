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
    // Item scores by run, read once each (a base is paired with every one of its variants).
    let mut scores: std::collections::HashMap<i64, std::collections::HashMap<String, f64>> = Default::default();
    for run in &runs {
        let entry = models.iter().find(|m| m.id == run.model_id);
        let parent = entry.and_then(|m| m.parent_id);
        let base_run = parent.and_then(|p| runs.iter().find(|r| r.model_id == p && r.benchmark == run.benchmark));
        let (p_value, diff) = match base_run {
            Some(b) => {
                for id in [run.id, b.id] {
                    if !scores.contains_key(&id) {
                        let items = ctx.store.eval_items(id).await.map_err(crate::ssr::store_err)?;
                        scores.insert(id, items.into_iter().map(|i| (i.item_id, i.score)).collect());
                    }
                }
                paired(&scores[&run.id], &scores[&b.id])
            }
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
        models: models.into_iter().filter(crate::ssr::runs_here).map(|m| (m.id, m.name)).collect(),
        benchmarks: crate::ssr::benchmark_choices(&ctx.benchmarks),
    })
}

/// The paired bootstrap of two runs' item scores over the questions both answered:
/// (p-value, mean difference), or nothing when they share no question.
#[cfg(feature = "ssr")]
fn paired(run: &std::collections::HashMap<String, f64>, base: &std::collections::HashMap<String, f64>) -> (Option<f64>, Option<f64>) {
    let mut ids: Vec<&String> = run.keys().filter(|k| base.contains_key(*k)).collect();
    ids.sort();
    if ids.is_empty() {
        return (None, None);
    }
    let xs: Vec<f64> = ids.iter().map(|k| run[*k]).collect();
    let ys: Vec<f64> = ids.iter().map(|k| base[*k]).collect();
    let cfg = medpo_eval::bootstrap_ci::BootstrapConfig::default();
    match medpo_eval::paired_test::paired_bootstrap(&xs, &ys, &cfg, "leaderboard/overall") {
        Ok(t) => (Some(t.p_value), Some(t.mean_diff)),
        Err(_) => (None, None),
    }
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
                            <td><a href=format!("/models#model-{}", r.run.model_id)>{r.run.model_name.clone()}</a> " " <span class="muted">{r.variant.clone()}</span></td>
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

/// The arena board: Bradley–Terry ratings with 95% intervals, the win-rate matrix and rater
/// agreement, for the votes that pass the filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArenaStandings {
    pub votes: usize,
    /// (model, rating, low, high, votes), best first.
    pub ratings: Vec<(String, f64, f64, f64, usize)>,
    pub matrix_models: Vec<String>,
    /// `win_rate[r][c]` of row model over column model, with the number of battles.
    pub win_rate: Vec<Vec<(Option<f64>, usize)>>,
    pub raters: usize,
    pub multi_rated: usize,
    pub fleiss_kappa: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
    /// Filter choices: modalities, rater groups, base families.
    pub modalities: Vec<String>,
    pub roles: Vec<String>,
    pub bases: Vec<String>,
}

#[server]
pub async fn arena_board(modality: String, role: String, base: String) -> Result<ArenaStandings, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let all = ctx.store.vote_outcomes(None).await.map_err(crate::ssr::store_err)?;
    let uniq = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let modalities = uniq(all.iter().filter_map(|v| v.modality.clone()).collect());
    // Rater groups: the roles that may vote.
    let roles = vec!["admin".to_string(), "clinician".to_string()];
    let bases = uniq(all.iter().flat_map(|v| [v.base_a.clone(), v.base_b.clone()]).collect());
    let votes: Vec<medpo_types::VoteOutcome> = all
        .into_iter()
        .filter(|v| modality.is_empty() || v.modality.as_deref() == Some(modality.as_str()))
        .filter(|v| role.is_empty() || v.rater_role == role)
        .filter(|v| base.is_empty() || (v.base_a == base && v.base_b == base))
        .collect();
    let n = votes.len();
    let eval_votes = crate::ssr::eval_votes(&votes);
    let report = if eval_votes.is_empty() {
        None
    } else {
        let cfg = medpo_eval::bootstrap_ci::BootstrapConfig { rounds: 200, ..Default::default() };
        Some(
            tokio::task::spawn_blocking(move || medpo_eval::arena::arena_report(&eval_votes, &cfg))
                .await
                .map_err(|e| ServerFnError::new(format!("rating failed: {e}")))?
                .map_err(|e| ServerFnError::new(format!("rating failed: {e}")))?,
        )
    };
    Ok(match report {
        None => ArenaStandings { votes: 0, ratings: vec![], matrix_models: vec![], win_rate: vec![], raters: 0, multi_rated: 0, fleiss_kappa: None, krippendorff_alpha: None, modalities, roles, bases },
        Some(r) => ArenaStandings {
            votes: n,
            ratings: r.bradley_terry.iter().map(|b| (b.model.clone(), b.rating, b.ci_low, b.ci_high, b.votes)).collect(),
            matrix_models: r.win_rate.models.clone(),
            win_rate: r.win_rate.win_rate.iter().zip(&r.win_rate.battles).map(|(w, b)| w.iter().copied().zip(b.iter().copied()).collect()).collect(),
            raters: r.agreement.raters.len(),
            multi_rated: r.agreement.units_multi_rated,
            fleiss_kappa: r.agreement.fleiss_kappa,
            krippendorff_alpha: r.agreement.krippendorff_alpha,
            modalities,
            roles,
            bases,
        },
    })
}

fn filter_select(label: &'static str, choices: Vec<String>, value: RwSignal<String>) -> impl IntoView {
    view! {
        <label>{label}
            <select prop:value=move || value.get() on:change=move |ev| value.set(event_target_value(&ev))>
                <option value="">"all"</option>
                {choices.into_iter().map(|c| view! { <option value=c.clone()>{c.clone()}</option> }).collect_view()}
            </select>
        </label>
    }
}

#[component]
fn ArenaSection() -> impl IntoView {
    let (modality, role, base) = (RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()));
    let board = Resource::new(move || (modality.get(), role.get(), base.get()), |(m, r, b)| arena_board(m, r, b));
    view! {
        <section class="board" data-testid="arena-board">
            <h2>"Arena" <small class="muted">" blind votes: Bradley–Terry ratings with 95% bootstrap intervals"</small></h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || board.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                    Ok(b) => {
                        let fmt = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
                        view! {
                            <div class="form-grid">
                                {filter_select("Modality", b.modalities.clone(), modality)}
                                {filter_select("Rater group", b.roles.clone(), role)}
                                {filter_select("Base model (both sides)", b.bases.clone(), base)}
                                <span class="muted">{format!("{} votes · {} raters · {} items rated more than once · Fleiss κ {} · Krippendorff α {}", b.votes, b.raters, b.multi_rated, fmt(b.fleiss_kappa), fmt(b.krippendorff_alpha))}</span>
                            </div>
                            {if b.ratings.is_empty() {
                                view! { <p class="muted">"No vote matches these filters yet: vote in the " <a href="/arena">"arena"</a> "."</p> }.into_any()
                            } else {
                                view! {
                                    <table class="table">
                                        <thead><tr><th>"Model"</th><th>"Rating [95% CI]"</th><th>"Votes"</th></tr></thead>
                                        <tbody>{b.ratings.iter().map(|(m, r, lo, hi, n)| view! { <tr><td>{m.clone()}</td><td>{format!("{r:.0} [{lo:.0}, {hi:.0}]")}</td><td>{*n}</td></tr> }).collect_view()}</tbody>
                                    </table>
                                    <h3>"Win rate (row beats column)"</h3>
                                    <table class="table matrix" data-testid="win-matrix">
                                        <thead><tr><th></th>{b.matrix_models.iter().map(|m| view! { <th>{m.clone()}</th> }).collect_view()}</tr></thead>
                                        <tbody>
                                            {b.matrix_models.iter().zip(b.win_rate.iter()).map(|(m, row)| view! {
                                                <tr><th>{m.clone()}</th>{row.iter().map(|(w, n)| match w {
                                                    Some(w) => view! { <td style=format!("background: rgba(18,128,154,{:.2})", 0.1 + 0.6 * w) title=format!("{n} battles")>{format!("{:.0}%", 100.0 * w)}</td> }.into_any(),
                                                    None => view! { <td class="muted">"—"</td> }.into_any(),
                                                }).collect_view()}</tr>
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                }.into_any()
                            }}
                        }.into_any()
                    }
                })}
            </Transition>
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
        <p class="lead">"VQA-RAD, SLAKE, PathVQA and the server's own benchmarks under one pinned protocol, with 95% bootstrap confidence intervals. ★: differs significantly from its SFT base (paired bootstrap, p < 0.05). The arena board ranks models by clinicians' blind votes."</p>
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
                        <ArenaSection/>
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
