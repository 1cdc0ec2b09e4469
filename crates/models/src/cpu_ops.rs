//! Fused CPU kernels where candle's generic ops leave most of the time on the table: softmax
//! attention for the vision towers (no mask; the scores never leave the cache) and for decoder
//! prompts (causal, grouped-query, over a KV cache), and the tanh GELU, all with a vectorized
//! `exp`.
//!
//! Measured on the SmolVLM2-256M vision tower (1024 tokens, 12 heads of 64, 2 threads): candle's
//! `q.matmul(k.t())` + `softmax_last_dim` took ~78 ms a layer, more than its four projections and
//! MLP together; the scores (`heads x n x n` f32, 50 MB) went through memory twice and `exp` ran
//! one lane at a time. Other devices and dtypes take the plain candle path with the same maths.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Query rows per task: a `ROWS x n` score block stays in a core's L2 for n up to a few thousand.
const ROWS: usize = 128;

/// Query rows per call of the tile kernel in causal attention: four of its 6-row tiles.
const TILE_BLOCK: usize = 24;

/// `exp(x)` for `x <= 0` (softmax after subtracting the max; also tanh below): range reduction to
/// `r` in `[-ln2/2, ln2/2]`, a degree-6 Taylor polynomial (relative error ~2e-7, below f32's
/// rounding of the sums that follow) and an exponent built from bits. Written as straight-line
/// arithmetic so the loops calling it vectorize.
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    let x = x.max(EXP_MIN);
    let n = (x * std::f32::consts::LOG2_E + EXP_MAGIC) - EXP_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = EXP_POLY.iter().fold(1.0 / 720.0, |p, &c| p * r + c);
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Below this `exp` is under f32's normal range; softmax weights that small are zero.
const EXP_MIN: f32 = -87.0;
/// 1.5 * 2^23: adding it rounds to the nearest integer (no libm call, so loops vectorize).
const EXP_MAGIC: f32 = 12_582_912.0;
/// ln 2 in two parts, so `x - n ln2` keeps its low bits.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// The Taylor coefficients of `exp(r)` after the leading 1/720, highest degree first (Horner).
const EXP_POLY: [f32; 6] = [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
/// The tanh GELU's constants: `sqrt(2 / pi)` and the cubic term's weight.
const GELU_C: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044715;

/// Lanes of the manual reductions: strict f32 sums and maxima do not vectorize on their own (the
/// compiler may not reorder them), so each lane keeps its own partial result.
const LANES: usize = 16;

/// A softmax without its division, in place: `exp(scale * (x - max))` for scores `x` and `scale`
/// > 0 (the scaling costs no pass of its own); returns the sum the caller divides by.
#[inline(always)]
fn exp_row_generic(row: &mut [f32], scale: f32) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in maxes.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&maxes)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c) {
            *x = exp_nonpos((*x - max) * scale);
            *s += *x;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_nonpos((*x - max) * scale);
        sum += *x;
    }
    sum + sums.iter().sum::<f32>()
}

/// In-place softmax of one row of scores times `scale` (> 0).
#[inline(always)]
fn softmax_row_generic(row: &mut [f32], scale: f32) {
    let inv = 1.0 / exp_row_generic(row, scale);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// The tanh GELU (`gelu_pytorch_tanh`) of one slice, `tanh(y) = 1 - 2 / (exp(2y) + 1)` evaluated
/// through `exp(-2|y|)` so it never overflows.
#[inline(always)]
fn gelu_tanh_generic(dst: &mut [f32], src: &[f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let y = GELU_C * x * (1.0 + GELU_CUBIC * x * x);
        let e = exp_nonpos(-2.0 * y.abs());
        let t = (1.0 - e) / (1.0 + e);
        let t = if y < 0.0 { -t } else { t };
        *d = 0.5 * x * (1.0 + t);
    }
}

/// The AVX2 + FMA forms of the loops above, written with intrinsics: the compiler does not fuse
/// `a * b + c` into one FMA on its own, and `f32::max` / `as i32` carry NaN and saturation fixups
/// the softmax range never needs, so the auto-vectorized loops ran about twice the instructions.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{EXP_MAGIC, EXP_MIN, EXP_POLY, GELU_C, GELU_CUBIC, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// [`super::exp_nonpos`] on 8 lanes: the same range reduction and polynomial, with FMA.
    #[inline(always)]
    pub(super) unsafe fn exp_nonpos8(x: __m256) -> __m256 {
        let magic = _mm256_set1_ps(EXP_MAGIC);
        let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN));
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), magic);
        let n = _mm256_sub_ps(t, magic);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in EXP_POLY {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // t's low mantissa bits hold n (|n| <= 126 here): 2^n from bits, no float-to-int convert.
        let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
        let pow = _mm256_slli_epi32::<23>(_mm256_add_epi32(ni, _mm256_set1_epi32(127)));
        _mm256_mul_ps(p, _mm256_castsi256_ps(pow))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }

    /// [`super::exp_row_generic`]: `exp(scale * x - scale * max)` in place, returning the sum.
    /// (Rounding `scale * max` once scales every weight by the same factor, which the caller's
    /// division by the sum cancels.)
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_row(row: &mut [f32], scale: f32) -> f32 {
        let n = row.len();
        let p = row.as_mut_ptr();
        let mut m0 = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut m1 = m0;
        let mut i = 0;
        while i + 16 <= n {
            m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p.add(i)));
            m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p.add(i + 8)));
            i += 16;
        }
        if i + 8 <= n {
            m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut max = hmax(_mm256_max_ps(m0, m1));
        for &x in &row[i..] {
            max = max.max(x);
        }
        let vs = _mm256_set1_ps(scale);
        let ms = _mm256_set1_ps(scale * max);
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let a = exp_nonpos8(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(i)), vs, ms));
            let b = exp_nonpos8(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(i + 8)), vs, ms));
            _mm256_storeu_ps(p.add(i), a);
            _mm256_storeu_ps(p.add(i + 8), b);
            s0 = _mm256_add_ps(s0, a);
            s1 = _mm256_add_ps(s1, b);
            i += 16;
        }
        if i + 8 <= n {
            let a = exp_nonpos8(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(i)), vs, ms));
            _mm256_storeu_ps(p.add(i), a);
            s0 = _mm256_add_ps(s0, a);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        for x in &mut row[i..] {
            *x = super::exp_nonpos((*x - max) * scale);
            sum += *x;
        }
        sum
    }

    /// [`super::softmax_row_generic`]: [`exp_row`], then the division by the sum.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_row(row: &mut [f32], scale: f32) {
        let inv = 1.0 / exp_row(row, scale);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }

    /// [`super::silu_mul_generic`] on 8 lanes at a time (the tail through the scalar form).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
        let n = g.len().min(u.len());
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = exp_nonpos8(_mm256_or_ps(x, sign)); // exp(-|x|)
            let r = _mm256_div_ps(one, _mm256_add_ps(one, e));
            // sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below (x's sign bit picks)
            let s = _mm256_blendv_ps(r, _mm256_mul_ps(e, r), x);
            let y = _mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(g.as_mut_ptr().add(i), y);
            i += 8;
        }
        super::silu_mul_generic(&mut g[i..n], &u[i..n]);
    }

    /// [`super::gelu_tanh_generic`] on 8 lanes at a time (the tail through the scalar form).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_tanh(dst: &mut [f32], src: &[f32]) {
        let n = dst.len().min(src.len());
        let sign = _mm256_set1_ps(-0.0);
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(src.as_ptr().add(i));
            let x2 = _mm256_mul_ps(x, x);
            let inner = _mm256_fmadd_ps(x2, _mm256_set1_ps(GELU_CUBIC), one);
            let y = _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(GELU_C)), inner);
            // exp(-2|y|): setting y's sign bit gives -|y|.
            let neg2abs = _mm256_mul_ps(_mm256_or_ps(y, sign), _mm256_set1_ps(2.0));
            let e = exp_nonpos8(neg2abs);
            let t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
            // tanh takes y's sign
            let t = _mm256_xor_ps(t, _mm256_and_ps(y, sign));
            let half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_fmadd_ps(half_x, t, half_x));
            i += 8;
        }
        super::gelu_tanh_generic(&mut dst[i..n], &src[i..n]);
    }
}

