//! Matrix-vector products straight on llama.cpp's quantized blocks, for decode steps on the CPU.
//!
//! A decode step multiplies one activation row by every weight matrix, so its time is the time to
//! stream the weights from memory. Dequantized to f32, SmolLM2-135M's Q4_1 weights are 538 MB a
//! token; as stored they are 96 MB. candle's `QMatMul` reads the stored blocks but, for one row,
//! runs its per-block dot products on one thread per output column group with little overlap, and
//! measured 11.0 t/s against 20.7 t/s for the f32 GEMV (benches/text_gen.rs, 2 threads).
//!
//! Here the activation row is quantized once per call to 8-bit blocks of 32 (one f32 scale per
//! block, as llama.cpp's `Q8_0`), and each weight row is dotted against it block by block in
//! integers (exact), scaled in f32. Output rows are split over rayon's current pool, so the CLI's
//! `--threads` applies. x86-64 with AVX2, FMA and F16C takes hand-written kernels for Q8_0, Q4_0,
//! Q4_1 and Q5_0 and compiles the portable ones (Q4_K, Q6_K) for those features; every type has a
//! portable scalar twin that computes the same integer block sums (results differ only in the
//! order of the f32 accumulation).
//!
//! A few rows at once (a short prompt) reuse each weight row from L1 for every activation row, so
//! they cost little more than one; see [`matmul`].
//!
//! Long prompts take [`prompt_matmul`] / [`prompt_matmul_f16`]: the weight decoded to f32 one
//! panel of rows at a time, each panel multiplied while it is in cache (by our own AVX2 tile
//! kernel, `panel_gemm`, else the `gemm` crate).
//!
//! GGUF F16 weights take [`matmul_f16`]: the weight read as stored (2 bytes an element, half the
//! f32 copy's), converted lane by lane with F16C, the activation kept in f32.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use half::f16;
use rayon::prelude::*;

/// Elements per activation block (and per Q8_0/Q4_0/Q4_1/Q5_0 weight block).
const QK: usize = 32;

/// The weight block formats the kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q4K,
    Q6K,
}

impl Kind {
    fn of(d: GgmlDType) -> Option<Self> {
        Some(match d {
            GgmlDType::Q8_0 => Kind::Q8_0,
            GgmlDType::Q4_0 => Kind::Q4_0,
            GgmlDType::Q4_1 => Kind::Q4_1,
            GgmlDType::Q5_0 => Kind::Q5_0,
            GgmlDType::Q4K => Kind::Q4K,
            GgmlDType::Q6K => Kind::Q6K,
            _ => return None,
        })
    }

    /// (elements, bytes) of one block.
    fn block(self) -> (usize, usize) {
        match self {
            Kind::Q8_0 => (32, 34),
            Kind::Q4_0 => (32, 18),
            Kind::Q4_1 => (32, 20),
            Kind::Q5_0 => (32, 22),
            Kind::Q4K => (256, 144),
            Kind::Q6K => (256, 210),
        }
    }
}

/// Whether [`matmul`] reads this block format (otherwise callers use candle's `QMatMul`).
pub fn supports(dtype: GgmlDType) -> bool {
    Kind::of(dtype).is_some()
}

/// One activation row quantized to 8 bits per block of 32: `x[i] ~ d[i / 32] * q[i]`.
struct Q8Row {
    q: Vec<i8>,
    d: Vec<f32>,
    /// `d[b] * sum(q[b])`: what a per-block weight offset (Q4_1's `m`, Q4_K's mins) multiplies.
    s: Vec<f32>,
    /// Sums of `q` over each 16 elements (Q6_K's sub-blocks and its `-32` offset).
    s16: Vec<i32>,
}

impl Q8Row {
    /// Round-to-nearest with the block's absolute maximum mapped to 127 (llama.cpp's Q8_0 rule).
    fn new(x: &[f32]) -> Self {
        let nb = x.len() / QK;
        let mut r = Q8Row {
            q: vec![0; x.len()],
            d: vec![0.0; nb],
            s: vec![0.0; nb],
            s16: vec![0; nb * 2],
        };
        for (b, (xb, qb)) in x.chunks_exact(QK).zip(r.q.chunks_exact_mut(QK)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
            }
            let lo: i32 = qb[..16].iter().map(|&q| q as i32).sum();
            let hi: i32 = qb[16..].iter().map(|&q| q as i32).sum();
            r.d[b] = d;
            r.s[b] = d * (lo + hi) as f32;
            r.s16[2 * b] = lo;
            r.s16[2 * b + 1] = hi;
        }
        r
    }
}

