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
    let uploaded = RwSignal::new(0u32);
    let upload_msg = RwSignal::new(None::<Result<String, String>>);
    let data = Resource::new(move || (create.version().get(), snapshot.version().get(), uploaded.get()), |_| list_datasets());
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
            {move || upload_msg.get().map(|r| match r {
                Ok(m) => view! { <p class="ok" role="status" data-testid="upload-result">{m}</p> }.into_any(),
                Err(e) => view! { <ErrorBox message=e/> }.into_any(),
            })}
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
                                                                <a href=format!("/datasets/snapshots/{}", s.id) data-testid="browse-snapshot">{format!("v{}", s.version)}</a>
                                                                {format!(" · {} pairs · {} · sha256 {} ", s.pair_count, if s.origin == "upload" { "uploaded" } else { "votes" }, s.sha256.get(..12).unwrap_or(&s.sha256))}
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
                                                    <UploadForm dataset_id=id uploaded=uploaded message=upload_msg/>
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

/// Uploads a preference file (TRL `.jsonl`, the seed's `.json`, or a `.zip` with its images)
/// as the dataset's next version.
#[component]
fn UploadForm(dataset_id: i64, uploaded: RwSignal<u32>, message: RwSignal<Option<Result<String, String>>>) -> impl IntoView {
    let busy = RwSignal::new(false);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        use wasm_bindgen::JsCast;
        let Some(form) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlFormElement>().ok()) else { return };
        let Ok(data) = web_sys::FormData::new_with_form(&form) else { return };
        busy.set(true);
        leptos::task::spawn_local(async move {
            let url = format!("/api/datasets/{dataset_id}/upload");
            let r = crate::browser::post_form::<medpo_types::DatasetSnapshot>(&url, &data).await;
            busy.set(false);
            message.set(Some(r.map(|s| format!("Uploaded as v{}: {} pairs.", s.version, s.pair_count))));
            uploaded.update(|n| *n += 1);
        });
    };
    view! {
        <form class="upload-pairs" on:submit=on_submit data-testid="upload-pairs">
            <input type="file" name="file" accept=".jsonl,.json,.zip" required/>
            <button type="submit" class="secondary" disabled=move || busy.get()>{move || if busy.get() { "Uploading…" } else { "Upload as a version" }}</button>
        </form>
    }
}

/// A snapshot with the details the browser filters and counts by.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotBundle {
    pub snapshot: medpo_types::DatasetSnapshot,
    pub dataset: String,
    pub pairs: Vec<medpo_types::SnapshotPair>,
}

#[server]
pub async fn snapshot_info(id: i64) -> Result<SnapshotBundle, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let snapshot = ctx.store.snapshot(id).await.map_err(crate::ssr::store_err)?;
    let dataset = ctx
        .store
        .list_datasets()
        .await
        .map_err(crate::ssr::store_err)?
        .into_iter()
        .find(|d| d.id == snapshot.dataset_id)
        .map(|d| d.name)
        .unwrap_or_default();
    let pairs = ctx.store.snapshot_details(id).await.map_err(crate::ssr::store_err)?;
    Ok(SnapshotBundle { snapshot, dataset, pairs })
}

