//! Training: launch preference training on a dataset snapshot, the persistent job queue, and
//! one page per job with live curves (server-sent events), ETA, log and resolved config.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use medpo_types::{JobStatus, MetricsRow, TrainingJob};
use serde::{Deserialize, Serialize};

use crate::charts::LineChart;
use crate::components::{error_text, format_time, EmptyState, ErrorBox};

/// What the launch form offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchChoices {
    /// (id, name, variant) of local models (remote ones cannot be trained here).
    pub models: Vec<(i64, String, String)>,
    /// (snapshot id, "dataset vN · K pairs").
    pub snapshots: Vec<(i64, String)>,
    /// (loss_type, help line), every objective the training engine offers.
    pub objectives: Vec<(String, String)>,
    pub devices: Vec<String>,
    /// (benchmark, why it cannot run now).
    pub benchmarks: Vec<(String, Option<String>)>,
}

#[server]
pub async fn launch_options() -> Result<LaunchChoices, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let models = ctx.store.list_models().await.map_err(crate::ssr::store_err)?;
    let datasets = ctx.store.list_datasets().await.map_err(crate::ssr::store_err)?;
    Ok(LaunchChoices {
        models: models
            .into_iter()
            .filter(crate::ssr::runs_here)
            .map(|m| (m.id, m.name, m.variant))
            .collect(),
        snapshots: datasets
            .iter()
            .flat_map(|d| d.snapshots.iter().map(move |s| (s.id, format!("{} v{} · {} pairs", d.name, s.version, s.pair_count))))
            .collect(),
        objectives: crate::training_config::objectives(),
        devices: ctx.devices.clone(),
        benchmarks: crate::ssr::benchmark_choices(&ctx.benchmarks),
    })
}

#[server]
pub async fn list_jobs() -> Result<Vec<TrainingJob>, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    ctx.store.list_jobs().await.map_err(crate::ssr::store_err)
}

/// Queues a training job. Every setting is checked by the training engine's own validation
/// before anything is stored; a refusal names the setting.
#[server]
#[allow(clippy::too_many_arguments)]
pub async fn launch_job(
    name: String,
    base_model_id: i64,
    snapshot_id: i64,
    objective: String,
    device: String,
    use_peft: Option<String>,
    lora_r: String,
    learning_rate: String,
    beta: String,
    sft_weight: String,
    epochs: String,
    max_steps: String,
    batch_size: String,
    grad_accum: String,
    save_steps: String,
    seed: String,
    image_negative: String,
    eval_benchmark: String,
) -> Result<TrainingJob, ServerFnError> {
    use axum::http::StatusCode;
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    let bad = |m: String| crate::ssr::bad_input(StatusCode::UNPROCESSABLE_ENTITY, m);
    let num = |field: &str, v: &str| -> Result<serde_json::Value, ServerFnError> {
        let v = v.trim();
        if let Ok(i) = v.parse::<u64>() {
            return Ok(serde_json::json!(i));
        }
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| serde_json::json!(x))
            .ok_or_else(|| bad(format!("{field}: `{v}` is not a number")))
    };
    if name.trim().is_empty() {
        return Err(bad("give the job a name (it becomes the new model's name)".into()));
    }
    if !ctx.devices.contains(&device) {
        return Err(bad(format!("device `{device}` is not available on this server (available: {})", ctx.devices.join(", "))));
    }
    let base = ctx.store.model(base_model_id).await.map_err(crate::ssr::store_err)?;
    if base.layout == crate::ssr::REMOTE_LAYOUT {
        return Err(bad(format!("`{}` is served by a remote server and cannot be trained here", base.name)));
    }
    let snapshot = ctx.store.snapshot(snapshot_id).await.map_err(crate::ssr::store_err)?;
    let lora = use_peft.is_some_and(|v| v == "on" || v == "true");
    let mut settings = serde_json::json!({
        "loss_type": objective.trim(),
        "beta": num("beta", &beta)?,
        "learning_rate": num("learning rate", &learning_rate)?,
        "num_train_epochs": num("epochs", &epochs)?,
        "per_device_train_batch_size": num("batch size", &batch_size)?,
        "gradient_accumulation_steps": num("gradient accumulation", &grad_accum)?,
        "save_steps": num("checkpoint every", &save_steps)?,
        "seed": num("seed", &seed)?,
        "use_peft": lora,
    });
    if !sft_weight.trim().is_empty() {
        settings["sft_weight"] = num("NLL weight", &sft_weight)?;
    }
    if lora {
        settings["lora_r"] = num("LoRA rank", &lora_r)?;
        let r = settings["lora_r"].as_f64().unwrap_or(8.0);
        settings["lora_alpha"] = serde_json::json!(2.0 * r);
    }
    if !max_steps.trim().is_empty() {
        settings["max_steps"] = num("max steps", &max_steps)?;
    }
    let base_dir = crate::ssr::resolve_model_dir(&ctx.models_dir, &base.path);
    // Validated exactly as the worker will build it (the job id only changes paths).
    let cfg = crate::training_config::train_config(&settings, &base_dir, &ctx.data_dir, 0).map_err(&bad)?;
    if crate::training_config::needs_image_negative(&cfg.loss.loss_type) {
        let kind = if image_negative.trim().is_empty() { "roi-noise" } else { image_negative.trim() };
        kind.parse::<medpo_train::negatives::NegativeKind>().map_err(|e| bad(e.to_string()))?;
        settings["image_negative"] = serde_json::json!(kind);
    }
    if !eval_benchmark.trim().is_empty() {
        let spec = ctx
            .benchmarks
            .iter()
            .find(|b| b.name == eval_benchmark.trim())
            .ok_or_else(|| bad(format!("no benchmark `{}` on this server", eval_benchmark.trim())))?;
        if let Some(why) = spec.unavailable() {
            return Err(bad(why));
        }
        settings["eval_benchmarks"] = serde_json::json!([spec.name]);
    }
    let total = crate::training_config::total_steps(&cfg, snapshot.pair_count.max(0) as usize);
    let job = ctx
        .store
        .create_job(&medpo_types::NewTrainingJob {
            name: name.trim().to_string(),
            objective: objective.trim().to_string(),
            config: settings,
            base_model_id,
            snapshot_id: Some(snapshot_id),
            device,
            total_steps: total as i64,
            created_by: Some(user.id),
        })
        .await
        .map_err(crate::ssr::store_err)?;
    let _ = ctx.store.audit(Some(user.id), &user.username, "launch", &format!("training job {} `{}` ({})", job.id, job.name, job.objective)).await;
    tracing::info!(job = job.id, user = %user.username, "queued a training job");
    leptos_axum::redirect(&format!("/training/{}", job.id));
    Ok(job)
}