#[inline(always)]
fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[inline(always)]
fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Q4_K's 6-bit scale and min of sub-block `j` (0..8), packed in 12 bytes.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Portable dot product of one weight row (`row`, blocks of `kind`) with the quantized activation.
#[inline(always)]
fn dot_row_generic(kind: Kind, row: &[u8], x: &Q8Row) -> f32 {
    let (be, bb) = kind.block();
    let mut acc = 0f32;
    let mut w = [0i8; QK];
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let at = b * be;
        match kind {
            Kind::Q8_0 => {
                for (w, &v) in w.iter_mut().zip(&blk[2..34]) {
                    *w = v as i8;
                }
                acc += h(blk, 0) * x.d[b] * idot(&w, &x.q[at..at + QK]) as f32;
            }
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 => {
                let (qs, qh) = match kind {
                    Kind::Q4_0 => (&blk[2..18], 0u32),
                    Kind::Q4_1 => (&blk[4..20], 0u32),
                    _ => (
                        &blk[6..22],
                        u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]),
                    ),
                };
                let off = match kind {
                    Kind::Q4_0 => 8,
                    Kind::Q4_1 => 0,
                    _ => 16,
                };
                for j in 0..16 {
                    let h0 = (((qh >> j) & 1) << 4) as i32;
                    let h1 = (((qh >> (j + 16)) & 1) << 4) as i32;
                    w[j] = (((qs[j] & 0xF) as i32 | h0) - off) as i8;
                    w[j + 16] = (((qs[j] >> 4) as i32 | h1) - off) as i8;
                }
                let p = idot(&w, &x.q[at..at + QK]) as f32;
                acc += h(blk, 0) * x.d[b] * p;
                if kind == Kind::Q4_1 {
                    acc += h(blk, 2) * x.s[b];
                }
            }
            Kind::Q4K => {
                let (d, dmin) = (h(blk, 0), h(blk, 2));
                let (sc, qs) = (&blk[4..16], &blk[16..144]);
                for j in 0..8 {
                    let (s, m) = scale_min_k4(j, sc);
                    let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                    for (w, &v) in w.iter_mut().zip(q) {
                        *w = if j % 2 == 0 { v & 0xF } else { v >> 4 } as i8;
                    }
                    let xb = at / QK + j;
                    let p = idot(&w, &x.q[xb * QK..xb * QK + QK]);
                    acc += d * s as f32 * x.d[xb] * p as f32 - dmin * m as f32 * x.s[xb];
                }
            }
            Kind::Q6K => {
                let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
                let d = h(blk, 208);
                for c in 0..8 {
                    // Chunk c of 32: half `c / 4` of the super-block, quarter `t` of that half.
                    let (half, t) = (c / 4, c % 4);
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    for l in 0..32 {
                        let lo = if t % 2 == 0 { ql[l] } else { ql[l + 32] };
                        let lo = if t < 2 { lo & 0xF } else { lo >> 4 };
                        w[l] = (lo | (((qh[l] >> (2 * t)) & 3) << 4)) as i8;
                    }
                    let xb = at / QK + c;
                    let xq = &x.q[xb * QK..xb * QK + QK];
                    // Unsigned 6-bit values; the -32 offset comes back through the 16-sums.
                    let p0 = idot(&w[..16], &xq[..16]) - 32 * x.s16[2 * xb];
                    let p1 = idot(&w[16..], &xq[16..]) - 32 * x.s16[2 * xb + 1];
                    let s0 = sc[2 * c] as i8 as i32;
                    let s1 = sc[2 * c + 1] as i8 as i32;
                    acc += d * x.d[xb] * (s0 * p0 + s1 * p1) as f32;
                }
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{dot_row_generic, Kind, Q8Row};
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Two f16 at `p` (a block's `d` and `m`) as f32.
    #[inline(always)]
    unsafe fn f16x2(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// 32 nibbles of 16 bytes as bytes 0..15: low nibbles first, then high (the Q4 element order).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// Q5_0's fifth bits (32 bits at `p`) as 0x10 in each byte whose bit is set.
    #[inline(always)]
    unsafe fn high_bits(p: *const u8) -> __m256i {
        let bits = (p as *const i32).read_unaligned();
        // Byte i takes the 8 bits containing bit i, then tests bit i % 8 of it.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let hit = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
        _mm256_and_si256(hit, _mm256_set1_epi8(0x10))
    }

    /// Signed bytes `w` times signed bytes `x`, summed in 4-element groups to 8 i32 as f32.
    #[inline(always)]
    unsafe fn dot_i8(w: __m256i, x: __m256i) -> __m256 {
        // maddubs takes unsigned x signed: move w's sign onto x.
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    /// Unsigned bytes `w` (< 128) times signed bytes `x`, as [`dot_i8`].
    #[inline(always)]
    unsafe fn dot_u8(w: __m256i, x: __m256i) -> __m256 {
        let p = _mm256_maddubs_epi16(w, x);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    /// [`super::dot_row_generic`] for the CPU features this module is compiled for.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `row` holds whole blocks of `kind` covering `x`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_row(kind: Kind, row: &[u8], x: &Q8Row) -> f32 {
        let (_, bb) = kind.block();
        let nb = row.len() / bb;
        let (p, xq) = (row.as_ptr(), x.q.as_ptr());
        // Two accumulators, even and odd blocks: one would chain every block's FMA on the last
        // (4 cycles each), longer than the block's other work.
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut off = 0f32;
        // `$prod` (8 i32 partial dot products as f32) and `$scale` for block `$b`, summed.
        macro_rules! blocks {
            (|$b:ident| $prod:expr, $scale:expr) => {{
                let mut $b = 0;
                while $b + 1 < nb {
                    a0 = _mm256_fmadd_ps($prod, _mm256_set1_ps($scale), a0);
                    $b += 1;
                    a1 = _mm256_fmadd_ps($prod, _mm256_set1_ps($scale), a1);
                    $b += 1;
                }
                if $b < nb {
                    a0 = _mm256_fmadd_ps($prod, _mm256_set1_ps($scale), a0);
                }
            }};
        }
        // Macros, not closures: the intrinsics must inline into this function's features.
        macro_rules! f16at {
            ($blk:expr) => {
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    ($blk as *const u16).read_unaligned() as i32,
                )))
            };
        }
        macro_rules! xat {
            ($b:expr) => {
                _mm256_loadu_si256(xq.add($b * 32) as *const __m256i)
            };
        }
        match kind {
            Kind::Q8_0 => blocks!(
                |b| dot_i8(
                    _mm256_loadu_si256(p.add(b * bb + 2) as *const __m256i),
                    xat!(b)
                ),
                f16at!(p.add(b * bb)) * x.d[b]
            ),
            Kind::Q4_0 => blocks!(
                |b| dot_i8(
                    _mm256_sub_epi8(nibbles(p.add(b * bb + 2)), _mm256_set1_epi8(8)),
                    xat!(b)
                ),
                f16at!(p.add(b * bb)) * x.d[b]
            ),
            Kind::Q4_1 => {
                blocks!(|b| dot_u8(nibbles(p.add(b * bb + 4)), xat!(b)), {
                    let (d, m) = f16x2(p.add(b * bb));
                    off += m * x.s[b];
                    d * x.d[b]
                })
            }
            Kind::Q5_0 => blocks!(
                |b| dot_i8(
                    _mm256_sub_epi8(
                        _mm256_or_si256(nibbles(p.add(b * bb + 6)), high_bits(p.add(b * bb + 2))),
                        _mm256_set1_epi8(16)
                    ),
                    xat!(b)
                ),
                f16at!(p.add(b * bb)) * x.d[b]
            ),
            // The portable code, vectorized by the compiler for these features.
            Kind::Q4K | Kind::Q6K => return dot_row_generic(kind, row, x),
        }
        hsum(_mm256_add_ps(a0, a1)) + off
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One weight row against one activation row, by the fastest kernel allowed.
#[inline(always)]
fn dot_row(kind: Kind, row: &[u8], x: &Q8Row, simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set when has_avx2() holds; rows hold whole blocks (checked by
        // the caller against the tensor's shape).
        return unsafe { avx2::dot_row(kind, row, x) };
    }
    let _ = simd;
    dot_row_generic(kind, row, x)
}

/// `[n, m]` (each weight row's outputs for the `m` activation rows, as the tasks write them) to
/// `[m, n]`.
fn to_row_major(t: Vec<f32>, n: usize, m: usize) -> Vec<f32> {
    if m == 1 {
        return t;
    }
    let mut y = vec![0f32; n * m];
    for (r, tr) in t.chunks_exact(m).enumerate() {
        for (i, &v) in tr.iter().enumerate() {
            y[i * n + r] = v;
        }
    }
    y
}

/// `y[i][r] = dot(w[r], x[i])` for the quantized activation rows `xs`, output `[m, n]` row-major.
fn gemv_rows(kind: Kind, w: &[u8], n: usize, k: usize, xs: &[Q8Row], simd: bool) -> Vec<f32> {
    let (be, bb) = kind.block();
    let row_bytes = k / be * bb;
    let m = xs.len();
    // Enough tasks to balance the pool (8 per thread), each at least 16 rows so that rayon's
    // per-task cost stays small next to the row reads.
    let per_task = n.div_ceil(8 * rayon::current_num_threads()).max(16);
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(per_task * m)
        .zip(w.par_chunks(per_task * row_bytes))
        .for_each(|(out, rows)| {
            for (o, row) in out.chunks_exact_mut(m).zip(rows.chunks_exact(row_bytes)) {
                // Every activation row reuses this weight row from L1.
                for (o, x) in o.iter_mut().zip(xs) {
                    *o = dot_row(kind, row, x, simd);
                }
            }
        });
    to_row_major(t, n, m)
}

/// `x @ w.t()` for a quantized `w` `[n, k]` of a [`supports`]ed type and an f32 `x` `[.., k]` on
/// the CPU, computed on the stored blocks with the activation quantized to 8 bits per block of 32
/// (as llama.cpp and candle's `QMatMul` do, so not bit-identical to the f32 product: each
/// element of `x` moves by at most half its block's step, `max|x| / 254`).
///
/// Meant for few rows (decode steps, short prompts): every row costs a pass of integer dot
/// products over the whole weight, which for long prompts is slower than one dequantization and
/// an f32 gemm.
///
/// # Errors
/// A weight type not [`supports`]ed, not on the CPU, or shapes that do not fit.
///
/// # Example
/// ```
/// use candle_core::quantized::{GgmlDType, QTensor};
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let w = (Tensor::arange(0f32, 512.0, &dev)? * 0.37)?.sin()?.reshape((8, 64))?;
/// let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
/// let x = (Tensor::arange(0f32, 64.0, &dev)? * 0.11)?.cos()?.reshape((1, 64))?;
/// let y = vidlm_models::qgemv::matmul(&x, &q)?;
/// let want = x.matmul(&q.dequantize(&dev)?.t()?)?;
/// let err: f32 = (y - want)?.abs()?.max_all()?.to_scalar()?;
/// // Each of the 64 activations moves by at most max|x| / 254 = 1 / 254; |w| <= 1.
/// assert!(err <= 64.0 / 254.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn matmul(x: &Tensor, w: &QTensor) -> candle_core::Result<Tensor> {
    matmul_with(x, w, has_avx2())
}

/// One activation row quantized once to 8-bit blocks, for several weights that read the same
/// input (a layer's q/k/v projections, its gate and up projections).
pub(crate) struct QuantizedRow(Q8Row);

impl QuantizedRow {
    /// Quantizes `x` (its length a multiple of 32, the weights' row length).
    pub(crate) fn new(x: &[f32]) -> Self {
        QuantizedRow(Q8Row::new(x))
    }
}

/// A weight matrix as plain row-major rows, for products computed a range of output rows at a
/// time by the caller's threads (the decode step's team): quantized blocks, f16 or f32.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// Blocks of a [`supports`]ed type, `k` elements a row.
    Quant {
        kind: Kind,
        data: &'a [u8],
        k: usize,
    },
    /// f16 elements, `k` a row.
    F16(&'a [f16], usize),
    /// f32 elements, `k` a row.
    F32(&'a [f32], usize),
}

impl<'a> Rows<'a> {
    /// The quantized weight's rows (its type [`supports`]ed, on the CPU, rows whole blocks).
    ///
    /// # Errors
    /// As [`matmul`].
    pub(crate) fn quantized(w: &'a QTensor) -> candle_core::Result<Self> {
        let (kind, _, k, data) = checked(w)?;
        match data {
            std::borrow::Cow::Borrowed(data) => Ok(Rows::Quant { kind, data, k }),
            std::borrow::Cow::Owned(_) => candle_core::bail!("vidlm-qgemv: weight not in memory"),
        }
    }

    /// Output rows.
    pub(crate) fn rows(&self) -> usize {
        match *self {
            Rows::Quant { kind, data, k } => {
                let (be, bb) = kind.block();
                data.len() / (k / be * bb).max(1)
            }
            Rows::F16(w, k) => w.len() / k.max(1),
            Rows::F32(w, k) => w.len() / k.max(1),
        }
    }

    /// Bytes of one weight row.
    pub(crate) fn row_bytes(&self) -> usize {
        match *self {
            Rows::Quant { kind, k, .. } => {
                let (be, bb) = kind.block();
                k / be * bb
            }
            Rows::F16(_, k) => 2 * k,
            Rows::F32(_, k) => 4 * k,
        }
    }

    /// Whether [`Rows::product`] reads the input quantized ([`QuantizedRow`]).
    pub(crate) fn quantized_input(&self) -> bool {
        matches!(self, Rows::Quant { .. })
    }

    /// `out[i] = dot(row first + i, x)` for `out.len()` rows from `first`, on one thread, with the
    /// kernels of [`gemv`], [`gemv_f16`] and [`crate::cpu_ops::gemv`] (the same sums, so the same
    /// bits). `xq` is `x` quantized, read by quantized weights (which need it).
    ///
    /// # Panics
    /// Rows past the weight's, an input of another length, or a quantized weight without `xq`.
    pub(crate) fn product(
        &self,
        x: &[f32],
        xq: Option<&QuantizedRow>,
        first: usize,
        out: &mut [f32],
    ) {
        let simd = has_avx2();
        match *self {
            Rows::Quant { kind, data, k } => {
                let xq = &xq.expect("a quantized weight reads the quantized input").0;
                assert_eq!(xq.q.len(), k, "vidlm-qgemv: input length");
                let (be, bb) = kind.block();
                let rb = k / be * bb;
                let rows = data[first * rb..(first + out.len()) * rb].chunks_exact(rb);
                for (o, row) in out.iter_mut().zip(rows) {
                    *o = dot_row(kind, row, xq, simd);
                }
            }
            Rows::F16(w, k) => {
                assert_eq!(x.len(), k, "vidlm-qgemv: input length");
                let rows = w[first * k..(first + out.len()) * k].chunks_exact(k);
                for (o, row) in out.iter_mut().zip(rows) {
                    *o = dot_f16(row, x, simd);
                }
            }
            Rows::F32(w, k) => {
                assert_eq!(x.len(), k, "vidlm-qgemv: input length");
                let rows = w[first * k..(first + out.len()) * k].chunks_exact(k);
                for (o, row) in out.iter_mut().zip(rows) {
                    *o = crate::cpu_ops::dot(row, x);
                }
            }
        }
    }
}

/// The weight's block format, shape and bytes, checked against each other.
fn checked(w: &QTensor) -> candle_core::Result<(Kind, usize, usize, std::borrow::Cow<'_, [u8]>)> {
    let Some(kind) = Kind::of(w.dtype()) else {
        candle_core::bail!("vidlm-qgemv: weight type {:?} is not supported", w.dtype());
    };
    if !matches!(w.device(), candle_core::Device::Cpu) {
        candle_core::bail!("vidlm-qgemv: runs on the CPU");
    }
    let (n, k) = w.shape().dims2()?;
    let (be, bb) = kind.block();
    if k % be != 0 {
        candle_core::bail!(
            "vidlm-qgemv: rows of {k} are not whole {:?} blocks",
            w.dtype()
        );
    }
    let data = w.data()?;
    if data.len() != n * (k / be) * bb {
        candle_core::bail!(
            "vidlm-qgemv: weight holds {} bytes, {n} x {k} {:?} needs {}",
            data.len(),
            w.dtype(),
            n * (k / be) * bb
        );
    }
    Ok((kind, n, k, data))
}

fn matmul_with(x: &Tensor, w: &QTensor, simd: bool) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        candle_core::bail!("vidlm-qgemv: runs on the CPU");
    }
    let (kind, n, k, data) = checked(w)?;
    if x.dims().last() != Some(&k) {
        candle_core::bail!(
            "vidlm-qgemv: input {:?} for weight {:?}",
            x.dims(),
            w.shape()
        );
    }
    let xf: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let xs: Vec<Q8Row> = xf.chunks_exact(k).map(Q8Row::new).collect();
    let y = gemv_rows(kind, &data, n, k, &xs, simd);
    let mut shape = x.dims().to_vec();
    *shape
        .last_mut()
        .expect("x has rank >= 1: it has a last dim") = n;
    Tensor::from_vec(y, shape, x.device())
}

