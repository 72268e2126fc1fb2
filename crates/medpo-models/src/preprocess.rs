//! LLaVA image preprocessing: pad to square with the truncated CLIP-mean colour, CLIP resize
//! (PIL bicubic, shortest side) and centre crop, rescale, normalise.
//!
//! The resize reproduces PIL's `ImagingResample`: the bicubic filter with a = -0.5, its support
//! scaled when downsampling, coefficients normalised and converted to 22-bit fixed point, a
//! horizontal then a vertical pass on 8-bit data with rounding and clipping.
//!
//! Checked against Pillow 13.0.0: bit-exact for every square-to-square resize tried (282 sizes,
//! up and down), which is the only resize the `pad` path of all three models performs. For
//! non-square resizes (models without `image_aspect_ratio = "pad"`), Pillow 13 sometimes runs the
//! vertical pass first, and about a third of such sizes then differ by ±1 in some pixels.

use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageReader, RgbImage};

use crate::config::ImageConfig;
use crate::error::{Error, Result};

/// Largest accepted side of an input image, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Every stage of the preprocessing, for tests and debugging.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    pub padded: RgbImage,
    pub resized: RgbImage,
    pub cropped: RgbImage,
    /// CHW, normalised.
    pub pixel_values: Vec<f32>,
    pub size: usize,
}

/// Decodes an image file (PNG incl. 16-bit, grayscale, RGBA; JPEG; …) into RGB, rejecting empty,
/// corrupt and absurdly large files.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path)
}

/// Like [`load_image`], from bytes; `name` only appears in error messages.
pub fn decode_image(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let err = |message: String| Error::Image { path: name.to_path_buf(), message };
    if bytes.is_empty() {
        return Err(err("the file is empty".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("unknown image format".into()));
    }
    let (width, height) = reader.into_dimensions().map_err(|e| err(e.to_string()))?;
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(Error::ImageDimensions { path: name.to_path_buf(), width, height, limit: MAX_IMAGE_SIDE });
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| err(e.to_string()))?;
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    Ok(to_rgb(img))
}

/// PIL's `convert("RGB")`: grayscale is replicated, alpha is dropped, 16-bit is scaled to 8-bit.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(i) => i,
        other => other.to_rgb8(),
    }
}

/// LLaVA `expand2square`: pad to a square of side max(w, h), pasting at ((side-w)/2, (side-h)/2).
pub fn expand_to_square(img: &RgbImage, background: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(background));
    let (ox, oy) = ((side - w) / 2, (side - h) / 2);
    for y in 0..h {
        for x in 0..w {
            out.put_pixel(x + ox, y + oy, *img.get_pixel(x, y));
        }
    }
    out
}

