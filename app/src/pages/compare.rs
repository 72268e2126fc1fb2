//! Compare: the models a question can go to, and the comparisons asked so far.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::{ComparisonSummary, ModelEntry};

use crate::components::{error_text, format_time, EmptyState, ErrorBox};
use crate::workbench::Workbench;

#[server]
pub async fn compare_overview() -> Result<(Vec<ModelEntry>, Vec<ComparisonSummary>), ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let models = ctx.store.list_models().await.map_err(crate::ssr::store_err)?;
    // Questions are clinicians' free text: only signed-in users see them.
    let signed_in = crate::auth::ssr::session().await?.is_some();
    let recent = if signed_in { ctx.store.recent_comparisons(25).await.map_err(crate::ssr::store_err)? } else { vec![] };
    // Blind comparisons never send their model names to the browser.
    let recent = recent
        .into_iter()
        .map(|mut c| {
            if c.blind {
                c.models = c.models.iter().enumerate().map(|(i, _)| format!("Model {}", (b'A' + i as u8) as char)).collect();
            }
            c
        })
        .collect();
    Ok((models.into_iter().filter(|m| m.enabled).collect(), recent))
}

#[component]
pub fn ComparePage() -> impl IntoView {
    let data = Resource::new(|| (), |_| compare_overview());
    view! {
        <Title text="Compare — MedPO Arena"/>
        <h1>"Compare"</h1>
        <p class="lead">"Ask several checkpoints the same question about the same scan and read their answers side by side."</p>
        <Workbench blind=false/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || data.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok((models, recent)) => view! {
                    <h2>"Registered models"</h2>
                    {if models.is_empty() {
                        view! { <EmptyState title="No model to compare yet"><p>"Register at least two checkpoints on the " <a href="/models">"Models"</a> " page (an SFT base and a variant)."</p></EmptyState> }.into_any()
                    } else {
                        let mut bases: Vec<String> = models.iter().map(|m| m.base.clone()).collect();
                        bases.dedup();
                        view! {
                            <div class="groups" data-testid="model-groups">
                                {bases.into_iter().map(|b| {
                                    let members: Vec<ModelEntry> = models.iter().filter(|m| m.base == b).cloned().collect();
                                    view! {
                                        <div class="group">
                                            <h3>{b}</h3>
                                            <ul>{members.into_iter().map(|m| view! { <li>{m.name} " " <span class="badge">{m.variant}</span></li> }).collect_view()}</ul>
                                        </div>
                                    }
                                }).collect_view()}
                            </div>
                        }.into_any()
                    }}
                    <h2>"Recent comparisons"</h2>
                    {if recent.is_empty() {
                        view! { <EmptyState title="No comparison yet"><p>"Upload a scan and ask a question; every comparison and its answers are kept here with their generation settings."</p></EmptyState> }.into_any()
                    } else {
                        view! {
                            <table class="table">
                                <thead><tr><th>"#"</th><th>"Question"</th><th>"Models"</th><th>"Mode"</th><th>"Votes"</th><th>"Asked"</th></tr></thead>
                                <tbody>
                                    {recent.into_iter().map(|c| view! {
                                        <tr>
                                            <td>{c.id}</td>
                                            <td>{c.question}</td>
                                            <td>{c.models.join(" · ")}</td>
                                            <td>{if c.blind { "blind" } else { "named" }}</td>
                                            <td>{c.votes}</td>
                                            <td>{format_time(c.created_at)}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any()
                    }}
                }.into_any(),
            })}
        </Transition>
    }
}
