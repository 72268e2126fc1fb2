//! Charts drawn as inline SVG (no script, no CDN): a line chart for training curves and
//! interval bars (a value with its 95% CI whiskers) for leaderboards.

use leptos::prelude::*;

const W: f64 = 320.0;
const H: f64 = 160.0;
const PAD_L: f64 = 44.0;
const PAD_B: f64 = 18.0;
const PAD_T: f64 = 8.0;
const PAD_R: f64 = 8.0;

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The range of the points' y values, widened when flat so the line sits in the middle.
fn y_range(points: &[(f64, f64)]) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in points {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    (lo, hi)
}

/// The SVG path of `points` (x = step) in a `W × H` box.
pub fn line_path(points: &[(f64, f64)], x_max: f64) -> String {
    let (lo, hi) = y_range(points);
    let xm = x_max.max(1.0);
    let mut d = String::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        let px = PAD_L + (x / xm) * (W - PAD_L - PAD_R);
        let py = PAD_T + (1.0 - (y - lo) / (hi - lo)) * (H - PAD_T - PAD_B);
        d.push_str(&format!("{}{px:.1},{py:.1}", if i == 0 { "M" } else { " L" }));
    }
    d
}

/// One training curve: `points` are (step, value); `x_max` is the job's total steps.
#[component]
pub fn LineChart(title: &'static str, key: &'static str, points: Vec<(f64, f64)>, x_max: f64) -> impl IntoView {
    let (lo, hi) = y_range(&points);
    let last = points.last().map(|p| fmt_tick(p.1)).unwrap_or_else(|| "—".into());
    let n = points.len();
    let d = line_path(&points, x_max);
    let dots = if n == 1 { Some(d.clone()) } else { None };
    view! {
        <figure class="chart" data-testid=format!("chart-{key}") data-points=n>
            <figcaption>{title} <span class="muted">{format!(" last {last}")}</span></figcaption>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=format!("{title}: {n} points")>
                <line x1=PAD_L y1=PAD_T x2=PAD_L y2=H - PAD_B class="axis"/>
                <line x1=PAD_L y1=H - PAD_B x2=W - PAD_R y2=H - PAD_B class="axis"/>
                <text x=PAD_L - 4.0 y=PAD_T + 8.0 class="tick" text-anchor="end">{fmt_tick(hi)}</text>
                <text x=PAD_L - 4.0 y=H - PAD_B class="tick" text-anchor="end">{fmt_tick(lo)}</text>
                <text x=W - PAD_R y=H - 4.0 class="tick" text-anchor="end">{format!("step {}", x_max.max(1.0) as i64)}</text>
                <path d=d class="line" fill="none"/>
                {dots.map(|d| view! { <path d=format!("{d} l0.1,0") class="dot"/> })}
            </svg>
        </figure>
    }
}

/// One row of an interval chart.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalRow {
    pub label: String,
    pub value: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Differs significantly from its base (paired test, p < 0.05).
    pub significant: bool,
}

/// Horizontal bars on a 0–100% scale with 95% CI whiskers; a ★ marks rows that differ
/// significantly from their SFT base.
#[component]
pub fn IntervalBars(title: String, rows: Vec<IntervalRow>) -> impl IntoView {
    let row_h = 22.0;
    let label_w = 150.0;
    let width = 460.0;
    let plot = width - label_w - 60.0;
    let height = row_h * rows.len() as f64 + 20.0;
    let x = move |v: f64| label_w + v.clamp(0.0, 1.0) * plot;
    view! {
        <figure class="chart bars" data-testid="interval-bars">
            <figcaption>{title.clone()}</figcaption>
            <svg viewBox=format!("0 0 {width} {height}") role="img" aria-label=title>
                {rows.into_iter().enumerate().map(|(i, r)| {
                    let y = 4.0 + i as f64 * row_h;
                    let label = if r.significant { format!("{} ★", r.label) } else { r.label.clone() };
                    view! {
                        <g class=if r.significant { "bar significant" } else { "bar" }>
                            <text x=label_w - 6.0 y=y + 13.0 text-anchor="end" class="tick">{label}</text>
                            <rect x=label_w y=y + 3.0 width=(x(r.value) - label_w).max(0.5) height=row_h - 8.0/>
                            {match (r.lo, r.hi) {
                                (Some(lo), Some(hi)) => Some(view! {
                                    <g class="whisker">
                                        <line x1=x(lo) x2=x(hi) y1=y + row_h / 2.0 - 1.0 y2=y + row_h / 2.0 - 1.0/>
                                        <line x1=x(lo) x2=x(lo) y1=y + 4.0 y2=y + row_h - 6.0/>
                                        <line x1=x(hi) x2=x(hi) y1=y + 4.0 y2=y + row_h - 6.0/>
                                    </g>
                                }),
                                _ => None,
                            }}
                            <text x=x(r.hi.unwrap_or(r.value)) + 6.0 y=y + 13.0 class="tick">{format!("{:.1}", 100.0 * r.value)}</text>
                        </g>
                    }
                }).collect_view()}
                <line x1=label_w x2=label_w + plot y1=height - 14.0 y2=height - 14.0 class="axis"/>
                <text x=label_w y=height - 2.0 class="tick">"0"</text>
                <text x=label_w + plot y=height - 2.0 class="tick" text-anchor="end">"100%"</text>
            </svg>
        </figure>
    }
}
