//! PNG and JPEG uploads, limits and bad input.

mod common;

use image::{ImageBuffer, Luma, LumaA, Rgba};
use medpo_imaging::{
    decode_upload, sha256_hex, Error, Limits, Preset, RenderOptions, SourceFormat, WindowSource,
};

fn opts() -> RenderOptions {
    RenderOptions::default()
}

fn png_of<P: image::PixelWithColorType>(img: &ImageBuffer<P, Vec<P::Subpixel>>) -> Vec<u8>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// CRC-32 (PNG chunk checksum), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG that is only a signature and an IHDR claiming `w`×`h` 8-bit RGBA.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // a tiny IDAT so the file looks complete
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(idat);
    out.extend_from_slice(&crc32(idat).to_be_bytes());
    out
}

#[test]
fn shared_images_decode() {
    let files = [
        "data/images/bio_patch.png",
        "data/images/med_img_1.png",
        "data/images/synpic32933.jpg",
        "data/images/synpic42202.jpg",
        "data/images/xy_chromosome.jpg",
        "fixtures/v1/scan.png",
    ];
    for f in files {
        let bytes = common::read_shared(f);
        let scan = decode_upload(&bytes, &Limits::default(), &opts())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let want = if f.ends_with(".png") {
            SourceFormat::Png
        } else {
            SourceFormat::Jpeg
        };
        assert_eq!(scan.source_format, want, "{f}");
        let src = image::load_from_memory(&bytes).unwrap();
        assert_eq!(
            (scan.width, scan.height),
            (src.width(), src.height()),
            "{f}"
        );
        let out = image::load_from_memory(&scan.png_bytes).unwrap();
        assert_eq!(
            (out.width(), out.height()),
            (src.width(), src.height()),
            "{f}"
        );
        assert!(
            matches!(out.color(), image::ColorType::L8 | image::ColorType::Rgb8),
            "{f}: {:?}",
            out.color()
        );
        // 8-bit images without alpha keep their pixels exactly.
        if matches!(src.color(), image::ColorType::L8 | image::ColorType::Rgb8) {
            assert_eq!(out.as_bytes(), src.as_bytes(), "{f}: pixels changed");
        }
    }
}

/// The file name plays no part: a JPEG is a JPEG whatever the caller calls it, and the same
/// scan gives the same content address every time (and when re-uploaded as our own PNG).
#[test]
fn content_address_is_stable() {
    let bytes = common::read_shared("fixtures/v1/scan.png");
    let a = decode_upload(&bytes, &Limits::default(), &opts()).unwrap();
    let b = decode_upload(&bytes, &Limits::default(), &opts()).unwrap();
    assert_eq!(a.sha256(), b.sha256());
    assert_eq!(a.sha256(), sha256_hex(&a.png_bytes));
    assert_eq!(a.sha256().len(), 64);
    let again = decode_upload(&a.png_bytes, &Limits::default(), &opts()).unwrap();
    assert_eq!(
        again.png_bytes, a.png_bytes,
        "re-uploading the stored PNG changes it"
    );
}

/// A 16-bit ramp over 256 levels in the middle of the range keeps every level: an early
/// 8-bit conversion would collapse it to one or two grey values.
#[test]
fn sixteen_bit_png_keeps_precision() {
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(256, 4, |x, _| Luma([30_000 + x as u16]));
    let scan = decode_upload(&png_of(&img), &Limits::default(), &opts()).unwrap();
    assert_eq!(scan.meta.bits_allocated, 16);
    assert_eq!(scan.meta.window_used.unwrap().source, WindowSource::MinMax);
    let out = image::load_from_memory(&scan.png_bytes).unwrap().to_luma8();
    let levels: std::collections::BTreeSet<u8> = out.pixels().map(|p| p.0[0]).collect();
    assert_eq!(levels.len(), 256, "16-bit levels were merged");

    // A requested window is in raw 16-bit units.
    let w = RenderOptions {
        window: Some((30_100.0, 64.0)),
        preset: None,
    };
    let scan = decode_upload(&png_of(&img), &Limits::default(), &w).unwrap();
    assert_eq!(scan.meta.window_used.unwrap().source, WindowSource::Request);
    let out = image::load_from_memory(&scan.png_bytes).unwrap().to_luma8();
    assert_eq!(out.get_pixel(255, 0).0[0], 255);
    assert_eq!(out.get_pixel(0, 0).0[0], 0);
    assert!((127..=130).contains(&out.get_pixel(100, 0).0[0]));
}

#[test]
fn presets_do_not_apply_to_png() {
    let img: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_fn(8, 8, |x, y| Luma([(x * 30 + y) as u8]));
    let plain = decode_upload(&png_of(&img), &Limits::default(), &opts()).unwrap();
    let lung = decode_upload(
        &png_of(&img),
        &Limits::default(),
        &RenderOptions {
            window: None,
            preset: Some(Preset::Lung),
        },
    )
    .unwrap();
    assert_eq!(plain.png_bytes, lung.png_bytes);
    assert!(
        lung.notes.iter().any(|n| n.contains("lung")),
        "{:?}",
        lung.notes
    );
}

