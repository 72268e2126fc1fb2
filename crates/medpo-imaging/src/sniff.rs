//! Format detection from magic bytes. The file name and the client's Content-Type are never
//! consulted.

use crate::{Error, Result, SourceFormat};

/// Where a DICOM data set starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DicomLayout {
    /// 128-byte preamble, `DICM`, file meta group, data set (a Part 10 file).
    Preamble,
    /// `DICM`, file meta group, data set (a Part 10 file whose preamble was stripped).
    NoPreamble,
    /// A bare data set without file meta group, explicit VR little endian.
    BareExplicitLe,
    /// A bare data set without file meta group, implicit VR little endian.
    BareImplicitLe,
}

/// What the magic bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// PNG signature.
    Png,
    /// JPEG SOI marker.
    Jpeg,
    /// DICOM, with where its data set starts.
    Dicom(DicomLayout),
}

impl Sniffed {
    /// The format, without the DICOM layout.
    pub fn format(self) -> SourceFormat {
        match self {
            Sniffed::Png => SourceFormat::Png,
            Sniffed::Jpeg => SourceFormat::Jpeg,
            Sniffed::Dicom(_) => SourceFormat::Dicom,
        }
    }
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Detects PNG, JPEG or DICOM from the first bytes; anything else is
/// [`Error::UnsupportedFormat`] naming what it looks like.
pub fn sniff(bytes: &[u8]) -> Result<Sniffed> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    if bytes.starts_with(PNG_MAGIC) {
        return Ok(Sniffed::Png);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Sniffed::Jpeg);
    }
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return Ok(Sniffed::Dicom(DicomLayout::Preamble));
    }
    if bytes.starts_with(b"DICM") {
        return Ok(Sniffed::Dicom(DicomLayout::NoPreamble));
    }
    if let Some(layout) = bare_dataset(bytes) {
        return Ok(Sniffed::Dicom(layout));
    }
    Err(Error::UnsupportedFormat {
        what: describe(bytes),
    })
}

/// A bare data set starts with a group 0008 element (usually SpecificCharacterSet or
/// ImageType) in little endian, or a group 0002 element; explicit VR shows two upper-case
/// letters after the tag.
fn bare_dataset(bytes: &[u8]) -> Option<DicomLayout> {
    if bytes.len() < 16 {
        return None;
    }
    let group = u16::from_le_bytes([bytes[0], bytes[1]]);
    let element = u16::from_le_bytes([bytes[2], bytes[3]]);
    if !(group == 0x0008 || group == 0x0002) || element > 0x0100 {
        return None;
    }
    let vr = &bytes[4..6];
    if vr.iter().all(u8::is_ascii_uppercase) {
        Some(DicomLayout::BareExplicitLe)
    } else {
        // implicit VR: a 4-byte length that fits in the file
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        (len < bytes.len()).then_some(DicomLayout::BareImplicitLe)
    }
}

/// Names a few common formats we refuse, else shows the first bytes.
fn describe(bytes: &[u8]) -> String {
    let known: &[(&[u8], &str)] = &[
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"II*\0", "a TIFF image"),
        (b"MM\0*", "a TIFF image"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"\0\0\0\x0cjP  ", "a JPEG 2000 image"),
        (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    ];
    for (magic, name) in known {
        if bytes.starts_with(magic) {
            return name.to_string();
        }
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return "a WebP image".to_string();
    }
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02X}")).collect();
    format!(
        "unrecognised content starting with bytes {}",
        head.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n....").unwrap(), Sniffed::Png);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Sniffed::Jpeg);
        let mut dcm = vec![0u8; 128];
        dcm.extend_from_slice(b"DICM");
        assert_eq!(sniff(&dcm).unwrap(), Sniffed::Dicom(DicomLayout::Preamble));
        assert_eq!(
            sniff(b"DICM\x02\x00").unwrap(),
            Sniffed::Dicom(DicomLayout::NoPreamble)
        );
        let err = sniff(b"GIF89a-------").unwrap_err().to_string();
        assert!(err.contains("GIF"), "{err}");
        let err = sniff(b"hello world").unwrap_err().to_string();
        assert!(err.contains("68 65 6C 6C"), "{err}");
    }
}
