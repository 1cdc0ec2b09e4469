//! Temporal and spatial pooling of visual tokens between the vision encoder and the language model.
//!
//! A [`Pooling`] is a chain of operations written like `mean:2`, `spatial:2x2`, `adaptive:0.9`,
//! or several joined with `+` (`spatial:2x2+adaptive:0.95`), or `none`. Every output group keeps
//! the time range of the frames it covers: `start` of its first frame, `end` of its last. The
//! maths is vidlm-kernels' token pooling (`pool_mean`, `frame_similarity`, `select_frames`).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use vidlm_kernels::pool::{frame_similarity, pool_mean, select_frames, TokenShape};
use vidlm_models::VisualTokens;

use crate::{PipelineError, Result};

/// One pooling operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolOp {
    /// Average every `k` consecutive frames' tokens (token by token) into one group.
    Mean(usize),
    /// Average each `h x w` block of a frame's token grid into one token (square blocks: the
    /// kernels pool `k x k`).
    Spatial {
        /// Block height in tokens.
        h: usize,
        /// Block width in tokens.
        w: usize,
    },
    /// Merge a frame into the previous kept one when the mean per-token cosine similarity of their
    /// tokens is at or above the threshold, extending the kept group's end time.
    Adaptive(f32),
}

/// A chain of pooling operations applied in order; empty means `none`.
///
/// ```
/// use vidlm_pipeline::Pooling;
/// let p: Pooling = "spatial:2x2+adaptive:0.9".parse().unwrap();
/// assert_eq!(p.to_string(), "spatial:2x2+adaptive:0.9");
/// assert!("mean:0".parse::<Pooling>().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pooling(pub Vec<PoolOp>);

impl Pooling {
    /// No pooling.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Applies the chain to the groups of one chunk (in time order).
    ///
    /// # Errors
    /// [`PipelineError::Tensor`] when an embedding cannot be read back, [`PipelineError::Config`]
    /// when a spatial pooling meets embeddings that do not match their grid.
    pub fn apply(&self, mut groups: Vec<VisualTokens>) -> Result<Vec<VisualTokens>> {
        for op in &self.0 {
            groups = match *op {
                PoolOp::Mean(k) => mean_k(groups, k)?,
                PoolOp::Spatial { h, .. } => spatial(groups, h)?,
                PoolOp::Adaptive(tau) => adaptive(groups, tau)?,
            };
        }
        Ok(groups)
    }
}

impl FromStr for Pooling {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(Self::none());
        }
        let bad = |why: &str| PipelineError::Config(format!("pooling `{s}`: {why}"));
        let mut ops = Vec::new();
        for part in s.split('+') {
            let (name, arg) = part.split_once(':').unwrap_or((part, ""));
            let op = match name.trim() {
                "mean" => {
                    let k: usize = arg.parse().map_err(|_| bad("mean:K needs an integer K"))?;
                    if k == 0 {
                        return Err(bad("mean:K needs K >= 1"));
                    }
                    PoolOp::Mean(k)
                }
                "spatial" => {
                    let (h, w) = arg
                        .split_once('x')
                        .ok_or_else(|| bad("spatial:KxK, e.g. spatial:2x2"))?;
                    let h: usize = h.parse().map_err(|_| bad("spatial:KxK needs integers"))?;
                    let w: usize = w.parse().map_err(|_| bad("spatial:KxK needs integers"))?;
                    if h == 0 || w == 0 {
                        return Err(bad("spatial block sides must be >= 1"));
                    }
                    if h != w {
                        return Err(bad("spatial blocks are square (KxK), e.g. spatial:2x2"));
                    }
                    PoolOp::Spatial { h, w }
                }
                "adaptive" => {
                    let tau: f32 = arg
                        .parse()
                        .map_err(|_| bad("adaptive:TAU needs a number"))?;
                    if !(-1.0..=1.0).contains(&tau) {
                        return Err(bad("adaptive threshold must lie in [-1, 1]"));
                    }
                    PoolOp::Adaptive(tau)
                }
                "none" => continue,
                other => {
                    return Err(bad(&format!(
                        "unknown operation `{other}` (none, mean:K, spatial:KxK, adaptive:TAU)"
                    )))
                }
            };
            ops.push(op);
        }
        Ok(Self(ops))
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            match op {
                PoolOp::Mean(k) => write!(f, "mean:{k}")?,
                PoolOp::Spatial { h, w } => write!(f, "spatial:{h}x{w}")?,
                PoolOp::Adaptive(t) => write!(f, "adaptive:{t}")?,
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Pooling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Pooling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A group's embeddings read back as f32, with its token count and hidden size.
struct Flat {
    data: Vec<f32>,
    n: usize,
    d: usize,
}

fn flat(g: &VisualTokens) -> Result<Flat> {
    let (n, d) = g.embeddings.dims2()?;
    let data = g
        .embeddings
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Flat { data, n, d })
}