/// [`exp_row_generic`] on the widest code path this CPU has: attention divides its outputs by
/// the sum instead (`head_dim` values a row, not one per key).
fn exp_row(row: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::exp_row(row, scale) };
    }
    exp_row_generic(row, scale)
}

/// Softmax of `scale` times one row, in place, on the widest code path this CPU has.
pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::softmax_row(row, scale) };
    }
    softmax_row_generic(row, scale)
}

fn gelu_tanh_slice(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::gelu_tanh(dst, src) };
    }
    gelu_tanh_generic(dst, src)
}

struct GeluTanh;

impl candle_core::CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "vidlm-gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("vidlm-gelu-tanh: needs a contiguous f32 tensor");
        };
        let src = &v[a..b];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(1 << 14)
            .zip(src.par_chunks(1 << 14))
            .for_each(|(d, s)| gelu_tanh_slice(d, s));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

/// `gelu_pytorch_tanh`: fused and multithreaded for contiguous f32 on the CPU (candle's unary map
/// runs on one thread with a scalar `tanh`), candle's `gelu` otherwise. Same formula either way;
/// the fused one differs by at most a few f32 ulps.
///
/// # Errors
/// Candle's errors for the fallback path.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
/// let y: Vec<f32> = vidlm_models::cpu_ops::gelu_tanh(&x)?.to_vec1()?;
/// assert!((y[2] - 1.954_597_7).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        x.apply_op1_no_bwd(&GeluTanh)
    } else {
        x.gelu()
    }
}

/// `out = x * w / rms(x)` for one row, as candle's `rms_norm` computes it (the sum of squares
/// in f32, in order), so the fused paths give candle's values.
pub(crate) fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = v / m * w;
    }
}

/// The residual add and the next RMS norm of a decoder layer in one pass: `(x + y, rms_norm(x +
/// y) * w)`, rows of `w.len()`. Contiguous f32 on the CPU runs fused and multithreaded over rows
/// (candle's add and norm are two passes and two allocations over the whole prompt), anything
/// else candle's ops; the values are the same.
///
/// # Errors
/// `x` and `y` of different shapes, a weight that does not match their last dimension, and
/// candle's errors.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
/// let y = Tensor::new(&[[2f32, 2.0], [-3.0, 0.0]], &Device::Cpu)?;
/// let w = Tensor::new(&[1f32, 0.5], &Device::Cpu)?;
/// let (sum, normed) = vidlm_models::cpu_ops::add_rms_norm(&x, &y, &w, 1e-6)?;
/// assert_eq!(sum.to_vec2::<f32>()?, vec![vec![3.0, 4.0], vec![0.0, 4.0]]);
/// let want = candle_nn::ops::rms_norm(&sum, &w, 1e-6)?;
/// assert_eq!(normed.to_vec2::<f32>()?, want.to_vec2::<f32>()?);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn add_rms_norm(
    x: &Tensor,
    y: &Tensor,
    w: &Tensor,
    eps: f32,
) -> candle_core::Result<(Tensor, Tensor)> {
    let d = w.dims1()?;
    if x.shape() != y.shape() || x.dims().last() != Some(&d) {
        candle_core::bail!(
            "vidlm-add-rms-norm: x {:?}, y {:?} and weight {:?} do not fit",
            x.dims(),
            y.dims(),
            w.dims()
        );
    }
    let fusable = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if !(fusable(x) && fusable(y) && fusable(w)) || d == 0 {
        let sum = (x + y)?;
        let normed = candle_nn::ops::rms_norm(&sum, w, eps)?;
        return Ok((sum, normed));
    }
    use crate::qgemv::with_f32;
    let (sum, normed) = with_f32(x, |xs| {
        with_f32(y, |ys| {
            with_f32(w, |ws| {
                let mut sum = vec![0f32; xs.len()];
                let mut normed = vec![0f32; xs.len()];
                sum.par_chunks_mut(d)
                    .zip(normed.par_chunks_mut(d))
                    .zip(xs.par_chunks(d).zip(ys.par_chunks(d)))
                    .with_min_len(16)
                    .for_each(|((s, n), (a, b))| {
                        for ((s, a), b) in s.iter_mut().zip(a).zip(b) {
                            *s = a + b;
                        }
                        rms_norm_into(s, ws, eps, n);
                    });
                (sum, normed)
            })
        })
    })???;
    Ok((
        Tensor::from_vec(sum, x.shape(), x.device())?,
        Tensor::from_vec(normed, x.shape(), x.device())?,
    ))
}

