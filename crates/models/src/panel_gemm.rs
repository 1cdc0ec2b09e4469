//! The f32 kernel of prompt-side products `y = x @ w.t()` on one panel of weight rows at a time
//! (see `qgemv::prompt_matmul`): the panel, decoded to f32, is repacked into groups of 16 rows
//! interleaved along `k`, and a register tile of 6 prompt rows walks every prompt row against the
//! groups, broadcasting the prompt's elements straight from its rows (no packing of `x`, which
//! every panel would otherwise repeat). The tile is 6 x 64 (24 AVX-512 accumulators) where the CPU
//! has AVX-512F, else 6 x 16 (twelve AVX2 accumulators).
//!
//! Measured by crates/models/examples/panel_gemm.rs (2 threads; this machine's FMA loop peaks at
//! ~230 GFLOP/s): with the AVX-512 tile, 183-214 GFLOP/s on the SmolVLM2-256M text (512-row
//! prompt) and vision (1024 patches) shapes, 0.85-1.02 of the time of candle's matmul on the same
//! weights already in f32, conversion included. The AVX2 tile alone measured 0.82-0.92 of the
//! AVX-512 one's speed on the same shapes in alternating runs (0.80 for a 12-head, 1024-token
//! attention); the whole vision tower per 512x512 tile went from 1.54-1.75 s to 1.20-1.46 s
//! (4 alternating rounds of benches/smolvlm_gguf.rs, q8_0 dequantized). The earlier comparison
//! with the `gemm` crate inside the same panels (its kernel 153-159 against our AVX2 165-174
//! GFLOP/s on 1536 x 576) is why the panels keep our own kernel: `gemm`'s generic blocking costs
//! more than it saves at these sizes (`k` of a few hundred to a few thousand, panels of 16-64
//! rows).
//!
//! Every output element is one sum over `k` in order (fused multiply-adds), so the result does
//! not depend on the panel size or the thread count.

/// Weight rows of one column group: two AVX2 vectors of output columns.
pub(crate) const GROUP: usize = 16;

/// Prompt rows of one register tile.
const TILE_ROWS: usize = 6;

/// Whether this CPU runs [`multiply`]; without AVX2 and FMA callers keep a generic gemm.
#[cfg(target_arch = "x86_64")]
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU runs [`multiply`]: never off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn available() -> bool {
    false
}

/// Repacks `nr` f32 weight rows of `k` (`row(r)` gives row `r`) for [`multiply`]: element
/// (row `r`, column `kk`) goes to `(r / 16) * 16 * k + kk * 16 + r % 16`; the last group's missing
/// rows are zeros. [`Operand::packed`] reads it.
pub(crate) fn pack<'a>(row: impl Fn(usize) -> &'a [f32], nr: usize, k: usize, out: &mut Vec<f32>) {
    let groups = nr.div_ceil(GROUP);
    out.clear();
    out.resize(groups * GROUP * k, 0.0);
    for (g, dst) in out.chunks_exact_mut(GROUP * k).enumerate() {
        let first = g * GROUP;
        for l in 0..GROUP.min(nr - first) {
            for (kk, &v) in row(first + l)[..k].iter().enumerate() {
                dst[kk * GROUP + l] = v;
            }
        }
    }
}

/// The right-hand operand of [`multiply`], `nr` output columns over `k`: element (column `c`,
/// `kk`) at `ptr + (c / 16) * group + kk * step + c % 16`. A [`pack`]ed panel has `group = 16 k`
/// and `step = 16`; a row-major `[k, nr]` matrix with row stride `ld` (attention's values) is
/// already of this form with `group = 16` and `step = ld`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    ptr: *const f32,
    group: usize,
    step: usize,
}

impl Operand {
    /// A [`pack`]ed panel over `k`.
    pub(crate) fn packed(p: &[f32], k: usize) -> Self {
        Self {
            ptr: p.as_ptr(),
            group: GROUP * k,
            step: GROUP,
        }
    }

