//! Account: who is signed in, and their API keys for the OpenAI-compatible API (`/v1`).
//! A new key is shown once (only its SHA-256 is stored); keys can be revoked at any time.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::{ApiKey, User};
use serde::{Deserialize, Serialize};

use crate::components::{error_text, format_time, EmptyState, ErrorBox};

/// Roles whose keys may call the API (admins always may).
#[cfg(feature = "ssr")]
const KEY_ROLES: &[medpo_types::Role] = &[medpo_types::Role::Clinician, medpo_types::Role::Researcher];

/// The signed-in user and their keys (newest first).
#[server]
pub async fn my_api_keys() -> Result<(User, Vec<ApiKey>), ServerFnError> {
    let user = crate::auth::ssr::require(&medpo_types::Role::ALL).await?;
    let ctx = crate::ssr::ctx()?;
    let keys = ctx.store.api_keys_of(user.id).await.map_err(crate::ssr::store_err)?;
    Ok((user, keys))
}

/// A key just made: the secret, shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub secret: String,
    pub key: ApiKey,
}

#[server]
pub async fn create_api_key(name: String) -> Result<CreatedKey, ServerFnError> {
    let user = crate::auth::ssr::require(KEY_ROLES).await?;
    let ctx = crate::ssr::ctx()?;
    let (secret, prefix, hash) = crate::auth::ssr::new_api_key();
    let key = ctx.store.create_api_key(user.id, &name, &prefix, &hash).await.map_err(crate::ssr::store_err)?;
    tracing::info!(user = %user.username, key = key.id, prefix = %key.prefix, "created an API key");
    Ok(CreatedKey { secret, key })
}

#[server]
pub async fn revoke_api_key(id: i64) -> Result<ApiKey, ServerFnError> {
    let user = crate::auth::ssr::require(&medpo_types::Role::ALL).await?;
    let ctx = crate::ssr::ctx()?;
    let key = ctx.store.revoke_api_key(id, Some(user.id)).await.map_err(crate::ssr::store_err)?;
    tracing::info!(user = %user.username, key = key.id, prefix = %key.prefix, "revoked an API key");
    Ok(key)
}

#[component]
pub fn AccountPage() -> impl IntoView {
    let create = ServerAction::<CreateApiKey>::new();
    let revoke = ServerAction::<RevokeApiKey>::new();
    let data = Resource::new(move || (create.version().get(), revoke.version().get()), |_| my_api_keys());
    view! {
        <Title text="Account — MedPO Arena"/>
        <h1>"Account"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || data.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok((user, keys)) => view! {
                    <p class="lead">"Signed in as " <strong>{user.username.clone()}</strong> " (" {user.role.as_str()} ")."</p>
                    <section class="panel">
                        <h2>"API keys"</h2>
                        <p>"Keys call the OpenAI-compatible API at " <code>"/v1"</code> " with your role, e.g. "
                            <code>"curl -H \"Authorization: Bearer mpo_…\" http://127.0.0.1:3000/v1/models"</code>
                            ". A key is shown once; only its hash is stored."</p>
                        <ActionForm action=create attr:class="form-grid" attr:data-testid="create-api-key">
                            <label>"Label" <input name="name" required maxlength="64" placeholder="eval notebook"/></label>
                            <button type="submit">"Create key"</button>
                        </ActionForm>
                        {move || create.value().get().map(|r| match r {
                            Ok(k) => view! {
                                <div class="ok" role="status">
                                    <p>{format!("Key `{}` created. Copy it now: it will not be shown again.", k.key.name)}</p>
                                    <code class="secret" data-testid="new-api-key">{k.secret}</code>
                                </div>
                            }.into_any(),
                            Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                        })}
                        {move || revoke.value().get().and_then(|r| r.err()).map(|e| view! { <ErrorBox message=error_text(&e)/> })}
                        {if keys.is_empty() {
                            view! { <EmptyState title="No API key yet"><p>"Create one above to script against the models."</p></EmptyState> }.into_any()
                        } else {
                            view! {
                                <table class="table" data-testid="api-keys">
                                    <thead><tr><th>"Key"</th><th>"Label"</th><th>"Created"</th><th>"Last used"</th><th>"Status"</th><th></th></tr></thead>
                                    <tbody>
                                        {keys.into_iter().map(|k| {
                                            let id = k.id;
                                            let active = k.revoked_at.is_none();
                                            view! {
                                                <tr>
                                                    <td><code>{format!("{}…", k.prefix)}</code></td>
                                                    <td>{k.name}</td>
                                                    <td>{format_time(k.created_at)}</td>
                                                    <td>{k.last_used_at.map(format_time).unwrap_or_else(|| "never".into())}</td>
                                                    <td>{k.revoked_at.map(|t| format!("revoked {}", format_time(t))).unwrap_or_else(|| "active".into())}</td>
                                                    <td>{active.then(|| view! {
                                                        <ActionForm action=revoke>
                                                            <input type="hidden" name="id" value=id/>
                                                            <button type="submit" class="secondary">"Revoke"</button>
                                                        </ActionForm>
                                                    })}</td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            }.into_any()
                        }}
                    </section>
                }.into_any(),
            })}
        </Transition>
    }
}