/// SwiGLU's gate in place: `g = silu(g) * u = g * sigmoid(g) * u`, the sigmoid through
/// `exp(-|g|)` so it never overflows.
#[inline(always)]
fn silu_mul_generic(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        let e = exp_nonpos(-g.abs());
        let s = if *g >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *g = *g * s * u;
    }
}

/// `g = silu(g) * u` over two slices of one length (the decode step's and the prompt's MLP).
pub(crate) fn silu_mul_slice(g: &mut [f32], u: &[f32]) {
    debug_assert_eq!(g.len(), u.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::silu_mul(g, u) };
    }
    silu_mul_generic(g, u)
}

struct SiluMul;

impl candle_core::CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "vidlm-silu-mul"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(g), CpuStorage::F32(u), Some((ga, gb)), Some((ua, ub))) =
            (gs, us, gl.contiguous_offsets(), ul.contiguous_offsets())
        else {
            candle_core::bail!("vidlm-silu-mul: needs contiguous f32 tensors");
        };
        if gl.shape() != ul.shape() {
            candle_core::bail!(
                "vidlm-silu-mul: gate {:?} and up {:?} differ",
                gl.shape(),
                ul.shape()
            );
        }
        let mut dst = g[ga..gb].to_vec();
        dst.par_chunks_mut(1 << 14)
            .zip(u[ua..ub].par_chunks(1 << 14))
            .for_each(|(d, u)| silu_mul_slice(d, u));
        Ok((CpuStorage::F32(dst), gl.shape().clone()))
    }
}

/// SwiGLU's `silu(gate) * up`: one fused, multithreaded pass for contiguous f32 on the CPU
/// (candle's `silu` and `mul` are two passes, the first on one thread), candle's ops otherwise.
/// The fused one differs from candle's by a few f32 ulps (its `exp` is a polynomial).
///
/// # Errors
/// Shapes that differ; candle's errors for the fallback path.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let g = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
/// let u = Tensor::new(&[2f32, 5.0, 0.5], &Device::Cpu)?;
/// let y: Vec<f32> = vidlm_models::cpu_ops::silu_mul(&g, &u)?.to_vec1()?;
/// assert!((y[0] + 0.537_882_8).abs() < 1e-6 && y[1] == 0.0 && (y[2] - 0.880_797).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn silu_mul(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    let fused = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if fused(g) && fused(u) {
        g.apply_op2_no_bwd(u, &SiluMul)
    } else {
        g.silu()? * u
    }
}

/// Strides (in elements) of a `[b, h, n, d]` view and its start offset.
#[derive(Clone, Copy)]
struct View {
    start: usize,
    s: [usize; 4],
}

fn view(l: &Layout, what: &str) -> candle_core::Result<View> {
    let st = l.stride();
    if st.len() != 4 {
        candle_core::bail!("vidlm-attention: {what} must be [batch, heads, tokens, head_dim]");
    }
    Ok(View {
        start: l.start_offset(),
        s: [st[0], st[1], st[2], st[3]],
    })
}

struct Attention {
    scale: f32,
    /// `(start, len)` token ranges that attend only within themselves; empty: one range of all.
    segments: Vec<(usize, usize)>,
    /// Decoder attention: query `i` of `n` sees keys `0..=t - n + i` of `t` (the last `n` keys are
    /// the queries' own positions), and query head `h` reads kv head `h / (heads / kv_heads)`.
    causal: bool,
}

