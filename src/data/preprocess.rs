//! Turn raw images into the tensor convention the pretrained weights expect.

use super::RawImage;
use crate::spec::Preprocess;
use anyhow::Result;
use candle_core::{Device, Tensor};

const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
const TV_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TV_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Bilinear resize of one CHW f32 plane set (half-pixel centres, as torch's
/// `align_corners=False`).
pub fn resize(src: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    if (h, w) == (oh, ow) {
        return src.to_vec();
    }
    let mut out = vec![0f32; c * oh * ow];
    let coord = |o: usize, scale: f32, n: usize| {
        let x = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (x.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, x - i0 as f32)
    };
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for y in 0..oh {
            let (y0, y1, fy) = coord(y, sy, h);
            for x in 0..ow {
                let (x0, x1, fx) = coord(x, sx, w);
                let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
                let bot = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
                out[ch * oh * ow + y * ow + x] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
    out
}

/// Shorter side to `size`, then the centred `size`×`size` crop (torchvision's
/// `Resize(size)` + `CenterCrop(size)`): a photo keeps its aspect ratio instead of being
/// squashed. A square image (every built-in dataset but the photo sets) is only resized.
pub fn resize_crop(src: &[f32], c: usize, h: usize, w: usize, size: usize) -> Vec<f32> {
    let (oh, ow) = if h <= w {
        (size, (w * size / h).max(size))
    } else {
        ((h * size / w).max(size), size)
    };
    let full = resize(src, c, h, w, oh, ow);
    if (oh, ow) == (size, size) {
        return full;
    }
    let (top, left) = ((oh - size) / 2, (ow - size) / 2);
    let mut out = Vec::with_capacity(c * size * size);
    for ch in 0..c {
        for y in 0..size {
            let row = ch * oh * ow + (top + y) * ow + left;
            out.extend_from_slice(&full[row..row + size]);
        }
    }
    out
}

/// The preset's (low, high) value of each input channel, for pixels in [0, 255].
pub fn bounds(preset: Preprocess) -> [(f32, f32); 3] {
    let px = |v: f32| {
        let img = RawImage {
            c: 3,
            h: 1,
            w: 1,
            data: vec![v as u8; 3],
        };
        to_model_input(&img, 1, preset, Fit::Squash)
    };
    let (lo, hi) = (px(0.0), px(255.0));
    [0, 1, 2].map(|c| (lo[c].min(hi[c]), lo[c].max(hi[c])))
}

/// How an image is brought to the model's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Shorter side to the size, then the centre crop ([`resize_crop`]): what the datasets
    /// get (photos keep their aspect ratio; square images are only resized).
    Crop,
    /// Both sides to the size (aspect ratio not kept): what a reference pipeline that
    /// resizes to (size, size) did, e.g. the ImageNet check images' fixtures.
    Squash,
}

/// One image → 3×size×size f32 in the preset's convention, fitted as `fit` says (grey is
/// replicated to 3 channels).
pub fn to_model_input(img: &RawImage, size: usize, preset: Preprocess, fit: Fit) -> Vec<f32> {
    let f: Vec<f32> = img.data.iter().map(|&p| p as f32).collect();
    let f = match fit {
        Fit::Crop => resize_crop(&f, img.c, img.h, img.w, size),
        Fit::Squash => resize(&f, img.c, img.h, img.w, size, size),
    };
    let plane = size * size;
    let rgb: Vec<&[f32]> = (0..3)
        .map(|c| {
            if img.c == 1 {
                &f[..]
            } else {
                &f[c * plane..(c + 1) * plane]
            }
        })
        .collect();
    let mut out = Vec::with_capacity(3 * plane);
    match preset {
        Preprocess::CaffeBgr => {
            for (c, mean) in CAFFE_MEAN_BGR.iter().enumerate() {
                out.extend(rgb[2 - c].iter().map(|v| v - mean));
            }
        }
        Preprocess::Torchvision => {
            for c in 0..3 {
                out.extend(rgb[c].iter().map(|v| (v / 255.0 - TV_MEAN[c]) / TV_STD[c]));
            }
        }
        Preprocess::Rgb128 | Preprocess::Rgb127 => {
            let mean = if preset == Preprocess::Rgb128 {
                128.0
            } else {
                127.0
            };
            for plane in &rgb {
                out.extend(plane.iter().map(|v| (v - mean) / 128.0));
            }
        }
        Preprocess::CaffeBgrInt => {
            for (c, mean) in [104.0f32, 117.0, 123.0].iter().enumerate() {
                out.extend(rgb[2 - c].iter().map(|v| v - mean));
            }
        }
    }
    out
}

/// Stack images into an (N, 3, size, size) tensor.
pub fn batch(
    images: &[RawImage],
    size: usize,
    preset: Preprocess,
    fit: Fit,
    device: &Device,
) -> Result<Tensor> {
    let mut all = Vec::with_capacity(images.len() * 3 * size * size);
    for img in images {
        all.extend(to_model_input(img, size, preset, fit));
    }
    Ok(Tensor::from_vec(
        all,
        (images.len(), 3, size, size),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_image_keeps_its_centre_not_a_squashed_whole() {
        // 1 channel, 2 high, 4 wide, columns 0..4: the shorter side is already 2, so only
        // the centre crop acts and keeps columns 1 and 2.
        let src = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        assert_eq!(resize_crop(&src, 1, 2, 4, 2), [1.0, 2.0, 11.0, 12.0]);
        // Tall the same way; a square image is only resized.
        let tall = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        assert_eq!(resize_crop(&tall, 1, 4, 2, 2), [2.0, 3.0, 10.0, 11.0]);
        assert_eq!(resize_crop(&[5.0; 4], 1, 2, 2, 2), [5.0; 4]);
    }
}
