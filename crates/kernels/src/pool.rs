//! Token pooling: mean pooling of visual tokens over time and space, and per-token cosine
//! similarity between frames (for merging near-duplicate frames). CPU twins here; the CUDA
//! versions (`kernels/pool.cu`) are in `crate::gpu::pool` and compute the same sums in the same
//! order, so results agree bit for bit.

use rayon::prelude::*;

use crate::error::{invalid, KernelError};

/// Shape of a token tensor `[T, H, W, D]` (frames, token rows, token columns, channels),
/// row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenShape {
    /// Frames.
    pub t: usize,
    /// Token rows per frame.
    pub h: usize,
    /// Token columns per frame.
    pub w: usize,
    /// Channels per token.
    pub d: usize,
}

impl TokenShape {
    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.t * self.h * self.w * self.d
    }

    /// True when any dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens per frame (`h * w`).
    pub fn tokens_per_frame(&self) -> usize {
        self.h * self.w
    }

    /// Shape after pooling by `kt` frames and `ks x ks` tokens (partial windows at the ends are
    /// averaged over what they hold).
    pub fn pooled(&self, kt: usize, ks: usize) -> TokenShape {
        TokenShape {
            t: self.t.div_ceil(kt),
            h: self.h.div_ceil(ks),
            w: self.w.div_ceil(ks),
            d: self.d,
        }
    }
}

pub(crate) fn check_pool(
    shape: TokenShape,
    input: usize,
    kt: usize,
    ks: usize,
    out: usize,
) -> Result<TokenShape, KernelError> {
    if shape.is_empty() {
        return Err(invalid(format!("pool: empty token shape {shape:?}")));
    }
    if kt == 0 || ks == 0 {
        return Err(invalid(format!(
            "pool: window kt={kt} ks={ks} must be >= 1"
        )));
    }
    if input != shape.len() {
        return Err(invalid(format!(
            "pool: {input} tokens values for shape {shape:?}"
        )));
    }
    let o = shape.pooled(kt, ks);
    if out != o.len() {
        return Err(invalid(format!(
            "pool: out has {out} values, pooled shape {o:?} needs {}",
            o.len()
        )));
    }
    Ok(o)
}

/// Mean-pools `tokens` (`shape`) over windows of `kt` frames and `ks x ks` tokens into `out`
/// (`shape.pooled(kt, ks).len()` values). Sums run over frame, then row, then column, in f32,
/// then divide by the window's element count. Returns the pooled shape.
///
/// # Errors
/// `InvalidInput` for an empty shape, a zero window, or wrong buffer lengths.
///
/// ```
/// use vidlm_kernels::pool::{pool_mean, TokenShape};
/// let s = TokenShape { t: 2, h: 2, w: 2, d: 1 };
/// let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
/// let mut out = vec![0.0; 1];
/// pool_mean(&x, s, 2, 2, &mut out).unwrap();
/// assert_eq!(out[0], 3.5);
/// ```
pub fn pool_mean(
    tokens: &[f32],
    shape: TokenShape,
    kt: usize,
    ks: usize,
    out: &mut [f32],
) -> Result<TokenShape, KernelError> {
    let o = check_pool(shape, tokens.len(), kt, ks, out.len())?;
    let d = shape.d;
    out.par_chunks_mut(d).enumerate().for_each(|(i, dst)| {
        let ow = i % o.w;
        let oh = (i / o.w) % o.h;
        let ot = i / (o.w * o.h);
        let t1 = (ot * kt + kt).min(shape.t);
        let h1 = (oh * ks + ks).min(shape.h);
        let w1 = (ow * ks + ks).min(shape.w);
        let count = ((t1 - ot * kt) * (h1 - oh * ks) * (w1 - ow * ks)) as f32;
        for (c, o) in dst.iter_mut().enumerate() {
            let mut s = 0f32;
            for t in ot * kt..t1 {
                for h in oh * ks..h1 {
                    for w in ow * ks..w1 {
                        s += tokens[((t * shape.h + h) * shape.w + w) * d + c];
                    }
                }
            }
            *o = s / count;
        }
    });
    Ok(o)
}

/// Floor on the product of norms in the cosine, so all-zero tokens score 0 instead of NaN.
pub const COSINE_EPS: f32 = 1e-8;