    /// A row-major `[k, columns]` matrix at `ptr` with row stride `ld`; every group of 16 columns
    /// is read whole, so its column count must be a multiple of 16.
    pub(crate) fn rows(ptr: *const f32, ld: usize) -> Self {
        Self {
            ptr,
            group: GROUP,
            step: ld,
        }
    }
}

/// Writes `y[i * ldy + c] = sum_kk x[i * ldx + kk] * w(c, kk)` for every row `i < m` and column
/// `c < nr` of the [`Operand`] `w` over `k`.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]); `x` is readable at `i * ldx + kk` for `i < m`,
/// `kk < k`; `w` is readable at every element of `nr.div_ceil(16)` whole groups over `k`; `y` is
/// writable at `nr` elements from `i * ldy` for every `i < m`, and no one else touches those
/// meanwhile.
///
/// CPUs with AVX-512F take its wider tile (`avx512::multiply`); both give the same bits.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn multiply(
    x: *const f32,
    ldx: usize,
    m: usize,
    k: usize,
    w: Operand,
    nr: usize,
    y: *mut f32,
    ldy: usize,
) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        avx512::multiply(x, ldx, m, k, w, nr, y, ldy)
    } else {
        multiply_avx2(x, ldx, m, k, w, nr, y, ldy)
    }
}

/// [`multiply`] on AVX2 and FMA: a 6 x 16 tile (twelve accumulators).
///
/// # Safety
/// As [`multiply`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_avx2(
    x: *const f32,
    ldx: usize,
    m: usize,
    k: usize,
    w: Operand,
    nr: usize,
    y: *mut f32,
    ldy: usize,
) {
    use std::arch::x86_64::*;
    for i0 in (0..m).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(m - i0);
        // A short last tile repeats its last row (in bounds) and stores only its own rows.
        let xr: [*const f32; TILE_ROWS] =
            std::array::from_fn(|i| x.add((i0 + i.min(rows - 1)) * ldx));
        for g in 0..nr.div_ceil(GROUP) {
            let wg = w.ptr.add(g * w.group);
            let mut acc = [_mm256_setzero_ps(); 2 * TILE_ROWS];
            for kk in 0..k {
                let w0 = _mm256_loadu_ps(wg.add(kk * w.step));
                let w1 = _mm256_loadu_ps(wg.add(kk * w.step + 8));
                for i in 0..TILE_ROWS {
                    let b = _mm256_broadcast_ss(&*xr[i].add(kk));
                    acc[2 * i] = _mm256_fmadd_ps(b, w0, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(b, w1, acc[2 * i + 1]);
                }
            }
            let cols = GROUP.min(nr - g * GROUP);
            for (i, pair) in acc.chunks_exact(2).take(rows).enumerate() {
                let dst = y.add((i0 + i) * ldy + g * GROUP);
                if cols == GROUP {
                    _mm256_storeu_ps(dst, pair[0]);
                    _mm256_storeu_ps(dst.add(8), pair[1]);
                } else {
                    let mut tmp = [0f32; GROUP];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), pair[0]);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8), pair[1]);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
                }
            }
        }
    }
}

