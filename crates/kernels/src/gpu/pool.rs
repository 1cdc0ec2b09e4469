//! GPU token pooling (`kernels/pool.cu`): mean pooling and per-token cosine similarity, the same
//! sums in the same order as [`crate::pool`], bit for bit.
//!
//! Not called by the product yet: the pooling stage works on CPU tensors (the CPU twin,
//! `crate::pool`, is what it calls). This is the device path for when visual tokens stay on a CUDA
//! device; the GPU check compares it with the twin bit for bit.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::{blocks, GpuDevice, POOL};
use crate::error::{invalid, CudaCtx, KernelError};
use crate::pool::{check_pool, mean_per_pair, TokenShape, COSINE_EPS};

/// Token pooling on one worker's stream.
pub struct GpuPool {
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
}

impl GpuPool {
    /// Loads the pooling kernels on a new stream of `dev`.
    ///
    /// # Errors
    /// `NvrtcMissing`, `Compile`, `Cuda`.
    pub fn new(dev: &GpuDevice) -> Result<Self, KernelError> {
        Ok(GpuPool {
            stream: dev.new_stream()?,
            funcs: dev.functions(&POOL)?,
        })
    }

    /// The worker's stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Mean-pools device `tokens` (`shape`) by `kt` frames and `ks x ks` tokens into `out`.
    /// Returns the pooled shape.
    ///
    /// # Errors
    /// `InvalidInput` for bad shapes/lengths, `Cuda`.
    pub fn pool_mean(
        &self,
        tokens: &CudaSlice<f32>,
        shape: TokenShape,
        kt: usize,
        ks: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<TokenShape, KernelError> {
        let o = check_pool(shape, tokens.len(), kt, ks, out.len())?;
        let dims = [shape.t, shape.h, shape.w, shape.d, kt, ks, o.t, o.h, o.w];
        if dims.iter().any(|&v| v > i32::MAX as usize) {
            return Err(invalid("pool: dimension exceeds i32"));
        }
        let [t, h, w, d, kt, ks, ot, oh, ow] = dims.map(|v| v as i32);
        let cfg = LaunchConfig {
            grid_dim: (blocks(o.len(), 256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.funcs[0]);
        l.arg(tokens)
            .arg(&t)
            .arg(&h)
            .arg(&w)
            .arg(&d)
            .arg(&kt)
            .arg(&ks)
            .arg(&ot)
            .arg(&oh)
            .arg(&ow)
            .arg(out);
        // SAFETY: matches pool_mean's signature; lengths checked by check_pool.
        unsafe { l.launch(cfg) }.ctx("launch pool_mean")?;
        Ok(o)
    }

    /// Per-token cosine similarity of each pair of frames into `out` (`pairs.len() * h * w`).
    ///
    /// # Errors
    /// `InvalidInput` for out-of-range frames or wrong lengths, `Cuda`.
    pub fn token_cosine(
        &self,
        tokens: &CudaSlice<f32>,
        shape: TokenShape,
        pairs: &[(u32, u32)],
        out: &mut CudaSlice<f32>,
    ) -> Result<(), KernelError> {
        crate::pool::check_pairs(shape, tokens.len(), pairs)?;
        let n = shape.tokens_per_frame();
        if out.len() != pairs.len() * n || pairs.is_empty() {
            return Err(invalid(format!(
                "cosine: out has {} values, need {}",
                out.len(),
                pairs.len() * n
            )));
        }
        let pa: Vec<i32> = pairs.iter().map(|p| p.0 as i32).collect();
        let pb: Vec<i32> = pairs.iter().map(|p| p.1 as i32).collect();
        let pa = self.stream.clone_htod(&pa).ctx("upload pairs")?;
        let pb = self.stream.clone_htod(&pb).ctx("upload pairs")?;
        let (ni, di, np) = (n as i32, shape.d as i32, pairs.len() as i32);
        let threads = pairs.len() * n * 32;
        let cfg = LaunchConfig {
            grid_dim: (blocks(threads, 256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.funcs[1]);
        l.arg(tokens)
            .arg(&ni)
            .arg(&di)
            .arg(&pa)
            .arg(&pb)
            .arg(&np)
            .arg(&COSINE_EPS)
            .arg(out);
        // SAFETY: matches token_cosine's signature; frame indices were range-checked.
        unsafe { l.launch(cfg) }.ctx("launch token_cosine")?;
        Ok(())
    }

    /// Mean per-token cosine similarity of frames `a` and `b` (synchronizes the stream).
    ///
    /// # Errors
    /// As [`GpuPool::token_cosine`].
    pub fn frame_similarity(
        &self,
        tokens: &CudaSlice<f32>,
        shape: TokenShape,
        a: usize,
        b: usize,
    ) -> Result<f32, KernelError> {
        let n = shape.tokens_per_frame();
        let mut out = self
            .stream
            .alloc_zeros::<f32>(n)
            .ctx("allocate similarities")?;
        self.token_cosine(tokens, shape, &[(a as u32, b as u32)], &mut out)?;
        let per = self.stream.clone_dtoh(&out).ctx("download similarities")?;
        Ok(mean_per_pair(&per, n)[0])
    }
}