#[server]
pub async fn cancel_job(id: i64) -> Result<TrainingJob, ServerFnError> {
    let user = crate::auth::ssr::require(&[medpo_types::Role::Researcher]).await?;
    let ctx = crate::ssr::ctx()?;
    let job = ctx.store.request_cancel(id).await.map_err(crate::ssr::store_err)?;
    let _ = ctx.store.audit(Some(user.id), &user.username, "cancel", &format!("training job {id}")).await;
    Ok(job)
}

/// Everything the job page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: TrainingJob,
    pub base_name: String,
    pub result_name: Option<String>,
    pub snapshot: Option<String>,
    pub metrics: Vec<MetricsRow>,
    /// The last lines of the job's log.
    pub log: Vec<String>,
    /// How many lines the log has in all (the live stream sends the ones after).
    pub log_lines: usize,
    /// The training engine's configuration as the worker resolved it (JSON).
    pub resolved: Option<String>,
}

#[server]
pub async fn job_detail(id: i64) -> Result<JobInfo, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let job = ctx.store.job(id).await.map_err(crate::ssr::store_err)?;
    let base_name = ctx.store.model(job.base_model_id).await.map(|m| m.name).unwrap_or_else(|_| format!("model {}", job.base_model_id));
    let result_name = match job.result_model_id {
        Some(m) => ctx.store.model(m).await.ok().map(|m| m.name),
        None => None,
    };
    let snapshot = match job.snapshot_id {
        Some(s) => ctx.store.snapshot(s).await.ok().map(|s| format!("snapshot {} (v{}, {} pairs, sha256 {})", s.id, s.version, s.pair_count, &s.sha256[..12.min(s.sha256.len())])),
        None => None,
    };
    let metrics = ctx.store.job_metrics(id, 0).await.map_err(crate::ssr::store_err)?;
    let log_text = std::fs::read_to_string(crate::training_config::job_log(&ctx.data_dir, id)).unwrap_or_default();
    let lines: Vec<&str> = log_text.lines().collect();
    let log = lines[lines.len().saturating_sub(200)..].iter().map(|l| l.to_string()).collect();
    let log_lines = lines.len();
    let resolved = std::fs::read_to_string(crate::training_config::job_dir(&ctx.data_dir, id).join("config.json")).ok();
    Ok(JobInfo { job, base_name, result_name, snapshot, metrics, log, log_lines, resolved })
}

