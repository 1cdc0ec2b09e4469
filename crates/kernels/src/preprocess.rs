//! Frame preprocessing: colour conversion, Pillow-exact antialiased resize, rescale + normalize,
//! planar CHW output. This file holds the shared definitions (formats, colour matrices, filter
//! coefficients, normalization table) and the CPU twin; `crate::gpu::preprocess` runs the same
//! maths in CUDA (`kernels/preprocess.cu`).
//!
//! The maths is defined so that the GPU and the CPU give identical results and match
//! transformers' PIL-based image processors:
//! 1. YUV -> RGB24 in 16.16 fixed point (nearest chroma sample), exact integers;
//! 2. resize in u8 exactly as Pillow's `Image.resize` (`Resample.c`): per-axis coefficients from the
//!    filter scaled by the downscale factor (antialiasing), rounded to 22-bit fixed point,
//!    horizontal pass first into u8, then vertical pass;
//! 3. `((v as f64 * rescale) as f32 - mean) / std` per channel, as transformers' `rescale` then
//!    `normalize` do, precomputed into a 3x256 table;
//! 4. conversion to f16 / bf16 by round-to-nearest-even.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{invalid, KernelError};

/// Resampling filter, as Pillow defines them (`Image.Resampling.BILINEAR/BICUBIC/LANCZOS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Triangle filter, support 1 (Pillow `BILINEAR`).
    Bilinear,
    /// Cubic convolution with a = -0.5, support 2 (Pillow `BICUBIC`).
    Bicubic,
    /// Lanczos windowed sinc, support 3 (Pillow `LANCZOS`; SmolVLM's and Idefics3's default).
    Lanczos3,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos3 => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
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
            Filter::Lanczos3 => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// How the rescale and the normalization are combined; transformers' two image-processor backends
/// round differently, and each model's reference is one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormOrder {
    /// `((v as f64 * rescale) as f32 - mean) / std`: the numpy/PIL processors, which `rescale`
    /// (in float64) and then `normalize`.
    RescaleFirst,
    /// `(v - mean * k) / (std * k)` in f32 with `k = (1 / rescale) as f32`: the torchvision
    /// ("fast") processors, which fold the rescale into the normalization. With the identity
    /// normalization (mean 0, std 1) it is their plain rescale, `v * rescale` in f32.
    Fused,
}

/// Per-channel rescale and normalization of a u8 value `v` of channel `c` (R, G, B), in the
/// rounding of [`NormOrder`].
///
/// `rescale` is f64 on purpose: the numpy processors multiply in float64 (`image.astype(np.float64)
/// * scale`) before casting to float32, so keeping it f64 makes the result bit-exact.
///
/// ```
/// use vidlm_kernels::preprocess::{Normalize, NormOrder};
/// let n = Normalize { rescale: 1.0 / 255.0, mean: [0.5; 3], std: [0.5; 3], order: NormOrder::RescaleFirst };
/// assert_eq!(n, Normalize::SIGLIP);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Multiplier applied to the u8 value first (usually 1/255).
    pub rescale: f64,
    /// Per-channel mean subtracted after rescaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by last (must be finite and non-zero).
    pub std: [f32; 3],
    /// Which rounding (see [`NormOrder`]).
    pub order: NormOrder,
}

impl Normalize {
    /// SigLIP / SmolVLM / Idefics3: rescale 1/255, mean 0.5, std 0.5 (values in [-1, 1]).
    pub const SIGLIP: Normalize = Normalize {
        rescale: 1.0 / 255.0,
        mean: [0.5; 3],
        std: [0.5; 3],
        order: NormOrder::RescaleFirst,
    };
    /// CLIP / OpenAI image statistics (transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`).
    #[allow(clippy::excessive_precision)]
    pub const CLIP: Normalize = Normalize {
        rescale: 1.0 / 255.0,
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        order: NormOrder::RescaleFirst,
    };
    /// Only rescale by 1/255 (mean 0, std 1).
    pub const UNIT: Normalize = Normalize {
        rescale: 1.0 / 255.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        order: NormOrder::RescaleFirst,
    };

