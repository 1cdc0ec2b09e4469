//! Scene-change score: each frame's luma is box-averaged onto a small grid (integer maths) and a
//! histogram of the grid values is taken; two frames differ by the mean absolute difference of
//! their grids and the total-variation distance of their histograms. The CPU twin is here; the
//! CUDA kernel (`kernels/scene.cu`, `crate::gpu::scene`) computes the same integers.
//!
//! Not called by the product yet, on purpose: the pipeline's scene scores and the `scene:T` sampler
//! use `vidlm_media::SceneDetector` (FFmpeg's measure, the scale users know from `select=scene`).
//! This pair is the device-side score for when frames stay on the GPU (NVDEC decode), kept with its
//! CPU twin so the GPU check compares them; it goes if that path is dropped.

use rayon::prelude::*;

use crate::error::{invalid, KernelError};
use crate::preprocess::{Frame, PixelFormat};

/// Grid and histogram sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SceneParams {
    /// Grid columns.
    pub grid_w: u32,
    /// Grid rows.
    pub grid_h: u32,
    /// Histogram bins over 0..=255 (a power of two up to 256).
    pub bins: u32,
}

impl Default for SceneParams {
    /// 64x36 grid (16:9), 32 bins.
    fn default() -> Self {
        SceneParams {
            grid_w: 64,
            grid_h: 36,
            bins: 32,
        }
    }
}

impl SceneParams {
    pub(crate) fn check(&self) -> Result<(), KernelError> {
        if self.grid_w == 0 || self.grid_h == 0 || self.grid_w > 1024 || self.grid_h > 1024 {
            return Err(invalid(format!(
                "scene: grid {}x{} not in 1..=1024",
                self.grid_w, self.grid_h
            )));
        }
        if !self.bins.is_power_of_two() || self.bins > 256 {
            return Err(invalid(format!(
                "scene: bins {} must be a power of two <= 256",
                self.bins
            )));
        }
        Ok(())
    }

    /// Pixel span `[start, end)` of grid cell `c` out of `cells` along an axis of `size` pixels
    /// (at least one pixel, so grids larger than the frame still work).
    #[inline]
    pub fn span(c: u32, cells: u32, size: u32) -> (u32, u32) {
        let a = (c as u64 * size as u64 / cells as u64) as u32;
        let b = ((c as u64 + 1) * size as u64 / cells as u64) as u32;
        (a.min(size - 1), b.max(a + 1).min(size))
    }
}

/// A frame's luma signature: grid means (row-major) and their histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LumaSignature {
    /// `grid_h * grid_w` rounded cell means.
    pub grid: Vec<u8>,
    /// `bins` counts of the grid values.
    pub hist: Vec<u32>,
}

/// Luma of an RGB pixel, BT.601 weights in 8.8 fixed point (used for RGB24 input).
#[inline]
pub fn rgb_luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * r as u32 + 150 * g as u32 + 29 * b as u32 + 128) >> 8) as u8
}

/// Computes the luma signature of a frame (YUV: its Y plane; RGB24: [`rgb_luma`]).
///
/// # Errors
/// `InvalidInput` for a malformed frame or bad parameters.
pub fn luma_signature(frame: &Frame, p: SceneParams) -> Result<LumaSignature, KernelError> {
    frame.validate()?;
    p.check()?;
    let mut grid = vec![0u8; (p.grid_w * p.grid_h) as usize];
    grid.par_chunks_mut(p.grid_w as usize)
        .enumerate()
        .for_each(|(cy, row)| {
            let (y0, y1) = SceneParams::span(cy as u32, p.grid_h, frame.height);
            for (cx, v) in row.iter_mut().enumerate() {
                let (x0, x1) = SceneParams::span(cx as u32, p.grid_w, frame.width);
                let mut sum = 0u64;
                for y in y0..y1 {
                    let line = &frame.planes[0][y as usize * frame.strides[0]..];
                    for x in x0..x1 {
                        sum += match frame.format {
                            PixelFormat::Rgb24 => {
                                let i = x as usize * 3;
                                rgb_luma(line[i], line[i + 1], line[i + 2]) as u64
                            }
                            _ => line[x as usize] as u64,
                        };
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u64;
                *v = ((sum + n / 2) / n) as u8;
            }
        });
    let mut hist = vec![0u32; p.bins as usize];
    let shift = 8 - p.bins.trailing_zeros();
    for &v in &grid {
        hist[(v >> shift) as usize] += 1;
    }
    Ok(LumaSignature { grid, hist })
}

/// How different two frames look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneScore {
    /// Mean absolute difference of the luma grids, in 0..=1 (1 = black vs white).
    pub luma_diff: f32,
    /// Total-variation distance of the grid histograms, in 0..=1.
    pub hist_dist: f32,
}

impl SceneScore {
    /// One number for thresholding: the mean of the two distances.
    pub fn combined(&self) -> f32 {
        0.5 * (self.luma_diff + self.hist_dist)
    }
}

/// Scores the change from signature `a` to `b` (same parameters).
///
/// # Errors
/// `InvalidInput` when the signatures come from different grid or bin sizes.
pub fn scene_score(a: &LumaSignature, b: &LumaSignature) -> Result<SceneScore, KernelError> {
    if a.grid.len() != b.grid.len() || a.hist.len() != b.hist.len() || a.grid.is_empty() {
        return Err(invalid("scene: signatures have different or empty sizes"));
    }
    let sad: u64 = a
        .grid
        .iter()
        .zip(&b.grid)
        .map(|(&x, &y)| x.abs_diff(y) as u64)
        .sum();
    let hd: u64 = a
        .hist
        .iter()
        .zip(&b.hist)
        .map(|(&x, &y)| x.abs_diff(y) as u64)
        .sum();
    let n = a.grid.len() as f64;
    Ok(SceneScore {
        luma_diff: (sad as f64 / (n * 255.0)) as f32,
        hist_dist: (hd as f64 / (2.0 * n)) as f32,
    })
}