/// One f16 weight row against one f32 activation row, summed in f32 (portable twin of
/// [`avx2_f16::dot`]).
fn dot_f16_generic(w: &[f16], x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (cw, cx) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail: f32 = cw
        .remainder()
        .iter()
        .zip(cx.remainder())
        .map(|(w, x)| w.to_f32() * x)
        .sum();
    for (w, x) in cw.zip(cx) {
        for ((s, w), x) in acc.iter_mut().zip(w).zip(x) {
            *s += w.to_f32() * x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2_f16 {
    use half::f16;
    use std::arch::x86_64::*;

    /// [`super::dot_f16_generic`] with F16C conversions and four FMA accumulators.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `w` and `x` have the same length.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(w: &[f16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (wp, xp) = (w.as_ptr() as *const u16, x.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, a) in a.iter_mut().enumerate() {
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i + 8 * j) as *const __m128i));
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i + 8 * j)), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i) as *const __m128i));
            a[0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i)), a[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut sum = _mm_cvtss_f32(s);
        for j in i..n {
            sum += w[j].to_f32() * x[j];
        }
        sum
    }
}

#[inline(always)]
fn dot_f16(w: &[f16], x: &[f32], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set when has_avx2() holds (AVX2, FMA and F16C).
        return unsafe { avx2_f16::dot(w, x) };
    }
    let _ = simd;
    dot_f16_generic(w, x)
}