/// The AVX-512 form of [`multiply`]: 32 vector registers hold a 6-row x 64-column tile (24
/// accumulators of 16 lanes), so each step over `k` loads 4 weight vectors and 6 broadcasts for
/// 24 fused multiply-adds of 16 lanes (AVX2's 6 x 16 tile: 8 loads for 12 of 8 lanes). The prompt
/// rows of a tile stay those of AVX2's (6, in L1 over a few thousand `k`), and every output is the
/// same sum in the same order, so both forms give identical bits.
///
/// Measured on the SmolVLM2-256M text and vision shapes (2 threads, alternating with the AVX2
/// tile in one process): this tile took 0.76-0.92 of the AVX2 tile's time. A 12 x 32 tile (the
/// same 24 accumulators, fewer weight loads) was as fast on `k` up to 1536 but 1.04-1.11 of the
/// AVX2 time on the vision MLP's 768 x 3072, where 12 prompt rows of `k` no longer stay in L1;
/// blocking `k` (128-512) made every shape slower (reloading the accumulators, more passes over
/// the prompt).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Operand, GROUP, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Weight groups (16 columns each) of the widest tile.
    const GROUPS: usize = 4;

    /// Writes `rows` rows of the tile whose prompt rows start at `xr` and whose `G` weight
    /// groups start at `wg` (`cols` of their columns, the rest past `nr`) into `y` over `k`.
    ///
    /// # Safety
    /// As [`super::multiply`], for this tile's rows and columns; AVX-512F present.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const G: usize>(
        xr: &[*const f32; TILE_ROWS],
        wg: *const f32,
        w: Operand,
        k: usize,
        rows: usize,
        cols: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); G]; TILE_ROWS];
        for kk in 0..k {
            let wv: [__m512; G] =
                std::array::from_fn(|g| _mm512_loadu_ps(wg.add(g * w.group + kk * w.step)));
            for (i, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*xr[i].add(kk));
                for (a, wv) in a.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(b, *wv, *a);
                }
            }
        }
        for (i, a) in acc.iter().take(rows).enumerate() {
            for (g, v) in a.iter().enumerate() {
                let dst = y.add(i * ldy + g * GROUP);
                match cols.saturating_sub(g * GROUP) {
                    0 => {}
                    c if c >= GROUP => _mm512_storeu_ps(dst, *v),
                    c => _mm512_mask_storeu_ps(dst, ((1u32 << c) - 1) as u16, *v),
                }
            }
        }
    }

    /// [`super::multiply`] on AVX-512F.
    ///
    /// # Safety
    /// As [`super::multiply`]; AVX-512F present.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn multiply(
        x: *const f32,
        ldx: usize,
        m: usize,
        k: usize,
        w: Operand,
        nr: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        let groups = nr.div_ceil(GROUP);
        for i0 in (0..m).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(m - i0);
            // A short last tile repeats its last row (in bounds) and stores only its own rows.
            let xr: [*const f32; TILE_ROWS] =
                std::array::from_fn(|i| x.add((i0 + i.min(rows - 1)) * ldx));
            for g in (0..groups).step_by(GROUPS) {
                let (wg, cols, yg) = (
                    w.ptr.add(g * w.group),
                    nr - g * GROUP,
                    y.add(i0 * ldy + g * GROUP),
                );
                match groups - g {
                    1 => tile::<1>(&xr, wg, w, k, rows, cols, yg, ldy),
                    2 => tile::<2>(&xr, wg, w, k, rows, cols, yg, ldy),
                    3 => tile::<3>(&xr, wg, w, k, rows, cols, yg, ldy),
                    _ => tile::<GROUPS>(&xr, wg, w, k, rows, cols, yg, ldy),
                }
            }
        }
    }
}