/// Builds a tensor like `like` (same device and dtype) from f32 data.
fn tensor_like(like: &Tensor, data: Vec<f32>, n: usize, d: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, (n, d), like.device())?.to_dtype(like.dtype())?)
}

fn kernel_error(e: vidlm_kernels::KernelError) -> PipelineError {
    PipelineError::Config(format!("pooling kernel: {e}"))
}

/// Consecutive groups of one token shape, as the kernels' `[T, H, W, D]` buffer.
struct Run {
    groups: Vec<VisualTokens>,
    tokens: Vec<f32>,
    shape: TokenShape,
}

/// Splits groups into runs of equal token shape (a stream may change resolution mid-way; such
/// frames are never pooled together). A group whose rows do not form its grid is treated as one
/// row of tokens.
fn runs(groups: Vec<VisualTokens>) -> Result<Vec<Run>> {
    let mut out: Vec<Run> = Vec::new();
    for g in groups {
        let f = flat(&g)?;
        let (h, w) = if g.grid_h * g.grid_w == f.n {
            (g.grid_h, g.grid_w)
        } else {
            (1, f.n)
        };
        match out.last_mut() {
            Some(r) if r.shape.h == h && r.shape.w == w && r.shape.d == f.d => {
                r.shape.t += 1;
                r.tokens.extend_from_slice(&f.data);
                r.groups.push(g);
            }
            _ => out.push(Run {
                groups: vec![g],
                tokens: f.data,
                shape: TokenShape { t: 1, h, w, d: f.d },
            }),
        }
    }
    Ok(out)
}

/// Mean pooling of a run over `kt` frames and `ks x ks` tokens with the kernels' CPU twin; each
/// output group spans the times of the frames it averages.
fn pool_run(run: Run, kt: usize, ks: usize) -> Result<Vec<VisualTokens>> {
    let o = run.shape.pooled(kt, ks);
    let mut out = vec![0f32; o.len()];
    pool_mean(&run.tokens, run.shape, kt, ks, &mut out).map_err(kernel_error)?;
    let per = o.tokens_per_frame() * o.d;
    let mut result = Vec::with_capacity(o.t);
    for (i, data) in out.chunks_exact(per).enumerate() {
        let first = &run.groups[i * kt];
        let last = &run.groups[((i + 1) * kt).min(run.groups.len()) - 1];
        result.push(VisualTokens {
            embeddings: tensor_like(&first.embeddings, data.to_vec(), o.h * o.w, o.d)?,
            grid_h: o.h,
            grid_w: o.w,
            start: first.start,
            end: last.end,
        });
    }
    Ok(result)
}

fn mean_k(groups: Vec<VisualTokens>, k: usize) -> Result<Vec<VisualTokens>> {
    if k <= 1 {
        return Ok(groups);
    }
    let mut out = Vec::with_capacity(groups.len().div_ceil(k));
    for run in runs(groups)? {
        out.extend(pool_run(run, k, 1)?);
    }
    Ok(out)
}

fn spatial(groups: Vec<VisualTokens>, ks: usize) -> Result<Vec<VisualTokens>> {
    if ks <= 1 {
        return Ok(groups);
    }
    let mut out = Vec::with_capacity(groups.len());
    for run in runs(groups)? {
        out.extend(pool_run(run, 1, ks)?);
    }
    Ok(out)
}