/// `y[i][r] = dot(w[r], x[i])` for an f16 weight `w` `[n, k]` row-major and `m` f32 activation
/// rows `xs` `[m, k]`; output `[m, n]`, rows split over rayon's pool. GGUF F16 weights stay f16
/// (half the bytes a decode step reads, as llama.cpp); the activations stay f32, so the only
/// rounding is the weights' own.
fn gemv_f16_rows(w: &[f16], k: usize, xs: &[f32], simd: bool) -> Vec<f32> {
    let n = w.len() / k.max(1);
    let m = xs.len() / k.max(1);
    let per_task = n.div_ceil(8 * rayon::current_num_threads()).max(16);
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(per_task * m)
        .zip(w.par_chunks(per_task * k))
        .for_each(|(out, rows)| {
            for (o, row) in out.chunks_exact_mut(m).zip(rows.chunks_exact(k)) {
                for (o, x) in o.iter_mut().zip(xs.chunks_exact(k)) {
                    *o = dot_f16(row, x, simd);
                }
            }
        });
    to_row_major(t, n, m)
}

/// `x @ w.t()` for an f16 weight `w` `[n, k]` and an f32 `x` `[.., k]` on the CPU, the weight read
/// as stored (converted to f32 lane by lane, products and sums in f32). Meant for few rows, as
/// [`matmul`]: every row is a pass over the weight.
///
/// # Errors
/// `w` not a contiguous 2-D f16 CPU tensor, or `x`'s last dimension not `k`.
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let dev = Device::Cpu;
/// let w = (Tensor::arange(0f32, 320.0, &dev)? * 0.37)?.sin()?.reshape((8, 40))?;
/// let w = w.to_dtype(DType::F16)?;
/// let x = (Tensor::arange(0f32, 80.0, &dev)? * 0.11)?.cos()?.reshape((2, 40))?;
/// let y = vidlm_models::qgemv::matmul_f16(&x, &w)?;
/// let want = x.matmul(&w.to_dtype(DType::F32)?.t()?)?;
/// let err: f32 = (y - want)?.abs()?.max_all()?.to_scalar()?;
/// assert!(err < 1e-4);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn matmul_f16(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    matmul_f16_with(x, w, has_avx2())
}

