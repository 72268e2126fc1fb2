//! Training: preference-training jobs and their progress.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::TrainingJob;

use crate::components::{error_text, format_time, EmptyState, ErrorBox};

#[server]
pub async fn list_jobs() -> Result<Vec<TrainingJob>, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    ctx.store.list_jobs().await.map_err(crate::ssr::store_err)
}

#[component]
pub fn TrainingPage() -> impl IntoView {
    let jobs = Resource::new(|| (), |_| list_jobs());
    view! {
        <Title text="Training — MedPO Arena"/>
        <h1>"Training"</h1>
        <p class="lead">"Preference-training jobs (DPO, DPO+NLL, CoPO, mDPO, MMedPO, IPO, SimPO, ORPO, KTO, …) on a dataset snapshot. Finished checkpoints join the Models page and the leaderboards."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || jobs.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <EmptyState title="No training job yet">
                        <p>"A job needs a base model (see " <a href="/models">"Models"</a> ") and a dataset snapshot (see " <a href="/datasets">"Datasets"</a> "). From the command line: " <code>"medpo train --config train.toml"</code> "."</p>
                    </EmptyState>
                }.into_any(),
                Ok(list) => view! {
                    <table class="table" data-testid="jobs-table">
                        <thead><tr><th>"#"</th><th>"Name"</th><th>"Objective"</th><th>"Device"</th><th>"Status"</th><th>"Progress"</th><th>"Created"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|j| {
                                let pct = if j.total_steps > 0 { 100.0 * j.step as f64 / j.total_steps as f64 } else { 0.0 };
                                view! {
                                    <tr>
                                        <td>{j.id}</td>
                                        <td>{j.name}</td>
                                        <td><code>{j.objective}</code></td>
                                        <td>{j.device}</td>
                                        <td><span class=format!("status status-{}", j.status.as_str())>{j.status.as_str()}</span>
                                            {j.error.map(|e| view! { <div class="error small">{e}</div> })}</td>
                                        <td>
                                            <progress max="100" value=pct></progress>
                                            {format!(" {}/{}", j.step, j.total_steps)}
                                        </td>
                                        <td>{format_time(j.created_at)}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
    }
}