    /// The 3x256 table of normalized values (index `c * 256 + v`).
    ///
    /// # Errors
    /// `InvalidInput` if a std is zero or a parameter is not finite.
    pub fn table(&self) -> Result<Vec<f32>, KernelError> {
        if !self.rescale.is_finite() || self.rescale == 0.0 {
            return Err(invalid(format!(
                "normalize: rescale {} is not finite and non-zero",
                self.rescale
            )));
        }
        for c in 0..3 {
            if !self.mean[c].is_finite() || !self.std[c].is_finite() || self.std[c] == 0.0 {
                return Err(invalid(format!(
                    "normalize: channel {c} has mean {} std {} (need finite, std != 0)",
                    self.mean[c], self.std[c]
                )));
            }
        }
        let mut t = vec![0f32; 768];
        let identity = self.mean == [0.0; 3] && self.std == [1.0; 3];
        let k = (1.0 / self.rescale) as f32;
        for c in 0..3 {
            let (m, s) = (self.mean[c] * k, self.std[c] * k);
            for v in 0..256 {
                t[c * 256 + v] = match self.order {
                    NormOrder::RescaleFirst => {
                        ((v as f64 * self.rescale) as f32 - self.mean[c]) / self.std[c]
                    }
                    NormOrder::Fused if identity => v as f32 * self.rescale as f32,
                    NormOrder::Fused => (v as f32 - m) / s,
                };
            }
        }
        Ok(t)
    }
}

/// Layout of a decoded frame. The product hands RGB24 today (vidlm-media converts with swscale);
/// the YUV layouts are the inputs of a GPU decode path (NVDEC gives NV12) that skips that copy, and
/// are kept, tested against their CPU twins, for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed R, G, B bytes (one plane, `width * 3` bytes a row).
    Rgb24,
    /// Luma plane + interleaved U/V plane at half resolution (hardware decoders' output).
    Nv12,
    /// Luma plane + U plane + V plane, chroma at half resolution (software decoders' output).
    Yuv420p,
}

/// YUV -> RGB matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColorMatrix {
    /// ITU-R BT.601 (SD video): Kr = 0.299, Kb = 0.114.
    Bt601,
    /// ITU-R BT.709 (HD video): Kr = 0.2126, Kb = 0.0722.
    Bt709,
}

/// Quantization range of YUV samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColorRange {
    /// "TV"/MPEG range: Y in 16..=235, U/V in 16..=240.
    Limited,
    /// "PC"/JPEG range: all of 0..=255.
    Full,
}

/// How to turn YUV into RGB (ignored for RGB24 input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColorSpec {
    /// The matrix (BT.601 or BT.709).
    pub matrix: ColorMatrix,
    /// The range (limited or full).
    pub range: ColorRange,
}

impl ColorSpec {
    /// BT.709 limited range, what HD streams carry.
    pub const BT709_LIMITED: ColorSpec = ColorSpec {
        matrix: ColorMatrix::Bt709,
        range: ColorRange::Limited,
    };
    /// BT.601 limited range, what SD streams carry.
    pub const BT601_LIMITED: ColorSpec = ColorSpec {
        matrix: ColorMatrix::Bt601,
        range: ColorRange::Limited,
    };

    /// The 16.16 fixed-point coefficients shared by the CPU twin and the CUDA kernel.
    pub fn coeffs(&self) -> ColorCoeffs {
        let (kr, kb) = match self.matrix {
            ColorMatrix::Bt601 => (0.299f64, 0.114f64),
            ColorMatrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (ys, cs, y_off) = match self.range {
            ColorRange::Limited => (255.0 / 219.0, 255.0 / 224.0, 16),
            ColorRange::Full => (1.0, 1.0, 0),
        };
        let fx = |v: f64| (v * 65536.0).round() as i32;
        ColorCoeffs {
            y_off,
            cy: fx(ys),
            crv: fx(2.0 * (1.0 - kr) * cs),
            cgu: fx(2.0 * kb * (1.0 - kb) / kg * cs),
            cgv: fx(2.0 * kr * (1.0 - kr) / kg * cs),
            cbu: fx(2.0 * (1.0 - kb) * cs),
        }
    }
}

/// 16.16 fixed-point YUV -> RGB coefficients:
/// `R = (cy*(Y-y_off) + crv*(V-128) + 2^15) >> 16`, `G = (cy*(Y-y_off) - cgu*(U-128) -
/// cgv*(V-128) + 2^15) >> 16`, `B = (cy*(Y-y_off) + cbu*(U-128) + 2^15) >> 16`, each clamped to
/// 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColorCoeffs {
    /// Luma offset (16 for limited range, 0 for full).
    pub y_off: i32,
    /// Luma gain.
    pub cy: i32,
    /// V contribution to R.
    pub crv: i32,
    /// U contribution to G (subtracted).
    pub cgu: i32,
    /// V contribution to G (subtracted).
    pub cgv: i32,
    /// U contribution to B.
    pub cbu: i32,
}

impl ColorCoeffs {
    /// Converts one YUV sample to RGB.
    #[inline]
    pub fn convert(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let yy = self.cy * (y as i32 - self.y_off) + (1 << 15);
        let u = u as i32 - 128;
        let v = v as i32 - 128;
        let c = |x: i32| (x >> 16).clamp(0, 255) as u8;
        [
            c(yy + self.crv * v),
            c(yy - self.cgu * u - self.cgv * v),
            c(yy + self.cbu * u),
        ]
    }
}

