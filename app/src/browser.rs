//! Browser-side HTTP for the endpoints that server functions do not fit: multipart upload and
//! a streamed (NDJSON) response read line by line. Only called from event handlers, which run
//! in the browser; on the server these functions are never reached.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The `error` field of a JSON error answer, or a message for the status.
fn error_message(status: u16, body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return e.to_string();
        }
    }
    match status {
        401 => "sign in first (your session may have expired)".into(),
        403 => "your account is not allowed to do this".into(),
        413 => "the file is larger than the server's upload limit".into(),
        _ if body.trim().is_empty() => format!("the server answered {status}"),
        _ => format!("the server answered {status}: {}", body.trim()),
    }
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| "the request failed (network error)".into())
}

async fn send(url: &str, method: &str, body: &JsValue, content_type: Option<&str>) -> Result<web_sys::Response, String> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_body(body);
    init.set_credentials(web_sys::RequestCredentials::SameOrigin);
    let headers = web_sys::Headers::new().map_err(js_err)?;
    if let Some(ct) = content_type {
        headers.set("content-type", ct).map_err(js_err)?;
    }
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(js_err)?;
    let window = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(window.fetch_with_request(&req)).await.map_err(js_err)?;
    resp.dyn_into::<web_sys::Response>().map_err(js_err)
}

async fn text(resp: &web_sys::Response) -> String {
    match resp.text() {
        Ok(p) => JsFuture::from(p).await.ok().and_then(|v| v.as_string()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Posts a form; returns the parsed JSON answer or the error message.
pub async fn post_form<T: serde::de::DeserializeOwned>(url: &str, form: &web_sys::FormData) -> Result<T, String> {
    let resp = send(url, "POST", form.as_ref(), None).await?;
    let body = text(&resp).await;
    if !resp.ok() {
        return Err(error_message(resp.status(), &body));
    }
    serde_json::from_str(&body).map_err(|e| format!("unexpected answer from the server: {e}"))
}

/// Posts JSON and calls `on_line` with each line of the streamed answer as it arrives.
pub async fn post_json_lines(url: &str, body: &str, mut on_line: impl FnMut(&str)) -> Result<(), String> {
    let resp = send(url, "POST", &JsValue::from_str(body), Some("application/json")).await?;
    if !resp.ok() {
        let body = text(&resp).await;
        return Err(error_message(resp.status(), &body));
    }
    let stream = resp.body().ok_or("the server sent no body")?;
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(js_err)?;
        let done = js_sys::Reflect::get(&chunk, &JsValue::from_str("done")).ok().and_then(|v| v.as_bool()).unwrap_or(true);
        if let Ok(value) = js_sys::Reflect::get(&chunk, &JsValue::from_str("value")) {
            if let Some(arr) = value.dyn_ref::<js_sys::Uint8Array>() {
                buf.extend(arr.to_vec());
            }
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if !line.trim().is_empty() {
                on_line(&line);
            }
        }
        if done {
            break;
        }
    }
    Ok(())
}

/// Follows a training job's server-sent events (`/api/jobs/{id}/events?after=STEP`): calls
/// `on(kind, data)` for each `metrics`, `log` and `status` event, `on("open", "")` when connected and
/// `on("error", "")` when the connection drops (the browser reconnects by itself, resuming
/// after the last step it got). Closed once the job's status is final, or when the page goes.
pub fn job_events(id: i64, after: i64, log_after: usize, on: impl Fn(&str, &str) + 'static) {
    use wasm_bindgen::closure::Closure;
    let Ok(es) = web_sys::EventSource::new(&format!("/api/jobs/{id}/events?after={after}&log_after={log_after}")) else {
        on("error", "");
        return;
    };
    let on = std::rc::Rc::new(on);
    for kind in ["metrics", "status", "log"] {
        let (on, es2) = (on.clone(), es.clone());
        let cb = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            let Some(data) = e.data().as_string() else { return };
            on(kind, &data);
            if kind == "status" {
                let status = serde_json::from_str::<serde_json::Value>(&data)
                    .ok()
                    .and_then(|v| v.get("status").and_then(|s| s.as_str()).and_then(medpo_types::JobStatus::parse));
                if status.is_some_and(|s| s.is_final()) {
                    es2.close();
                    on("closed", "");
                }
            }
        });
        let _ = es.add_event_listener_with_callback(kind, cb.as_ref().unchecked_ref());
        cb.forget();
    }
    let on_open = on.clone();
    let open = Closure::<dyn FnMut()>::new(move || on_open("open", ""));
    es.set_onopen(Some(open.as_ref().unchecked_ref()));
    open.forget();
    let on_err = on.clone();
    let err = Closure::<dyn FnMut()>::new(move || on_err("error", ""));
    es.set_onerror(Some(err.as_ref().unchecked_ref()));
    err.forget();
    let es = send_wrapper::SendWrapper::new(es);
    leptos::prelude::on_cleanup(move || es.close());
}

/// Fetches `url` (same origin) into a `File` named `name`, as if the user had chosen it.
pub async fn fetch_file(url: &str, name: &str) -> Result<web_sys::File, String> {
    let resp = send(url, "GET", &JsValue::NULL, None).await?;
    if !resp.ok() {
        let body = text(&resp).await;
        return Err(error_message(resp.status(), &body));
    }
    let blob = JsFuture::from(resp.blob().map_err(js_err)?).await.map_err(js_err)?;
    let parts = js_sys::Array::of1(&blob);
    web_sys::File::new_with_blob_sequence(&parts, name).map_err(js_err)
}
