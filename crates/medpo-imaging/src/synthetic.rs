//! Synthetic DICOM files for upload tests (feature `test-support`).
//!
//! The file carries identifying tags with recognisable test values ([`SYNTHETIC_PHI`]), so a
//! test can assert that none of them survive an upload.

use dicom_core::{smallvec::SmallVec, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// Identifying values written by [`synthetic_ct_dicom`]: (attribute keyword, value).
pub const SYNTHETIC_PHI: [(&str, &str); 8] = [
    ("PatientName", "Testpatient^Alice^Synthetic"),
    ("PatientID", "MEDPO-PHI-0001"),
    ("PatientBirthDate", "19700101"),
    ("InstitutionName", "MedPO Synthetic Hospital"),
    ("ReferringPhysicianName", "Referrer^Bob"),
    ("StudyDate", "20250102"),
    ("AccessionNumber", "ACC-PHI-4242"),
    ("StudyInstanceUID", "1.2.826.0.1.3680043.10.1234.1"),
];

/// Writes a 64×64 16-bit signed CT slice (explicit VR little endian, with preamble) whose
/// stored values form a gradient with a bright disc, RescaleIntercept −1024 (so values span
/// roughly −1024…+1000 HU), WindowCenter 40 / WindowWidth 400, Modality CT, BodyPartExamined
/// CHEST, ViewPosition AP, plus every tag in [`SYNTHETIC_PHI`].
pub fn synthetic_ct_dicom() -> Vec<u8> {
    let (rows, cols) = (64u16, 64u16);
    let mut px: Vec<u16> = Vec::with_capacity(usize::from(rows) * usize::from(cols));
    for r in 0..rows {
        for c in 0..cols {
            let (dr, dc) = (f32::from(r) - 32.0, f32::from(c) - 32.0);
            let v: i32 = if dr * dr + dc * dc < 144.0 {
                2024
            } else {
                i32::from(c) * 16
            };
            px.push(v as u16);
        }
    }
    let str_el = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let us = |tag, v: u16| {
        DataElement::new(tag, VR::US, PrimitiveValue::U16(SmallVec::from_slice(&[v])))
    };
    let elements = vec![
        str_el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        str_el(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.10.1234.3",
        ),
        str_el(tags::STUDY_DATE, VR::DA, SYNTHETIC_PHI[5].1),
        str_el(tags::ACCESSION_NUMBER, VR::SH, SYNTHETIC_PHI[6].1),
        str_el(tags::MODALITY, VR::CS, "CT"),
        str_el(tags::INSTITUTION_NAME, VR::LO, SYNTHETIC_PHI[3].1),
        str_el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, SYNTHETIC_PHI[4].1),
        str_el(tags::PATIENT_NAME, VR::PN, SYNTHETIC_PHI[0].1),
        str_el(tags::PATIENT_ID, VR::LO, SYNTHETIC_PHI[1].1),
        str_el(tags::PATIENT_BIRTH_DATE, VR::DA, SYNTHETIC_PHI[2].1),
        str_el(tags::BODY_PART_EXAMINED, VR::CS, "CHEST"),
        str_el(tags::VIEW_POSITION, VR::CS, "AP"),
        str_el(tags::STUDY_INSTANCE_UID, VR::UI, SYNTHETIC_PHI[7].1),
        str_el(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.10.1234.2",
        ),
        us(tags::SAMPLES_PER_PIXEL, 1),
        str_el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 16),
        us(tags::HIGH_BIT, 15),
        us(tags::PIXEL_REPRESENTATION, 1),
        str_el(tags::WINDOW_CENTER, VR::DS, "40"),
        str_el(tags::WINDOW_WIDTH, VR::DS, "400"),
        str_el(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        str_el(tags::RESCALE_SLOPE, VR::DS, "1"),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(SmallVec::from_vec(px)),
        ),
    ];
    let obj = InMemDicomObject::from_element_iter(elements);
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .expect("the synthetic meta group is complete");
    let mut out = Vec::new();
    file.write_all(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}
