//! Bounded property tests: random bytes and random strings fed to the decoders that take
//! user input on the API and upload paths (data-URL parsing, the image decoder behind it, and
//! the upload decoder for PNG, JPEG and DICOM magic numbers) never panic; they return a value
//! or a named error. A few thousand cases, seconds in all.

use base64::Engine;
use medpo_imaging::{decode_upload, Limits, RenderOptions};
use medpo_server::api::openai::image::{decode, parse_data_url};
use proptest::prelude::*;

const MAGICS: [&[u8]; 5] = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"DICM",
    b"",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
];

fn limits() -> Limits {
    Limits { max_bytes: 1 << 20, max_pixels: 4_000_000, max_side: 4096 }
}

/// Random bytes behind one of the magic numbers (DICOM's after a 128-byte preamble).
fn upload_bytes() -> impl Strategy<Value = Vec<u8>> {
    (0..MAGICS.len(), proptest::collection::vec(any::<u8>(), 0..2048)).prop_map(|(m, tail)| {
        let mut v = Vec::new();
        if MAGICS[m] == b"DICM" {
            v.extend_from_slice(&[0u8; 128]);
        }
        v.extend_from_slice(MAGICS[m]);
        v.extend_from_slice(&tail);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn upload_decoder_never_panics(bytes in upload_bytes()) {
        let _ = decode_upload(&bytes, &limits(), &RenderOptions::default());
    }

    #[test]
    fn data_urls_never_panic(bytes in upload_bytes(), mime in prop::sample::select(vec!["image/png", "image/jpeg", "application/dicom", "image/gif", ""])) {
        let url = format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes));
        if let Ok(parsed) = parse_data_url(&url, 1 << 20) {
            let _ = decode(&parsed, 1 << 20);
        }
    }

    #[test]
    fn data_url_parser_never_panics_on_any_text(s in "\\PC{0,300}", prefix in prop::sample::select(vec!["data:", "data:image/png;base64,", "data:image/png;base64", ""])) {
        let _ = parse_data_url(&format!("{prefix}{s}"), 1 << 20);
    }
}
