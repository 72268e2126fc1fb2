//! Preference datasets: the pairs votes produced, and immutable versioned snapshots of them.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::{Dataset, PreferencePair};

use crate::components::{error_text, format_time, EmptyState, ErrorBox};

#[server]
pub async fn list_datasets() -> Result<(Vec<Dataset>, Vec<PreferencePair>), ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let datasets = ctx.store.list_datasets().await.map_err(crate::ssr::store_err)?;
    let pairs = ctx.store.preference_pairs(20).await.map_err(crate::ssr::store_err)?;
    Ok((datasets, pairs))
}

#[server]
pub async fn create_dataset(name: String, description: String) -> Result<Dataset, ServerFnError> {
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    let d = ctx.store.create_dataset(&name, &description, Some(user.id)).await.map_err(crate::ssr::store_err)?;
    tracing::info!(dataset = %d.name, "created a dataset");
    Ok(d)
}

#[server]
pub async fn snapshot_dataset(dataset_id: i64, note: String) -> Result<medpo_types::DatasetSnapshot, ServerFnError> {
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    ctx.store.snapshot_dataset(dataset_id, &note, Some(user.id)).await.map_err(crate::ssr::store_err)
}

#[component]
pub fn DatasetsPage() -> impl IntoView {
    let create = ServerAction::<CreateDataset>::new();
    let snapshot = ServerAction::<SnapshotDataset>::new();
    let data = Resource::new(move || (create.version().get(), snapshot.version().get()), |_| list_datasets());
    view! {
        <Title text="Datasets — MedPO Arena"/>
        <h1>"Datasets"</h1>
        <p class="lead">"Every vote that prefers one answer becomes a preference pair (winner ≻ loser; on “both bad” a corrected answer ≻ each answer; ties make none; the rater's tags and region are kept). A dataset freezes the pairs into numbered, hashed versions that training jobs cite; researchers download them as TRL JSONL or as the seed's LLaVA JSON with the scans."</p>
        <section class="panel">
            <h2>"New dataset"</h2>
            <ActionForm action=create attr:class="form-grid" attr:data-testid="create-dataset">
                <label>"Name" <input name="name" required maxlength="100" placeholder="radiology-votes"/></label>
                <label>"Description" <input name="description" placeholder="what goes in it, who rated it"/></label>
                <button type="submit">"Create"</button>
            </ActionForm>
            {move || create.value().get().and_then(|r| r.err()).map(|e| view! { <ErrorBox message=error_text(&e)/> })}
            {move || snapshot.value().get().map(|r| match r {
                Ok(s) => view! { <p class="ok" role="status">{format!("Snapshot v{} saved: {} pairs.", s.version, s.pair_count)}</p> }.into_any(),
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
            })}
        </section>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || data.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok((datasets, pairs)) => view! {
                    <h2>"Datasets"</h2>
                    {if datasets.is_empty() {
                        view! { <EmptyState title="No dataset yet"><p>"Create one above; then snapshot it once there are preference pairs."</p></EmptyState> }.into_any()
                    } else {
                        view! {
                            <table class="table" data-testid="datasets-table">
                                <thead><tr><th>"Name"</th><th>"Description"</th><th>"Versions"</th><th>"Created"</th><th></th></tr></thead>
                                <tbody>
                                    {datasets.into_iter().map(|d| {
                                        let id = d.id;
                                        view! {
                                            <tr>
                                                <td><strong>{d.name}</strong></td>
                                                <td>{d.description}</td>
                                                <td>{if d.snapshots.is_empty() { view! { <span class="muted">"none yet"</span> }.into_any() } else {
                                                    view! { <ul class="snapshots">
                                                        {d.snapshots.iter().map(|s| view! {
                                                            <li data-testid="snapshot">
                                                                {format!("v{} · {} pairs · sha256 {} ", s.version, s.pair_count, s.sha256.get(..12).unwrap_or(&s.sha256))}
                                                                <a href=format!("/api/snapshots/{}/pairs.jsonl", s.id) download data-testid="download-jsonl" rel="external">"TRL JSONL"</a>
                                                                " · "
                                                                <a href=format!("/api/snapshots/{}/llava.zip", s.id) download rel="external">"LLaVA JSON + images (zip)"</a>
                                                            </li>
                                                        }).collect_view()}
                                                    </ul> }.into_any()
                                                }}</td>
                                                <td>{format_time(d.created_at)}</td>
                                                <td>
                                                    <ActionForm action=snapshot>
                                                        <input type="hidden" name="dataset_id" value=id/>
                                                        <input type="hidden" name="note" value=""/>
                                                        <button type="submit" class="secondary">"Snapshot now"</button>
                                                    </ActionForm>
                                                </td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any()
                    }}
                    <h2>"Latest preference pairs"</h2>
                    {if pairs.is_empty() {
                        view! { <EmptyState title="No preference pairs yet"><p>"Vote in the " <a href="/arena">"arena"</a> ": each A/B preference and each corrected answer becomes a pair."</p></EmptyState> }.into_any()
                    } else {
                        view! {
                            <table class="table">
                                <thead><tr><th>"Question"</th><th>"Chosen"</th><th>"Rejected"</th><th>"Tags"</th><th>"Source"</th></tr></thead>
                                <tbody>
                                    {pairs.into_iter().map(|p| view! {
                                        <tr><td>{p.question}</td><td>{p.chosen}</td><td>{p.rejected}</td><td>{p.tags.join(", ")}</td><td>{p.source}</td></tr>
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