/// A decoded frame in host memory: up to three planes with their row strides (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The layout.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Planes: RGB24 uses `[0]`; NV12 uses `[0]` (Y) and `[1]` (UV); YUV420P uses all three.
    pub planes: [&'a [u8]; 3],
    /// Row stride of each plane in bytes.
    pub strides: [usize; 3],
}

impl<'a> Frame<'a> {
    /// A packed RGB24 frame with rows of exactly `width * 3` bytes.
    ///
    /// # Errors
    /// `InvalidInput` if a size is zero or `data` is shorter than `width * height * 3`.
    pub fn rgb24(data: &'a [u8], width: u32, height: u32) -> Result<Self, KernelError> {
        let f = Frame {
            format: PixelFormat::Rgb24,
            width,
            height,
            planes: [data, &[], &[]],
            strides: [width as usize * 3, 0, 0],
        };
        f.validate()?;
        Ok(f)
    }

    /// An NV12 frame (`uv` interleaved U, V at half resolution, rounded up).
    ///
    /// # Errors
    /// `InvalidInput` if a size is zero or a plane is too short for its stride.
    pub fn nv12(
        y: &'a [u8],
        y_stride: usize,
        uv: &'a [u8],
        uv_stride: usize,
        width: u32,
        height: u32,
    ) -> Result<Self, KernelError> {
        let f = Frame {
            format: PixelFormat::Nv12,
            width,
            height,
            planes: [y, uv, &[]],
            strides: [y_stride, uv_stride, 0],
        };
        f.validate()?;
        Ok(f)
    }

    /// A YUV420P frame (three planes, chroma at half resolution, rounded up).
    ///
    /// # Errors
    /// `InvalidInput` if a size is zero or a plane is too short for its stride.
    #[allow(clippy::too_many_arguments)]
    pub fn yuv420p(
        y: &'a [u8],
        y_stride: usize,
        u: &'a [u8],
        u_stride: usize,
        v: &'a [u8],
        v_stride: usize,
        width: u32,
        height: u32,
    ) -> Result<Self, KernelError> {
        let f = Frame {
            format: PixelFormat::Yuv420p,
            width,
            height,
            planes: [y, u, v],
            strides: [y_stride, u_stride, v_stride],
        };
        f.validate()?;
        Ok(f)
    }

    /// (row bytes, rows) of each plane in use.
    pub(crate) fn plane_dims(&self) -> Vec<(usize, usize)> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match self.format {
            PixelFormat::Rgb24 => vec![(w * 3, h)],
            PixelFormat::Nv12 => vec![(w, h), (cw * 2, ch)],
            PixelFormat::Yuv420p => vec![(w, h), (cw, ch), (cw, ch)],
        }
    }

    /// Checks sizes, strides and plane lengths.
    ///
    /// # Errors
    /// `InvalidInput` naming the plane and the reason.
    pub fn validate(&self) -> Result<(), KernelError> {
        if self.width == 0 || self.height == 0 {
            return Err(invalid(format!(
                "frame size {}x{} is empty",
                self.width, self.height
            )));
        }
        if self.width > 1 << 15 || self.height > 1 << 15 {
            return Err(invalid(format!(
                "frame size {}x{} exceeds 32768",
                self.width, self.height
            )));
        }
        for (i, (row, rows)) in self.plane_dims().into_iter().enumerate() {
            let stride = self.strides[i];
            if stride < row {
                return Err(invalid(format!(
                    "plane {i}: stride {stride} < row size {row}"
                )));
            }
            let need = stride * (rows - 1) + row;
            if self.planes[i].len() < need {
                return Err(invalid(format!(
                    "plane {i}: {} bytes, need {need} for {}x{} {:?}",
                    self.planes[i].len(),
                    self.width,
                    self.height,
                    self.format
                )));
            }
        }
        Ok(())
    }
}

