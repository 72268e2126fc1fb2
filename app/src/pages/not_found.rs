//! The 404 page (also the router's fallback for unknown URLs).

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.set_status(axum::http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Title text="Not found — MedPO Arena"/>
        <section class="not-found">
            <h1>"404 — page not found"</h1>
            <p>"There is nothing at this address. Try the " <a href="/">"overview"</a> " or one of the areas in the bar above."</p>
        </section>
    }
}
