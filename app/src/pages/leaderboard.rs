//! Leaderboard: the newest evaluation run of each model on each benchmark.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::EvalRun;

use crate::components::{error_text, format_time, EmptyState, ErrorBox};

#[server]
pub async fn leaderboard() -> Result<Vec<EvalRun>, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    ctx.store.leaderboard().await.map_err(crate::ssr::store_err)
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

#[component]
pub fn LeaderboardPage() -> impl IntoView {
    let runs = Resource::new(|| (), |_| leaderboard());
    view! {
        <Title text="Leaderboard — MedPO Arena"/>
        <h1>"Leaderboard"</h1>
        <p class="lead">"VQA-RAD, SLAKE, PathVQA and report generation under one pinned protocol, with 95% bootstrap confidence intervals."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || runs.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <EmptyState title="No evaluation run yet">
                        <p>"Evaluate a registered model on a benchmark, e.g. " <code>"medpo eval --model DIR --bench vqa-rad --images DIR"</code> ". Runs are stored with their protocol version."</p>
                    </EmptyState>
                }.into_any(),
                Ok(list) => {
                    let mut benches: Vec<String> = list.iter().map(|r| r.benchmark.clone()).collect();
                    benches.dedup();
                    benches.into_iter().map(|b| {
                        let rows: Vec<EvalRun> = list.iter().filter(|r| r.benchmark == b).cloned().collect();
                        let mut keys: Vec<String> = rows.iter().flat_map(|r| r.metrics.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()).collect();
                        keys.sort();
                        keys.dedup();
                        view! {
                            <h2>{b}</h2>
                            <table class="table">
                                <thead><tr><th>"Model"</th>{keys.iter().map(|k| view! { <th>{k.clone()}</th> }).collect_view()}<th>"Items"</th><th>"Protocol"</th><th>"Finished"</th></tr></thead>
                                <tbody>
                                    {rows.into_iter().map(|r| view! {
                                        <tr>
                                            <td>{r.model_name.clone()}</td>
                                            {keys.iter().map(|k| view! { <td>{metric_cell(r.metrics.get(k).unwrap_or(&serde_json::Value::Null))}</td> }).collect_view()}
                                            <td>{r.n_items}</td>
                                            <td><code>{r.protocol_version.clone()}</code></td>
                                            <td>{r.finished_at.map(format_time).unwrap_or_default()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }
                    }).collect_view().into_any()
                }
            })}
        </Transition>
    }
}