/// Converts a YUV (or RGB24) frame to packed RGB24 (`width * height * 3` bytes), the first step of
/// the CPU twin. Chroma is taken from the nearest sample (`x / 2`, `y / 2`), as the GPU kernel does.
///
/// # Errors
/// `InvalidInput` if the frame is malformed or `out` has the wrong length.
pub fn to_rgb24(frame: &Frame, color: ColorSpec, out: &mut [u8]) -> Result<(), KernelError> {
    frame.validate()?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    if out.len() != w * h * 3 {
        return Err(invalid(format!(
            "to_rgb24: out has {} bytes, need {}",
            out.len(),
            w * h * 3
        )));
    }
    let cc = color.coeffs();
    out.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
        let yrow = &frame.planes[0][y * frame.strides[0]..];
        match frame.format {
            PixelFormat::Rgb24 => row.copy_from_slice(&yrow[..w * 3]),
            PixelFormat::Nv12 => {
                let uv = &frame.planes[1][(y / 2) * frame.strides[1]..];
                for (x, px) in row.chunks_exact_mut(3).enumerate() {
                    let c = x / 2;
                    px.copy_from_slice(&cc.convert(yrow[x], uv[2 * c], uv[2 * c + 1]));
                }
            }
            PixelFormat::Yuv420p => {
                let u = &frame.planes[1][(y / 2) * frame.strides[1]..];
                let v = &frame.planes[2][(y / 2) * frame.strides[2]..];
                for (x, px) in row.chunks_exact_mut(3).enumerate() {
                    px.copy_from_slice(&cc.convert(yrow[x], u[x / 2], v[x / 2]));
                }
            }
        }
    });
    Ok(())
}

/// Fixed-point precision of Pillow's 8-bit convolution (`PRECISION_BITS = 32 - 8 - 2`).
pub const PRECISION_BITS: u32 = 22;

/// One axis' resampling coefficients, exactly as Pillow computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisCoeffs {
    /// Taps per output sample (the table's row length).
    pub ksize: usize,
    /// For each output sample: first input index and number of taps, interleaved.
    pub bounds: Vec<i32>,
    /// `out_size * ksize` fixed-point weights (22 fractional bits), zero past each sample's taps.
    pub weights: Vec<i32>,
}

impl AxisCoeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-image box.
    pub fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size * 2);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // `as i32` truncates toward zero like C's (int) cast.
            let xmin = ((center - support + 0.5) as i32).max(0);
            let xmax = ((center + support + 0.5) as i32).min(in_size as i32) - xmin;
            let mut ww = 0.0;
            let taps = xmax.max(0) as usize;
            for (x, kx) in k.iter_mut().enumerate().take(taps) {
                let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (r, &kx) in row.iter_mut().zip(&k).take(taps) {
                let w = if ww != 0.0 { kx / ww } else { kx };
                let scaled = w * (1 << PRECISION_BITS) as f64;
                // C's (int) cast truncates toward zero, as Rust's `as` does.
                *r = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            bounds.push(xmin);
            bounds.push(xmax.max(0));
        }
        AxisCoeffs {
            ksize,
            bounds,
            weights,
        }
    }

    /// Smallest and one-past-largest input index any output sample reads.
    pub fn input_span(&self) -> (usize, usize) {
        let mut lo = usize::MAX;
        let mut hi = 0;
        for b in self.bounds.chunks_exact(2) {
            lo = lo.min(b[0] as usize);
            hi = hi.max((b[0] + b[1]) as usize);
        }
        (lo.min(hi), hi)
    }
}

/// Pillow's `clip8`: the accumulator (with its rounding half already added) shifted down and
/// clamped.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which of the two resize passes runs first. The intermediate image is rounded to u8, so the
/// two orders can differ by a few levels; each model's reference fixes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PassOrder {
    /// Pillow 13 (`Resample.c`): vertical first when the height shrinks by more than twice as
    /// many pixels as the width (`sh - dh > 0 && sh - dh > 2 * (sw - dw)`), else horizontal
    /// first. PIL-based processors (SmolVLM2) resize this way.
    #[default]
    Pillow,
    /// Always horizontal first: Pillow 12 and older, and torchvision's antialiased u8 resize
    /// (Qwen3-VL's processors).
    HorizontalFirst,
}

/// A resize geometry: both axes' coefficients and the order of the two passes
/// ([`PassOrder`]). When the horizontal pass runs first it covers only the source rows the
/// vertical pass reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizePlan {
    /// Source width.
    pub src_w: usize,
    /// Source height.
    pub src_h: usize,
    /// Output width.
    pub dst_w: usize,
    /// Output height.
    pub dst_h: usize,
    /// The filter.
    pub filter: Filter,
    /// Horizontal coefficients (output columns, absolute source columns).
    pub horiz: AxisCoeffs,
    /// Vertical coefficients (output rows, absolute source rows).
    pub vert: AxisCoeffs,
    /// True when the vertical pass runs first (see the type's doc).
    pub vertical_first: bool,
    /// Horizontal first: the first source row the vertical pass reads (0 when vertical first).
    pub row0: usize,
    /// Rows of the intermediate image (`src rows read` when horizontal first, else `dst_h`).
    pub tmp_rows: usize,
    /// Width in pixels of the intermediate image (`dst_w` when horizontal first, else `src_w`).
    pub tmp_w: usize,
}

