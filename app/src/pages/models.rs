//! Registered checkpoints, grouped by base model, registration of a checkpoint folder, and
//! (admins) OpenAI-compatible servers whose models join the arena.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::{ModelEntry, RemoteEndpoint};

use crate::components::{error_text, format_time, human_count, EmptyState, ErrorBox};

#[server]
pub async fn list_models() -> Result<Vec<ModelEntry>, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    ctx.store.list_models().await.map_err(crate::ssr::store_err)
}

/// Registers the checkpoint folder at `path`, relative to the models folder (admins may also
/// give an absolute path). The layout is read from its `config.json`.
#[server]
pub async fn register_model(name: String, path: String, variant: String) -> Result<ModelEntry, ServerFnError> {
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    let dir = crate::ssr::confined_model_dir(&ctx.models_dir, path.trim(), user.role == medpo_types::Role::Admin)
        .map_err(|m| crate::ssr::bad_input(axum::http::StatusCode::UNPROCESSABLE_ENTITY, m))?;
    let (probe_dir, models_dir) = (dir.clone(), ctx.models_dir.clone());
    // The model engine checks the folder (config, vision tower, tokenizer, weights; a full
    // load when it fits in memory) before anything is registered.
    let (probe, checked) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let probe = crate::ssr::probe_checkpoint(&probe_dir)?;
        let checked = medpo_models::Model::check(&probe_dir, Some(models_dir)).map_err(|e| format!("`{}` cannot be served: {e}", probe_dir.display()))?;
        Ok((probe, checked))
    })
    .await
    .map_err(|_| ServerFnError::new("checking the checkpoint failed"))?
    .map_err(|m| crate::ssr::bad_input(axum::http::StatusCode::UNPROCESSABLE_ENTITY, m))?;
    let variant = if variant.trim().is_empty() { "sft".to_string() } else { variant.trim().to_lowercase() };
    let name = if name.trim().is_empty() {
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        name.trim().to_string()
    };
    let entry = ctx
        .store
        .register_model(&medpo_types::NewModel {
            name,
            base: probe.base,
            variant,
            layout: probe.layout,
            parent_id: None,
            path: dir.display().to_string(),
            files: probe.files,
            card: String::new(),
            params: probe.params,
        })
        .await
        .map_err(crate::ssr::store_err)?;
    tracing::info!(model = %entry.name, path = %entry.path, checked = %checked, "registered a model");
    let _ = ctx.store.audit(Some(user.id), &user.username, "register", &format!("model `{}` from {}", entry.name, entry.path)).await;
    Ok(entry)
}

#[server]
pub async fn list_remotes() -> Result<Vec<RemoteEndpoint>, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    ctx.store.list_remotes().await.map_err(crate::ssr::store_err)
}

/// Adds an OpenAI-compatible server (admins only). It is checked like a `[[remote]]` table
/// (URL scheme, model names, the key's environment variable set on this server), stored, and
/// its models are registered as `<name>/<model>`; the first comparison that draws one connects.
#[server(endpoint = "add_remote")]
pub async fn add_remote(
    name: String,
    base_url: String,
    api_key_env: String,
    models: String,
    timeout_s: String,
    max_concurrency: String,
) -> Result<Vec<String>, ServerFnError> {
    use axum::http::StatusCode;
    let user = crate::auth::ssr::require(&[]).await?;
    let ctx = crate::ssr::ctx()?;
    let bad = |m: String| crate::ssr::bad_input(StatusCode::UNPROCESSABLE_ENTITY, m);
    let number = |v: &str, what: &str, default: i64| -> Result<i64, ServerFnError> {
        if v.trim().is_empty() {
            return Ok(default);
        }
        v.trim().parse::<i64>().ok().filter(|n| (1..=3600).contains(n)).ok_or_else(|| bad(format!("{what} must be a whole number from 1 to 3600, not `{v}`")))
    };
    let endpoint = RemoteEndpoint {
        id: 0,
        name: name.trim().to_string(),
        base_url: base_url.trim().to_string(),
        api_key_env: Some(api_key_env.trim().to_string()).filter(|s| !s.is_empty()),
        models: models.split([',', '\n']).map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect(),
        timeout_s: number(&timeout_s, "timeout", 60)?,
        max_concurrency: number(&max_concurrency, "max concurrency", 4)?,
        created_at: 0,
    };
    let cfg = crate::ssr::remote_config(&endpoint);
    cfg.validate().map_err(bad)?;
    let stored = ctx.store.create_remote(&endpoint, Some(user.id)).await.map_err(crate::ssr::store_err)?;
    let added = crate::ssr::register_remote_models(&ctx.store, &cfg).await;
    tracing::info!(remote = %stored.name, url = %stored.base_url, models = added.len(), user = %user.username, "added a remote server");
    Ok(added)
}

