//! Checks on the first fragment of encapsulated pixel data before a dicom-rs codec sees it.
//!
//! A codec sizes its buffers from the codestream, not from Rows/Columns: a DICOM header can
//! say 64×64 while its JPEG claims 60000×60000, and an RLE header can declare 4 billion
//! segments. These checks read only headers, so such files are refused before decoding.

use crate::{check_dimensions, Error, Limits, Result, SourceFormat};

const FMT: SourceFormat = SourceFormat::Dicom;

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        format: FMT,
        reason: reason.into(),
    }
}

/// RLE (PS3.5 G.3.1): a 64-byte header of a segment count (1–15, one per byte of each
/// sample) and ascending offsets inside the fragment.
pub(crate) fn check_rle(fragment: &[u8], expected_segments: u32) -> Result<()> {
    if fragment.len() < 64 {
        return Err(corrupt(format!(
            "RLE fragment of {} bytes is shorter than its 64-byte header",
            fragment.len()
        )));
    }
    let n = u32::from_le_bytes([fragment[0], fragment[1], fragment[2], fragment[3]]);
    if n == 0 || n > 15 || n != expected_segments {
        return Err(corrupt(format!(
            "RLE header declares {n} segments, expected {expected_segments} (samples per pixel × bytes per sample)"
        )));
    }
    let mut prev = 64u32;
    for i in 0..n as usize {
        let at = 4 + 4 * i;
        let off = u32::from_le_bytes([
            fragment[at],
            fragment[at + 1],
            fragment[at + 2],
            fragment[at + 3],
        ]);
        if off < prev || off as usize > fragment.len() {
            return Err(corrupt(format!(
                "RLE segment {} offset {off} is out of order or past the fragment",
                i + 1
            )));
        }
        prev = off;
    }
    Ok(())
}

/// Decodes one RLE frame (PS3.5 G) to native-endian, pixel-interleaved samples. Done here
/// rather than in dicom-rs, whose RLE adapter panics on damaged segments.
pub(crate) fn decode_rle(
    fragment: &[u8],
    pixels: usize,
    spp: usize,
    bytes_per_sample: usize,
) -> Result<Vec<u8>> {
    let segments = spp * bytes_per_sample;
    check_rle(fragment, segments as u32)?;
    let offset = |i: usize| -> usize {
        if i == segments {
            fragment.len()
        } else {
            let at = 4 + 4 * i;
            u32::from_le_bytes([
                fragment[at],
                fragment[at + 1],
                fragment[at + 2],
                fragment[at + 3],
            ]) as usize
        }
    };
    let mut values = vec![0u32; pixels * spp];
    let mut plane = Vec::with_capacity(pixels);
    for seg in 0..segments {
        let data = &fragment[offset(seg)..offset(seg + 1).max(offset(seg))];
        packbits(data, pixels, &mut plane).map_err(|reason| {
            corrupt(format!("RLE segment {} of {segments}: {reason}", seg + 1))
        })?;
        // Segments run sample by sample, most significant byte first.
        let (sample, byte) = (seg / bytes_per_sample, seg % bytes_per_sample);
        let shift = 8 * (bytes_per_sample - 1 - byte);
        for (p, &b) in plane.iter().enumerate() {
            values[p * spp + sample] |= u32::from(b) << shift;
        }
    }
    let mut out = Vec::with_capacity(values.len() * bytes_per_sample);
    for v in values {
        match bytes_per_sample {
            1 => out.push(v as u8),
            _ => out.extend_from_slice(&(v as u16).to_ne_bytes()),
        }
    }
    Ok(out)
}

/// PackBits: a header byte n; 0..=127 copies n+1 literal bytes, −127..=−1 repeats the next
/// byte 1−n times, −128 is skipped. Exactly `len` bytes are expected.
fn packbits(data: &[u8], len: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    out.clear();
    let mut i = 0;
    while out.len() < len {
        let Some(&h) = data.get(i) else {
            return Err(format!("decodes to {} bytes, expected {len}", out.len()));
        };
        let h = h as i8;
        i += 1;
        if h >= 0 {
            let n = h as usize + 1;
            let Some(lit) = data.get(i..i + n) else {
                return Err("a literal run ends past the segment".into());
            };
            out.extend_from_slice(lit);
            i += n;
        } else if h != -128 {
            let Some(&b) = data.get(i) else {
                return Err("a repeat run ends past the segment".into());
            };
            out.extend(std::iter::repeat_n(b, (1 - i32::from(h)) as usize));
            i += 1;
        }
    }
    out.truncate(len);
    Ok(())
}

/// JPEG family and JPEG 2000: the codestream's own dimensions must pass the limits too.
pub(crate) fn check_codestream(fragment: &[u8], limits: &Limits) -> Result<()> {
    let dims = if fragment.starts_with(&[0xFF, 0xD8]) {
        jpeg_dims(fragment)
    } else {
        // J2K codestream (FF4F FF51), possibly inside a JP2 box structure.
        fragment
            .windows(4)
            .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            .and_then(|i| j2k_dims(&fragment[i + 2..]))
    };
    match dims {
        Some((w, h)) => check_dimensions(FMT, w, h, 1, limits),
        // Unknown layout: leave it to the codec (it is wrapped against panics).
        None => Ok(()),
    }
}

/// Walks JPEG markers to the first start-of-frame; returns (width, height).
fn jpeg_dims(b: &[u8]) -> Option<(u64, u64)> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if (0xD0..=0xD9).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if i + 9 > b.len() {
                return None;
            }
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]);
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]);
            return Some((u64::from(w), u64::from(h)));
        }
        i += 2 + len;
    }
    None
}

/// SIZ marker segment, starting at FF51: Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz.
fn j2k_dims(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() < 22 {
        return None;
    }
    let u32_at = |i: usize| u64::from(u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let (x, y, xo, yo) = (u32_at(6), u32_at(10), u32_at(14), u32_at(18));
    Some((x.saturating_sub(xo), y.saturating_sub(yo)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_header_is_validated() {
        let mut f = vec![0u8; 80];
        f[0] = 2;
        f[4] = 64;
        f[8] = 70;
        assert!(check_rle(&f, 2).is_ok());
        assert!(check_rle(&f, 1).is_err());
        f[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check_rle(&f, 2).is_err());
        assert!(check_rle(&f[..10], 2).is_err());
    }

    #[test]
    fn jpeg_codestream_dimensions_are_checked() {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08];
        b.extend_from_slice(&60_000u16.to_be_bytes());
        b.extend_from_slice(&60_000u16.to_be_bytes());
        b.extend_from_slice(&[1, 1, 0x11, 0]);
        assert_eq!(jpeg_dims(&b), Some((60_000, 60_000)));
        assert!(matches!(
            check_codestream(&b, &Limits::default()),
            Err(Error::TooManyPixels { .. })
        ));
    }
}