impl ResizePlan {
    /// Computes the coefficients for `src` -> `dst` with `filter`, passes in Pillow's order
    /// ([`PassOrder::Pillow`]).
    ///
    /// # Errors
    /// `InvalidInput` if a size is zero or above 32768.
    pub fn new(
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
    ) -> Result<Self, KernelError> {
        Self::with_order(src_w, src_h, dst_w, dst_h, filter, PassOrder::Pillow)
    }

    /// [`ResizePlan::new`] with the passes in `order`.
    ///
    /// # Errors
    /// `InvalidInput` if a size is zero or above 32768.
    pub fn with_order(
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
        order: PassOrder,
    ) -> Result<Self, KernelError> {
        for (name, v) in [
            ("src width", src_w),
            ("src height", src_h),
            ("dst width", dst_w),
            ("dst height", dst_h),
        ] {
            if v == 0 || v > 1 << 15 {
                return Err(invalid(format!("resize: {name} {v} is not in 1..=32768")));
            }
        }
        let horiz = AxisCoeffs::new(src_w as usize, dst_w as usize, filter);
        let vert = AxisCoeffs::new(src_h as usize, dst_h as usize, filter);
        let dy = src_h as i64 - dst_h as i64;
        let dx = src_w as i64 - dst_w as i64;
        let vertical_first = order == PassOrder::Pillow && dy > 0 && dy > 2 * dx;
        let (row0, tmp_rows, tmp_w) = if vertical_first {
            (0, dst_h as usize, src_w as usize)
        } else {
            let (lo, hi) = vert.input_span();
            (lo, hi - lo, dst_w as usize)
        };
        Ok(ResizePlan {
            src_w: src_w as usize,
            src_h: src_h as usize,
            dst_w: dst_w as usize,
            dst_h: dst_h as usize,
            filter,
            horiz,
            vert,
            vertical_first,
            row0,
            tmp_rows,
            tmp_w,
        })
    }

    /// Horizontal pass over one packed RGB24 row into `dst_w * 3` bytes. `pad` is scratch: the
    /// row is copied there with one spare byte so each tap loads four bytes (R, G, B and the
    /// next pixel's R, ignored), which the compiler turns into one 4-lane multiply-add.
    #[inline]
    fn hconv(&self, src: &[u8], out: &mut [u8], pad: &mut Vec<u8>) {
        pad.clear();
        pad.extend_from_slice(src);
        pad.push(0);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { hconv_avx2(self, pad, out) };
            return;
        }
        hconv_lanes(self, pad, out);
    }

    /// Horizontal pass over source rows `y0..y0 + rows` (at most [`BLOCK`]) into `rows` rows of
    /// `out`. The rows are transposed into `t` (byte `i` of row `r` at `i * BLOCK + r`) so every
    /// tap multiplies BLOCK lanes at once; missing rows of a short block repeat the last one.
    #[inline]
    fn hconv_block(
        &self,
        src: &[u8],
        stride: usize,
        y0: usize,
        rows: usize,
        t: &mut Vec<u8>,
        out: &mut [u8],
    ) {
        let len = self.src_w * 3;
        t.resize(len * BLOCK, 0);
        let lines: [&[u8]; BLOCK] = std::array::from_fn(|r| {
            let y = y0 + r.min(rows - 1);
            &src[y * stride..y * stride + len]
        });
        // Gather byte i of every row into 8 consecutive bytes (sequential writes).
        for (i, dst) in t.chunks_exact_mut(BLOCK).enumerate() {
            for (d, line) in dst.iter_mut().zip(&lines) {
                *d = line[i];
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { hconv_block_avx2(self, t, rows, out) };
            return;
        }
        hconv_block_lanes(self, t, rows, out);
    }

    /// Vertical pass for output row `yy`: rows of `src` (stride `stride`, first row = source row
    /// `first_row`), `out.len()` bytes a row.
    #[inline]
    fn vconv(
        &self,
        src: &[u8],
        stride: usize,
        first_row: usize,
        yy: usize,
        acc: &mut [i32],
        out: &mut [u8],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { vconv_avx2(self, src, stride, first_row, yy, acc, out) };
            return;
        }
        vconv_rows(self, src, stride, first_row, yy, acc, out);
    }

    /// First pass: packed RGB24 source (row stride `stride`) -> intermediate
    /// (`tmp_rows * tmp_w * 3` bytes).
    fn pass1(&self, src: &[u8], stride: usize, tmp: &mut Vec<u8>) {
        let row = self.tmp_w * 3;
        tmp.resize(self.tmp_rows * row, 0);
        if self.vertical_first {
            tmp.par_chunks_mut(row).enumerate().for_each_init(
                || vec![0i32; row],
                |acc, (yy, dst)| self.vconv(src, stride, 0, yy, acc, dst),
            );
        } else {
            // Blocks of BLOCK rows, transposed so each tap is one BLOCK-lane multiply-add.
            tmp.par_chunks_mut(row * BLOCK)
                .enumerate()
                .for_each_init(Vec::new, |t, (b, dst)| {
                    let y0 = self.row0 + b * BLOCK;
                    let rows = dst.len() / row;
                    self.hconv_block(src, stride, y0, rows, t, dst);
                });
        }
    }

    /// Second pass for output row `yy`: intermediate -> packed RGB24 (`dst_w * 3` bytes).
    #[inline]
    fn pass2_row(&self, tmp: &[u8], yy: usize, acc: &mut [i32], pad: &mut Vec<u8>, out: &mut [u8]) {
        let row = self.tmp_w * 3;
        if self.vertical_first {
            self.hconv(&tmp[yy * row..(yy + 1) * row], out, pad);
        } else {
            self.vconv(tmp, row, self.row0, yy, acc, out);
        }
    }
}