fn matmul_f16_with(x: &Tensor, w: &Tensor, simd: bool) -> candle_core::Result<Tensor> {
    let (n, k) = w.dims2()?;
    if !x.device().is_cpu() || x.dims().last() != Some(&k) {
        candle_core::bail!(
            "vidlm-qgemv: input {:?} on {:?} for f16 weight {:?}",
            x.dims(),
            x.device().location(),
            w.shape()
        );
    }
    let xf: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let y = with_f16(w, |w| gemv_f16_rows(w, k, &xf, simd))?;
    let mut shape = x.dims().to_vec();
    *shape
        .last_mut()
        .expect("x has rank >= 1: it has a last dim") = n;
    Tensor::from_vec(y, shape, x.device())
}

/// Decodes whole blocks of `kind` into `out` by candle's block decoder; false (nothing written)
/// when candle's block structs do not match the bytes.
fn decode_blocks(kind: Kind, bytes: &[u8], out: &mut [f32]) -> bool {
    use candle_core::quantized::k_quants::{
        BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8_0,
    };
    let bb = kind.block().1;
    match kind {
        Kind::Q8_0 => blocks_to_f32::<BlockQ8_0>(bytes, bb, out),
        Kind::Q4_0 => blocks_to_f32::<BlockQ4_0>(bytes, bb, out),
        Kind::Q4_1 => blocks_to_f32::<BlockQ4_1>(bytes, bb, out),
        Kind::Q5_0 => blocks_to_f32::<BlockQ5_0>(bytes, bb, out),
        Kind::Q4K => blocks_to_f32::<BlockQ4K>(bytes, bb, out),
        Kind::Q6K => blocks_to_f32::<BlockQ6K>(bytes, bb, out),
    }
}

/// Most weight rows per task of [`gemm_panels`]: 64 rows of a 1536-wide weight decode to 384 KB
/// of f32, which stay in a core's L2 while every prompt row passes over them.
const PANEL: usize = 64;

/// Rows per panel for a weight of `n` rows over `threads`: the multiple of 16 up to [`PANEL`] that
/// finishes soonest when every thread takes whole panels (the largest on ties; gemm runs faster on
/// wider panels). 64-row panels of a 192-row projection are 3 tasks, so one of two threads would
/// idle for a third of the time; 48-row panels are 4.
fn panel_rows(n: usize, threads: usize) -> usize {
    (1..=PANEL / 16)
        .rev()
        .map(|i| i * 16)
        // The busiest thread's rows (at most all of them: one thread's time does not depend on p).
        .min_by_key(|&p| n.min(n.div_ceil(p).div_ceil(threads.max(1)) * p))
        .unwrap_or(PANEL)
}

/// Raw output pointer shared by [`gemm_panels`]' tasks, each writing its own columns.
#[derive(Clone, Copy)]
struct Cols(*mut f32);
// SAFETY: every task writes the columns of its own weight panel only; no element is shared.
unsafe impl Send for Cols {}
unsafe impl Sync for Cols {}

