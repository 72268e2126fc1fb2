//! The ask-and-vote workbench shared by Compare (named) and Arena (blind): upload a scan
//! (PNG, JPEG or DICOM, with window/level for DICOM), ask a question, read the answers
//! stream in side by side, then vote with clinical feedback and a region on the image.

use leptos::prelude::*;
use medpo_types::{
    ColumnInfo, CompareEvent, CompareRequest, Region, Scan, SettingsOverride, Severity, SideTag, VoteReceipt, VoteRequest,
    Winner, ERROR_TAGS,
};
use send_wrapper::SendWrapper;
use serde::Deserialize;

use crate::components::ErrorBox;
use crate::vote::{workbench_info, BenchInfo};

/// The answer of `POST /api/scans`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Uploaded {
    pub scan: Option<Scan>,
    #[serde(default)]
    pub existing: bool,
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub source_format: String,
    #[serde(default)]
    pub meta: serde_json::Value,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Bumped after each stored vote, so a page can refresh what votes change (the ratings).
#[derive(Debug, Clone, Copy)]
pub struct VotesChanged(pub RwSignal<u32>);

/// One answer column as it streams in.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub info: ColumnInfo,
    pub text: String,
    pub done: Option<(i64, Option<i64>, usize)>,
    pub error: Option<String>,
}

const EXAMPLES: [&str; 5] = [
    "Is there evidence of a pneumothorax?",
    "What imaging modality is this?",
    "Which organ shows an abnormality?",
    "Is this image normal?",
    "Where is the lesion located?",
];

fn settings_text(s: &medpo_types::GenerationSettings) -> String {
    let mode = if s.temperature == 0.0 { "greedy".to_string() } else { format!("T {} · top-p {}", s.temperature, s.top_p) };
    format!("{mode} · repetition {} · max {} tokens · seed {}", s.repetition_penalty, s.max_new_tokens, s.seed)
}

fn meta_text(u: &Uploaded) -> String {
    let mut parts = vec![format!("{} · {}×{}", u.source_format.to_uppercase(), u.width, u.height)];
    for key in ["modality", "body_part", "view", "transfer_syntax"] {
        if let Some(v) = u.meta.get(key).and_then(|v| v.as_str()) {
            parts.push(v.to_string());
        }
    }
    if let Some(w) = u.meta.get("window_used").filter(|w| !w.is_null()) {
        let c = w.get("center").and_then(|v| v.as_f64());
        let wd = w.get("width").and_then(|v| v.as_f64());
        if let (Some(c), Some(wd)) = (c, wd) {
            parts.push(format!("window C {c:.0} / W {wd:.0}"));
        }
    }
    parts.join(" · ")
}

fn is_dicom_name(name: &str, mime: &str) -> bool {
    let n = name.to_ascii_lowercase();
    mime == "application/dicom" || n.ends_with(".dcm") || n.ends_with(".dicom") || !n.contains('.')
}

/// A phantom scan of the gallery (synthetic, with known findings) and questions about it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GalleryItem {
    /// File name under `/phantoms/`.
    pub image: String,
    /// `CT · abdomen`.
    pub label: String,
    pub questions: Vec<String>,
}

/// The phantom gallery: the test split of the server's phantom benchmark (written at start-up
/// into `<data-dir>/phantoms`), with up to three questions each.
#[server]
pub async fn phantom_gallery() -> Result<Vec<GalleryItem>, ServerFnError> {
    let ctx = crate::ssr::ctx()?;
    let dir = ctx.data_dir.join("phantoms");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let mut items: Vec<GalleryItem> = Vec::new();
    for line in read("cases.jsonl").lines() {
        let Ok(c) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if c["split"] != "test" {
            continue;
        }
        let modality = match c["modality"].as_str().unwrap_or("") {
            "xray" => "X-ray",
            "ct" => "CT",
            "mri" => "MRI",
            other => other,
        };
        items.push(GalleryItem {
            image: format!("{}.png", c["id"].as_str().unwrap_or("")),
            label: format!("{modality} · {}", c["region"].as_str().unwrap_or("")),
            questions: vec![],
        });
    }
    for line in read("vqa_test.jsonl").lines() {
        let Ok(q) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(image), Some(text)) = (q["image"].as_str(), q["text"].as_str()) else { continue };
        if let Some(it) = items.iter_mut().find(|i| i.image == image) {
            if it.questions.len() < 3 && q["answer_type"] != "CLOSED" || it.questions.is_empty() {
                it.questions.push(text.replace("<image>", "").trim().to_string());
            }
        }
    }
    items.truncate(12);
    Ok(items)
}