/// [`ResizePlan::hconv`]'s loop; `src` has one readable byte past the row.
#[inline(always)]
fn hconv_lanes(p: &ResizePlan, src: &[u8], out: &mut [u8]) {
    let ks = p.horiz.ksize;
    let half = 1i32 << (PRECISION_BITS - 1);
    for (xx, px) in out.chunks_exact_mut(3).enumerate() {
        let xmin = p.horiz.bounds[2 * xx] as usize;
        let n = p.horiz.bounds[2 * xx + 1] as usize;
        let k = &p.horiz.weights[xx * ks..xx * ks + n];
        let s = &src[xmin * 3..xmin * 3 + n * 3 + 1];
        let mut acc = [half; 4];
        for (j, &w) in k.iter().enumerate() {
            let q: &[u8; 4] = s[j * 3..j * 3 + 4].try_into().expect("4 bytes");
            for l in 0..4 {
                acc[l] += q[l] as i32 * w;
            }
        }
        px[0] = clip8(acc[0]);
        px[1] = clip8(acc[1]);
        px[2] = clip8(acc[2]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hconv_avx2(p: &ResizePlan, src: &[u8], out: &mut [u8]) {
    hconv_lanes(p, src, out)
}

/// Rows per block of the horizontal pass (one AVX2 register of i32 lanes).
const BLOCK: usize = 8;

/// [`ResizePlan::hconv_block`]'s loop over a transposed block.
#[inline(always)]
fn hconv_block_lanes(p: &ResizePlan, t: &[u8], rows: usize, out: &mut [u8]) {
    let ks = p.horiz.ksize;
    let row = p.dst_w * 3;
    let half = 1i32 << (PRECISION_BITS - 1);
    for xx in 0..p.dst_w {
        let xmin = p.horiz.bounds[2 * xx] as usize;
        let n = p.horiz.bounds[2 * xx + 1] as usize;
        let k = &p.horiz.weights[xx * ks..xx * ks + n];
        let s = &t[xmin * 3 * BLOCK..(xmin + n) * 3 * BLOCK];
        let mut acc = [[half; BLOCK]; 3];
        for (px, &w) in s.chunks_exact(3 * BLOCK).zip(k) {
            for (c, a) in acc.iter_mut().enumerate() {
                let v: &[u8; BLOCK] = px[c * BLOCK..(c + 1) * BLOCK].try_into().expect("block");
                for r in 0..BLOCK {
                    a[r] += v[r] as i32 * w;
                }
            }
        }
        for r in 0..rows {
            for (c, a) in acc.iter().enumerate() {
                out[r * row + xx * 3 + c] = clip8(a[r]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hconv_block_avx2(p: &ResizePlan, t: &[u8], rows: usize, out: &mut [u8]) {
    hconv_block_lanes(p, t, rows, out)
}

/// [`ResizePlan::vconv`]'s loop.
#[inline(always)]
fn vconv_rows(
    p: &ResizePlan,
    src: &[u8],
    stride: usize,
    first_row: usize,
    yy: usize,
    acc: &mut [i32],
    out: &mut [u8],
) {
    let ks = p.vert.ksize;
    let ymin = p.vert.bounds[2 * yy] as usize - first_row;
    let n = p.vert.bounds[2 * yy + 1] as usize;
    let k = &p.vert.weights[yy * ks..yy * ks + n];
    let len = out.len();
    let acc = &mut acc[..len];
    acc.fill(1 << (PRECISION_BITS - 1));
    for (j, &w) in k.iter().enumerate() {
        let row = &src[(ymin + j) * stride..(ymin + j) * stride + len];
        for (a, &s) in acc.iter_mut().zip(row) {
            *a += s as i32 * w;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = clip8(a);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vconv_avx2(
    p: &ResizePlan,
    src: &[u8],
    stride: usize,
    first_row: usize,
    yy: usize,
    acc: &mut [i32],
    out: &mut [u8],
) {
    vconv_rows(p, src, stride, first_row, yy, acc, out)
}

/// Element types the preprocess output can be written in.
pub trait OutElem: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// Which dtype this is.
    const DTYPE: OutDtype;
    /// Round-to-nearest-even conversion from f32.
    fn from_f32(v: f32) -> Self;
    /// Back to f32 (for comparisons).
    fn to_f32(self) -> f32;
    /// A NaN of this type, used to poison outputs in tests.
    fn nan() -> Self;
}

/// Output dtype of the preprocess kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl OutElem for f32 {
    const DTYPE: OutDtype = OutDtype::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn nan() -> Self {
        f32::NAN
    }
}

impl OutElem for f16 {
    const DTYPE: OutDtype = OutDtype::F16;
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn nan() -> Self {
        f16::NAN
    }
}

impl OutElem for bf16 {
    const DTYPE: OutDtype = OutDtype::Bf16;
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn nan() -> Self {
        bf16::NAN
    }
}

/// Reusable CPU preprocessor for one geometry: keeps the coefficients, the normalization table
/// and scratch buffers so a stream of frames allocates nothing per frame.
///
/// ```
/// use vidlm_kernels::preprocess::{CpuPreprocessor, Filter, Frame, ColorSpec, Normalize};
/// let rgb = vec![200u8; 4 * 3 * 3];
/// let mut pp = CpuPreprocessor::new(4, 3, 2, 2, Filter::Lanczos3, &Normalize::SIGLIP).unwrap();
/// let mut out = vec![0f32; 3 * 2 * 2];
/// pp.run(&Frame::rgb24(&rgb, 4, 3).unwrap(), ColorSpec::BT709_LIMITED, &mut out).unwrap();
/// assert!((out[0] - (200.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct CpuPreprocessor {
    plan: ResizePlan,
    table: Vec<f32>,
    rgb: Vec<u8>,
    tmp: Vec<u8>,
}

impl CpuPreprocessor {
    /// Prepares `src_w x src_h` -> `dst_w x dst_h` with `filter` and `norm`.
    ///
    /// # Errors
    /// `InvalidInput` for empty/oversized geometry or a bad normalization.
    pub fn new(
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
        norm: &Normalize,
    ) -> Result<Self, KernelError> {
        Ok(CpuPreprocessor {
            plan: ResizePlan::new(src_w, src_h, dst_w, dst_h, filter)?,
            table: norm.table()?,
            rgb: Vec::new(),
            tmp: Vec::new(),
        })
    }

    /// The resize plan in use.
    pub fn plan(&self) -> &ResizePlan {
        &self.plan
    }

    /// Colour-converts, resizes and normalizes `frame` into planar CHW `out`
    /// (`3 * dst_h * dst_w` elements).
    ///
    /// # Errors
    /// `InvalidInput` if the frame is malformed, its size differs from the plan's, or `out` has the
    /// wrong length.
    pub fn run<T: OutElem>(
        &mut self,
        frame: &Frame,
        color: ColorSpec,
        out: &mut [T],
    ) -> Result<(), KernelError> {
        frame.validate()?;
        let p = &self.plan;
        if (frame.width as usize, frame.height as usize) != (p.src_w, p.src_h) {
            return Err(invalid(format!(
                "preprocess: frame is {}x{}, plan expects {}x{}",
                frame.width, frame.height, p.src_w, p.src_h
            )));
        }
        let plane = p.dst_w * p.dst_h;
        if out.len() != 3 * plane {
            return Err(invalid(format!(
                "preprocess: out has {} elements, need 3*{}*{} = {}",
                out.len(),
                p.dst_h,
                p.dst_w,
                3 * plane
            )));
        }
        // Packed RGB24 source rows: the frame itself when it already is tightly packed RGB24.
        let (src, stride): (&[u8], usize) = if frame.format == PixelFormat::Rgb24 {
            (frame.planes[0], frame.strides[0])
        } else {
            self.rgb.resize(p.src_w * p.src_h * 3, 0);
            to_rgb24(frame, color, &mut self.rgb)?;
            (&self.rgb, p.src_w * 3)
        };
        p.pass1(src, stride, &mut self.tmp);
        let row = p.dst_w * 3;
        let table = &self.table;
        let tmp = &self.tmp;
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        r_plane
            .par_chunks_mut(p.dst_w)
            .zip(g_plane.par_chunks_mut(p.dst_w))
            .zip(b_plane.par_chunks_mut(p.dst_w))
            .enumerate()
            .for_each_init(
                || (vec![0i32; row], Vec::new(), vec![0u8; row]),
                |(acc, pad, px), (yy, ((r, g), b))| {
                    p.pass2_row(tmp, yy, acc, pad, px);
                    for (x, rgb) in px.chunks_exact(3).enumerate() {
                        r[x] = T::from_f32(table[rgb[0] as usize]);
                        g[x] = T::from_f32(table[256 + rgb[1] as usize]);
                        b[x] = T::from_f32(table[512 + rgb[2] as usize]);
                    }
                },
            );
        Ok(())
    }
}

/// Resizes packed RGB24 (`width * height * 3` bytes) to `dst_w x dst_h` and writes the rescaled,
/// normalized result as planar CHW f32 into `out` (`3 * dst_h * dst_w`).
///
/// The resize is Pillow's (`Image.resize(size, resample)` with no `reducing_gap`) bit for bit, and
/// the normalization is transformers' `rescale` + `normalize`, so the output equals what
/// transformers' PIL-based image processors compute for the same resize.
///
/// # Errors
/// `InvalidInput` if a size is zero or above 32768, `src` is shorter than `width * height * 3`,
/// `out` has the wrong length, or `norm` has a zero/non-finite std.
///
/// ```
/// use vidlm_kernels::preprocess::{preprocess_rgb24, Filter, Normalize};
/// let src = vec![255u8; 8 * 8 * 3];
/// let mut out = vec![0f32; 3 * 4 * 4];
/// preprocess_rgb24(&src, 8, 8, 4, 4, Filter::Bicubic, &Normalize::SIGLIP, &mut out).unwrap();
/// assert!(out.iter().all(|&v| v == 1.0));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn preprocess_rgb24(
    src: &[u8],
    width: u32,
    height: u32,
    dst_w: u32,
    dst_h: u32,
    filter: Filter,
    norm: &Normalize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let frame = Frame::rgb24(src, width, height)?;
    let mut pp = CpuPreprocessor::new(width, height, dst_w, dst_h, filter, norm)?;
    pp.run(&frame, ColorSpec::BT709_LIMITED, out)
}

/// Resizes packed RGB24 exactly as Pillow does, keeping u8 packed output (`dst_w * dst_h * 3`).
///
/// # Errors
/// `InvalidInput` for bad sizes or buffer lengths.
///
/// ```
/// use vidlm_kernels::preprocess::{resize_rgb24, Filter};
/// let src = vec![7u8; 6 * 4 * 3];
/// let mut out = vec![0u8; 3 * 2 * 3];
/// resize_rgb24(&src, 6, 4, 3, 2, Filter::Lanczos3, &mut out).unwrap();
/// assert!(out.iter().all(|&v| v == 7));
/// ```
pub fn resize_rgb24(
    src: &[u8],
    width: u32,
    height: u32,
    dst_w: u32,
    dst_h: u32,
    filter: Filter,
    out: &mut [u8],
) -> Result<(), KernelError> {
    let p = ResizePlan::new(width, height, dst_w, dst_h, filter)?;
    resize_rgb24_plan(&p, src, out)
}

/// Resizes packed RGB24 (`plan.src_w * plan.src_h * 3` bytes) by a prepared plan (for a pass
/// order other than Pillow's, or to reuse the coefficients over many frames).
///
/// # Errors
/// `InvalidInput` for buffer lengths that do not match the plan.
///
/// ```
/// use vidlm_kernels::preprocess::{resize_rgb24_plan, Filter, PassOrder, ResizePlan};
/// let plan = ResizePlan::with_order(4, 8, 2, 2, Filter::Bicubic, PassOrder::HorizontalFirst).unwrap();
/// let src = vec![9u8; 4 * 8 * 3];
/// let mut out = vec![0u8; 2 * 2 * 3];
/// resize_rgb24_plan(&plan, &src, &mut out).unwrap();
/// assert_eq!(out, vec![9u8; 12]);
/// ```
pub fn resize_rgb24_plan(p: &ResizePlan, src: &[u8], out: &mut [u8]) -> Result<(), KernelError> {
    Frame::rgb24(src, p.src_w as u32, p.src_h as u32)?;
    let row = p.dst_w * 3;
    if out.len() != row * p.dst_h {
        return Err(invalid(format!(
            "resize: out has {} bytes, need {}",
            out.len(),
            row * p.dst_h
        )));
    }
    let mut tmp = Vec::new();
    p.pass1(src, p.src_w * 3, &mut tmp);
    out.par_chunks_mut(row).enumerate().for_each_init(
        || (vec![0i32; row], Vec::new()),
        |(acc, pad), (yy, o)| p.pass2_row(&tmp, yy, acc, pad, o),
    );
    Ok(())
}