/// `x @ w.t()` for a prompt's rows `xf` `[m, k]` and a weight of `n` rows that `decode(first row,
/// rows, out)` writes as f32: panels of [`panel_rows`] weight rows, each decoded into a task-local
/// buffer (in cache; no whole-weight f32 copy and its page faults) and multiplied (panel_gemm) into
/// their columns of `[m, n]`, plus `bias` (`n` values) while they are in cache; panels split over
/// rayon's pool. `None` when `decode` fails.
fn gemm_panels(
    xf: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    decode: impl Fn(usize, usize, &mut [f32]) -> bool + Sync,
) -> Option<Vec<f32>> {
    let m = xf.len() / k.max(1);
    let mut y = vec![0f32; m * n];
    let dst = Cols(y.as_mut_ptr());
    let panel = panel_rows(n, rayon::current_num_threads());
    let own_kernel = crate::panel_gemm::available();
    let ok = (0..n.div_ceil(panel))
        .into_par_iter()
        .map_init(
            Default::default,
            |(buf, packed): &mut (Vec<f32>, Vec<f32>), p| {
                let (r0, nr) = (p * panel, panel.min(n - p * panel));
                buf.resize(nr * k, 0.0);
                if !decode(r0, nr, buf) {
                    return false;
                }
                let d = dst;
                if own_kernel {
                    use crate::panel_gemm::{multiply, pack, Operand};
                    pack(|r| &buf[r * k..(r + 1) * k], nr, k, packed);
                    let w = Operand::packed(packed, k);
                    // SAFETY: AVX2/FMA checked; xf holds m x k, `packed` is pack's for nr x k;
                    // `y` is m x n and outlives the tasks, and this task writes columns
                    // r0..r0 + nr of every row (its own).
                    unsafe { multiply(xf.as_ptr(), k, m, k, w, nr, d.0.add(r0), n) };
                } else {
                    // SAFETY: `y` is m x n and outlives the tasks; this task writes columns r0..r0 + nr
                    // of every row (its own), reading x (m x k) and its buffer (nr x k) in bounds.
                    unsafe {
                        gemm::gemm(
                            m,
                            nr,
                            k,
                            d.0.add(r0),
                            1,
                            n as isize,
                            false,
                            xf.as_ptr(),
                            1,
                            k as isize,
                            buf.as_ptr(),
                            k as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                if let Some(b) = bias {
                    let b = &b[r0..r0 + nr];
                    for i in 0..m {
                        // SAFETY: columns r0..r0 + nr of row i lie in `y` and are this task's.
                        let row =
                            unsafe { std::slice::from_raw_parts_mut(d.0.add(i * n + r0), nr) };
                        row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                    }
                }
                true
            },
        )
        .all(|ok| ok);
    ok.then_some(y)
}

/// `x @ w.t()` for many rows of `x` (a prompt) and a quantized `w` of a [`supports`]ed type: the
/// weight decoded to f32 one panel of rows at a time, each panel multiplied by an f32 gemm while it
/// is in cache (see [`gemm_panels`]). Same values as dequantizing `w` and a matmul, up to the
/// order of the f32 sums.
///
/// # Errors
/// As [`matmul`].
///
/// # Example
/// ```
/// use candle_core::quantized::{GgmlDType, QTensor};
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let w = (Tensor::arange(0f32, 4096.0, &dev)? * 0.37)?.sin()?.reshape((64, 64))?;
/// let q = QTensor::quantize(&w, GgmlDType::Q4_0)?;
/// let x = (Tensor::arange(0f32, 2560.0, &dev)? * 0.11)?.cos()?.reshape((1, 40, 64))?;
/// let y = vidlm_models::qgemv::prompt_matmul(&x, &q)?;
/// let want = x.broadcast_matmul(&q.dequantize(&dev)?.t()?)?;
/// let err: f32 = (y - want)?.abs()?.max_all()?.to_scalar()?;
/// assert!(err < 1e-4);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn prompt_matmul(x: &Tensor, w: &QTensor) -> candle_core::Result<Tensor> {
    let (kind, n, k, data) = checked(w)?;
    let (be, bb) = kind.block();
    let row_bytes = k / be * bb;
    let y = with_input_rows(x, k, w.shape().dims(), |xf| {
        gemm_panels(xf, n, k, None, |r0, nr, out| {
            decode_blocks(kind, &data[r0 * row_bytes..(r0 + nr) * row_bytes], out)
        })
    })?;
    match y {
        Some(y) => output(y, x, n),
        None => x.broadcast_matmul(&w.dequantize(x.device())?.t()?),
    }
}

/// `x @ w.t() + bias` for many rows of `x` and an f32 weight `[n, k]` (contiguous, on the CPU;
/// `bias` of `n`): panels copied into the tile kernel's layout. Where the kernel runs (x86-64 with
/// AVX2 and FMA) this is what [`crate::cpu_ops::linear`] takes for prompts and image tiles;
/// elsewhere candle's matmul is as fast.
///
/// # Errors
/// An input on another device or whose last dimension is not `k`; a weight that is not a
/// contiguous f32 CPU matrix; a bias that is not `n` f32 values.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let w = (Tensor::arange(0f32, 4096.0, &dev)? * 0.37)?.sin()?.reshape((64, 64))?;
/// let x = (Tensor::arange(0f32, 2560.0, &dev)? * 0.11)?.cos()?.reshape((1, 40, 64))?;
/// let b = Tensor::arange(0f32, 64.0, &dev)?;
/// let y = vidlm_models::qgemv::prompt_linear_f32(&x, &w, Some(&b))?;
/// let want = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
/// let err: f32 = (y - want)?.abs()?.max_all()?.to_scalar()?;
/// assert!(err < 1e-4);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn prompt_linear_f32(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (n, k) = w.dims2()?;
    let b: Option<Vec<f32>> = bias
        .map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1())
        .transpose()?;
    if b.as_ref().is_some_and(|b| b.len() != n) {
        candle_core::bail!(
            "vidlm-qgemv: bias {:?} for weight {:?}",
            bias.map(|b| b.dims()),
            w.dims()
        );
    }
    let y = with_f32(w, |wf| {
        with_input_rows(x, k, w.dims(), |xf| {
            gemm_panels(xf, n, k, b.as_deref(), |r0, nr, out| {
                out.copy_from_slice(&wf[r0 * k..(r0 + nr) * k]);
                true
            })
        })
    })??;
    output(y.expect("copying f32 cannot fail"), x, n)
}

/// [`prompt_matmul`] for an f16 weight `[n, k]` (contiguous, on the CPU): panels converted with
/// F16C where the CPU has it.
///
/// # Errors
/// As [`matmul_f16`].
pub fn prompt_matmul_f16(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    use half::slice::HalfFloatSliceExt;
    let (n, k) = w.dims2()?;
    let y = with_f16(w, |h| {
        with_input_rows(x, k, w.dims(), |xf| {
            gemm_panels(xf, n, k, None, |r0, nr, out| {
                h[r0 * k..(r0 + nr) * k].convert_to_f32_slice(out);
                true
            })
        })
    })??;
    output(y.expect("converting f16 cannot fail"), x, n)
}

