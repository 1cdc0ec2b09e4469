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

/// Repacks a panel of `nr` f32 weight rows of `k` (`rows`, row-major) for [`multiply`]: element
/// (row `r`, column `kk`) goes to `(r / 16) * 16 * k + kk * 16 + r % 16`; the last group's missing
/// rows are zeros.
pub(crate) fn pack(rows: &[f32], nr: usize, k: usize, out: &mut Vec<f32>) {
    let groups = nr.div_ceil(GROUP);
    out.clear();
    out.resize(groups * GROUP * k, 0.0);
    for (g, dst) in out.chunks_exact_mut(GROUP * k).enumerate() {
        let first = g * GROUP;
        for l in 0..GROUP.min(nr - first) {
            let src = &rows[(first + l) * k..(first + l + 1) * k];
            for (kk, &v) in src.iter().enumerate() {
                dst[kk * GROUP + l] = v;
            }
        }
    }
}

/// Writes `y[i * ldy + c] = sum_kk x[i * k + kk] * w[c][kk]` for every prompt row `i < m` and
/// panel row `c < nr`, `w` a panel [`pack`]ed from `nr` rows of `k`.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]); `x` holds `m * k` elements, `packed` is `pack`'s
/// output for `nr` and `k`, and `y` is valid for writes of `nr` elements at `i * ldy` for every
/// `i < m`, written by no one else meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn multiply(
    x: &[f32],
    m: usize,
    k: usize,
    packed: &[f32],
    nr: usize,
    y: *mut f32,
    ldy: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() >= m * k && packed.len() >= nr.div_ceil(GROUP) * GROUP * k);
    for i0 in (0..m).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(m - i0);
        // A short last tile repeats its last row (in bounds) and stores only its own rows.
        let xr: [*const f32; TILE_ROWS] =
            std::array::from_fn(|i| x.as_ptr().add((i0 + i.min(rows - 1)) * k));
        for g in 0..nr.div_ceil(GROUP) {
            let w = packed.as_ptr().add(g * GROUP * k);
            let mut acc = [_mm256_setzero_ps(); 2 * TILE_ROWS];
            for kk in 0..k {
                let w0 = _mm256_loadu_ps(w.add(kk * GROUP));
                let w1 = _mm256_loadu_ps(w.add(kk * GROUP + 8));
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
pub(crate) unsafe fn multiply(
    _x: &[f32],
    _m: usize,
    _k: usize,
    _packed: &[f32],
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
            pack(&w, nr, k, &mut packed);
            // Output wider than the panel: the columns past it must stay untouched.
            let ldy = nr + 3;
            let mut y = vec![f32::NAN; m * ldy];
            // SAFETY: AVX2/FMA checked above; y holds m rows of ldy >= nr.
            unsafe { multiply(&x, m, k, &packed, nr, y.as_mut_ptr(), ldy) };
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
}
