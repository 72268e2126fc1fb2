//! The overview: what the database holds and where to go next.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::Overview;

use crate::components::{error_text, ErrorBox};

#[server]
pub async fn get_overview() -> Result<Overview, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    ctx.store.overview().await.map_err(crate::ssr::store_err)
}

#[component]
pub fn HomePage() -> impl IntoView {
    let overview = Resource::new(|| (), |_| get_overview());
    view! {
        <Title text="Overview — MedPO Arena"/>
        <section class="hero">
            <h1>"Compare, rate and preference-tune medical VLMs"</h1>
            <p class="lead">
                "Upload a scan and a question, see the SFT model beside its DPO-family variants, vote as a clinician, "
                "turn votes into versioned preference datasets, train, and watch the new checkpoint join the leaderboards."
            </p>
        </section>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || overview.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(o) => view! {
                    <div class="cards">
                        <Card href="/models" label="Models" value=o.models hint="registered checkpoints"/>
                        <Card href="/compare" label="Scans" value=o.scans hint="uploaded, de-identified"/>
                        <Card href="/compare" label="Comparisons" value=o.comparisons hint="questions asked"/>
                        <Card href="/arena" label="Votes" value=o.votes hint="clinician judgements"/>
                        <Card href="/datasets" label="Preference pairs" value=o.pairs hint="from votes and imports"/>
                        <Card href="/datasets" label="Datasets" value=o.datasets hint="versioned snapshots"/>
                        <Card href="/training" label="Training jobs" value=o.jobs hint="DPO-family runs"/>
                        <Card href="/leaderboard" label="Evaluation runs" value=o.eval_runs hint="VQA-RAD, SLAKE, PathVQA"/>
                    </div>
                    <NextStep o=o/>
                }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn Card(href: &'static str, label: &'static str, value: i64, hint: &'static str) -> impl IntoView {
    view! {
        <a class="card" href=href data-testid=format!("count-{}", label.to_lowercase().replace(' ', "-"))>
            <span class="card-value">{value}</span>
            <span class="card-label">{label}</span>
            <span class="card-hint">{hint}</span>
        </a>
    }
}

#[component]
fn NextStep(o: Overview) -> impl IntoView {
    let (text, href, link) = if o.models == 0 {
        ("No model is registered yet. Put a checkpoint folder in the models directory, or register one by path.", "/models", "Register a model")
    } else if o.votes == 0 {
        ("Models are ready. Ask them a question about a scan and vote on their answers.", "/compare", "Start comparing")
    } else if o.datasets == 0 {
        ("You have votes. Freeze them into a versioned preference dataset.", "/datasets", "Create a dataset")
    } else if o.jobs == 0 {
        ("You have a dataset. Launch a preference-training job on it.", "/training", "Train a model")
    } else {
        ("See how the models compare on the benchmarks and in the arena.", "/leaderboard", "Open the leaderboard")
    };
    view! {
        <div class="next-step">
            <p>{text}</p>
            <a class="button" href=href>{link}</a>
        </div>
    }
}