/// Raw output pointer shared by tasks that write disjoint `[rows, head]` blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes its own rows of its own head; no two tasks touch the same element.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "vidlm-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (qs, ks, vs) else {
            candle_core::bail!("vidlm-attention: needs f32 q, k and v");
        };
        let (b, h, n, d) = ql.shape().dims4()?;
        let (kb, hk, t, kd) = kl.shape().dims4()?;
        let fits = if self.causal {
            kb == b && kd == d && hk > 0 && h % hk == 0 && t >= n && self.segments.is_empty()
        } else {
            kl.shape() == ql.shape()
        };
        if !fits || vl.shape() != kl.shape() {
            candle_core::bail!(
                "vidlm-attention: q {:?}, k {:?} and v {:?} do not fit{}",
                ql.shape(),
                kl.shape(),
                vl.shape(),
                if self.causal { " (causal)" } else { "" }
            );
        }
        let rep = h / hk;
        // Causal: keys before the queries (a KV cache's past).
        let past = t - n;
        let (qv, kv, vv) = (view(ql, "q")?, view(kl, "k")?, view(vl, "v")?);
        let segments = checked_segments(&self.segments, n)?;
        // Tasks: (batch, head, segment, first row); each owns `ROWS` query rows of one head.
        let mut tasks = Vec::new();
        for bi in 0..b {
            for hi in 0..h {
                for (si, &(s, len)) in segments.iter().enumerate() {
                    for r in (0..len).step_by(ROWS) {
                        tasks.push((bi, hi, si, s, len, r));
                    }
                }
            }
        }
        // Our tile kernel where it runs (rows of unit stride, whole 16-column groups of values):
        // the keys of every (batch, kv head, segment) packed once for it, shared by the query
        // heads and row blocks that read them.
        let tiles = crate::panel_gemm::available()
            && d % crate::panel_gemm::GROUP == 0
            && [qv, kv, vv].iter().all(|vw| vw.s[3] == 1);
        let packed_keys: Vec<Vec<f32>> = if tiles {
            (0..b * hk * segments.len())
                .into_par_iter()
                .map(|i| {
                    let (bi, hki, si) = (
                        i / (hk * segments.len()),
                        i / segments.len() % hk,
                        i % segments.len(),
                    );
                    let (s, len) = segments[si];
                    let count = if self.causal { t } else { len };
                    let row = |r: usize| {
                        let at = kv.start + bi * kv.s[0] + hki * kv.s[1] + (s + r) * kv.s[2];
                        &k[at..at + d]
                    };
                    let mut out = Vec::new();
                    crate::panel_gemm::pack(row, count, d, &mut out);
                    out
                })
                .collect()
        } else {
            Vec::new()
        };
        // Output [b, n, h, d], contiguous; every element belongs to exactly one task (segments
        // cover the rows they list; rows outside every segment are zero).
        let mut out = vec![0f32; b * n * h * d];
        let optr = OutPtr(out.as_mut_ptr());
        let scale = self.scale;
        tasks
            .into_par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, task| {
                let (bi, hi, si, s, len, r) = task;
                let rows = ROWS.min(len - r);
                // Keys this block reads: its segment's, or causally every one up to its last row.
                let keys = if self.causal { past + r + rows } else { len };
                scores.resize(rows * keys, 0.0);
                let at_h = |vw: View, hi: usize, row: usize| {
                    vw.start + bi * vw.s[0] + hi * vw.s[1] + row * vw.s[2]
                };
                let at = |vw: View, row: usize| at_h(vw, hi, row);
                let hkv = hi / rep;
                let o = optr;
                if tiles {
                    use crate::panel_gemm::{multiply, Operand};
                    let kp = &packed_keys[(bi * hk + hkv) * segments.len() + si];
                    let dst = o.0.wrapping_add(((bi * n + s + r) * h + hi) * d);
                    // SAFETY: AVX2/FMA checked (`tiles`); the query rows s + r.. (unit stride, d
                    // each) and the value rows s.. (keys of them, d a multiple of 16) lie inside q
                    // and v as their layouts describe; `kp` packs at least `keys` key rows;
                    // `scores` holds rows x keys; the output block (rows r.., head hi) belongs to
                    // this task alone.
                    let (kop, vop) = (
                        Operand::packed(kp, d),
                        Operand::rows(v.as_ptr().wrapping_add(at_h(vv, hkv, s)), vv.s[2]),
                    );
                    // Causal: a few tiles of rows at a time, each over the keys it sees, so the
                    // masked triangle of the block is not computed (a quarter of a 512-token
                    // prompt's work in 128-row blocks).
                    for a in (0..rows).step_by(TILE_BLOCK) {
                        let sb = TILE_BLOCK.min(rows - a);
                        let upto = if self.causal { past + r + a + sb } else { keys };
                        let block = &mut scores[a * keys..(a + sb) * keys];
                        // SAFETY: AVX2/FMA checked (`tiles`); the query rows s + r + a.. (unit
                        // stride, d each) and value rows s.. (`upto` of them, d a multiple of 16)
                        // lie inside q and v as their layouts describe; `kp` packs at least
                        // `upto` key rows; `block` holds sb x keys >= upto; the output rows
                        // (r + a.., head hi) belong to this task alone.
                        unsafe {
                            let qp = q.as_ptr().add(at(qv, s + r + a));
                            multiply(qp, qv.s[2], sb, d, kop, upto, block.as_mut_ptr(), keys);
                            let mut sums = [0f32; TILE_BLOCK];
                            for (i, row) in block.chunks_exact_mut(keys).enumerate() {
                                let seen = if self.causal {
                                    past + r + a + i + 1
                                } else {
                                    keys
                                };
                                sums[i] = exp_row(&mut row[..seen], scale);
                                row[seen..upto].fill(0.0);
                            }
                            let out = dst.add(a * h * d);
                            multiply(block.as_ptr(), keys, sb, upto, vop, d, out, h * d);
                            // The softmax's division, on the d outputs of each row.
                            for (i, sum) in sums.iter().take(sb).enumerate() {
                                let inv = 1.0 / sum;
                                let row = std::slice::from_raw_parts_mut(out.add(i * h * d), d);
                                row.iter_mut().for_each(|y| *y *= inv);
                            }
                        }
                    }
                    return;
                }
                // SAFETY: the offsets stay inside q, k, v (their layouts describe these shapes; the
                // rows are inside the segment, checked above), `scores` holds rows x len, and the
                // output block (rows r.., head hi) belongs to this task alone.
                unsafe {
                    // scores = scale * Q[rows] K[seg]^T
                    gemm::gemm(
                        rows,
                        keys,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        keys as isize,
                        false,
                        q.as_ptr().add(at(qv, s + r)),
                        qv.s[3] as isize,
                        qv.s[2] as isize,
                        k.as_ptr().add(at_h(kv, hkv, s)),
                        kv.s[2] as isize,
                        kv.s[3] as isize,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
                        // Causal: keys past this query's position get weight 0.
                        let seen = if self.causal { past + r + i + 1 } else { keys };
                        softmax_row(&mut row[..seen], 1.0);
                        row[seen..].fill(0.0);
                    }
                    // out[rows, hi] = P V[seg]
                    let dst = o.0.add(((bi * n + s + r) * h + hi) * d);
                    gemm::gemm(
                        rows,
                        d,
                        keys,
                        dst,
                        1,
                        (h * d) as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        keys as isize,
                        v.as_ptr().add(at_h(vv, hkv, s)),
                        vv.s[3] as isize,
                        vv.s[2] as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, n, h, d))))
    }
}