fn status_badge(s: JobStatus) -> impl IntoView {
    view! { <span class=format!("status status-{}", s.as_str()) data-testid="job-status">{s.as_str()}</span> }
}

#[component]
fn LaunchForm(opts: LaunchChoices, launch: ServerAction<LaunchJob>) -> impl IntoView {
    let help = RwSignal::new(opts.objectives.first().map(|o| o.1.clone()).unwrap_or_default());
    let objectives = opts.objectives.clone();
    let no_inputs = opts.models.is_empty() || opts.snapshots.is_empty();
    view! {
        <section class="panel">
            <h2>"Launch a training job"</h2>
            {no_inputs.then(|| view! {
                <p class="muted">"A job needs a base model (see " <a href="/models">"Models"</a> ") and a frozen dataset snapshot (see " <a href="/datasets">"Datasets"</a> ")."</p>
            })}
            <ActionForm action=launch attr:class="form-grid launch" attr:data-testid="launch-form">
                <label>"Name of the new model" <input name="name" required maxlength="100" placeholder="llava-med-dpo-votes-v1"/></label>
                <label>"Base model"
                    <select name="base_model_id" required>
                        {opts.models.iter().map(|(id, name, variant)| view! { <option value=*id>{format!("{name} ({variant})")}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Dataset snapshot"
                    <select name="snapshot_id" required>
                        {opts.snapshots.iter().rev().map(|(id, label)| view! { <option value=*id>{label.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Objective"
                    <select name="objective" on:change=move |ev| {
                        let v = event_target_value(&ev);
                        help.set(objectives.iter().find(|o| o.0 == v).map(|o| o.1.clone()).unwrap_or_default());
                    }>
                        {opts.objectives.iter().map(|(n, _)| view! { <option value=n.clone()>{n.clone()}</option> }).collect_view()}
                    </select>
                    <small class="muted" data-testid="objective-help">{move || help.get()}</small>
                </label>
                <label>"Device"
                    <select name="device">
                        {opts.devices.iter().map(|d| view! { <option value=d.clone()>{d.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"β" <input name="beta" value="0.1" inputmode="decimal"/><small class="muted">"the seed: 0.1"</small></label>
                <label>"Learning rate" <input name="learning_rate" value="1e-7" inputmode="decimal"/><small class="muted">"the seed: 1e-7 (full); LoRA usually 1e-5–1e-4"</small></label>
                <label>"Epochs" <input name="epochs" value="3" inputmode="numeric"/></label>
                <label>"Max steps (optional)" <input name="max_steps" value="" inputmode="numeric" placeholder="all epochs"/></label>
                <label>"Batch size" <input name="batch_size" value="4" inputmode="numeric"/></label>
                <label>"Gradient accumulation" <input name="grad_accum" value="4" inputmode="numeric"/><small class="muted">"the seed: 4 × 4 = 16 pairs per step"</small></label>
                <label>"NLL weight (dpo_nll)" <input name="sft_weight" value="1.0" inputmode="decimal"/></label>
                <label class="check"><input type="checkbox" name="use_peft" value="on" checked/> "LoRA (r below, α = 2r)"</label>
                <label>"LoRA rank" <input name="lora_r" value="8" inputmode="numeric"/></label>
                <label>"Checkpoint every (steps)" <input name="save_steps" value="10" inputmode="numeric"/><small class="muted">"a killed job resumes from the last one"</small></label>
                <label>"Seed" <input name="seed" value="42" inputmode="numeric"/></label>
                <label>"Image negative (CoPO, mDPO, MMedPO)"
                    <select name="image_negative">
                        <option value="roi-noise">"roi-noise: noise inside the rater's region"</option>
                        <option value="crop">"crop: a random crop"</option>
                    </select>
                </label>
                <label>"Evaluate when done"
                    <select name="eval_benchmark">
                        <option value="">"no evaluation"</option>
                        {opts.benchmarks.iter().map(|(b, why)| view! {
                            <option value=b.clone() disabled=why.is_some() title=why.clone().unwrap_or_default()>
                                {match why { Some(_) => format!("{b} (needs an images folder)"), None => b.clone() }}
                            </option>
                        }).collect_view()}
                    </select>
                </label>
                <button type="submit" disabled=no_inputs>"Queue the job"</button>
            </ActionForm>
            {move || launch.value().get().and_then(|r| r.err()).map(|e| view! { <ErrorBox message=error_text(&e)/> })}
        </section>
    }
}

#[component]
pub fn TrainingPage() -> impl IntoView {
    let launch = ServerAction::<LaunchJob>::new();
    let cancel = ServerAction::<CancelJob>::new();
    let opts = Resource::new(|| (), |_| launch_options());
    let jobs = Resource::new(move || (launch.version().get(), cancel.version().get()), |_| list_jobs());
    view! {
        <Title text="Training — MedPO Arena"/>
        <h1>"Training"</h1>
        <p class="lead">"Preference training (DPO, DPO+NLL, CoPO, mDPO, MMedPO, IPO, SimPO, ORPO, KTO, …) on a frozen dataset snapshot. Jobs wait in a queue kept in the database, one at a time per device, and resume from their last checkpoint after a restart. A finished job's model joins Compare, the arena and the leaderboards."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || opts.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(o) => view! { <LaunchForm opts=o launch=launch/> }.into_any(),
            })}
        </Transition>
        <h2>"Jobs"</h2>
        {move || cancel.value().get().and_then(|r| r.err()).map(|e| view! { <ErrorBox message=error_text(&e)/> })}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || jobs.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <EmptyState title="No training job yet">
                        <p>"Launch one above. From the command line: " <code>"medpo train --config train.toml"</code> "."</p>
                    </EmptyState>
                }.into_any(),
                Ok(list) => view! {
                    <table class="table" data-testid="jobs-table">
                        <thead><tr><th>"#"</th><th>"Name"</th><th>"Objective"</th><th>"Device"</th><th>"Status"</th><th>"Progress"</th><th>"Created"</th><th></th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|j| {
                                let pct = if j.total_steps > 0 { 100.0 * j.step as f64 / j.total_steps as f64 } else { 0.0 };
                                let id = j.id;
                                view! {
                                    <tr>
                                        <td>{j.id}</td>
                                        <td><a href=format!("/training/{id}")>{j.name}</a></td>
                                        <td><code>{j.objective}</code></td>
                                        <td>{j.device}</td>
                                        <td>{status_badge(j.status)}
                                            {j.error.map(|e| view! { <div class="error small">{e}</div> })}</td>
                                        <td><progress max="100" value=pct></progress>{format!(" {}/{}", j.step, j.total_steps)}</td>
                                        <td>{format_time(j.created_at)}</td>
                                        <td>{(!j.status.is_final() && !j.cancel_requested).then(|| view! {
                                            <ActionForm action=cancel>
                                                <input type="hidden" name="id" value=id/>
                                                <button type="submit" class="secondary">"Cancel"</button>
                                            </ActionForm>
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
    }
}

/// Curves of the job page: (title, metric key).
const CURVES: &[(&str, &str)] = &[
    ("Loss", "loss"),
    ("Reward margin", "rewards/margins"),
    ("Preference accuracy", "rewards/accuracies"),
    ("Learning rate", "learning_rate"),
];

fn series(rows: &[MetricsRow], key: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| r.metrics.get(key).and_then(|v| v.as_f64()).map(|v| (r.step as f64, v)))
        .collect()
}

/// Seconds left, from the pace of the steps seen since the page opened.
fn eta_text(steps_seen: &[(f64, i64)], total: i64) -> String {
    match (steps_seen.first(), steps_seen.last()) {
        (Some(&(t0, s0)), Some(&(t1, s1))) if s1 > s0 && total > s1 => {
            let per = (t1 - t0) / (s1 - s0) as f64 / 1000.0;
            let left = per * (total - s1) as f64;
            if left >= 90.0 { format!("ETA {:.0} min", left / 60.0) } else { format!("ETA {left:.0} s") }
        }
        _ => String::new(),
    }
}

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let cancel = ServerAction::<CancelJob>::new();
    let detail = Resource::new(move || (id(), cancel.version().get()), |(id, _)| job_detail(id));
    view! {
        <Title text="Training job — MedPO Arena"/>
        <p><a href="/training">"← Training"</a></p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || detail.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=error_text(&e)/> }.into_any(),
                Ok(d) => view! { <JobView detail=d cancel=cancel/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn JobView(detail: JobInfo, cancel: ServerAction<CancelJob>) -> impl IntoView {
    let job = detail.job.clone();
    let id = job.id;
    let rows = RwSignal::new(detail.metrics.clone());
    let status = RwSignal::new(job.status);
    let step = RwSignal::new(job.step);
    let total = RwSignal::new(job.total_steps);
    let error = RwSignal::new(job.error.clone());
    let result = RwSignal::new(job.result_model_id);
    let seen = RwSignal::new(Vec::<(f64, i64)>::new());
    let live = RwSignal::new(false);
    let log = RwSignal::new(detail.log.clone());
    let log_lines = detail.log_lines;
    // Live updates: server-sent events from /api/jobs/{id}/events, from the last step drawn
    // and the last log line shown.
    Effect::new(move |_| {
        let after = rows.get_untracked().last().map_or(0, |r| r.step);
        crate::browser::job_events(id, after, log_lines, move |kind, data| match kind {
            "log" => {
                if let Ok(new) = serde_json::from_str::<Vec<String>>(data) {
                    log.update(|l| {
                        l.extend(new);
                        let extra = l.len().saturating_sub(500);
                        l.drain(..extra);
                    });
                }
            }
            "metrics" => {
                if let Ok(new) = serde_json::from_str::<Vec<MetricsRow>>(data) {
                    rows.update(|r| {
                        for n in new {
                            if r.last().is_none_or(|l| l.step < n.step) {
                                r.push(n);
                            }
                        }
                    });
                }
            }
            "status" => {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                    if let Some(s) = v.get("status").and_then(|s| s.as_str()).and_then(JobStatus::parse) {
                        status.set(s);
                    }
                    if let Some(s) = v.get("step").and_then(|s| s.as_i64()) {
                        step.set(s);
                        seen.update(|v| v.push((js_sys::Date::now(), s)));
                    }
                    if let Some(t) = v.get("total_steps").and_then(|s| s.as_i64()) {
                        total.set(t);
                    }
                    error.set(v.get("error").and_then(|e| e.as_str()).map(String::from));
                    result.set(v.get("result_model_id").and_then(|e| e.as_i64()));
                }
            }
            "open" => live.set(true),
            _ => live.set(false),
        });
    });
    let cfg_text = serde_json::to_string_pretty(&job.config).unwrap_or_default();
    view! {
        <h1>{format!("Job {}: {}", job.id, job.name)}</h1>
        <p class="lead">
            <code>{job.objective.clone()}</code> " on " <strong>{detail.base_name.clone()}</strong>
            {detail.snapshot.clone().map(|s| format!(" · {s}"))} {format!(" · {} · created {}", job.device, format_time(job.created_at))}
        </p>
        <section class="panel job-status" data-testid="job-panel">
            <p>
                {move || status_badge(status.get())}
                " " <progress max=move || total.get().max(1) value=move || step.get()></progress>
                <span data-testid="job-step">{move || format!(" step {}/{}", step.get(), total.get())}</span>
                " " <span class="muted">{move || if status.get() == JobStatus::Running { eta_text(&seen.get(), total.get()) } else { String::new() }}</span>
                " " <span class="muted" data-testid="live">{move || if live.get() { "● live" } else { "" }}</span>
            </p>
            {move || error.get().map(|e| view! { <p class="error small">{e}</p> })}
            {move || result.get().map(|m| view! {
                <p class="ok" data-testid="job-result">"The new model (id " {m} ") has joined " <a href="/compare">"Compare"</a> ", the " <a href="/arena">"arena"</a> " and the " <a href="/leaderboard">"leaderboards"</a> "."
                {detail.result_name.clone().map(|n| format!(" Name: {n}."))}</p>
            })}
            {move || (!status.get().is_final()).then(|| view! {
                <ActionForm action=cancel>
                    <input type="hidden" name="id" value=id/>
                    <button type="submit" class="secondary">"Cancel the job"</button>
                </ActionForm>
            })}
        </section>
        <div class="charts" data-testid="job-charts">
            {move || {
                let r = rows.get();
                let x_max = total.get().max(r.last().map_or(1, |l| l.step)) as f64;
                CURVES.iter().map(|(title, key)| view! { <LineChart title=*title key=*key points=series(&r, key) x_max=x_max/> }).collect_view()
            }}
        </div>
        <details class="panel">
            <summary>"Settings and resolved configuration"</summary>
            <h3>"As launched"</h3>
            <pre>{cfg_text}</pre>
            <h3>"As the training engine runs it"</h3>
            <pre>{detail.resolved.clone().unwrap_or_else(|| "written when the job starts".into())}</pre>
        </details>
        <details class="panel" open>
            <summary>"Log"</summary>
            <pre class="log" data-testid="job-log">{move || log.get().join("\n")}</pre>
        </details>
    }
}