#[test]
fn alpha_is_composited_over_black() {
    let img: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgba([255, 0, 0, 0])
        } else {
            Rgba([10, 20, 30, 255])
        }
    });
    let scan = decode_upload(&png_of(&img), &Limits::default(), &opts()).unwrap();
    let out = image::load_from_memory(&scan.png_bytes).unwrap();
    assert_eq!(out.color(), image::ColorType::Rgb8);
    assert_eq!(out.as_bytes(), &[0, 0, 0, 10, 20, 30]);
    assert!(scan.notes.iter().any(|n| n.contains("alpha")));

    let gray: ImageBuffer<LumaA<u8>, Vec<u8>> =
        ImageBuffer::from_fn(2, 1, |x, _| LumaA([200, if x == 0 { 0 } else { 255 }]));
    let scan = decode_upload(&png_of(&gray), &Limits::default(), &opts()).unwrap();
    let out = image::load_from_memory(&scan.png_bytes).unwrap();
    assert_eq!(out.as_bytes(), &[0, 200]);
}

#[test]
fn png_bomb_is_refused_from_the_header() {
    let bytes = png_header(100_000, 100_000);
    let started = std::time::Instant::now();
    let err = decode_upload(&bytes, &Limits::default(), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyPixels {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 413);
    assert!(err.to_string().contains("100000×100000"), "{err}");
    assert!(started.elapsed().as_secs() < 2);
    // Within max_side but above max_pixels.
    let err = decode_upload(&png_header(10_000, 10_000), &Limits::default(), &opts()).unwrap_err();
    assert!(matches!(err, Error::TooManyPixels { .. }), "{err:?}");
}

/// A real JPEG whose start-of-frame is patched to claim 60000×60000.
#[test]
fn jpeg_bomb_is_refused_from_the_header() {
    let mut b = common::read_shared("data/images/synpic32933.jpg");
    let sof = b
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0 | 0xC1 | 0xC2))
        .expect("a start-of-frame marker");
    // FF Cx, length (2), precision (1), height (2), width (2)
    b[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let err = decode_upload(&b, &Limits::default(), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyPixels {
                width: 60_000,
                height: 60_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 413);
}

#[test]
fn bad_input_names_the_problem() {
    let limits = Limits::default();
    let err = decode_upload(b"", &limits, &opts()).unwrap_err();
    assert!(matches!(err, Error::Empty));
    assert_eq!(err.http_status(), 400);

    let small = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let err = decode_upload(&[0u8; 11], &small, &opts()).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { bytes: 11, max: 10 }),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 413);

    let err = decode_upload(b"GIF89a\x01\x00\x01\x00", &limits, &opts()).unwrap_err();
    assert_eq!(err.http_status(), 415);
    assert!(err.to_string().contains("GIF"), "{err}");

    let err = decode_upload(b"%PDF-1.7 ...", &limits, &opts()).unwrap_err();
    assert!(err.to_string().contains("PDF"), "{err}");

    // PNG signature, then garbage.
    let mut bad = b"\x89PNG\r\n\x1a\n".to_vec();
    bad.extend_from_slice(b"this is not a chunk stream at all");
    let err = decode_upload(&bad, &limits, &opts()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. } | Error::Truncated { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("PNG"), "{err}");
    assert_eq!(err.http_status(), 400);

    // The first half of a real PNG and JPEG.
    for f in ["fixtures/v1/scan.png", "data/images/synpic32933.jpg"] {
        let bytes = common::read_shared(f);
        let err = decode_upload(&bytes[..bytes.len() / 2], &limits, &opts()).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::Truncated { .. }),
            "{f}: {err:?}"
        );
    }

    let gray: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_fn(4, 4, |x, _| Luma([x as u8]));
    let err = decode_upload(
        &png_of(&gray),
        &limits,
        &RenderOptions {
            window: Some((10.0, 0.0)),
            preset: None,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidWindow { .. }), "{err:?}");
    assert_eq!(err.http_status(), 400);
}

/// A phone photo with EXIF orientation 6 (rotate 90° clockwise): the rotation is baked into
/// the stored pixels, since EXIF itself is dropped.
#[test]
fn exif_orientation_is_applied() {
    use image::ImageEncoder;
    // TIFF header (little endian), one IFD entry: Orientation (0x0112), SHORT, 1, value 6
    let exif: Vec<u8> = [
        &b"II*\0"[..],
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &0x0112u16.to_le_bytes(),
        &3u16.to_le_bytes(),
        &1u32.to_le_bytes(),
        &[6, 0, 0, 0],
        &0u32.to_le_bytes(),
    ]
    .concat();
    let (w, h) = (32u32, 16u32);
    let gray: Vec<u8> = (0..w * h)
        .map(|i| if i % w < 8 { 0 } else { 255 })
        .collect();
    let mut jpeg = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(&gray, w, h, image::ExtendedColorType::L8)
        .unwrap();
    let scan = decode_upload(&jpeg, &Limits::default(), &opts()).unwrap();
    assert_eq!(
        (scan.width, scan.height),
        (h, w),
        "not rotated: {:?}",
        scan.notes
    );
    assert!(
        scan.notes.iter().any(|n| n.contains("orientation")),
        "{:?}",
        scan.notes
    );
    assert!(!scan.png_bytes.windows(4).any(|x| x == b"eXIf"));
}