/// Softmax attention without a mask: `softmax(scale * q k^T) v` for `q`, `k`, `v` of shape
/// `[batch, heads, tokens, head_dim]` (any strides, e.g. transposed views of a fused QKV
/// projection), returned as `[batch, tokens, heads, head_dim]` so that a reshape gives the
/// `[batch, tokens, hidden]` the output projection takes. With `segments`, each `(start, len)`
/// token range attends only within itself (one frame of a packed sequence); tokens outside every
/// segment get zeros.
///
/// Contiguous or strided f32 on the CPU runs fused (row blocks of scores kept in cache, a
/// vectorized softmax, multithreaded over heads and blocks); anything else runs candle's
/// matmul + softmax, the same maths.
///
/// # Errors
/// Shape mismatches between q, k and v, a segment outside the tokens, and candle's errors.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let q = Tensor::randn(0f32, 1.0, (1, 2, 5, 4), &Device::Cpu)?;
/// let out = vidlm_models::cpu_ops::attention(&q, &q, &q, 0.5, &[])?;
/// assert_eq!(out.dims(), &[1, 5, 2, 4]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    segments: &[(usize, usize)],
) -> candle_core::Result<Tensor> {
    if fusable([q, k, v]) {
        return q.apply_op3_no_bwd(
            k,
            v,
            &Attention {
                scale: scale as f32,
                segments: segments.to_vec(),
                causal: false,
            },
        );
    }
    reference_attention(q, k, v, scale, segments)
}

/// Causal grouped-query attention, as a decoder's prefill runs it: `q` `[batch, heads, n,
/// head_dim]` against `k`, `v` `[batch, kv_heads, t, head_dim]` (`t >= n`: the last `n` keys are
/// the queries' own positions, the ones before a KV cache's past; `heads` a multiple of
/// `kv_heads`, query head `h` reading kv head `h / (heads / kv_heads)`); query `i` attends keys
/// `0..=t - n + i`. Returns `[batch, n, heads, head_dim]`. Strided views (a cache buffer's first
/// `t` positions) are read in place.
///
/// On the CPU in f32 it runs as [`attention`] does (score blocks in cache, the vectorized
/// softmax over the visible keys only); other devices and dtypes take [`causal_attention_reference`].
///
/// # Errors
/// Shapes that do not fit as above, and candle's errors.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let q = Tensor::randn(0f32, 1.0, (1, 4, 3, 8), &Device::Cpu)?;
/// let kv = Tensor::randn(0f32, 1.0, (1, 2, 5, 8), &Device::Cpu)?;
/// let out = vidlm_models::cpu_ops::causal_attention(&q, &kv, &kv, 0.35)?;
/// assert_eq!(out.dims(), &[1, 3, 4, 8]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    if fusable([q, k, v]) {
        return q.apply_op3_no_bwd(
            k,
            v,
            &Attention {
                scale: scale as f32,
                segments: Vec::new(),
                causal: true,
            },
        );
    }
    causal_attention_reference(q, k, v, scale)
}

/// [`causal_attention`] with candle's ops: the query heads of one kv head stacked into one
/// matmul against its keys, an additive mask of `-inf` above the diagonal, softmax in f32.
///
/// # Errors
/// As [`causal_attention`].
pub fn causal_attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (b, h, n, d) = q.dims4()?;
    let (_, hk, t, _) = k.dims4()?;
    if hk == 0 || h % hk != 0 || t < n {
        candle_core::bail!(
            "vidlm-attention: q {:?} and k {:?} do not fit (causal)",
            q.dims(),
            k.dims()
        );
    }
    let rep = h / hk;
    let past = t - n;
    let mut m = vec![0f32; n * t];
    for i in 0..n {
        m[i * t + past + i + 1..(i + 1) * t].fill(f32::NEG_INFINITY);
    }
    let mask = Tensor::from_vec(m, (n, t), q.device())?;
    let in_dtype = q.dtype();
    let q = q.contiguous()?.reshape((b, hk, rep * n, d))?;
    let att = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let att = att
        .reshape((b, hk, rep, n, t))?
        .broadcast_add(&mask)?
        .reshape((b, hk, rep * n, t))?;
    let att = candle_nn::ops::softmax_last_dim(&att)?.to_dtype(in_dtype)?;
    att.matmul(&v.contiguous()?)?
        .reshape((b, h, n, d))?
        .transpose(1, 2)?
        .contiguous()
}

/// Whether q, k and v take the fused kernel: f32 CPU tensors of rank 4 (any strides).
fn fusable(qkv: [&Tensor; 3]) -> bool {
    qkv.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.rank() == 4)
}

/// The segments sorted, checked to be non-empty, disjoint and inside `n` tokens; none means all.
fn checked_segments(
    segments: &[(usize, usize)],
    n: usize,
) -> candle_core::Result<Vec<(usize, usize)>> {
    if segments.is_empty() {
        return Ok(vec![(0, n)]);
    }
    let mut sorted = segments.to_vec();
    sorted.sort_unstable();
    let mut at = 0;
    for &(s, len) in &sorted {
        if len == 0 || s < at || s + len > n {
            candle_core::bail!(
                "vidlm-attention: segments {segments:?} overlap, are empty or lie outside {n} tokens"
            );
        }
        at = s + len;
    }
    Ok(sorted)
}