/// Counts of `key` over the pairs, most frequent first.
fn counts(pairs: &[medpo_types::SnapshotPair], key: impl Fn(&medpo_types::SnapshotPair) -> Vec<String>) -> Vec<(String, usize)> {
    let mut m: std::collections::BTreeMap<String, usize> = Default::default();
    for p in pairs {
        for k in key(p) {
            *m.entry(k).or_default() += 1;
        }
    }
    let mut v: Vec<(String, usize)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn or_none(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

fn model_pair(p: &medpo_types::SnapshotPair) -> Vec<String> {
    match (&p.chosen_model, &p.rejected_model) {
        (None, None) => vec!["(no model: corrected or imported)".into()],
        (c, r) => vec![format!("{} ≻ {}", c.clone().unwrap_or_else(|| "corrected answer".into()), or_none(r))],
    }
}

fn tags(p: &medpo_types::SnapshotPair) -> Vec<String> {
    if p.pair.tags.is_empty() { vec!["(no tag)".into()] } else { p.pair.tags.clone() }
}

#[component]
pub fn SnapshotPage() -> impl IntoView {
    let params = leptos_router::hooks::use_params_map();
    let id = move || params.read().get("id").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let info = Resource::new(id, snapshot_info);
    view! {
        <Title text="Snapshot — MedPO Arena"/>
        <p><a href="/datasets">"← Datasets"</a></p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || info.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(i) => view! { <SnapshotView info=i/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn SnapshotView(info: SnapshotBundle) -> impl IntoView {
    let s = info.snapshot.clone();
    let pairs = info.pairs.clone();
    let (tag, severity, rater, modality) = (RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()));
    let options = |c: Vec<(String, usize)>| c.into_iter().map(|(k, _)| view! { <option value=k.clone()>{k.clone()}</option> }).collect_view();
    let count_table = |title: &'static str, c: Vec<(String, usize)>| view! {
        <div class="counts"><h3>{title}</h3><table class="table small">{c.into_iter().map(|(k, n)| view! { <tr><td>{k}</td><td>{n}</td></tr> }).collect_view()}</table></div>
    };
    let by_pair = counts(&pairs, model_pair);
    let by_tag = counts(&pairs, tags);
    let by_rater = counts(&pairs, |p| vec![or_none(&p.rater)]);
    let by_modality = counts(&pairs, |p| vec![or_none(&p.modality)]);
    let by_severity = counts(&pairs, |p| vec![or_none(&p.severity)]);
    let all = pairs.clone();
    let shown = Memo::new(move |_| {
        let (t, sv, r, m) = (tag.get(), severity.get(), rater.get(), modality.get());
        all.iter()
            .filter(|p| t.is_empty() || tags(p).contains(&t))
            .filter(|p| sv.is_empty() || or_none(&p.severity) == sv)
            .filter(|p| r.is_empty() || or_none(&p.rater) == r)
            .filter(|p| m.is_empty() || or_none(&p.modality) == m)
            .cloned()
            .collect::<Vec<_>>()
    });
    view! {
        <h1>{format!("{} v{}", info.dataset, s.version)}</h1>
        <p class="lead">
            {format!("{} pairs · {} · sha256 {} · rules {} · frozen {}", s.pair_count, if s.origin == "upload" { "uploaded file" } else { "from votes" }, s.sha256, medpo_types::PAIR_RULES_VERSION, format_time(s.created_at))}
            {(!s.note.is_empty()).then(|| format!(" · {}", s.note))}
        </p>
        <p>
            <a href=format!("/api/snapshots/{}/pairs.jsonl", s.id) download rel="external">"Download TRL JSONL"</a> " · "
            <a href=format!("/api/snapshots/{}/llava.zip", s.id) download rel="external">"Download LLaVA JSON + images (zip)"</a> " · "
            <a href="/training">"Train on it"</a>
        </p>
        <section class="panel counts-grid" data-testid="snapshot-counts">
            {count_table("Model pairs (chosen ≻ rejected)", by_pair)}
            {count_table("Error tags", by_tag.clone())}
            {count_table("Raters", by_rater.clone())}
            {count_table("Modalities", by_modality.clone())}
        </section>
        <section class="panel">
            <div class="form-grid" data-testid="snapshot-filters">
                <label>"Tag" <select on:change=move |ev| tag.set(event_target_value(&ev))><option value="">"any"</option>{options(by_tag)}</select></label>
                <label>"Severity" <select on:change=move |ev| severity.set(event_target_value(&ev))><option value="">"any"</option>{options(by_severity)}</select></label>
                <label>"Rater" <select on:change=move |ev| rater.set(event_target_value(&ev))><option value="">"any"</option>{options(by_rater)}</select></label>
                <label>"Modality" <select on:change=move |ev| modality.set(event_target_value(&ev))><option value="">"any"</option>{options(by_modality)}</select></label>
                <span class="muted" data-testid="shown-count">{move || format!("{} of {} pairs", shown.get().len(), pairs.len())}</span>
            </div>
            <table class="table" data-testid="snapshot-pairs">
                <thead><tr><th>"#"</th><th>"Question"</th><th>"Chosen"</th><th>"Rejected"</th><th>"Models"</th><th>"Tags"</th><th>"Rater"</th><th>"Modality"</th></tr></thead>
                <tbody>
                    {move || shown.get().into_iter().map(|p| view! {
                        <tr>
                            <td>{p.pair.id}</td><td>{p.pair.question.clone()}</td><td>{p.pair.chosen.clone()}</td><td>{p.pair.rejected.clone()}</td>
                            <td>{model_pair(&p).join("")}</td>
                            <td>{p.pair.tags.join(", ")}{p.severity.clone().map(|s| format!(" ({s})"))}</td>
                            <td>{or_none(&p.rater)}</td><td>{or_none(&p.modality)}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}
