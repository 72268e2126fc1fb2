//! Arena: blind votes and what they say about the models.

use leptos::prelude::*;
use leptos_meta::Title;
use medpo_types::{VoteOutcome, Winner};
use serde::{Deserialize, Serialize};

use crate::components::{error_text, format_time, EmptyState, ErrorBox};

/// Wins, losses and ties of one model over all votes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub model: String,
    pub wins: i64,
    pub losses: i64,
    pub ties: i64,
    pub both_bad: i64,
}

impl Record {
    /// Share of decided-or-tied battles won, ties counting half.
    pub fn win_rate(&self) -> f64 {
        let n = self.wins + self.losses + self.ties + self.both_bad;
        if n == 0 {
            0.0
        } else {
            (self.wins as f64 + 0.5 * (self.ties + self.both_bad) as f64) / n as f64
        }
    }
}

/// Tallies vote outcomes per model (both-bad counts like a tie for the record).
pub fn tally(votes: &[VoteOutcome]) -> Vec<Record> {
    let mut map: std::collections::BTreeMap<String, Record> = Default::default();
    let mut bump = |m: &str, f: fn(&mut Record)| {
        let r = map
            .entry(m.to_string())
            .or_insert_with(|| Record { model: m.to_string(), wins: 0, losses: 0, ties: 0, both_bad: 0 });
        f(r);
    };
    for v in votes {
        let (fa, fb): (fn(&mut Record), fn(&mut Record)) = match v.winner {
            Winner::A => (|r| r.wins += 1, |r| r.losses += 1),
            Winner::B => (|r| r.losses += 1, |r| r.wins += 1),
            Winner::Tie => (|r| r.ties += 1, |r| r.ties += 1),
            Winner::BothBad => (|r| r.both_bad += 1, |r| r.both_bad += 1),
        };
        bump(&v.model_a, fa);
        bump(&v.model_b, fb);
    }
    let mut out: Vec<Record> = map.into_values().collect();
    out.sort_by(|x, y| y.win_rate().total_cmp(&x.win_rate()).then(x.model.cmp(&y.model)));
    out
}

#[server]
pub async fn arena_overview() -> Result<(Vec<Record>, Vec<VoteOutcome>), ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let votes = ctx.store.vote_outcomes(None).await.map_err(crate::ssr::store_err)?;
    let records = tally(&votes);
    let recent = votes.into_iter().rev().take(25).collect();
    Ok((records, recent))
}

#[component]
pub fn ArenaPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| arena_overview());
    view! {
        <Title text="Arena — MedPO Arena"/>
        <h1>"Arena"</h1>
        <p class="lead">"Blind head-to-head votes by clinicians. Model names are revealed only after a vote."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || data.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok((records, _)) if records.is_empty() => view! {
                    <EmptyState title="No votes yet">
                        <p>"Start a blind comparison on the " <a href="/compare">"Compare"</a> " page and vote: A better, B better, tie or both bad, with error tags and a corrected answer."</p>
                    </EmptyState>
                }.into_any(),
                Ok((records, recent)) => view! {
                    <h2>"Standings"</h2>
                    <table class="table" data-testid="arena-standings">
                        <thead><tr><th>"Model"</th><th>"Win rate"</th><th>"Wins"</th><th>"Losses"</th><th>"Ties"</th><th>"Both bad"</th></tr></thead>
                        <tbody>
                            {records.into_iter().map(|r| view! {
                                <tr><td>{r.model.clone()}</td><td>{format!("{:.1}%", 100.0 * r.win_rate())}</td><td>{r.wins}</td><td>{r.losses}</td><td>{r.ties}</td><td>{r.both_bad}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
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
    }
}