/// Cosine similarity of two tokens, summed the way the CUDA kernel does it (32 lane-strided
/// partial sums, then a butterfly reduction), so CPU and GPU agree bit for bit.
pub fn cosine_warp_order(a: &[f32], b: &[f32]) -> f32 {
    let mut dot = [0f32; 32];
    let mut na = [0f32; 32];
    let mut nb = [0f32; 32];
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let l = i % 32;
        dot[l] += x * y;
        na[l] += x * x;
        nb[l] += y * y;
    }
    for off in [16usize, 8, 4, 2, 1] {
        let (d0, a0, b0) = (dot, na, nb);
        for l in 0..32 {
            dot[l] = d0[l] + d0[l ^ off];
            na[l] = a0[l] + a0[l ^ off];
            nb[l] = b0[l] + b0[l ^ off];
        }
    }
    dot[0] / (na[0].sqrt() * nb[0].sqrt()).max(COSINE_EPS)
}

pub(crate) fn check_pairs(
    shape: TokenShape,
    len: usize,
    pairs: &[(u32, u32)],
) -> Result<(), KernelError> {
    if shape.is_empty() || len != shape.len() {
        return Err(invalid(format!(
            "cosine: {len} token values for shape {shape:?}"
        )));
    }
    if let Some(p) = pairs
        .iter()
        .find(|p| p.0 as usize >= shape.t || p.1 as usize >= shape.t)
    {
        return Err(invalid(format!(
            "cosine: pair {p:?} outside {} frames",
            shape.t
        )));
    }
    Ok(())
}

/// Per-token cosine similarity between frame `a` and frame `b` of each pair, written to `out`
/// (`pairs.len() * h * w` values, pair-major).
///
/// # Errors
/// `InvalidInput` for a frame index out of range or wrong buffer lengths.
pub fn token_cosine(
    tokens: &[f32],
    shape: TokenShape,
    pairs: &[(u32, u32)],
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_pairs(shape, tokens.len(), pairs)?;
    let n = shape.tokens_per_frame();
    if out.len() != pairs.len() * n {
        return Err(invalid(format!(
            "cosine: out has {} values, need {}",
            out.len(),
            pairs.len() * n
        )));
    }
    let fl = n * shape.d;
    out.par_chunks_mut(n)
        .zip(pairs.par_iter())
        .for_each(|(o, &(a, b))| {
            let fa = &tokens[a as usize * fl..(a as usize + 1) * fl];
            let fb = &tokens[b as usize * fl..(b as usize + 1) * fl];
            for (i, v) in o.iter_mut().enumerate() {
                *v = cosine_warp_order(
                    &fa[i * shape.d..(i + 1) * shape.d],
                    &fb[i * shape.d..(i + 1) * shape.d],
                );
            }
        });
    Ok(())
}

/// Mean of each pair's per-token similarities (`per_token` as written by [`token_cosine`]),
/// accumulated in f64.
pub fn mean_per_pair(per_token: &[f32], tokens_per_frame: usize) -> Vec<f32> {
    per_token
        .chunks(tokens_per_frame.max(1))
        .map(|c| (c.iter().map(|&v| v as f64).sum::<f64>() / c.len() as f64) as f32)
        .collect()
}

/// Greedy near-duplicate removal: frame 0 is kept; each later frame is kept when its mean
/// per-token cosine similarity to the last kept frame is below `threshold`. `similarity(a, b)`
/// computes that mean (CPU: [`frame_similarity`]; GPU: `gpu::pool::GpuPool::frame_similarity`).
///
/// # Errors
/// Whatever `similarity` returns.
pub fn select_frames<F>(
    frames: usize,
    threshold: f32,
    mut similarity: F,
) -> Result<Vec<usize>, KernelError>
where
    F: FnMut(usize, usize) -> Result<f32, KernelError>,
{
    let mut kept = Vec::new();
    for t in 0..frames {
        match kept.last() {
            None => kept.push(t),
            Some(&r) => {
                if similarity(t, r)? < threshold {
                    kept.push(t);
                }
            }
        }
    }
    Ok(kept)
}

/// Mean per-token cosine similarity of frames `a` and `b` (CPU twin).
///
/// # Errors
/// `InvalidInput` for a frame index out of range or a wrong token buffer length.
pub fn frame_similarity(
    tokens: &[f32],
    shape: TokenShape,
    a: usize,
    b: usize,
) -> Result<f32, KernelError> {
    let mut per = vec![0f32; shape.tokens_per_frame()];
    token_cosine(tokens, shape, &[(a as u32, b as u32)], &mut per)?;
    Ok(mean_per_pair(&per, shape.tokens_per_frame())[0])
}
