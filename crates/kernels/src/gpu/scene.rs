//! GPU scene signatures (`kernels/scene.cu`): luma grids and their histograms for a batch of
//! frames, the same integers as [`crate::scene::luma_signature`].

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::{blocks, GpuDevice, SCENE};
use crate::error::{invalid, CudaCtx, KernelError};
use crate::scene::{LumaSignature, SceneParams};

/// Scene signatures on one worker's stream.
pub struct GpuScene {
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
}

/// Layout of a batch of frames in one device buffer: frame `f`'s luma (or RGB24) plane starts at
/// `f * frame_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct PlaneBatch {
    /// Number of frames.
    pub frames: usize,
    /// Bytes from one frame to the next.
    pub frame_bytes: usize,
    /// True for packed RGB24 planes, false for luma (Y) planes.
    pub rgb: bool,
    /// Row stride in bytes.
    pub stride: usize,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl GpuScene {
    /// Loads the scene kernel on a new stream of `dev`.
    ///
    /// # Errors
    /// `NvrtcMissing`, `Compile`, `Cuda`.
    pub fn new(dev: &GpuDevice) -> Result<Self, KernelError> {
        Ok(GpuScene {
            stream: dev.new_stream()?,
            funcs: dev.functions(&SCENE)?,
        })
    }

    /// The worker's stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Launches the grid/histogram kernel for every frame of `planes` into device `grid`
    /// (`frames * grid_w * grid_h`) and `hist` (`frames * bins`, zeroed here). Asynchronous.
    ///
    /// # Errors
    /// `InvalidInput` for a layout that does not fit `data`, `Cuda`.
    pub fn launch(
        &self,
        data: &CudaSlice<u8>,
        b: PlaneBatch,
        p: SceneParams,
        grid: &mut CudaSlice<u8>,
        hist: &mut CudaSlice<u32>,
    ) -> Result<(), KernelError> {
        p.check()?;
        let row = b.width as usize * if b.rgb { 3 } else { 1 };
        if b.frames == 0 || b.width == 0 || b.height == 0 || b.stride < row {
            return Err(invalid(format!("scene: bad plane batch {b:?}")));
        }
        let need = (b.frames - 1) * b.frame_bytes + (b.height as usize - 1) * b.stride + row;
        if need > data.len() || b.frames > 65535 {
            return Err(invalid(format!(
                "scene: batch {b:?} needs {need} bytes, buffer has {}",
                data.len()
            )));
        }
        let cells = (p.grid_w * p.grid_h) as usize;
        if grid.len() != b.frames * cells || hist.len() != b.frames * p.bins as usize {
            return Err(invalid("scene: grid/hist buffers have the wrong length"));
        }
        self.stream.memset_zeros(hist).ctx("zero histograms")?;
        let fb = b.frame_bytes as i64;
        let (rgb, stride, w, h) = (
            b.rgb as i32,
            b.stride as i32,
            b.width as i32,
            b.height as i32,
        );
        let (gw, gh, bins) = (p.grid_w as i32, p.grid_h as i32, p.bins as i32);
        let shift = 8 - p.bins.trailing_zeros() as i32;
        let cfg = LaunchConfig {
            grid_dim: (blocks(cells, 128), b.frames as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.funcs[0]);
        l.arg(data)
            .arg(&fb)
            .arg(&rgb)
            .arg(&stride)
            .arg(&w)
            .arg(&h)
            .arg(&gw)
            .arg(&gh);
        l.arg(&shift).arg(&bins).arg(grid).arg(hist);
        // SAFETY: matches scene_grid's signature; the layout was checked against the buffer.
        unsafe { l.launch(cfg) }.ctx("launch scene_grid")?;
        Ok(())
    }

    /// Signatures of every frame of `planes` (synchronizes the stream).
    ///
    /// # Errors
    /// As [`GpuScene::launch`].
    pub fn signatures(
        &self,
        data: &CudaSlice<u8>,
        b: PlaneBatch,
        p: SceneParams,
    ) -> Result<Vec<LumaSignature>, KernelError> {
        p.check()?;
        let cells = (p.grid_w * p.grid_h) as usize;
        let mut grid = self
            .stream
            .alloc_zeros::<u8>(b.frames * cells)
            .ctx("allocate grids")?;
        let mut hist = self
            .stream
            .alloc_zeros::<u32>(b.frames * p.bins as usize)
            .ctx("allocate histograms")?;
        self.launch(data, b, p, &mut grid, &mut hist)?;
        let g = self.stream.clone_dtoh(&grid).ctx("download grids")?;
        let h = self.stream.clone_dtoh(&hist).ctx("download histograms")?;
        Ok(g.chunks(cells)
            .zip(h.chunks(p.bins as usize))
            .map(|(g, h)| LumaSignature {
                grid: g.to_vec(),
                hist: h.to_vec(),
            })
            .collect())
    }
}
