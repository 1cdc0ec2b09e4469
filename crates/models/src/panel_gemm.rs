//! The f32 kernel of prompt-side products `y = x @ w.t()` on one panel of weight rows at a time
//! (see `qgemv::prompt_matmul`): the panel, decoded to f32, is repacked into groups of 16 rows
//! interleaved along `k`, and a 6 x 16 register tile (twelve AVX2 accumulators) walks every prompt
//! row against every group, broadcasting the prompt's elements straight from its rows (no packing
//! of `x`, which every panel would otherwise repeat).
//!
//! Measured by crates/models/examples/panel_gemm.rs (a 512-row prompt, 2 threads, three runs):
//! the whole f16 panel path, conversion included, takes 0.81-0.93 of the time of candle's matmul
//! on the same weights already in f32 for 1536 x 576, 0.95-0.98 for 576 x 1536 and 576 x 576,
//! 0.86-0.92 for 192 x 576 (116-152 GFLOP/s). With the `gemm` crate in the same panels, the kernel
//! alone measured 153-159 against our 165-174 GFLOP/s on 1536 x 576: `gemm`'s generic blocking
//! costs more than it saves at these sizes (`k` of a few hundred to a few thousand, panels of
//! 16-64 rows).
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
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

    #[test]
    fn tiles_match_a_plain_sum_on_ragged_shapes() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2/FMA, so the kernel never runs here");
            return;
        }
        let val = |i: usize, s: f32| ((i as f32) * s).sin();
        for &(m, nr, k) in &[
            (1, 1, 1),
            (5, 16, 3),
            (6, 17, 64),
            (13, 40, 70),
            (7, 48, 576),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| val(i, 0.37)).collect();
            let w: Vec<f32> = (0..nr * k).map(|i| val(i, 0.11)).collect();
            let mut packed = Vec::new();
            pack(|r| &w[r * k..(r + 1) * k], nr, k, &mut packed);
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