/// Runs `f` on `x` as f32 rows of `k`, checked to be on the CPU and to end in `k`: a contiguous
/// f32 `x` in place (an activation of a few MB, copied for every projection otherwise), any other
/// converted to a vector first.
fn with_input_rows<R>(
    x: &Tensor,
    k: usize,
    w: &[usize],
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<R> {
    if !x.device().is_cpu() || x.dims().last() != Some(&k) {
        candle_core::bail!(
            "vidlm-qgemv: input {:?} for weight {w:?} (CPU only)",
            x.dims()
        );
    }
    if x.dtype() == DType::F32 && x.is_contiguous() {
        return with_f32(x, f);
    }
    let xf: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(f(&xf))
}

/// `y` in `x`'s shape with the last dimension `n`.
fn output(y: Vec<f32>, x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let mut shape = x.dims().to_vec();
    *shape
        .last_mut()
        .expect("x has rank >= 1: it has a last dim") = n;
    Tensor::from_vec(y, shape, x.device())
}

/// Decodes the whole blocks of `T` in `bytes` into `out`; false (nothing written) when the bytes
/// cannot be read as `T` (size, alignment or length differ).
fn blocks_to_f32<T: candle_core::quantized::k_quants::GgmlType>(
    bytes: &[u8],
    block_bytes: usize,
    out: &mut [f32],
) -> bool {
    let size = std::mem::size_of::<T>();
    if size != block_bytes
        || !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        || bytes.len() / size * T::BLCK_SIZE != out.len()
    {
        return false;
    }
    // SAFETY: candle's blocks are `repr(C)` structs of integers and f16 (every bit pattern is a
    // value), and size, alignment and length were checked above; the bytes are borrowed from
    // candle's own block vector.
    let blocks =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) };
    T::to_float(blocks, out);
    true
}

/// Runs `f` on the elements of a contiguous f32 CPU tensor (an error for any other).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (st, l) = t.storage_and_layout();
    match (&*st, l.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            Ok(f(&v[a..b]))
        }
        _ => candle_core::bail!("vidlm-qgemv: needs a contiguous f32 CPU tensor"),
    }
}