/// The workbench. `blind`: the server draws two models and hides their names until the vote.
#[component]
pub fn Workbench(blind: bool) -> impl IntoView {
    let info = Resource::new(|| (), |_| workbench_info());
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || info.get().map(|r| match r {
                Err(e) => view! { <ErrorBox message=crate::components::error_text(&e)/> }.into_any(),
                Ok(i) if !i.can_ask() => view! {
                    <div class="notice" data-testid="signin-to-ask">
                        {if i.role.is_some() {
                            "A viewer account can read results but not ask models or vote.".to_string()
                        } else {
                            "Sign in to upload a scan, ask the models and vote.".to_string()
                        }}
                        " " <a href=if blind { "/login?next=/arena" } else { "/login?next=/compare" }>"Sign in"</a>
                    </div>
                }.into_any(),
                Ok(i) => view! { <Bench info=i blind=blind/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn Bench(info: BenchInfo, blind: bool) -> impl IntoView {
    let can_vote = info.can_vote();
    let max_mb = info.max_upload_mb;
    let votes_changed = use_context::<VotesChanged>();
    // Scan.
    let scan = RwSignal::new(None::<Uploaded>);
    let preview = RwSignal::new(None::<Uploaded>);
    // The chosen file stays in the browser (re-sent for each window preview). A `SendWrapper`
    // only ever holds a value in the browser; on the server the slot stays empty.
    let pending = StoredValue::new(None::<SendWrapper<web_sys::File>>);
    let preset = RwSignal::new(String::new());
    let center = RwSignal::new(String::new());
    let width = RwSignal::new(String::new());
    let upload_error = RwSignal::new(None::<String>);
    let uploading = RwSignal::new(false);
    // Each upload request gets a number; a reply to an older one is dropped.
    let upload_seq = RwSignal::new(0u32);
    // Question and models.
    let question = RwSignal::new(String::new());
    let chosen = RwSignal::new(Vec::<i64>::new());
    let max_tokens = RwSignal::new("128".to_string());
    let temperature = RwSignal::new(String::new());
    // Stream.
    let columns = RwSignal::new(Vec::<Column>::new());
    let asking = RwSignal::new(false);
    let ask_error = RwSignal::new(None::<String>);
    let saved = RwSignal::new(None::<(i64, Vec<i64>)>);
    // Vote.
    let winner = RwSignal::new(None::<Winner>);
    let a_pos = RwSignal::new(0usize);
    let b_pos = RwSignal::new(1usize);
    let tags = RwSignal::new(Vec::<SideTag>::new());
    let rationale = RwSignal::new(String::new());
    let corrected = RwSignal::new(String::new());
    let region = RwSignal::new(None::<Region>);
    let marking = RwSignal::new(false);
    let receipt = RwSignal::new(None::<VoteReceipt>);
    let vote_error = RwSignal::new(None::<String>);
    let voting = RwSignal::new(false);

    let reset_answers = move || {
        columns.set(vec![]);
        saved.set(None);
        winner.set(None);
        tags.set(vec![]);
        rationale.set(String::new());
        corrected.set(String::new());
        region.set(None);
        receipt.set(None);
        vote_error.set(None);
        ask_error.set(None);
    };

    // The upload form for the pending file: `preview` renders only (DICOM window adjustment),
    // otherwise the server stores it.
    let build_form = move |as_preview: bool| -> Option<web_sys::FormData> {
        let file = pending.get_value()?;
        let form = web_sys::FormData::new().ok()?;
        let _ = form.append_with_blob_and_filename("file", &file, &file.name());
        let (p, c, w) = (preset.get_untracked(), center.get_untracked(), width.get_untracked());
        if !p.is_empty() {
            let _ = form.append_with_str("preset", &p);
        }
        if !c.trim().is_empty() || !w.trim().is_empty() {
            let _ = form.append_with_str("window_center", &c);
            let _ = form.append_with_str("window_width", &w);
        }
        if as_preview {
            let _ = form.append_with_str("preview", "1");
        }
        Some(form)
    };

    let send_file = move |as_preview: bool| {
        let Some(form) = build_form(as_preview) else { return };
        uploading.set(true);
        upload_error.set(None);
        upload_seq.update(|n| *n += 1);
        let seq = upload_seq.get_untracked();
        leptos::task::spawn_local(async move {
            let mut previewing = as_preview;
            let mut r = crate::browser::post_form::<Uploaded>("/api/scans", &form).await;
            if previewing && matches!(&r, Ok(u) if !u.source_format.eq_ignore_ascii_case("dicom")) {
                // Not DICOM after all: nothing to adjust, store it as it is.
                let Some(form) = build_form(false) else { return };
                previewing = false;
                r = crate::browser::post_form::<Uploaded>("/api/scans", &form).await;
            }
            if upload_seq.get_untracked() != seq {
                return;
            }
            uploading.set(false);
            match r {
                Ok(u) if previewing => preview.set(Some(u)),
                Ok(u) => {
                    preview.set(None);
                    region.set(None);
                    scan.set(Some(u));
                }
                Err(e) => upload_error.set(Some(e)),
            }
        });
    };

    let choose = move |file: web_sys::File| {
        let size_mb = file.size() / 1048576.0;
        let name = file.name();
        if size_mb > max_mb as f64 {
            // The server refuses it too; say so before sending 50 MB for nothing.
            upload_error.set(Some(format!("{name}: the file is {size_mb:.1} MB, larger than the upload limit of {max_mb} MB")));
            return;
        }
        let dicom = is_dicom_name(&name, &file.type_());
        pending.set_value(Some(SendWrapper::new(file)));
        preset.set(String::new());
        center.set(String::new());
        width.set(String::new());
        send_file(dicom);
    };

    let ask = move || {
        let Some(s) = scan.get_untracked().and_then(|u| u.scan) else { return };
        let settings = SettingsOverride {
            max_new_tokens: max_tokens.get_untracked().trim().parse().ok(),
            temperature: temperature.get_untracked().trim().parse().ok(),
            ..Default::default()
        };
        let req = CompareRequest {
            scan_id: s.id,
            question: question.get_untracked(),
            model_ids: if blind { vec![] } else { chosen.get_untracked() },
            blind,
            settings,
        };
        let Ok(body) = serde_json::to_string(&req) else { return };
        reset_answers();
        a_pos.set(0);
        b_pos.set(1);
        asking.set(true);
        leptos::task::spawn_local(async move {
            let r = crate::browser::post_json_lines("/api/compare", &body, |line| {
                let Ok(ev) = serde_json::from_str::<CompareEvent>(line) else { return };
                match ev {
                    CompareEvent::Start { columns: cols, .. } => columns.set(
                        cols.into_iter().map(|info| Column { info, text: String::new(), done: None, error: None }).collect(),
                    ),
                    CompareEvent::Token { column, text } => columns.update(|c| {
                        if let Some(c) = c.get_mut(column) {
                            c.text.push_str(&text);
                        }
                    }),
                    CompareEvent::Done { column, latency_ms, first_token_ms, tokens } => columns.update(|c| {
                        if let Some(c) = c.get_mut(column) {
                            c.done = Some((latency_ms, first_token_ms, tokens));
                        }
                    }),
                    CompareEvent::Error { column, message } => columns.update(|c| {
                        if let Some(c) = c.get_mut(column) {
                            c.error = Some(message);
                        }
                    }),
                    CompareEvent::Saved { comparison_id, answer_ids } => {
                        let good: Vec<usize> =
                            columns.with_untracked(|c| c.iter().enumerate().filter(|(_, c)| c.error.is_none()).map(|(i, _)| i).collect());
                        if good.len() >= 2 {
                            a_pos.set(good[0]);
                            b_pos.set(good[1]);
                        }
                        saved.set(Some((comparison_id, answer_ids)));
                    }
                    CompareEvent::Failed { message } => ask_error.set(Some(message)),
                }
            })
            .await;
            asking.set(false);
            match r {
                Err(e) => ask_error.set(Some(e)),
                Ok(()) if saved.get_untracked().is_none() && ask_error.get_untracked().is_none() => {
                    ask_error.set(Some("the answers stopped before they were stored; ask again".into()))
                }
                Ok(()) => {}
            }
        });
    };

    let submit = move || {
        let (Some((cid, _)), Some(w)) = (saved.get_untracked(), winner.get_untracked()) else { return };
        if voting.get_untracked() || receipt.get_untracked().is_some() || a_pos.get_untracked() == b_pos.get_untracked() {
            return;
        }
        let corr = corrected.get_untracked().trim().to_string();
        if w == Winner::BothBad && corr.is_empty() {
            vote_error.set(Some("Both bad: write the corrected answer; it becomes the preferred response.".into()));
            return;
        }
        let req = VoteRequest {
            comparison_id: cid,
            a_position: a_pos.get_untracked() as i64,
            b_position: b_pos.get_untracked() as i64,
            winner: w,
            tags: tags.get_untracked(),
            rationale: rationale.get_untracked(),
            corrected_answer: (!corr.is_empty()).then_some(corr),
            region: region.get_untracked(),
        };
        voting.set(true);
        vote_error.set(None);
        leptos::task::spawn_local(async move {
            let r = crate::vote::submit_vote(req).await;
            voting.set(false);
            // The user may have asked a new question meanwhile: this reply is not about it.
            if saved.get_untracked().map(|s| s.0) != Some(cid) {
                return;
            }
            match r {
                Ok(rc) => {
                    let (a, b) = (a_pos.get_untracked(), b_pos.get_untracked());
                    columns.update(|c| {
                        if let Some(col) = c.get_mut(a) {
                            col.info.model_name = Some(rc.model_a.clone());
                            col.info.model_id = Some(rc.model_a_id);
                        }
                        if let Some(col) = c.get_mut(b) {
                            col.info.model_name = Some(rc.model_b.clone());
                            col.info.model_id = Some(rc.model_b_id);
                        }
                    });
                    marking.set(false);
                    receipt.set(Some(rc));
                    if let Some(VotesChanged(tick)) = votes_changed {
                        tick.update(|t| *t += 1);
                    }
                }
                Err(e) => vote_error.set(Some(crate::components::error_text(&e))),
            }
        });
    };

    // Keyboard shortcuts while a comparison waits for a vote: 1 A, 2 B, 3 tie, 4 both bad,
    // Ctrl+Enter submits. Ignored while typing in a field.
    let keys = window_event_listener(leptos::ev::keydown, move |e: web_sys::KeyboardEvent| {
        if !can_vote || saved.get_untracked().is_none() || receipt.get_untracked().is_some() || voting.get_untracked() {
            return;
        }
        use wasm_bindgen::JsCast;
        let typing = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .map(|el| matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"))
            .unwrap_or(false);
        if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) {
            e.prevent_default();
            submit();
            return;
        }
        if typing || e.ctrl_key() || e.meta_key() || e.alt_key() {
            return;
        }
        let w = match e.key().as_str() {
            "1" => Winner::A,
            "2" => Winner::B,
            "3" => Winner::Tie,
            "4" => Winner::BothBad,
            _ => return,
        };
        winner.set(Some(w));
    });
    on_cleanup(move || keys.remove());

    let models = info.models.clone();
    let mut bases: Vec<String> = models.iter().map(|m| m.base.clone()).collect();
    bases.sort();
    bases.dedup();
    let enough_models = if blind { models.len() >= 2 } else { true };

    view! {
        <div class="bench" data-testid=if blind { "arena-bench" } else { "compare-bench" }>
            <section class="panel scan-panel">
                <h2>"1 · Scan"</h2>
                <label
                    class="dropzone"
                    data-testid="dropzone"
                    on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default()
                    on:drop=move |ev: web_sys::DragEvent| {
                        ev.prevent_default();
                        if let Some(f) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
                            choose(f);
                        }
                    }
                >
                    <input
                        type="file"
                        data-testid="scan-input"
                        accept=".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            if let Some(f) = input.files().and_then(|f| f.get(0)) {
                                choose(f);
                            }
                            input.set_value("");
                        }
                    />
                    <span>"Drop a PNG, JPEG or DICOM file here, or click to choose one (up to " {max_mb} " MB). DICOM files are de-identified: only the pixels and modality, body part and view are kept."</span>
                </label>
                <PhantomGallery on_pick=Callback::new(move |(image, q): (String, Option<String>)| {
                    if let Some(q) = q {
                        question.set(q);
                    }
                    upload_error.set(None);
                    leptos::task::spawn_local(async move {
                        match crate::browser::fetch_file(&format!("/phantoms/{image}"), &image).await {
                            Ok(f) => choose(f),
                            Err(e) => upload_error.set(Some(format!("{image}: {e}"))),
                        }
                    });
                })/>
                <Show when=move || uploading.get()>
                    <p class="muted" role="status">"Reading the scan…"</p>
                </Show>
                {move || upload_error.get().map(|e| view! { <p class="error" role="alert" data-testid="upload-error">{e}</p> })}
                {move || preview.get().map(|p| view! {
                    <div class="dicom-adjust" data-testid="dicom-adjust">
                        <img class="scan-img" src=p.url.clone() alt="DICOM preview"/>
                        <p class="muted" data-testid="scan-meta">{meta_text(&p)}</p>
                        <ul class="notes">{p.notes.iter().map(|n| view! { <li>{n.clone()}</li> }).collect_view()}</ul>
                        <div class="row">
                            <label>"Preset "
                                <select data-testid="preset" on:change=move |ev| {
                                    preset.set(event_target_value(&ev));
                                    center.set(String::new());
                                    width.set(String::new());
                                    send_file(true);
                                }>
                                    <option value="" selected=move || preset.get().is_empty()>"From the file"</option>
                                    <option value="lung" selected=move || preset.get() == "lung">"Lung (C −600 / W 1500)"</option>
                                    <option value="mediastinum" selected=move || preset.get() == "mediastinum">"Mediastinum (C 40 / W 400)"</option>
                                    <option value="bone" selected=move || preset.get() == "bone">"Bone (C 400 / W 1800)"</option>
                                    <option value="brain" selected=move || preset.get() == "brain">"Brain (C 40 / W 80)"</option>
                                </select>
                            </label>
                            <label>"Center " <input type="number" class="short" data-testid="window-center" prop:value=move || center.get() on:input=move |ev| center.set(event_target_value(&ev))/></label>
                            <label>"Width " <input type="number" class="short" data-testid="window-width" prop:value=move || width.get() on:input=move |ev| width.set(event_target_value(&ev))/></label>
                            <button type="button" on:click=move |_| send_file(true)>"Apply window"</button>
                        </div>
                        <button type="button" class="primary" data-testid="use-scan" on:click=move |_| send_file(false)>"Use this scan"</button>
                    </div>
                })}
                {move || scan.get().map(|u| {
                    view! {
                        <div class="scan-stage">
                            <img class="scan-img" data-testid="scan-img" src=u.url.clone() alt="The uploaded scan"/>
                        </div>
                        <p class="muted" data-testid="scan-meta">
                            {meta_text(&u)}
                            {u.scan.as_ref().map(|s| format!(" · scan #{}", s.id))}
                            {u.existing.then_some(" · already stored (same pixels)")}
                        </p>
                        <ul class="notes">{u.notes.iter().map(|n| view! { <li>{n.clone()}</li> }).collect_view()}</ul>
                    }
                })}
            </section>

            <section class="panel ask-panel">
                <h2>"2 · Question"</h2>
                <textarea
                    data-testid="question"
                    rows="3"
                    placeholder="Ask about the scan, e.g. “Is there a pneumothorax?”"
                    prop:value=move || question.get()
                    on:input=move |ev| question.set(event_target_value(&ev))
                ></textarea>
                <div class="chips">
                    {EXAMPLES.iter().map(|q| view! { <button type="button" class="chip" on:click=move |_| question.set(q.to_string())>{*q}</button> }).collect_view()}
                </div>
                {if blind {
                    view! { <p class="muted">"Two registered models are drawn at random (pairs with fewer votes come up more often) and shown as Model A and Model B on random sides. Their names appear after you vote."</p> }.into_any()
                } else {
                    view! {
                        <div class="groups" data-testid="model-picker">
                            {bases.into_iter().map(|b| {
                                let members: Vec<_> = models.iter().filter(|m| m.base == b).cloned().collect();
                                view! {
                                    <fieldset class="group">
                                        <legend>{b}</legend>
                                        {members.into_iter().map(|m| {
                                            let id = m.id;
                                            view! {
                                                <label class="check">
                                                    <input type="checkbox" data-testid="model-choice" value=m.name.clone()
                                                        prop:checked=move || chosen.get().contains(&id)
                                                        on:change=move |ev| {
                                                            let on = event_target_checked(&ev);
                                                            chosen.update(|c| { c.retain(|x| *x != id); if on { c.push(id); } });
                                                        }/>
                                                    {m.name.clone()} " " <span class="badge">{m.variant.clone()}</span>
                                                </label>
                                            }
                                        }).collect_view()}
                                    </fieldset>
                                }
                            }).collect_view()}
                        </div>
                        <p class="muted">"Choose 2 to 4 models: an SFT base and its preference-tuned variants."</p>
                    }.into_any()
                }}
                <details class="settings">
                    <summary>"Generation settings"</summary>
                    <label>"Max new tokens " <input type="number" class="short" min="1" max="1024" prop:value=move || max_tokens.get() on:input=move |ev| max_tokens.set(event_target_value(&ev))/></label>
                    <label>"Temperature " <input type="number" class="short" step="0.1" min="0" placeholder=if blind { "0 (greedy)" } else { "model default" } prop:value=move || temperature.get() on:input=move |ev| temperature.set(event_target_value(&ev))/></label>
                </details>
                {(!enough_models).then(|| view! { <p class="error" role="alert">"The arena needs at least two registered models; register them on the " <a href="/models">"Models"</a> " page."</p> })}
                <button
                    type="button"
                    class="primary"
                    data-testid="ask"
                    disabled=move || {
                        asking.get() || voting.get() || scan.get().and_then(|u| u.scan).is_none() || question.get().trim().is_empty()
                            || (!blind && !(2..=4).contains(&chosen.get().len())) || !enough_models
                    }
                    on:click=move |_| ask()
                >
                    {move || if asking.get() { "Answering…" } else if blind { "Ask two models" } else { "Ask the models" }}
                </button>
                {move || ask_error.get().map(|e| view! { <p class="error" role="alert" data-testid="ask-error">{e}</p> })}
            </section>

            <section class="answers" data-testid="answers">
                {move || {
                    let cols = columns.get();
                    let scan_id = scan.get().and_then(|u| u.scan).map(|s| s.id);
                    cols.into_iter().enumerate().map(|(i, c)| {
                        let seen = match (scan_id, c.info.model_id) {
                            (Some(s), Some(m)) => Some(format!("/api/scans/{s}/seen/{m}")),
                            _ => None,
                        };
                        view! {
                            <article class="answer" data-testid="answer-column" data-column=i>
                                <header>
                                    <h3>{c.info.label.clone()}
                                        {c.info.model_name.clone().map(|n| view! { " · " <span class="model-name" data-testid="model-name">{n}</span> })}
                                    </h3>
                                    <p class="muted small">{settings_text(&c.info.settings)}</p>
                                </header>
                                <div class="answer-text" data-testid="answer-text">{c.text.clone()}
                                    {(c.done.is_none() && c.error.is_none()).then(|| view! { <span class="cursor" aria-hidden="true">"▍"</span> })}
                                </div>
                                {c.error.clone().map(|e| view! { <p class="error" role="alert" data-testid="column-error">{e}</p> })}
                                {c.done.map(|(ms, first, n)| view! {
                                    <p class="muted small" data-testid="latency">{format!("{n} tokens in {ms} ms")}{first.map(|f| format!(" · first token after {f} ms"))}</p>
                                })}
                                {seen.map(|url| view! {
                                    <details class="seen"><summary>"What this model saw"</summary><img src=url loading="lazy" alt="The scan after this model's padding, resize and crop"/></details>
                                })}
                            </article>
                        }
                    }).collect_view()
                }}
            </section>

            {move || saved.get().map(|(cid, _)| {
                let n = columns.with(|c| c.len());
                let good: Vec<usize> = columns.with(|c| c.iter().enumerate().filter(|(_, c)| c.error.is_none()).map(|(i, _)| i).collect());
                if good.len() < 2 {
                    return view! { <p class="notice" data-testid="saved-note">"Comparison #" {cid} " stored, but fewer than two models answered, so there is nothing to vote on."</p> }.into_any();
                }
                let (scan_url, sw, sh) = scan.get_untracked().map(|u| (u.url, u.width as f64, u.height as f64)).unwrap_or_default();
                if !can_vote {
                    return view! { <p class="notice" data-testid="saved-note">"Comparison #" {cid} " stored. Only clinicians vote."</p> }.into_any();
                }
                view! { <VotePanel cid=cid n=n winner=winner a_pos=a_pos b_pos=b_pos tags=tags rationale=rationale corrected=corrected
                    region=region marking=marking receipt=receipt vote_error=vote_error voting=voting submit=submit blind=blind scan_url=scan_url sw=sw sh=sh good=good/> }.into_any()
            })}
        </div>
    }
}

#[allow(clippy::too_many_arguments)]
#[component]
fn VotePanel(
    cid: i64,
    n: usize,
    winner: RwSignal<Option<Winner>>,
    a_pos: RwSignal<usize>,
    b_pos: RwSignal<usize>,
    tags: RwSignal<Vec<SideTag>>,
    rationale: RwSignal<String>,
    corrected: RwSignal<String>,
    region: RwSignal<Option<Region>>,
    marking: RwSignal<bool>,
    receipt: RwSignal<Option<VoteReceipt>>,
    vote_error: RwSignal<Option<String>>,
    voting: RwSignal<bool>,
    submit: impl Fn() + Copy + Send + Sync + 'static,
    blind: bool,
    scan_url: String,
    sw: f64,
    sh: f64,
    /// Columns that answered (failed ones cannot be voted on).
    good: Vec<usize>,
) -> impl IntoView {
    let img_ref = NodeRef::<leptos::html::Img>::new();
    let drag_from = RwSignal::new(None::<(f64, f64)>);
    let good_count = good.len();
    // Region drawing, in pixel coordinates of the stored scan.
    let to_image = move |ev: &web_sys::PointerEvent| -> Option<(f64, f64)> {
        let img = img_ref.get()?;
        let r = img.get_bounding_client_rect();
        let (nw, nh) = (img.natural_width() as f64, img.natural_height() as f64);
        if r.width() <= 0.0 || r.height() <= 0.0 || nw <= 0.0 {
            return None;
        }
        let x = ((ev.client_x() as f64 - r.left()) / r.width() * nw).clamp(0.0, nw);
        let y = ((ev.client_y() as f64 - r.top()) / r.height() * nh).clamp(0.0, nh);
        Some((x.round(), y.round()))
    };
    let drag_box = move |from: (f64, f64), to: (f64, f64)| Region {
        x: from.0.min(to.0),
        y: from.1.min(to.1),
        w: (from.0 - to.0).abs(),
        h: (from.1 - to.1).abs(),
    };

    let (w, h) = (sw.max(1.0), sh.max(1.0));
    let choice = move |w: Winner, label: &'static str, key: &'static str| {
        view! {
            <button type="button" class="choice" data-testid=format!("vote-{}", w.as_str())
                class:selected=move || winner.get() == Some(w)
                aria-pressed=move || (winner.get() == Some(w)).to_string()
                on:click=move |_| winner.set(Some(w))>
                {label} " " <kbd>{key}</kbd>
            </button>
        }
    };
    let tag_rows = move |side: char| {
        ERROR_TAGS.iter().map(|(key, label)| {
            let key = key.to_string();
            let k2 = key.clone();
            let k3 = key.clone();
            let tag_id = format!("tag-{side}-{key}");
            let sev_id = format!("severity-{side}-{key}");
            let has = move || tags.with(|t| t.iter().any(|x| x.side == side && x.tag == k2));
            view! {
                <div class="tag-row">
                    <label class="check">
                        <input type="checkbox" data-testid=tag_id prop:checked=has.clone()
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                let k = key.clone();
                                tags.update(|t| {
                                    t.retain(|x| !(x.side == side && x.tag == k));
                                    if on { t.push(SideTag { side, tag: k, severity: Severity::Minor }); }
                                });
                            }/>
                        {*label}
                    </label>
                    <select data-testid=sev_id aria-label=format!("Severity: {label}, answer {}", side.to_ascii_uppercase()) disabled=move || !has()
                        on:change={
                            let k = k3.clone();
                            move |ev| {
                                let sev = Severity::parse(&event_target_value(&ev)).unwrap_or(Severity::Minor);
                                tags.update(|t| t.iter_mut().filter(|x| x.side == side && x.tag == k).for_each(|x| x.severity = sev));
                            }
                        }>
                        <option value="minor">"minor"</option>
                        <option value="major">"major"</option>
                        <option value="critical">"critical"</option>
                    </select>
                </div>
            }
        }).collect_view()
    };
    let _ = n;
    let pos_select = move |sig: RwSignal<usize>, testid: &'static str, label: &'static str| {
        let good = good.clone();
        view! {
            <select data-testid=testid aria-label=label on:change=move |ev| sig.set(event_target_value(&ev).parse().unwrap_or(0))>
                {good.into_iter().map(|i| view! { <option value=i.to_string() selected=move || sig.get() == i>{format!("Model {}", (b'A' + i as u8) as char)}</option> }).collect_view()}
            </select>
        }
    };
    view! {
        <section class="panel vote-panel" data-testid="vote-panel">
            <h2>"3 · Your judgement"</h2>
            {(good_count > 2).then(|| view! { <p>"Compare " {pos_select(a_pos, "pick-a", "Answer A")} " (A) with " {pos_select(b_pos, "pick-b", "Answer B")} " (B)."</p> })}
            <div class="choices">
                {choice(Winner::A, "A is better", "1")}
                {choice(Winner::B, "B is better", "2")}
                {choice(Winner::Tie, "Tie", "3")}
                {choice(Winner::BothBad, "Both bad", "4")}
            </div>
            <details class="tags" open>
                <summary>"Errors (tag each with a severity)"</summary>
                <div class="tag-cols">
                    <div><h4>"Answer A"</h4>{tag_rows('a')}</div>
                    <div><h4>"Answer B"</h4>{tag_rows('b')}</div>
                </div>
            </details>
            <label>"Rationale"
                <textarea data-testid="rationale" rows="2" placeholder="What decided it? (optional)"
                    prop:value=move || rationale.get() on:input=move |ev| rationale.set(event_target_value(&ev))></textarea>
            </label>
            <label>{move || if winner.get() == Some(Winner::BothBad) { "Corrected answer (required: it becomes the preferred response)" } else { "Corrected answer (optional: replaces the winner as the preferred response)" }}
                <textarea data-testid="corrected" rows="2" prop:value=move || corrected.get() on:input=move |ev| corrected.set(event_target_value(&ev))></textarea>
            </label>
            <div class="row">
                <button type="button" data-testid="mark-region" class:selected=move || marking.get() on:click=move |_| marking.update(|m| *m = !*m)>
                    {move || if marking.get() { "Drawing: drag on the image" } else { "Mark the evidence on the image" }}
                </button>
                {move || region.get().map(|r| view! {
                    <span class="muted" data-testid="region-text">{format!("box at ({:.0}, {:.0}), {:.0}×{:.0} px", r.x, r.y, r.w, r.h)}</span>
                    <button type="button" class="link" on:click=move |_| region.set(None)>"clear"</button>
                })}
            </div>
            <div
                class="scan-stage vote-stage"
                class:marking=move || marking.get()
                data-testid="region-stage"
                on:pointerdown=move |ev: web_sys::PointerEvent| {
                    if !marking.get_untracked() { return; }
                    ev.prevent_default();
                    // Keep the drag even when the pointer leaves the image.
                    use wasm_bindgen::JsCast;
                    if let Some(el) = ev.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
                        let _ = el.set_pointer_capture(ev.pointer_id());
                    }
                    if let Some(p) = to_image(&ev) { drag_from.set(Some(p)); region.set(None); }
                }
                on:pointermove=move |ev: web_sys::PointerEvent| {
                    if ev.buttons() == 0 { drag_from.set(None); return; }
                    if let (Some(from), Some(p)) = (drag_from.get_untracked(), to_image(&ev)) { region.set(Some(drag_box(from, p))); }
                }
                on:pointercancel=move |_| drag_from.set(None)
                on:pointerup=move |ev: web_sys::PointerEvent| {
                    if let (Some(from), Some(p)) = (drag_from.get_untracked(), to_image(&ev)) {
                        let b = drag_box(from, p);
                        region.set((b.w >= 2.0 && b.h >= 2.0).then_some(b));
                    }
                    drag_from.set(None);
                }
            >
                <img node_ref=img_ref class="scan-img" data-testid="region-img" src=scan_url alt="The scan: drag a box over the evidence" draggable="false"/>
                {move || region.get().map(|r| view! {
                    <div class="region-box" data-testid="region-box"
                        style:left=format!("{}%", r.x / w * 100.0)
                        style:top=format!("{}%", r.y / h * 100.0)
                        style:width=format!("{}%", r.w / w * 100.0)
                        style:height=format!("{}%", r.h / h * 100.0)></div>
                })}
            </div>
            <div class="row">
                <button type="button" class="primary" data-testid="submit-vote"
                    disabled=move || winner.get().is_none() || voting.get() || receipt.get().is_some() || a_pos.get() == b_pos.get()
                    on:click=move |_| submit()>
                    "Submit vote" <kbd>"Ctrl+Enter"</kbd>
                </button>
                <span class="muted small">"Comparison #" {cid}</span>
            </div>
            {move || vote_error.get().map(|e| view! { <p class="error" role="alert" data-testid="vote-error">{e}</p> })}
            {move || receipt.get().map(|r| view! {
                <p class="ok" role="status" data-testid="vote-receipt">
                    "Vote #" {r.vote_id} " stored"
                    {match r.pairs { 0 => String::new(), 1 => " (1 preference pair)".into(), k => format!(" ({k} preference pairs)") }}
                    ". " {if blind { "Model A was " } else { "A: " }} <strong data-testid="reveal-a">{r.model_a.clone()}</strong>
                    {if blind { ", Model B was " } else { ", B: " }} <strong data-testid="reveal-b">{r.model_b.clone()}</strong> "."
                </p>
            })}
        </section>
    }
}

/// Thumbnails of the phantom gallery; picking one loads it like an upload and fills in a
/// question about it.
#[component]
fn PhantomGallery(on_pick: Callback<(String, Option<String>)>) -> impl IntoView {
    let items = Resource::new(|| (), |_| phantom_gallery());
    view! {
        <Transition fallback=|| ()>
            {move || items.get().and_then(|r| r.ok()).filter(|v| !v.is_empty()).map(|list| view! {
                <details class="gallery" data-testid="gallery">
                    <summary>"No scan at hand? Try a phantom scan (synthetic, with known findings; not patient data)"</summary>
                    <div class="thumbs">
                        {list.into_iter().map(|g| {
                            let (image, q) = (g.image.clone(), g.questions.first().cloned());
                            view! {
                                <button type="button" class="thumb" data-testid="gallery-item" title=g.questions.join(" · ")
                                    on:click=move |_| on_pick.run((image.clone(), q.clone()))>
                                    <img src=format!("/phantoms/{}", g.image) alt=g.label.clone() width="96" height="96" loading="lazy"/>
                                    <span>{g.label.clone()}</span>
                                </button>
                            }
                        }).collect_view()}
                    </div>
                </details>
            })}
        </Transition>
    }
}