/// Non-x86 targets never call it ([`available`] is false there).
///
/// # Safety
/// Never to be called.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn multiply(
    _x: *const f32,
    _ldx: usize,
    _m: usize,
    _k: usize,
    _w: Operand,
    _nr: usize,
    _y: *mut f32,
    _ldy: usize,
) {
    unreachable!("panel_gemm::multiply needs AVX2 and FMA")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prompt `x` (m x k), a weight `w` (nr x k) of smooth values, and `w` [`pack`]ed.
    fn case(m: usize, nr: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let val = |i: usize, s: f32| ((i as f32) * s).sin();
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 0.37)).collect();
        let w: Vec<f32> = (0..nr * k).map(|i| val(i, 0.11)).collect();
        let mut packed = Vec::new();
        pack(|r| &w[r * k..(r + 1) * k], nr, k, &mut packed);
        (x, w, packed)
    }

    #[test]
    fn tiles_match_a_plain_sum_on_ragged_shapes() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2/FMA, so the kernel never runs here");
            return;
        }
        for &(m, nr, k) in &[
            (1, 1, 1),
            (5, 16, 3),
            (6, 17, 64),
            (13, 40, 70),
            (7, 48, 576),
        ] {
            let (x, w, packed) = case(m, nr, k);
            // Output wider than the panel: the columns past it must stay untouched.
            let ldy = nr + 3;
            let mut y = vec![f32::NAN; m * ldy];
            let op = Operand::packed(&packed, k);
            // SAFETY: AVX2/FMA checked above; x is m x k, packed is pack's, y holds m rows of
            // ldy >= nr.
            unsafe { multiply(x.as_ptr(), k, m, k, op, nr, y.as_mut_ptr(), ldy) };
            for i in 0..m {
                for c in 0..nr {
                    let want: f64 = (0..k)
                        .map(|kk| x[i * k + kk] as f64 * w[c * k + kk] as f64)
                        .sum();
                    let got = y[i * ldy + c] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "m {m} nr {nr} k {k} at ({i}, {c}): {got} vs {want}"
                    );
                }
                assert!(y[i * ldy + nr..(i + 1) * ldy].iter().all(|v| v.is_nan()));
            }
        }
    }

    /// The AVX-512 tile against the AVX2 one: the same sums in the same order, so the same bits,
    /// on shapes that end in every group count (1-4 of the 64-column tile, partial columns) and
    /// in short row tiles, with both operand forms.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_tiles_give_the_avx2_bits() {
        if !available() || !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F (or no AVX2/FMA), so only one form runs");
            return;
        }
        for &(m, nr, k) in &[
            (1, 1, 1),
            (5, 16, 3),
            (7, 33, 64),
            (13, 48, 70),
            (6, 64, 576),
            (19, 80, 129),
            (12, 127, 300),
        ] {
            let (x, w, packed) = case(m, nr, k);
            let ldy = nr + 5;
            let run = |wide: bool, op: Operand, cols: usize| {
                let mut y = vec![f32::NAN; m * ldy];
                // SAFETY: AVX2/FMA and AVX-512F checked above; x is m x k; `op` is pack's for
                // nr x k or w read as k rows of nr (cols a multiple of 16 then); y holds m rows
                // of ldy >= cols.
                unsafe {
                    if wide {
                        avx512::multiply(x.as_ptr(), k, m, k, op, cols, y.as_mut_ptr(), ldy)
                    } else {
                        multiply_avx2(x.as_ptr(), k, m, k, op, cols, y.as_mut_ptr(), ldy)
                    }
                }
                y
            };
            let op = Operand::packed(&packed, k);
            let (a, b) = (run(false, op, nr), run(true, op, nr));
            // NaN marks the untouched columns past nr: compare bits, not values.
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "packed m {m} nr {nr} k {k}");
            // Row-major form: w as k rows of nr, the whole groups of 16 in it.
            let cols = nr / GROUP * GROUP;
            if cols > 0 {
                let op = Operand::rows(w.as_ptr(), nr);
                let (a, b) = (run(false, op, cols), run(true, op, cols));
                assert_eq!(bits(&a), bits(&b), "rows m {m} nr {nr} k {k}");
            }
        }
    }

    #[test]
    fn row_major_operands_need_no_packing() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2/FMA, so the kernel never runs here");
            return;
        }
        // w as [k, 32] rows of stride 40 (a strided view), x with row stride 9 over k = 7.
        let (m, k, nr, ld, ldx) = (11, 7, 32, 40, 9);
        let x: Vec<f32> = (0..m * ldx).map(|i| ((i as f32) * 0.3).cos()).collect();
        let w: Vec<f32> = (0..k * ld).map(|i| ((i as f32) * 0.7).sin()).collect();
        let mut y = vec![0f32; m * nr];
        // SAFETY: AVX2/FMA checked; every read stays in x (m rows of ldx >= k) and w (k rows of
        // ld >= nr, nr a multiple of 16); y is m x nr.
        unsafe {
            multiply(
                x.as_ptr(),
                ldx,
                m,
                k,
                Operand::rows(w.as_ptr(), ld),
                nr,
                y.as_mut_ptr(),
                nr,
            )
        };
        for i in 0..m {
            for c in 0..nr {
                let want: f32 = (0..k).map(|kk| x[i * ldx + kk] * w[kk * ld + c]).sum();
                assert!((y[i * nr + c] - want).abs() < 1e-5, "({i}, {c})");
            }
        }
    }
}
