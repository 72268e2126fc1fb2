//! No input panics: truncated prefixes and random corruptions of every shared sample, and
//! random bytes behind each magic number, all give `Ok` or a named `Error`.

mod common;

use medpo_imaging::{decode_upload, Limits, RenderOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// xorshift64*, seeded: the same inputs on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn samples() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["data/dicom", "data/images"] {
        let mut names: Vec<_> = std::fs::read_dir(common::shared_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dcm") || n.ends_with(".png") || n.ends_with(".jpg"))
            .collect();
        names.sort();
        for n in names {
            let rel = format!("{dir}/{n}");
            out.push((rel.clone(), common::read_shared(&rel)));
        }
    }
    out.push((
        "fixtures/v1/scan.png".into(),
        common::read_shared("fixtures/v1/scan.png"),
    ));
    out
}

fn no_panic(what: &str, bytes: &[u8]) {
    // Small limits keep corrupted headers from asking for large (valid) allocations.
    let limits = Limits {
        max_pixels: 4_000_000,
        max_side: 4096,
        ..Limits::default()
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        decode_upload(bytes, &limits, &RenderOptions::default())
    }));
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert!(!e.to_string().is_empty(), "{what}: empty message"),
        Err(_) => panic!("{what}: decode_upload panicked"),
    }
}

#[test]
fn truncated_prefixes_never_panic() {
    for (name, bytes) in samples() {
        let n = bytes.len();
        // Large images cost a full decode per try in a debug build: fewer cuts there.
        let steps = if n > 50_000 { 8 } else { 40 };
        let mut cuts: Vec<usize> = (0..n.min(400)).step_by(7).collect();
        cuts.extend((1..steps).map(|i| n * i / steps));
        cuts.extend([
            n.saturating_sub(1),
            n.saturating_sub(2),
            n.saturating_sub(100),
        ]);
        for cut in cuts {
            if cut < n {
                no_panic(&format!("{name}[..{cut}]"), &bytes[..cut]);
            }
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for (name, bytes) in samples() {
        let rounds = if bytes.len() > 50_000 { 3 } else { 40 };
        for round in 0..rounds {
            let mut b = bytes.clone();
            let flips = 1 + rng.below(16);
            for _ in 0..flips {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            no_panic(&format!("{name} corruption {round}"), &b);
        }
    }
}

#[test]
fn random_bytes_behind_magic_never_panic() {
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let mut preamble = vec![0u8; 128];
    preamble.extend_from_slice(b"DICM");
    let magics: [&[u8]; 5] = [
        b"\x89PNG\r\n\x1a\n",
        b"\xFF\xD8\xFF",
        &preamble,
        b"DICM",
        b"\x08\x00\x05\x00CS",
    ];
    for magic in magics {
        for len in [0usize, 1, 3, 8, 16, 64, 300, 4096] {
            for _ in 0..8 {
                let mut b = magic.to_vec();
                b.extend((0..len).map(|_| rng.next() as u8));
                no_panic(
                    &format!(
                        "magic {:?} + {len} random bytes",
                        &magic[..magic.len().min(4)]
                    ),
                    &b,
                );
            }
        }
    }
    for len in [1usize, 2, 5, 200, 5000] {
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        no_panic(&format!("{len} random bytes"), &b);
    }
}
