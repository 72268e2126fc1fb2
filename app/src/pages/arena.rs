//! Arena: blind battles (two models drawn at random, names revealed after the vote), the
//! Bradley–Terry ratings with bootstrap intervals that the votes give, and the rater's own
//! history.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::VoteOutcome;
use serde::{Deserialize, Serialize};

use crate::components::{error_text, format_time, EmptyState, ErrorBox};
use crate::vote::my_votes;
use crate::workbench::{VotesChanged, Workbench};

/// One row of the ratings table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub model: String,
    pub rating: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub votes: usize,
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
    pub both_bad: usize,
}

/// Bradley–Terry ratings (medpo-eval, 200 bootstrap rounds) and the latest votes.
#[server]
pub async fn arena_overview() -> Result<(Vec<Rating>, Vec<VoteOutcome>), ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let votes = ctx.store.vote_outcomes(None).await.map_err(crate::ssr::store_err)?;
    let eval_votes = crate::ssr::eval_votes(&votes);
    let ratings = if eval_votes.is_empty() {
        vec![]
    } else {
        let cfg = medpo_eval::bootstrap_ci::BootstrapConfig { rounds: 200, ..Default::default() };
        tokio::task::spawn_blocking(move || medpo_eval::bradley_terry::bt_ratings(&eval_votes, &cfg))
            .await
            .map_err(|e| ServerFnError::new(format!("rating failed: {e}")))?
            .map_err(|e| ServerFnError::new(format!("rating failed: {e}")))?
            .into_iter()
            .map(|r| Rating {
                model: r.model,
                rating: r.rating,
                ci_low: r.ci_low,
                ci_high: r.ci_high,
                votes: r.votes,
                wins: r.wins,
                losses: r.losses,
                ties: r.ties,
                both_bad: r.both_bad,
            })
            .collect()
    };
    let recent = votes.into_iter().rev().take(25).collect();
    Ok((ratings, recent))
}

#[component]
pub fn ArenaPage() -> impl IntoView {
    let tick = RwSignal::new(0u32);
    provide_context(VotesChanged(tick));
    let data = Resource::new(move || tick.get(), |_| arena_overview());
    let mine = Resource::new(move || tick.get(), |_| my_votes());
    view! {
        <Title text="Arena — MedPO Arena"/>
        <h1>"Arena"</h1>
        <p class="lead">"Blind head-to-head votes by clinicians. Model names are revealed only after a vote."</p>
        <Workbench blind=true/>
        <h2>"Ratings"</h2>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || data.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok((ratings, _)) if ratings.is_empty() => view! {
                    <EmptyState title="No votes yet">
                        <p>"Upload a scan above, ask two models and vote: A better, B better, tie or both bad, with error tags and a corrected answer. Ratings appear after the first vote."</p>
                    </EmptyState>
                }.into_any(),
                Ok((ratings, recent)) => view! {
                    <table class="table" data-testid="arena-standings">
                        <thead><tr><th>"Model"</th><th>"Rating (Bradley–Terry)"</th><th>"95% interval"</th><th>"Votes"</th><th>"Wins"</th><th>"Losses"</th><th>"Ties"</th><th>"Both bad"</th></tr></thead>
                        <tbody>
                            {ratings.into_iter().map(|r| view! {
                                <tr><td>{r.model.clone()}</td><td>{format!("{:.0}", r.rating)}</td><td>{format!("{:.0} – {:.0}", r.ci_low, r.ci_high)}</td>
                                    <td>{r.votes}</td><td>{r.wins}</td><td>{r.losses}</td><td>{r.ties}</td><td>{r.both_bad}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <p class="muted small">"Ties and both-bad count as half a win each; intervals from 200 bootstrap resamples of the votes."</p>
                    <h2>"Latest votes"</h2>
                    <table class="table">
                        <thead><tr><th>"Comparison"</th><th>"A"</th><th>"B"</th><th>"Verdict"</th><th>"When"</th></tr></thead>
                        <tbody>
                            {recent.into_iter().map(|v| view! {
                                <tr><td>{v.comparison_id}</td><td>{v.model_a}</td><td>{v.model_b}</td><td>{v.winner.as_str().replace('_', " ")}</td><td>{format_time(v.created_at)}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || mine.get().map(|r| match r {
                Ok(v) if !v.is_empty() => view! {
                    <h2>"Your votes"</h2>
                    <table class="table" data-testid="my-votes">
                        <thead><tr><th>"Vote"</th><th>"Question"</th><th>"A"</th><th>"B"</th><th>"Verdict"</th><th>"Tags"</th><th>"Region"</th><th>"Mode"</th><th>"When"</th></tr></thead>
                        <tbody>
                            {v.into_iter().map(|v| view! {
                                <tr><td>{v.vote_id}</td><td>{v.question}</td><td>{v.model_a}</td><td>{v.model_b}</td>
                                    <td>{v.winner.as_str().replace('_', " ")}</td><td>{v.tags}</td><td>{if v.has_region { "yes" } else { "—" }}</td>
                                    <td>{if v.blind { "blind" } else { "named" }}</td><td>{format_time(v.created_at)}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
                _ => ().into_any(),
            })}
        </Transition>
    }
}
