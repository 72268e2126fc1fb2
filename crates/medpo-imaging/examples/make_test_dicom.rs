//! Writes a small synthetic CT DICOM file carrying patient-identifying test tags, for upload
//! tests (the browser tests upload it and assert the tags are not stored).
//!
//! ```text
//! cargo run -p medpo-imaging --example make_test_dicom -- OUT.dcm
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_test_dicom OUT.dcm");
        return ExitCode::from(2);
    };
    let bytes = medpo_imaging::synthetic::synthetic_ct_dicom();
    if let Err(e) = std::fs::write(&out, &bytes) {
        eprintln!("could not write {}: {e}", out.to_string_lossy());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {} ({} bytes); identifying test tags:",
        out.to_string_lossy(),
        bytes.len()
    );
    for (k, v) in medpo_imaging::synthetic::SYNTHETIC_PHI {
        eprintln!("  {k} = {v}");
    }
    ExitCode::SUCCESS
}
