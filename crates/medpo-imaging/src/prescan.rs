//! A structural walk over a DICOM data set that checks every declared length fits in the
//! bytes that remain, before dicom-rs reads it.
//!
//! dicom-rs allocates a value buffer of the declared length before reading it, so a 1 KB file
//! that declares a 4 GB element would allocate 4 GB. The walk refuses such files (they are
//! truncated or forged) and also caps sequence nesting, so no input can exhaust memory or
//! the stack. It reads tags and lengths only, never values.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

const MAX_DEPTH: usize = 32;
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// How the data set is encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

/// A structural problem; `truncated` when a length runs past the end of the bytes.
#[derive(Debug)]
pub(crate) struct ScanError {
    pub truncated: bool,
    pub reason: String,
}

struct Walker<'a> {
    data: &'a [u8],
    pos: usize,
    enc: Encoding,
}

fn err<T>(truncated: bool, reason: String) -> Result<T, ScanError> {
    Err(ScanError { truncated, reason })
}

impl Walker<'_> {
    fn u16(&mut self) -> Result<u16, ScanError> {
        let big = self.enc.big_endian;
        let b = self.take(2)?;
        Ok(if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    }

    fn u32(&mut self) -> Result<u32, ScanError> {
        let big = self.enc.big_endian;
        let b = self.take(4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ScanError> {
        let remaining = self.data.len() - self.pos;
        if n > remaining {
            return err(
                true,
                format!(
                    "the file ends inside an element header at byte {}",
                    self.pos
                ),
            );
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn skip(&mut self, tag: Tag, len: u32) -> Result<(), ScanError> {
        let remaining = self.data.len() - self.pos;
        if len as usize > remaining {
            return err(
                true,
                format!("element {tag} declares {len} bytes but only {remaining} remain"),
            );
        }
        self.pos += len as usize;
        Ok(())
    }

    /// Walks elements until `end` (a defined-length container), an item or sequence
    /// delimiter (undefined length), or the end of the data. With `meta_only`, stops before
    /// the first element outside group 0002.
    fn dataset(&mut self, end: usize, depth: usize, meta_only: bool) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return err(
                false,
                format!("sequences nested deeper than {MAX_DEPTH} levels"),
            );
        }
        while self.pos < end {
            if end - self.pos < 4 {
                return err(
                    true,
                    format!("{} stray bytes at the end of the data set", end - self.pos),
                );
            }
            let start = self.pos;
            let group = self.u16()?;
            let element = self.u16()?;
            let tag = Tag(group, element);
            if meta_only && group != 0x0002 {
                self.pos = start;
                return Ok(());
            }
            if group == 0xFFFE {
                // item or delimiter: 4-byte length, no VR
                let len = self.u32()?;
                match element {
                    0xE00D | 0xE0DD if depth > 0 => return Ok(()),
                    _ => {
                        // a stray item at data set level: skip it
                        if len != UNDEFINED {
                            self.skip(tag, len)?;
                        }
                        continue;
                    }
                }
            }
            let (vr, len) = if self.enc.explicit_vr {
                let b = self.take(2)?;
                let vr_bytes = [b[0], b[1]];
                let vr = VR::from_binary(vr_bytes);
                let long = matches!(
                    vr,
                    Some(
                        VR::OB
                            | VR::OD
                            | VR::OF
                            | VR::OL
                            | VR::OV
                            | VR::OW
                            | VR::SQ
                            | VR::SV
                            | VR::UC
                            | VR::UN
                            | VR::UR
                            | VR::UT
                            | VR::UV
                    )
                );
                if vr.is_none() {
                    return err(
                        false,
                        format!(
                            "element {tag} has an invalid VR {:?}",
                            String::from_utf8_lossy(&vr_bytes)
                        ),
                    );
                }
                if long {
                    self.take(2)?;
                    (vr, self.u32()?)
                } else {
                    (vr, u32::from(self.u16()?))
                }
            } else {
                let vr = StandardDataDictionary
                    .by_tag(tag)
                    .and_then(|e| match e.vr() {
                        VirtualVr::Exact(vr) => Some(vr),
                        _ => None,
                    });
                (vr, self.u32()?)
            };
            let is_pixel_data = tag == Tag(0x7FE0, 0x0010);
            if len == UNDEFINED {
                // a sequence, UN-as-sequence or encapsulated pixel data: items until (FFFE,E0DD)
                self.items(depth + 1, is_pixel_data)?;
            } else if vr == Some(VR::SQ) {
                let stop = self
                    .pos
                    .checked_add(len as usize)
                    .filter(|&e| e <= self.data.len());
                let Some(stop) = stop else {
                    return err(
                        true,
                        format!(
                            "sequence {tag} declares {len} bytes but only {} remain",
                            self.data.len() - self.pos
                        ),
                    );
                };
                while self.pos < stop {
                    self.item(depth + 1, false, Some(stop))?;
                }
            } else {
                self.skip(tag, len)?;
            }
        }
        Ok(())
    }

    /// Items of an undefined-length sequence, up to and including the sequence delimiter.
    fn items(&mut self, depth: usize, fragments: bool) -> Result<(), ScanError> {
        loop {
            if self.pos >= self.data.len() {
                return err(true, "the file ends inside a sequence".to_string());
            }
            if self.item(depth, fragments, None)? {
                return Ok(());
            }
        }
    }

    /// One item; returns true on a sequence delimiter.
    fn item(
        &mut self,
        depth: usize,
        fragments: bool,
        bound: Option<usize>,
    ) -> Result<bool, ScanError> {
        if depth > MAX_DEPTH {
            return err(
                false,
                format!("sequences nested deeper than {MAX_DEPTH} levels"),
            );
        }
        let group = self.u16()?;
        let element = self.u16()?;
        let tag = Tag(group, element);
        let len = self.u32()?;
        match (group, element) {
            (0xFFFE, 0xE0DD) => Ok(true),
            (0xFFFE, 0xE000) => {
                if fragments {
                    if len == UNDEFINED {
                        return err(
                            false,
                            "a pixel data fragment has undefined length".to_string(),
                        );
                    }
                    self.skip(tag, len)?;
                } else if len == UNDEFINED {
                    self.dataset(self.data.len(), depth + 1, false)?;
                } else {
                    let end = self
                        .pos
                        .checked_add(len as usize)
                        .filter(|&e| e <= bound.unwrap_or(self.data.len()));
                    let Some(end) = end else {
                        return err(
                            true,
                            format!(
                                "an item declares {len} bytes but only {} remain",
                                self.data.len() - self.pos
                            ),
                        );
                    };
                    self.dataset(end, depth + 1, false)?;
                    self.pos = end;
                }
                Ok(false)
            }
            _ => err(false, format!("expected a sequence item, found {tag}")),
        }
    }
}

/// Checks the file meta group (explicit VR little endian) that follows `DICM`; returns its
/// length in bytes.
pub(crate) fn scan_meta(data: &[u8]) -> Result<usize, ScanError> {
    let mut w = Walker {
        data,
        pos: 0,
        enc: Encoding {
            explicit_vr: true,
            big_endian: false,
        },
    };
    w.dataset(data.len(), 0, true)?;
    Ok(w.pos)
}

/// Checks a whole data set.
pub(crate) fn scan_dataset(data: &[u8], enc: Encoding) -> Result<(), ScanError> {
    let mut w = Walker { data, pos: 0, enc };
    w.dataset(data.len(), 0, false)
}
