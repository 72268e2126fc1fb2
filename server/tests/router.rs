//! The HTTP application without a socket: health, readiness, server-rendered pages, the
//! 404 page, the request size limit and a server-function round trip.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use medpo_server::{router, AppState};
use tower::ServiceExt;

async fn app(max_upload_mb: u64) -> (axum::Router, medpo_store::Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let config = common::config(dir.path(), |s| {
        s.models_dir = Some(models);
        s.max_upload_mb = Some(max_upload_mb);
    });
    let store = medpo_server::open_store(&config).await.unwrap();
    let state = AppState::new(config, store.clone());
    (router(state), store, dir)
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let res = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 10 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_and_readiness() {
    let (app, store, _d) = app(50).await;
    assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    store.close().await;
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("database unavailable"), "{body}");
}

#[tokio::test]
async fn every_page_renders_on_the_server_with_database_data() {
    let (app, store, _d) = app(50).await;
    store.create_dataset("chest-xray-votes", "from the arena", None).await.unwrap();
    for (path, h1) in [
        ("/", "Compare, rate and preference-tune medical VLMs"),
        ("/compare", "Compare"),
        ("/arena", "Arena"),
        ("/datasets", "Datasets"),
        ("/training", "Training"),
        ("/leaderboard", "Leaderboard"),
        ("/models", "Models"),
    ] {
        let (status, html) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains(&format!("<h1>{h1}</h1>")), "{path}: no h1 {h1}");
        assert!(html.contains("aria-label=\"Main\""), "{path}: no navigation bar");
    }
    let (_, html) = get(&app, "/datasets").await;
    assert!(html.contains("chest-xray-votes"), "the datasets page does not show the stored dataset");
    let (_, html) = get(&app, "/training").await;
    assert!(html.contains("No training job yet"));
    // The account page needs a session: 401, with the page and its reason.
    let (status, html) = get(&app, "/account").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("<h1>Account</h1>") && html.contains("sign in first"), "{html}");
}

#[tokio::test]
async fn unknown_urls_get_the_404_page() {
    let (app, _s, _d) = app(50).await;
    let (status, html) = get(&app, "/definitely/not/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("404 — page not found"));
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let (app, _s, _d) = app(1).await;
    let body = vec![b'a'; 3 << 20];
    let res = app
        .oneshot(
            Request::post("/api/anything")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", body.len())
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    let msg = String::from_utf8_lossy(&body);
    assert!(msg.contains("larger than the server's limit of 1 MB"), "{msg}");
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let (app, _s, _d) = app(50).await;
    use leptos::server_fn::ServerFn;
    let logout = <app::auth::Logout as ServerFn>::PATH;
    for (name, value) in [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")] {
        let res = app
            .clone()
            .oneshot(Request::post(logout).header("host", "127.0.0.1:3000").header(name, value).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    // Same origin passes the guard and reaches the server function.
    let res = app
        .oneshot(
            Request::post(logout)
                .header("host", "127.0.0.1:3000")
                .header("origin", "http://127.0.0.1:3000")
                .header("sec-fetch-site", "same-origin")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
