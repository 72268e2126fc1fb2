//! Pixel layouts the shared files do not cover, written with dicom-object: MONOCHROME1,
//! multi-frame, planar RGB, 12 bits stored with junk in the high bits, bare data sets.

mod common;

use dicom_core::{smallvec::SmallVec, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use medpo_imaging::{decode_dicom, decode_upload, Limits, RenderOptions};

fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::U16(SmallVec::from_slice(&[v])))
}

fn cs(tag: dicom_core::Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// A Part 10 file (explicit VR LE) with the given image attributes and pixel data.
fn file(attrs: Vec<DataElement<InMemDicomObject>>, pixels: PrimitiveValue, vr: VR) -> Vec<u8> {
    let mut els = vec![
        cs(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        ),
        cs(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1"),
        cs(tags::MODALITY, VR::CS, "OT"),
    ];
    els.extend(attrs);
    els.push(DataElement::new(tags::PIXEL_DATA, vr, pixels));
    let obj = InMemDicomObject::from_element_iter(els)
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

fn gray16(
    rows: u16,
    cols: u16,
    frames: u16,
    photometric: &str,
    bits_stored: u16,
    px: Vec<u16>,
) -> Vec<u8> {
    let mut attrs = vec![
        us(tags::SAMPLES_PER_PIXEL, 1),
        cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, bits_stored),
        us(tags::HIGH_BIT, bits_stored - 1),
        us(tags::PIXEL_REPRESENTATION, 0),
    ];
    if frames > 1 {
        attrs.push(cs(tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string()));
    }
    file(attrs, PrimitiveValue::U16(SmallVec::from_vec(px)), VR::OW)
}

fn luma(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_luma8().into_raw()
}

#[test]
fn monochrome1_is_inverted() {
    let px = vec![0u16, 100, 200, 300];
    let m2 = decode_upload(
        &gray16(2, 2, 1, "MONOCHROME2", 16, px.clone()),
        &Limits::default(),
        &RenderOptions::default(),
    )
    .unwrap();
    let m1 = decode_upload(
        &gray16(2, 2, 1, "MONOCHROME1", 16, px),
        &Limits::default(),
        &RenderOptions::default(),
    )
    .unwrap();
    let (a, b) = (luma(&m2.png_bytes), luma(&m1.png_bytes));
    assert_eq!(a, vec![0, 85, 170, 255]);
    assert_eq!(b, a.iter().map(|v| 255 - v).collect::<Vec<_>>());
    assert!(m1.notes.iter().any(|n| n.contains("MONOCHROME1")));
}

#[test]
fn multi_frame_shows_the_first_frame() {
    let mut px = vec![10u16; 4];
    px.extend([5000u16; 4]);
    px.extend([9u16; 4]);
    let img = decode_dicom(&gray16(2, 2, 3, "MONOCHROME2", 16, px), &Limits::default()).unwrap();
    assert_eq!(img.stored_values(), &[10.0; 4]);
    assert_eq!(img.meta().frames, 3);
    let scan = img.render(&RenderOptions::default()).unwrap();
    assert!(
        scan.notes
            .iter()
            .any(|n| n.contains("3 frames") && n.contains("frame 1")),
        "{:?}",
        scan.notes
    );
}

#[test]
fn bits_stored_masks_high_bits() {
    // 12 bits stored; 0xF000 junk above them must be ignored.
    let px = vec![0xF000 | 4095, 0xA000 | 1, 0, 2048];
    let img = decode_dicom(&gray16(2, 2, 1, "MONOCHROME2", 12, px), &Limits::default()).unwrap();
    assert_eq!(img.stored_values(), &[4095.0, 1.0, 0.0, 2048.0]);
}

#[test]
fn planar_rgb_is_interleaved() {
    // 2 pixels: red (255,0,0) and blue (0,0,255), planar: RR GG BB
    let attrs = vec![
        us(tags::SAMPLES_PER_PIXEL, 3),
        cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::PLANAR_CONFIGURATION, 1),
        us(tags::ROWS, 1),
        us(tags::COLUMNS, 2),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ];
    let bytes = file(
        attrs,
        PrimitiveValue::from(vec![255u8, 0, 0, 0, 0, 255]),
        VR::OB,
    );
    let scan = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap();
    let out = image::load_from_memory(&scan.png_bytes)
        .unwrap()
        .to_rgb8()
        .into_raw();
    assert_eq!(out, vec![255, 0, 0, 0, 0, 255]);
}

/// Rows/Columns above the limits are refused from the header, though the pixel data is tiny.
#[test]
fn absurd_rows_columns_are_refused() {
    let bytes = gray16(60_000, 60_000, 1, "MONOCHROME2", 16, vec![0; 4]);
    let err = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            medpo_imaging::Error::TooManyPixels {
                width: 60_000,
                height: 60_000,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Pixel data shorter than Rows × Columns: truncated, named.
#[test]
fn short_pixel_data_is_truncated() {
    let bytes = gray16(64, 64, 1, "MONOCHROME2", 16, vec![0; 100]);
    let err = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("pixel data holds 200 bytes"),
        "{err}"
    );
}

/// A bare data set (no preamble, no file meta group), explicit and implicit VR.
#[test]
fn bare_data_sets_decode() {
    for name in ["CT_small.dcm", "MR_small_implicit.dcm"] {
        let bytes = common::read_shared(&format!("data/dicom/{name}"));
        assert_eq!(&bytes[128..132], b"DICM");
        // (0002,0000) group length: tag 4 + VR 2 + length 2, then a 4-byte value
        let group_len =
            u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
        let bare = &bytes[144 + group_len..];
        let want = decode_dicom(&bytes, &Limits::default()).unwrap();
        let got = decode_dicom(bare, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.stored_values(), want.stored_values(), "{name}");
    }
}

/// Enhanced multi-frame objects keep rescale and window in functional group macros.
#[test]
fn functional_group_rescale_and_window() {
    use dicom_core::value::DataSetSequence;
    let item = |els: Vec<DataElement<InMemDicomObject>>| InMemDicomObject::from_element_iter(els);
    let seq = |tag, items: Vec<InMemDicomObject>| {
        DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
    };
    let shared = item(vec![
        seq(
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![item(vec![
                cs(tags::RESCALE_INTERCEPT, VR::DS, "-1000"),
                cs(tags::RESCALE_SLOPE, VR::DS, "2"),
            ])],
        ),
        seq(
            tags::FRAME_VOILUT_SEQUENCE,
            vec![item(vec![
                cs(tags::WINDOW_CENTER, VR::DS, "-500"),
                cs(tags::WINDOW_WIDTH, VR::DS, "1000"),
            ])],
        ),
    ]);
    let attrs = vec![
        us(tags::SAMPLES_PER_PIXEL, 1),
        cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, 1),
        us(tags::COLUMNS, 2),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 16),
        us(tags::HIGH_BIT, 15),
        us(tags::PIXEL_REPRESENTATION, 0),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
    ];
    let bytes = file(
        attrs,
        PrimitiveValue::U16(SmallVec::from_vec(vec![0, 500])),
        VR::OW,
    );
    let img = decode_dicom(&bytes, &Limits::default()).unwrap();
    assert_eq!(img.modality_values(), vec![-1000.0, 0.0]);
    let scan = img.render(&RenderOptions::default()).unwrap();
    let w = scan.meta.window_used.unwrap();
    assert_eq!(
        (w.center, w.width, w.source),
        (-500.0, 1000.0, medpo_imaging::WindowSource::File)
    );
}