/// The unfused path: candle's matmul and softmax (in f32) per segment.
fn reference_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    segments: &[(usize, usize)],
) -> candle_core::Result<Tensor> {
    let one = |q: &Tensor, k: &Tensor, v: &Tensor| -> candle_core::Result<Tensor> {
        let dtype = q.dtype();
        let w = (q.contiguous()?.matmul(&k.contiguous()?.t()?)? * scale)?.to_dtype(DType::F32)?;
        let w = candle_nn::ops::softmax_last_dim(&w)?.to_dtype(dtype)?;
        w.matmul(&v.contiguous()?)
    };
    let (_, _, n, _) = q.dims4()?;
    let y = if segments.is_empty() {
        one(q, k, v)?
    } else {
        let mut parts = Vec::new();
        let mut at = 0;
        for (s, len) in checked_segments(segments, n)? {
            if s > at {
                parts.push(q.narrow(2, at, s - at)?.zeros_like()?);
            }
            parts.push(one(
                &q.narrow(2, s, len)?,
                &k.narrow(2, s, len)?,
                &v.narrow(2, s, len)?,
            )?);
            at = s + len;
        }
        if at < n {
            parts.push(q.narrow(2, at, n - at)?.zeros_like()?);
        }
        Tensor::cat(&parts, 2)?
    };
    y.transpose(1, 2)?.contiguous()
}

/// Output rows per task of [`linear_one_row`]: 64 rows of a 576-wide f32 weight are 147 KB, enough
/// work to hide rayon's scheduling and few enough tasks to balance two to sixteen threads.
const GEMV_ROWS: usize = 64;

/// `dot(a, b)` with `LANES` partial sums, so the loop vectorizes.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `w @ x` for a row-major `w` `[w.len() / x.len(), x.len()]`, output rows split over rayon's
/// threads.
pub(crate) fn gemv(w: &[f32], x: &[f32]) -> Vec<f32> {
    let inp = x.len();
    let mut dst = vec![0f32; w.len() / inp.max(1)];
    dst.par_chunks_mut(GEMV_ROWS)
        .zip(w.par_chunks(GEMV_ROWS * inp))
        .for_each(|(d, rows)| {
            for (o, row) in d.iter_mut().zip(rows.chunks_exact(inp)) {
                *o = dot(row, x);
            }
        });
    dst
}

struct LinearOneRow;

impl candle_core::CustomOp2 for LinearOneRow {
    fn name(&self) -> &'static str {
        "vidlm-linear-one-row"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), Some((xa, xb)), Some((wa, wb))) =
            (xs, ws, xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            candle_core::bail!("vidlm-linear-one-row: needs contiguous f32 tensors");
        };
        let (out, inp) = wl.shape().dims2()?;
        let (x, w) = (&x[xa..xb], &w[wa..wb]);
        if x.len() != inp {
            candle_core::bail!("vidlm-linear-one-row: input of {} for width {inp}", x.len());
        }
        let dst = gemv(w, x);
        let mut shape = xl.dims().to_vec();
        *shape.last_mut().expect("rank >= 1 checked by the caller") = out;
        Ok((CpuStorage::F32(dst), Shape::from(shape)))
    }
}

/// `x @ w.t()` for a single input row (`x` of any shape `[.., in]` with one row, `w` `[out, in]`),
/// as a matrix-vector product that streams each weight row once, split over rayon's threads.
/// candle's gemm packs the transposed weight for every call, which for one row (a decode step)
/// reads and writes the whole matrix a second time. Other shapes, dtypes and devices take candle's
/// `broadcast_matmul`. Sums run in a different order than gemm's, so results differ by f32
/// rounding.
///
/// # Errors
/// Candle's errors for mismatched shapes.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu)?;
/// let x = Tensor::new(&[[[1f32, 1.0]]], &Device::Cpu)?;
/// let y = vidlm_models::cpu_ops::linear(&x, &w)?;
/// assert_eq!(y.dims(), &[1, 1, 3]);
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![3.0, 7.0, 11.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    linear_bias(x, w, None)
}

/// `l.forward(x)` through [`linear_bias`] (our kernels for f32 on the CPU).
///
/// # Errors
/// As [`linear_bias`].
pub fn dense(x: &Tensor, l: &candle_nn::Linear) -> candle_core::Result<Tensor> {
    linear_bias(x, l.weight(), l.bias())
}

/// Rows of input from which [`linear_bias`] takes the tile kernel: below, repacking every weight
/// panel costs more than candle's gemm loses.
const TILE_MIN_ROWS: usize = 64;

