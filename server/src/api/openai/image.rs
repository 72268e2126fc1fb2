//! Images in chat messages: `data:` URLs with PNG, JPEG or DICOM bytes, decoded by the same
//! code as uploads (`medpo_imaging::decode_upload`: bomb limits, DICOM de-identification and
//! windowing), so the model sees exactly what it would see from the Compare page.
//!
//! Refused, with a 4xx naming the problem: a URL that is not `data:` (the server fetches
//! nothing), a data URL that is not base64, a media type other than `image/png`, `image/jpeg`
//! or `application/dicom`, bytes whose format differs from the declared type, and anything
//! `decode_upload` refuses (empty, oversize, damaged, too many pixels).

use base64::Engine;
use medpo_imaging::{Limits, RenderOptions, SourceFormat};

use super::OpenAiError;

/// The media types accepted, with the format their bytes must have.
const TYPES: [(&str, SourceFormat); 4] = [
    ("image/png", SourceFormat::Png),
    ("image/jpeg", SourceFormat::Jpeg),
    ("image/jpg", SourceFormat::Jpeg),
    ("application/dicom", SourceFormat::Dicom),
];

/// A parsed `data:` URL: declared media type and decoded bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct DataUrl {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Parses `data:<type>;base64,<payload>`. `max_bytes` bounds the decoded size (checked from
/// the payload's length before decoding).
pub fn parse_data_url(url: &str, max_bytes: usize) -> Result<DataUrl, OpenAiError> {
    let param = "messages[].content[].image_url.url";
    let Some(rest) = url.strip_prefix("data:") else {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        return Err(OpenAiError::invalid(format!(
            "image URLs must be `data:` URLs (base64 PNG, JPEG or DICOM); this server fetches nothing{}",
            if scheme.is_empty() { String::new() } else { format!(", so a `{scheme}:` URL cannot be used") }
        ))
        .param(param)
        .code("invalid_image_url"));
    };
    let (meta, payload) = rest
        .split_once(',')
        .ok_or_else(|| OpenAiError::invalid("the data URL has no `,` before its data").param(param).code("invalid_image_url"))?;
    let mut parts = meta.split(';');
    let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if !parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(OpenAiError::invalid("the data URL must be base64 (`data:image/png;base64,…`)").param(param).code("invalid_image_url"));
    }
    if !TYPES.iter().any(|(t, _)| *t == media_type) {
        return Err(OpenAiError::invalid(format!(
            "image type `{media_type}` is not supported; send image/png, image/jpeg or application/dicom"
        ))
        .param(param)
        .code("invalid_image_format"));
    }
    let payload: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if payload.len() / 4 * 3 > max_bytes + 3 {
        return Err(OpenAiError::too_large(format!(
            "the image is about {} bytes, above the server's limit of {max_bytes} bytes",
            payload.len() / 4 * 3
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.as_bytes())
        .map_err(|e| OpenAiError::invalid(format!("the data URL's base64 is invalid: {e}")).param(param).code("invalid_image_url"))?;
    Ok(DataUrl { media_type, bytes })
}

/// Decodes a data URL's image into the RGB picture the model reads. Runs the pixel work: call
/// it from a blocking thread.
pub fn decode(url: &DataUrl, max_bytes: usize) -> Result<image::RgbImage, OpenAiError> {
    let declared = TYPES.iter().find(|(t, _)| *t == url.media_type).map(|(_, f)| *f);
    let limits = Limits { max_bytes, ..Default::default() };
    let scan = medpo_imaging::decode_upload(&url.bytes, &limits, &RenderOptions::default()).map_err(|e| {
        let msg = format!("the image could not be used: {e}");
        match e.http_status() {
            413 => OpenAiError::too_large(msg),
            _ => OpenAiError::invalid(msg).code("invalid_image"),
        }
    })?;
    if declared != Some(scan.source_format) {
        return Err(OpenAiError::invalid(format!(
            "the data URL says `{}` but the bytes are {}",
            url.media_type, scan.source_format
        ))
        .code("invalid_image_format"));
    }
    let img = image::load_from_memory_with_format(&scan.png_bytes, image::ImageFormat::Png)
        .map_err(|e| OpenAiError::internal("re-reading a decoded image failed", e))?;
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_are_checked_before_decoding() {
        let ok = parse_data_url("data:image/png;base64,iVBORw0K", 100).unwrap();
        assert_eq!((ok.media_type.as_str(), ok.bytes.len()), ("image/png", 6));
        let err = |u: &str| parse_data_url(u, 100).unwrap_err();
        assert!(err("https://example.org/x.png").message.contains("`https:`"));
        assert!(err("data:image/png,abc").message.contains("base64"));
        assert!(err("data:image/gif;base64,R0lG").message.contains("image/gif"));
        assert!(err("data:image/png;base64,@@@@").message.contains("base64"));
        assert_eq!(err(&format!("data:image/png;base64,{}", "A".repeat(400))).status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err("data:image/png;base64").message.contains("`,`"));
    }
}