/// A file meta group without (0002,0000) group length, as some older writers produce.
#[test]
fn meta_group_without_group_length() {
    let bytes = common::read_shared("data/dicom/MR_small.dcm");
    assert_eq!(&bytes[132..136], &[0x02, 0x00, 0x00, 0x00]);
    // drop the 12-byte (0002,0000) UL element
    let mut stripped = bytes[..132].to_vec();
    stripped.extend_from_slice(&bytes[144..]);
    let want = decode_dicom(&bytes, &Limits::default()).unwrap();
    let got = decode_dicom(&stripped, &Limits::default()).unwrap();
    assert_eq!(got.stored_values(), want.stored_values());
}

/// A transfer syntax UID no registry knows: refused by UID.
#[test]
fn unknown_transfer_syntax_is_named() {
    let mut bytes = common::read_shared("data/dicom/MR_small.dcm");
    let uid = b"1.2.840.10008.1.2.1\0";
    let at = bytes[..400]
        .windows(uid.len())
        .position(|w| w == uid)
        .expect("TS UID in the meta group");
    bytes[at..at + uid.len()].copy_from_slice(b"1.2.999.999.99.9.1\0\0");
    let err = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported transfer syntax 1.2.999.999.99.9.1 (unknown)"
    );
    assert_eq!(err.http_status(), 415);
}

/// An element that declares 4 GB in a small file is refused before dicom-rs allocates it.
#[test]
fn absurd_element_length_is_refused() {
    let bytes = common::read_shared("data/dicom/CT_small.dcm");
    // the PixelData element header: (7FE0,0010) OW 00 00 <u32 length>
    let hdr = [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
    let at = bytes
        .windows(8)
        .rposition(|w| w == hdr)
        .expect("PixelData header");
    let mut b = bytes.clone();
    b[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let err = decode_upload(&b, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert!(
        matches!(err, medpo_imaging::Error::Truncated { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("(7FE0,0010) declares 4294967280 bytes"),
        "{err}"
    );
}