/// [`linear`] plus a bias of the weight's row count: `x @ w.t() + bias`, as
/// `candle_nn::Linear::forward` computes it. Many rows of f32 on the CPU (prompts, image tiles)
/// take our tile kernel (`qgemv::prompt_linear_f32`) where the CPU has AVX2 and FMA.
///
/// # Errors
/// As [`linear`]; a bias whose shape does not fit.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu)?;
/// let b = Tensor::new(&[0.5f32, 0.0, -1.0], &Device::Cpu)?;
/// let x = Tensor::new(&[[[1f32, 1.0]]], &Device::Cpu)?;
/// let y = vidlm_models::cpu_ops::linear_bias(&x, &w, Some(&b))?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![3.5, 7.0, 10.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn linear_bias(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let f32_cpu = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && w.rank() == 2
        && w.is_contiguous()
        && x.dims().last() == w.dims().get(1);
    if f32_cpu && x.elem_count() == w.dim(1)? {
        let y = x.contiguous()?.apply_op2_no_bwd(w, &LinearOneRow)?;
        return match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        };
    }
    if f32_cpu
        && crate::panel_gemm::available()
        && x.elem_count() >= TILE_MIN_ROWS * w.dim(1)?
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.rank() == 1)
    {
        return crate::qgemv::prompt_linear_f32(x, w, bias);
    }
    let y = x.broadcast_matmul(&w.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let rel = ((exp_nonpos(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            use std::arch::x86_64::*;
            let mut worst = 0f32;
            let mut out = [0f32; 8];
            for i in (0..=200_000).step_by(8) {
                let xs: [f32; 8] = std::array::from_fn(|j| -87.0 * (i + j) as f32 / 200_008.0);
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe {
                    let v = avx2::exp_nonpos8(_mm256_loadu_ps(xs.as_ptr()));
                    _mm256_storeu_ps(out.as_mut_ptr(), v);
                }
                for (x, y) in xs.iter().zip(&out) {
                    worst = worst.max(((y - x.exp()) / x.exp()).abs());
                }
            }
            assert!(worst < 5e-7, "8-lane worst relative error {worst}");
        }
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert!(exp_nonpos(-1000.0) < 1e-37);
    }

    #[test]
    fn linear_bias_matches_candle_on_every_path() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 48), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 37, &dev).unwrap();
        // One row (matrix-vector), a few rows (candle), many rows (the tile kernel, 140 >= 64).
        for rows in [1, 5, 140] {
            let x = Tensor::randn(0f32, 1.0, (1, rows, 48), &dev).unwrap();
            for bias in [None, Some(&b)] {
                let got = linear_bias(&x, &w, bias).unwrap();
                let mut want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
                if let Some(b) = bias {
                    want = want.broadcast_add(b).unwrap();
                }
                assert_eq!(got.dims(), want.dims());
                let diff = max_abs_diff(&got, &want);
                assert!(diff < 1e-4, "rows {rows}: max abs diff {diff}");
            }
        }
        let short = Tensor::randn(0f32, 1.0, 36, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 140, 48), &dev).unwrap();
        assert!(linear_bias(&x, &w, Some(&short)).is_err());
    }

    #[test]
    fn add_rms_norm_gives_candles_values() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 70, 576), &dev).unwrap();
        let y = Tensor::randn(0f32, 1.0, (2, 70, 576), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, 576, &dev).unwrap();
        let sum = (&x + &y).unwrap();
        let want = candle_nn::ops::rms_norm(&sum, &w, 1e-5).unwrap();
        let (s, n) = add_rms_norm(&x, &y, &w, 1e-5).unwrap();
        assert_eq!(max_abs_diff(&s, &sum), 0.0);
        assert_eq!(max_abs_diff(&n, &want), 0.0);
        // A strided input takes candle's ops: the same values.
        let xt = x
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let (s2, n2) = add_rms_norm(&xt, &y, &w, 1e-5).unwrap();
        assert_eq!(max_abs_diff(&s2, &sum), 0.0);
        assert!(max_abs_diff(&n2, &want) < 1e-5);
        assert!(add_rms_norm(&x, &y.narrow(1, 0, 5).unwrap(), &w, 1e-5).is_err());
        assert!(add_rms_norm(&x, &y, &w.narrow(0, 0, 5).unwrap(), 1e-5).is_err());
    }

    #[test]
    fn silu_mul_matches_candle() {
        let dev = Device::Cpu;
        // Large negative and positive gates (exp overflow territory for the naive formula).
        let g = ((Tensor::arange(0f32, 5000.0, &dev).unwrap() * 0.37)
            .unwrap()
            .sin()
            .unwrap()
            * 120.0)
            .unwrap();
        let u = (Tensor::arange(0f32, 5000.0, &dev).unwrap() * 0.11)
            .unwrap()
            .cos()
            .unwrap();
        let want = (g.silu().unwrap() * &u).unwrap();
        let got = silu_mul(&g, &u).unwrap();
        let tol = (want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap())
            * 1e-6;
        assert!(
            max_abs_diff(&got, &want) <= tol,
            "{}",
            max_abs_diff(&got, &want)
        );
        // and element by element, relative to each value (5000 = 625 vector steps, no tail: the
        // odd length below takes the scalar tail too)
        for n in [5000, 4999] {
            let (g, u) = (g.narrow(0, 0, n).unwrap(), u.narrow(0, 0, n).unwrap());
            let got: Vec<f32> = silu_mul(&g, &u).unwrap().to_vec1().unwrap();
            let (gs, us): (Vec<f32>, Vec<f32>) = (g.to_vec1().unwrap(), u.to_vec1().unwrap());
            for i in 0..n {
                let x = gs[i] as f64;
                let want = x / (1.0 + (-x).exp()) * us[i] as f64;
                let e = (got[i] as f64 - want).abs();
                assert!(e <= 1e-6 * want.abs() + 1e-30, "[{i}] {} vs {want}", got[i]);
            }
        }
        assert!(silu_mul(&g, &u.narrow(0, 0, 10).unwrap()).is_err());
    }

    #[test]
    fn exp_row_and_softmax_match_f64_on_every_length() {
        // Lengths that end in the 16-wide loop, the 8-wide step and the scalar tail.
        let mut state = 0x9e37_79b9u32;
        for n in [1usize, 5, 8, 15, 16, 17, 23, 33, 1024] {
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1u32 << 24) as f32 * 60.0 - 30.0
                })
                .collect();
            let scale = 0.125f32;
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let want: Vec<f64> = row
                .iter()
                .map(|&x| ((x as f64 - max) * scale as f64).exp())
                .collect();
            let total: f64 = want.iter().sum();
            let mut got = row.clone();
            let sum = exp_row(&mut got, scale);
            let mut soft = row.clone();
            softmax_row(&mut soft, scale);
            assert!(
                ((sum as f64 - total) / total).abs() < 1e-6,
                "n {n}: sum {sum} vs {total}"
            );
            for i in 0..n {
                let w = want[i] / total;
                let e = (got[i] as f64 / sum as f64 - w).abs();
                let f = (soft[i] as f64 - w).abs();
                assert!(
                    e <= 1e-6 * w + 1e-12,
                    "n {n} [{i}]: exp_row {} vs {w}",
                    got[i]
                );
                assert!(
                    f <= 1e-6 * w + 1e-12,
                    "n {n} [{i}]: softmax {} vs {w}",
                    soft[i]
                );
            }
        }
    }

    #[test]
    fn gelu_matches_the_formula() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 100.0).collect();
        let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours: Vec<f32> = gelu_tanh(&x).unwrap().to_vec1().unwrap();
        for (&x, &y) in xs.iter().zip(&ours) {
            let x64 = x as f64;
            let want = 0.5
                * x64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3)))
                        .tanh());
            assert!(
                (y as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "gelu({x}) = {y}, want {want}"
            );
        }
    }

    #[test]
    fn fused_attention_matches_candle_on_strided_views() {
        let dev = Device::Cpu;
        // A fused QKV projection's layout: [b, n, 3, h, d], q/k/v taken as strided views. Odd
        // sizes so row blocks end partway (70 = 64 + 6); head sizes for candle's gemm (8) and for
        // our tile kernel (32, whole groups of 16).
        for d in [8, 32] {
            let (b, n, h) = (2, 70, 3);
            let qkv = Tensor::randn(0f32, 1.0, (b, n, 3, h, d), &dev).unwrap();
            let part = |i| {
                qkv.narrow(2, i, 1)
                    .unwrap()
                    .squeeze(2)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
            };
            let (q, k, v) = (part(0), part(1), part(2));
            let ours = attention(&q, &k, &v, 0.35, &[]).unwrap();
            let want = reference_attention(&q, &k, &v, 0.35, &[]).unwrap();
            assert_eq!(ours.dims(), &[b, n, h, d]);
            let diff = max_abs_diff(&ours, &want);
            assert!(diff < 1e-5, "d {d}: max abs diff {diff}");
        }
    }

    #[test]
    fn segments_attend_only_within_themselves() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 2, 90, 16), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, 90, 16), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 90, 16), &dev).unwrap();
        let segs = [(0, 20), (20, 67), (87, 3)];
        let ours = attention(&q, &k, &v, 0.25, &segs).unwrap();
        let want = reference_attention(&q, &k, &v, 0.25, &segs).unwrap();
        let diff = max_abs_diff(&ours, &want);
        assert!(diff < 1e-5, "max abs diff {diff}");
        // A segment's output does not change when another segment's keys do.
        let k2 = k
            .slice_assign(
                &[0..1, 0..2, 20..87, 0..16],
                &Tensor::randn(0f32, 1.0, (1, 2, 67, 16), &dev).unwrap(),
            )
            .unwrap();
        let other = attention(&q, &k2, &v, 0.25, &segs).unwrap();
        assert_eq!(
            max_abs_diff(
                &ours.narrow(1, 0, 20).unwrap(),
                &other.narrow(1, 0, 20).unwrap()
            ),
            0.0
        );
        assert!(
            max_abs_diff(
                &ours.narrow(1, 20, 67).unwrap(),
                &other.narrow(1, 20, 67).unwrap()
            ) > 1e-3
        );
    }

    /// Causal grouped-query attention against candle's masked matmul + softmax: kv heads shared
    /// by 3 query heads, row counts that end blocks partway (130 = 128 + 2), a past of 0 and of
    /// 17 keys, keys and values as strided views of a larger cache buffer.
    #[test]
    fn causal_attention_matches_candle_with_a_cache_and_grouped_heads() {
        let dev = Device::Cpu;
        for &(n, past) in &[(1, 0), (5, 0), (130, 0), (3, 17), (130, 17)] {
            let (b, hk, rep, d) = (2, 2, 3, 16);
            let t = past + n;
            let q = Tensor::randn(0f32, 1.0, (b, hk * rep, n, d), &dev).unwrap();
            let cap = t + 9;
            let kbuf = Tensor::randn(0f32, 1.0, (b, hk, cap, d), &dev).unwrap();
            let vbuf = Tensor::randn(0f32, 1.0, (b, hk, cap, d), &dev).unwrap();
            let (k, v) = (kbuf.narrow(2, 0, t).unwrap(), vbuf.narrow(2, 0, t).unwrap());
            let ours = causal_attention(&q, &k, &v, 0.3).unwrap();
            let want = causal_attention_reference(&q, &k, &v, 0.3).unwrap();
            assert_eq!(ours.dims(), &[b, n, hk * rep, d]);
            let diff = max_abs_diff(&ours, &want);
            assert!(diff < 1e-5, "n {n} past {past}: max abs diff {diff}");
            // Causality: changing the last key moves only the last query's output.
            if n > 1 {
                let k2 = kbuf
                    .slice_assign(
                        &[0..b, 0..hk, t - 1..t, 0..d],
                        &Tensor::ones((b, hk, 1, d), DType::F32, &dev).unwrap(),
                    )
                    .unwrap();
                let other = causal_attention(&q, &k2.narrow(2, 0, t).unwrap(), &v, 0.3).unwrap();
                let before = |x: &Tensor| x.narrow(1, 0, n - 1).unwrap();
                assert_eq!(max_abs_diff(&before(&ours), &before(&other)), 0.0);
                assert!(max_abs_diff(&ours, &other) > 1e-4);
            }
        }
        let q = Tensor::randn(0f32, 1.0, (1, 4, 6, 8), &dev).unwrap();
        let short = Tensor::randn(0f32, 1.0, (1, 2, 5, 8), &dev).unwrap();
        assert!(causal_attention(&q, &short, &short, 1.0).is_err());
        let odd = Tensor::randn(0f32, 1.0, (1, 3, 6, 8), &dev).unwrap();
        assert!(causal_attention(&q, &odd, &odd, 1.0).is_err());
    }

    #[test]
    fn bad_segments_are_errors() {
        let q = Tensor::randn(0f32, 1.0, (1, 1, 10, 4), &Device::Cpu).unwrap();
        assert!(attention(&q, &q, &q, 1.0, &[(5, 6)]).is_err());
        assert!(attention(&q, &q, &q, 1.0, &[(0, 6), (5, 2)]).is_err());
        assert!(attention(&q, &q, &q, 1.0, &[(0, 0)]).is_err());
        let k = Tensor::randn(0f32, 1.0, (1, 1, 9, 4), &Device::Cpu).unwrap();
        assert!(attention(&q, &k, &k, 1.0, &[]).is_err());
    }
}
