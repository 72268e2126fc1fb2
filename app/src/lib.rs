//! MedPO Arena's web app: the HTML shell, the router and one module per page.
//!
//! Built twice: with `ssr` into the `medpo` server (pages render on the server and server
//! functions run there), and with `hydrate` into the wasm front end (`frontend/`), which
//! takes over the server-rendered HTML. Server-only code sits behind `#[cfg(feature = "ssr")]`
//! and never reaches the wasm build.

// The workbench view is a deeply nested type; its layout needs more than the default 128.
#![recursion_limit = "256"]

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

pub mod auth;
pub mod browser;
pub mod charts;
pub mod components;
pub mod pages;
pub mod vote;
pub mod workbench;
#[cfg(feature = "ssr")]
pub mod ssr;
#[cfg(feature = "ssr")]
pub mod training_config;

/// The HTML document around the app (server side only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="description" content="MedPO Arena: compare, rate and preference-tune medical vision-language models"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <HydrationScripts options=options.clone()/>
                <HashedStylesheet options id="leptos"/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The app: navigation bar and the route table. Every URL of the product is listed here.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="MedPO Arena"/>
        <Router>
            <header class="topbar">
                <A href="/" attr:class="brand">
                    <span class="brand-mark">"✚"</span>
                    " MedPO Arena"
                </A>
                <nav class="nav" aria-label="Main">
                    <A href="/compare">"Compare"</A>
                    <A href="/arena">"Arena"</A>
                    <A href="/datasets">"Datasets"</A>
                    <A href="/training">"Training"</A>
                    <A href="/leaderboard">"Leaderboard"</A>
                    <A href="/models">"Models"</A>
                </nav>
                <auth::AccountMenu/>
                <components::HydrationMarker/>
            </header>
            <main class="page">
                <Routes fallback=pages::not_found::NotFound>
                    <Route path=path!("/") view=pages::home::HomePage/>
                    <Route path=path!("/compare") view=pages::compare::ComparePage/>
                    <Route path=path!("/arena") view=pages::arena::ArenaPage/>
                    <Route path=path!("/datasets") view=pages::datasets::DatasetsPage/>
                    <Route path=path!("/datasets/snapshots/:id") view=pages::datasets::SnapshotPage/>
                    <Route path=path!("/training") view=pages::training::TrainingPage/>
                    <Route path=path!("/training/:id") view=pages::training::JobPage/>
                    <Route path=path!("/leaderboard") view=pages::leaderboard::LeaderboardPage/>
                    <Route path=path!("/models") view=pages::models::ModelsPage/>
                    <Route path=path!("/account") view=pages::account::AccountPage/>
                    <Route path=path!("/login") view=auth::LoginPage/>
                </Routes>
            </main>
            <footer class="footer">
                "MedPO Arena — research software; not a medical device. Answers are model outputs, not diagnoses."
            </footer>
        </Router>
    }
}
