//! Small components shared by several pages.

use leptos::prelude::*;

/// Sets `data-hydrated="true"` on `<body>` once the wasm app has taken over the page, so
/// browser tests (and curious users) can tell a hydrated page from server-rendered HTML.
#[component]
pub fn HydrationMarker() -> impl IntoView {
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
}

/// What to show when a list is empty: what it will hold, and the next step.
#[component]
pub fn EmptyState(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <div class="empty">
            <h3>{title}</h3>
            <div class="empty-next">{children()}</div>
        </div>
    }
}

/// A server error shown in the page.
#[component]
pub fn ErrorBox(message: String) -> impl IntoView {
    view! { <p class="error" role="alert">{message}</p> }
}

/// Renders the error of a server-function result, if any.
pub fn error_text(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// `12.3k`, `1.2M`, `7.2B` for parameter counts.
pub fn human_count(n: i64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n}")
    }
}

pub use medpo_types::format_time;
