//! The wasm entry point. Everything else lives in `app`.
//!
//! Built only for `wasm32-unknown-unknown` (`scripts/build.sh`); on other targets the crate
//! is empty, so a native `cargo test --workspace` never turns on `app`'s `hydrate` feature.

// The workbench view is a deeply nested type; its layout needs more than the default 128.
#![recursion_limit = "256"]
#![cfg(target_arch = "wasm32")]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