/// Runs `f` on the elements of a contiguous f16 CPU tensor (an error for any other).
pub(crate) fn with_f16<R>(t: &Tensor, f: impl FnOnce(&[f16]) -> R) -> candle_core::Result<R> {
    let (st, l) = t.storage_and_layout();
    match (&*st, l.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F16(v)), Some((a, b))) => {
            Ok(f(&v[a..b]))
        }
        _ => candle_core::bail!("vidlm-qgemv: needs a contiguous f16 CPU tensor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Deterministic pseudo-random f32 in [-1, 1) (xorshift), so failures reproduce.
    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    const TYPES: [GgmlDType; 6] = [
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ];

    /// For every type and a few odd shapes: the kernel (scalar and, where the CPU has it, AVX2)
    /// against candle's dequantized weights times our 8-bit activation, summed in f64 (the exact
    /// value of what the kernel computes, up to f32 rounding), and against the f32 product with
    /// the unquantized activation within the activation's rounding bound.
    #[test]
    fn kernels_match_the_dequantized_product() {
        let dev = Device::Cpu;
        for (ti, &dtype) in TYPES.iter().enumerate() {
            let be = Kind::of(dtype).unwrap().block().0;
            // (rows, width in blocks, activation rows): odd row counts, one block, several.
            for &(n, kb, m) in &[(1, 1, 1), (37, 3, 1), (203, 2, 3), (5, 9, 2)] {
                let k = kb * be.max(QK);
                let seed = (ti * 1000 + n * 10 + kb) as u64;
                // Weights with a per-row scale spread, and some rows all zero.
                let mut wv = rand_vec(n * k, seed);
                for (r, row) in wv.chunks_exact_mut(k).enumerate() {
                    let scale = if r % 11 == 3 {
                        0.0
                    } else {
                        0.1 + r as f32 % 7.0
                    };
                    row.iter_mut().for_each(|v| *v *= scale);
                }
                let w = Tensor::from_vec(wv, (n, k), &dev).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let wd: Vec<f32> = q
                    .dequantize(&dev)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let xv: Vec<f32> = rand_vec(m * k, seed + 7).iter().map(|v| v * 3.0).collect();
                let x = Tensor::from_vec(xv.clone(), (m, k), &dev).unwrap();
                let mut outs = vec![matmul_with(&x, &q, false).unwrap()];
                if has_avx2() {
                    outs.push(matmul_with(&x, &q, true).unwrap());
                }
                let outs: Vec<Vec<f32>> = outs
                    .iter()
                    .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
                    .collect();
                for i in 0..m {
                    let xrow = &xv[i * k..(i + 1) * k];
                    let xq = Q8Row::new(xrow);
                    for r in 0..n {
                        let wrow = &wd[r * k..(r + 1) * k];
                        let (mut exact, mut mag, mut f32dot, mut bound) = (0f64, 0f64, 0f64, 0f64);
                        for j in 0..k {
                            let xqj = xq.d[j / QK] as f64 * xq.q[j] as f64;
                            exact += wrow[j] as f64 * xqj;
                            mag += (wrow[j] as f64 * xqj).abs();
                            f32dot += wrow[j] as f64 * xrow[j] as f64;
                            // |x - x_q| <= step / 2 = d / 2.
                            bound += wrow[j].abs() as f64 * xq.d[j / QK] as f64 / 2.0;
                        }
                        for (o, simd) in outs.iter().zip(["scalar", "avx2"]) {
                            let got = o[i * n + r] as f64;
                            let tol = 1e-5 * mag + 1e-6;
                            assert!(
                                (got - exact).abs() <= tol,
                                "{dtype:?} {simd} n={n} k={k} row {r} of x{i}: {got} vs {exact} (tol {tol})"
                            );
                            assert!(
                                (got - f32dot).abs() <= bound * (1.0 + 1e-4) + tol,
                                "{dtype:?} {simd}: {got} vs f32 product {f32dot} (bound {bound})"
                            );
                        }
                        if outs.len() == 2 {
                            // The twins: same integer block sums, f32 order differs.
                            let (a, b) = (outs[0][i * n + r] as f64, outs[1][i * n + r] as f64);
                            assert!((a - b).abs() <= 1e-5 * mag + 1e-6, "{dtype:?}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }

    /// f16 weights: the F16C kernel and its portable twin against the f64 sum of the same f16
    /// values times the f32 activations, over lengths that leave every tail (not a multiple of 32
    /// or 8), one row and several.
    #[test]
    fn f16_kernels_match_the_f64_product() {
        let dev = Device::Cpu;
        for &(n, k, m) in &[
            (1, 1, 1),
            (37, 7, 1),
            (70, 45, 3),
            (19, 576, 1),
            (33, 1536, 2),
        ] {
            let seed = (n * 100 + k) as u64;
            let wv: Vec<f16> = rand_vec(n * k, seed)
                .iter()
                .map(|v| f16::from_f32(v * 4.0))
                .collect();
            let xv = rand_vec(m * k, seed + 1);
            let w = Tensor::from_slice(&wv, (n, k), &dev).unwrap();
            let x = Tensor::from_slice(&xv, (m, k), &dev).unwrap();
            let mut outs = vec![matmul_f16_with(&x, &w, false).unwrap()];
            if has_avx2() {
                outs.push(matmul_f16_with(&x, &w, true).unwrap());
            } else {
                println!("no AVX2/FMA/F16C here: the F16C kernel is not run");
            }
            for o in &outs {
                assert_eq!(o.dims(), &[m, n]);
                let o: Vec<f32> = o.flatten_all().unwrap().to_vec1().unwrap();
                for i in 0..m {
                    for r in 0..n {
                        let (mut exact, mut mag) = (0f64, 0f64);
                        for j in 0..k {
                            let p = wv[r * k + j].to_f64() * xv[i * k + j] as f64;
                            exact += p;
                            mag += p.abs();
                        }
                        let got = o[i * n + r] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-6 * mag + 1e-7,
                            "n={n} k={k} row {r} of x{i}: {got} vs {exact}"
                        );
                    }
                }
            }
            // The fused decode step's row products (`Rows`) are the same product.
            if m == 1 {
                let mut y = vec![0f32; wv.len() / xv.len()];
                Rows::F16(&wv, xv.len()).product(&xv, None, 0, &mut y);
                let o: Vec<f32> = outs[outs.len() - 1]
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(y, o);
            }
        }
        let w = Tensor::zeros((4, 8), DType::F16, &dev).unwrap();
        let x = Tensor::zeros((1, 9), DType::F32, &dev).unwrap();
        assert!(matmul_f16(&x, &w).is_err());
        let w32 = Tensor::zeros((4, 9), DType::F32, &dev).unwrap();
        assert!(matmul_f16(&x, &w32).is_err());
    }

    /// Prompt products: the block decoder gives candle's dequantized values exactly, and the
    /// panel gemm matches candle's dequantize + matmul for every type, f16 too, with weight row
    /// counts that leave a partial panel and prompt shapes of rank 2 and 3.
    #[test]
    fn prompt_panels_match_dequantize_and_matmul() {
        let dev = Device::Cpu;
        for &dtype in &TYPES {
            let kind = Kind::of(dtype).unwrap();
            let be = kind.block().0.max(QK);
            for &(n, kb, m) in &[(1, 1, 30), (37, 3, 25), (130, 2, 41)] {
                let k = kb * be;
                let w = Tensor::from_vec(rand_vec(n * k, (n * k) as u64), (n, k), &dev).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let wd = q.dequantize(&dev).unwrap();
                let mut ours = vec![0f32; n * k];
                assert!(
                    decode_blocks(kind, &q.data().unwrap(), &mut ours),
                    "{dtype:?}"
                );
                assert_eq!(ours, wd.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                let x = Tensor::from_vec(rand_vec(m * k, 5), (1, m, k), &dev).unwrap();
                let want = x.broadcast_matmul(&wd.t().unwrap()).unwrap();
                let got = prompt_matmul(&x, &q).unwrap();
                assert_eq!(got.dims(), &[1, m, n]);
                let scale = want
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-5 * scale.max(1.0), "{dtype:?} {n}x{k}: {diff}");
                if dtype == GgmlDType::Q8_0 {
                    let wh = wd.to_dtype(DType::F16).unwrap();
                    let want = x
                        .broadcast_matmul(&wh.to_dtype(DType::F32).unwrap().t().unwrap())
                        .unwrap();
                    let x2 = x.squeeze(0).unwrap();
                    let got = prompt_matmul_f16(&x2, &wh).unwrap().unsqueeze(0).unwrap();
                    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                    assert!(diff.to_scalar::<f32>().unwrap() <= 1e-5 * scale.max(1.0));
                }
            }
        }
    }

    #[test]
    fn panels_keep_every_thread_busy() {
        // 192 rows over 2 threads: 4 panels of 48, not 3 of 64 (one thread idle a third of it).
        assert_eq!(panel_rows(192, 2), 48);
        assert_eq!(panel_rows(576, 2), 48);
        assert_eq!(panel_rows(1536, 2), 64);
        assert_eq!(panel_rows(100, 2), 64);
        // One thread does all rows whatever the panel: the widest.
        assert_eq!(panel_rows(192, 1), 64);
        assert_eq!(panel_rows(7, 16), 64);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 64), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 32), &dev).unwrap();
        assert!(matmul(&x, &q).is_err());
        let q = QTensor::quantize(&w, GgmlDType::Q5_1).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 64), &dev).unwrap();
        assert!(!supports(GgmlDType::Q5_1));
        assert!(matmul(&x, &q).is_err());
    }

    #[test]
    fn activation_quantization_round_trips_within_half_a_step() {
        let x = rand_vec(96, 3);
        let q = Q8Row::new(&x);
        for (j, &v) in x.iter().enumerate() {
            let back = q.d[j / QK] * q.q[j] as f32;
            assert!((back - v).abs() <= q.d[j / QK] / 2.0 * 1.0001);
        }
        let zero = Q8Row::new(&[0f32; 32]);
        assert!(zero.q.iter().all(|&v| v == 0) && zero.d[0] == 0.0);
    }
}