/// The pad colour: `tuple(int(m * 255) for m in image_mean)` (truncation, not rounding).
pub fn background_color(mean: &[f32; 3]) -> [u8; 3] {
    // The configs hold float64 text; f32 -> f64 of a value like 0.48145466 then *255 truncates the
    // same way for every CLIP mean, but compute in f64 from the f32 as Python would from float.
    mean.map(|m| ((m as f64) * 255.0).floor().clamp(0.0, 255.0) as u8)
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// PIL `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, (first input index,
/// count) and the fixed-point weights.
fn precompute_coeffs(in_size: usize, out_size: usize) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let (in0, in1) = (0.0f32 as f64, in_size as f32 as f64);
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut w = vec![0f64; n];
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate() {
            *wx = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for (x, wx) in w.iter().enumerate() {
            let k = if ww != 0.0 { wx / ww } else { *wx };
            let scaled = k * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if k < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
        }
        bounds.push((xmin, n));
    }
    (bounds, kk, ksize)
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// PIL `Image.resize((w, h), Image.BICUBIC)` on an RGB image, bit-exact.
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let src = img.as_raw();
    let (hb, hk, hks) = precompute_coeffs(in_w, ow);
    let (vb, vk, vks) = precompute_coeffs(in_h, oh);
    let need_h = ow != in_w;
    let need_v = oh != in_h;
    // Horizontal pass over the rows the vertical pass reads.
    let (first, last) = if need_v { (vb[0].0, vb[oh - 1].0 + vb[oh - 1].1) } else { (0, in_h) };
    let (tmp, tmp_w, row0) = if need_h {
        let rows = last - first;
        let mut tmp = vec![0u8; rows * ow * 3];
        for y in 0..rows {
            let srow = &src[(y + first) * in_w * 3..(y + first + 1) * in_w * 3];
            for xx in 0..ow {
                let (xmin, n) = hb[xx];
                let k = &hk[xx * hks..xx * hks + n];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, kx) in k.iter().enumerate() {
                        ss += srow[(x + xmin) * 3 + c] as i64 * *kx as i64;
                    }
                    tmp[(y * ow + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        (tmp, ow, first)
    } else {
        (src.to_vec(), in_w, 0)
    };
    if !need_v {
        return RgbImage::from_raw(tmp_w as u32, in_h as u32, tmp).unwrap_or_else(|| RgbImage::new(0, 0));
    }
    let mut out = vec![0u8; oh * tmp_w * 3];
    for yy in 0..oh {
        let (ymin, n) = vb[yy];
        let k = &vk[yy * vks..yy * vks + n];
        for xx in 0..tmp_w {
            for c in 0..3 {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (y, ky) in k.iter().enumerate() {
                    ss += tmp[((y + ymin - row0) * tmp_w + xx) * 3 + c] as i64 * *ky as i64;
                }
                out[(yy * tmp_w + xx) * 3 + c] = clip8(ss);
            }
        }
    }
    RgbImage::from_raw(tmp_w as u32, oh as u32, out).unwrap_or_else(|| RgbImage::new(0, 0))
}

/// transformers' `get_resize_output_image_size` for `shortest_edge`: (width, height).
pub fn shortest_edge_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size as u64 * long as u64) / short as u64) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Centre crop to `crop`×`crop` (top = (h - crop) / 2, left = (w - crop) / 2).
pub fn center_crop(img: &RgbImage, crop: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (top, left) = ((h.saturating_sub(crop)) / 2, (w.saturating_sub(crop)) / 2);
    image::imageops::crop_imm(img, left, top, crop.min(w), crop.min(h)).to_image()
}

/// The whole pipeline on one RGB image.
pub fn preprocess(img: &RgbImage, cfg: &ImageConfig) -> Result<Preprocessed> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::InvalidInput("the image is empty".into()));
    }
    if cfg.size < cfg.crop_size {
        return Err(Error::InvalidInput(format!(
            "resize size {} is smaller than crop size {}",
            cfg.size, cfg.crop_size
        )));
    }
    let padded = if cfg.pad_to_square { expand_to_square(img, background_color(&cfg.mean)) } else { img.clone() };
    let (w, h) = shortest_edge_size(padded.width(), padded.height(), cfg.size);
    let resized = resize_bicubic(&padded, w, h);
    let cropped = center_crop(&resized, cfg.crop_size);
    let s = cfg.crop_size as usize;
    let mut pixel_values = vec![0f32; 3 * s * s];
    for (x, y, p) in cropped.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f32 / 255.0;
            pixel_values[c * s * s + y as usize * s + x as usize] = (v - cfg.mean[c]) / cfg.std[c];
        }
    }
    Ok(Preprocessed { padded, resized, cropped, pixel_values, size: s })
}

impl Preprocessed {
    /// `pixel_values` as a (1, 3, S, S) f32 tensor.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.pixel_values, (1, 3, self.size, self.size), device)?)
    }
}

/// Preprocesses several images into one (N, 3, S, S) f32 tensor.
pub fn pixel_batch(images: &[RgbImage], cfg: &ImageConfig, device: &Device) -> Result<Tensor> {
    let mut all = Vec::new();
    for img in images {
        all.extend(preprocess(img, cfg)?.pixel_values);
    }
    let s = cfg.crop_size as usize;
    Ok(Tensor::from_vec(all, (images.len(), 3, s, s), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_colour_truncates_the_clip_mean() {
        assert_eq!(background_color(&[0.481_454_66, 0.457_827_5, 0.408_210_73]), [122, 116, 104]);
    }

    #[test]
    fn landscape_and_portrait_paste_offsets() {
        let img = RgbImage::from_pixel(6, 2, image::Rgb([9, 9, 9]));
        let sq = expand_to_square(&img, [1, 2, 3]);
        assert_eq!(sq.dimensions(), (6, 6));
        assert_eq!(sq.get_pixel(0, 1).0, [1, 2, 3]);
        assert_eq!(sq.get_pixel(0, 2).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(5, 3).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(5, 4).0, [1, 2, 3]);
        let tall = expand_to_square(&image::imageops::rotate90(&img), [1, 2, 3]);
        assert_eq!(tall.get_pixel(1, 0).0, [1, 2, 3]);
        assert_eq!(tall.get_pixel(2, 0).0, [9, 9, 9]);
    }

    #[test]
    fn bicubic_keeps_constant_images_and_identity_sizes() {
        let c = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 77]));
        let r = resize_bicubic(&c, 11, 50);
        assert!(r.pixels().all(|p| p.0 == [200, 10, 77]));
        let mut g = RgbImage::new(5, 4);
        for (x, y, p) in g.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 40) as u8, (y * 50) as u8, 3]);
        }
        assert_eq!(resize_bicubic(&g, 5, 4), g);
    }

    #[test]
    fn shortest_edge_keeps_the_aspect_ratio_like_transformers() {
        assert_eq!(shortest_edge_size(70, 70, 56), (56, 56));
        assert_eq!(shortest_edge_size(640, 480, 336), (448, 336));
        assert_eq!(shortest_edge_size(100, 333, 10), (10, 33));
    }
}