#[component]
pub fn ModelsPage() -> impl IntoView {
    let register = ServerAction::<RegisterModel>::new();
    let add = ServerAction::<AddRemote>::new();
    let models = Resource::new(move || (register.version().get(), add.version().get()), |_| list_models());
    let remotes = Resource::new(move || add.version().get(), |_| list_remotes());
    view! {
        <Title text="Models — MedPO Arena"/>
        <h1>"Models"</h1>
        <p class="lead">"Checkpoints the arena can ask: SFT bases (LLaVA-Med v1.5, HuatuoGPT-Vision, llava-hf exports) and their preference-tuned variants."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || models.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <EmptyState title="No model registered yet">
                        <p>"Put checkpoint folders (each with a " <code>"config.json"</code> ") in the models directory and restart the server, or register a folder below. Training jobs add their checkpoints here automatically."</p>
                    </EmptyState>
                }.into_any(),
                Ok(list) => view! { <ModelTable list=list/> }.into_any(),
            })}
        </Transition>
        <section class="panel">
            <h2>"Register a checkpoint folder"</h2>
            <ActionForm action=register attr:class="form-grid">
                <label>"Folder" <input name="path" required placeholder="llava-med-v1.5-mistral-7b or /abs/path"/></label>
                <label>"Name" <input name="name" placeholder="defaults to the folder name"/></label>
                <label>"Variant" <input name="variant" placeholder="sft, dpo, mdpo, …"/></label>
                <button type="submit">"Register"</button>
            </ActionForm>
            {move || register.value().get().map(|r| match r {
                Ok(m) => view! { <p class="ok" role="status">"Registered " <strong>{m.name}</strong> " (" {m.layout} ")."</p> }.into_any(),
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
            })}
        </section>
        <section class="panel">
            <h2>"Remote servers"</h2>
            <p>"OpenAI-compatible servers (vLLM, TGI, another MedPO server) whose models join Compare and the blind arena as " <code>"server/model"</code> ". Also configurable as " <code>"[[remote]]"</code> " in medpo.toml. The API key stays in an environment variable of this server; only its name is stored."</p>
            <Transition fallback=|| ()>
                {move || remotes.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No remote server added here."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="remotes-table">
                            <thead><tr><th>"Name"</th><th>"Base URL"</th><th>"Models"</th><th>"Key variable"</th><th>"Timeout"</th><th>"Concurrency"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|r| view! {
                                    <tr>
                                        <td><strong>{r.name}</strong></td>
                                        <td class="path">{r.base_url}</td>
                                        <td>{r.models.join(", ")}</td>
                                        <td><code>{r.api_key_env.unwrap_or_else(|| "—".into())}</code></td>
                                        <td>{format!("{} s", r.timeout_s)}</td>
                                        <td>{r.max_concurrency}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
            <h3>"Add a remote server (admins)"</h3>
            <ActionForm action=add attr:class="form-grid" attr:data-testid="add-remote">
                <label>"Name" <input name="name" required maxlength="40" placeholder="gpu1"/></label>
                <label>"Base URL" <input name="base_url" required placeholder="http://gpu1.internal:8000/v1"/></label>
                <label>"Models" <input name="models" required placeholder="llava-med-v1.5-mistral-7b, llava-med-dpo"/></label>
                <label>"API key variable" <input name="api_key_env" placeholder="GPU1_API_KEY (optional)"/></label>
                <label>"Timeout (s)" <input name="timeout_s" inputmode="numeric" placeholder="60"/></label>
                <label>"Max concurrency" <input name="max_concurrency" inputmode="numeric" placeholder="4"/></label>
                <button type="submit">"Add"</button>
            </ActionForm>
            {move || add.value().get().map(|r| match r {
                Ok(names) => view! { <p class="ok" role="status">{format!("Added; models registered: {}.", if names.is_empty() { "none new".to_string() } else { names.join(", ") })}</p> }.into_any(),
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
            })}
        </section>
    }
}

#[component]
fn ModelTable(list: Vec<ModelEntry>) -> impl IntoView {
    let names: Vec<(i64, String)> = list.iter().map(|m| (m.id, m.name.clone())).collect();
    view! {
        <table class="table" data-testid="models-table">
            <thead><tr><th>"Name"</th><th>"Base"</th><th>"Variant"</th><th>"Lineage"</th><th>"Layout"</th><th>"Parameters"</th><th>"Path"</th><th>"Added"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|m| {
                    let parent = m.parent_id.map(|p| (p, names.iter().find(|(id, _)| *id == p).map(|(_, n)| n.clone()).unwrap_or_else(|| format!("model {p}"))));
                    view! {
                        <tr class=if m.enabled { "" } else { "disabled" } id=format!("model-{}", m.id)>
                            <td><strong>{m.name.clone()}</strong>
                                {(!m.card.is_empty()).then(|| view! { <details class="card"><summary>"model card"</summary><p>{m.card.clone()}</p></details> })}
                            </td>
                            <td>{m.base}</td>
                            <td><span class="badge">{m.variant}</span></td>
                            <td>{match parent {
                                Some((p, n)) => view! { <a href=format!("#model-{p}")>{format!("↳ from {n}")}</a> }.into_any(),
                                None => view! { <span class="muted">"base"</span> }.into_any(),
                            }}</td>
                            <td><code>{m.layout}</code></td>
                            <td>{m.params.map(human_count).unwrap_or_else(|| "—".into())}</td>
                            <td class="path">{m.path}</td>
                            <td>{format_time(m.created_at)}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}