/// Keeps a frame when its mean per-token cosine similarity to the last kept frame is below
/// `tau` (the kernels' greedy selection); a dropped frame extends the kept group's end time.
fn adaptive(groups: Vec<VisualTokens>, tau: f32) -> Result<Vec<VisualTokens>> {
    let mut out: Vec<VisualTokens> = Vec::with_capacity(groups.len());
    for run in runs(groups)? {
        let keep = select_frames(run.shape.t, tau, |a, b| {
            frame_similarity(&run.tokens, run.shape, a, b)
        })
        .map_err(kernel_error)?;
        let n = run.groups.len();
        let ends: Vec<f64> = run.groups.iter().map(|g| g.end).collect();
        let mut slots: Vec<Option<VisualTokens>> = run.groups.into_iter().map(Some).collect();
        for (i, &k) in keep.iter().enumerate() {
            // The kept frame stands for every frame up to the next kept one.
            let until = keep.get(i + 1).copied().unwrap_or(n);
            let mut g = slots[k]
                .take()
                .expect("select_frames returns each index once");
            g.end = ends[k..until].iter().fold(g.end, |a, b| a.max(*b));
            out.push(g);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn group(values: Vec<f32>, gh: usize, gw: usize, start: f64) -> VisualTokens {
        let d = values.len() / (gh * gw);
        VisualTokens {
            embeddings: Tensor::from_vec(values, (gh * gw, d), &Device::Cpu).unwrap(),
            grid_h: gh,
            grid_w: gw,
            start,
            end: start,
        }
    }

    fn values(g: &VisualTokens) -> Vec<f32> {
        g.embeddings.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "none",
            "mean:4",
            "spatial:2x2",
            "adaptive:0.9",
            "spatial:3x3+mean:2",
        ] {
            assert_eq!(s.parse::<Pooling>().unwrap().to_string(), s);
        }
        for bad in [
            "mean",
            "mean:x",
            "spatial:2",
            "adaptive:2",
            "median:3",
            "spatial:0x2",
            "spatial:2x1",
        ] {
            assert!(bad.parse::<Pooling>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mean_k_averages_and_keeps_ranges() {
        let groups = (0..5)
            .map(|i| group(vec![i as f32, 10.0 * i as f32], 1, 1, i as f64 * 0.5))
            .collect();
        let out = Pooling(vec![PoolOp::Mean(2)]).apply(groups).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(values(&out[0]), vec![0.5, 5.0]);
        assert_eq!((out[0].start, out[0].end), (0.0, 0.5));
        assert_eq!(values(&out[1]), vec![2.5, 25.0]);
        assert_eq!((out[1].start, out[1].end), (1.0, 1.5));
        // The odd frame out stays alone with its own time.
        assert_eq!(values(&out[2]), vec![4.0, 40.0]);
        assert_eq!((out[2].start, out[2].end), (2.0, 2.0));
    }

    #[test]
    fn spatial_averages_blocks_including_ragged_edges() {
        // 3x3 grid, d = 1, values 0..9.
        let g = group((0..9).map(|v| v as f32).collect(), 3, 3, 1.0);
        let out = Pooling(vec![PoolOp::Spatial { h: 2, w: 2 }])
            .apply(vec![g])
            .unwrap();
        assert_eq!((out[0].grid_h, out[0].grid_w), (2, 2));
        // Blocks: {0,1,3,4} {2,5} {6,7} {8}.
        assert_eq!(values(&out[0]), vec![2.0, 3.5, 6.5, 8.0]);
        assert_eq!((out[0].start, out[0].end), (1.0, 1.0));
    }

    #[test]
    fn adaptive_merges_near_duplicates_and_extends_time() {
        let a = vec![1.0, 0.0, 0.0, 1.0];
        let near = vec![1.0, 0.01, 0.01, 1.0];
        let other = vec![0.0, 1.0, 1.0, 0.0];
        let groups = vec![
            group(a.clone(), 1, 2, 0.0),
            group(near, 1, 2, 1.0),
            group(a, 1, 2, 2.0),
            group(other, 1, 2, 3.0),
        ];
        let out = Pooling(vec![PoolOp::Adaptive(0.99)]).apply(groups).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].start, out[0].end), (0.0, 2.0));
        assert_eq!((out[1].start, out[1].end), (3.0, 3.0));
        // The kept group keeps its own tokens (no averaging).
        assert_eq!(values(&out[0]), vec![1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn frames_of_another_shape_are_never_pooled_together() {
        let groups = vec![
            group(vec![1.0, 1.0], 1, 1, 0.0),
            group(vec![3.0, 3.0], 1, 1, 1.0),
            group(vec![5.0, 5.0, 7.0, 7.0], 1, 2, 2.0),
        ];
        let out = Pooling(vec![PoolOp::Mean(3)]).apply(groups).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(values(&out[0]), vec![2.0, 2.0]);
        assert_eq!((out[0].start, out[0].end), (0.0, 1.0));
        assert_eq!(values(&out[1]), vec![5.0, 5.0, 7.0, 7.0]);
    }
}
