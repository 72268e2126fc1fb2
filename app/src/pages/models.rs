//! Registered checkpoints, grouped by base model, and registration of a checkpoint folder.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::ModelEntry;

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
    let probe_dir = dir.clone();
    let probe = tokio::task::spawn_blocking(move || crate::ssr::probe_checkpoint(&probe_dir))
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
    tracing::info!(model = %entry.name, path = %entry.path, "registered a model");
    Ok(entry)
}

#[component]
pub fn ModelsPage() -> impl IntoView {
    let register = ServerAction::<RegisterModel>::new();
    let models = Resource::new(move || register.version().get(), |_| list_models());
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
    }
}

#[component]
fn ModelTable(list: Vec<ModelEntry>) -> impl IntoView {
    view! {
        <table class="table" data-testid="models-table">
            <thead><tr><th>"Name"</th><th>"Base"</th><th>"Variant"</th><th>"Layout"</th><th>"Parameters"</th><th>"Path"</th><th>"Added"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|m| view! {
                    <tr class=if m.enabled { "" } else { "disabled" }>
                        <td><strong>{m.name}</strong></td>
                        <td>{m.base}</td>
                        <td><span class="badge">{m.variant}</span></td>
                        <td><code>{m.layout}</code></td>
                        <td>{m.params.map(human_count).unwrap_or_else(|| "—".into())}</td>
                        <td class="path">{m.path}</td>
                        <td>{format_time(m.created_at)}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}
