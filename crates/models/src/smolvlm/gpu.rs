//! SmolVLM2 video frames preprocessed by our CUDA kernels (feature `cuda`, model on a CUDA
//! device): the RGB frames go up once, are resized, rescaled and normalized into one batch buffer
//! in the model's dtype, and that buffer becomes the vision tower's input tensor as it is, with no
//! copy through the host (`vidlm_kernels::gpu::candle`).
//!
//! One difference from the CPU processor, by design: transformers resizes a video frame twice
//! (longest edge to `video_size`, rounded to uint8, then to the square `max_image_size`); the
//! kernel resizes once, straight to the square, with the same antialiased filter. Where the first
//! resize is a no-op (frames already at `video_size`) they agree to rounding; otherwise they differ
//! by the intermediate uint8 rounding and a second filter pass (checked against the CPU path by
//! tests/gpu_pixels.rs on a GPU). Exact transformers parity stays on the CPU path.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use vidlm_kernels::gpu::candle::{CandleElem, CandlePreprocessor};
use vidlm_kernels::preprocess::{ColorSpec, Frame};
use vidlm_kernels::KernelError;

use super::processor::PixelConfig;
use crate::VideoFrame;

/// The GPU preprocessor of one engine: built for the first frame size it sees, rebuilt when the
/// size changes, switched off for good after a GPU error (the CPU path takes over, logged once).
#[derive(Default)]
pub(crate) struct GpuVideoPixels {
    pp: Option<(u32, u32, CandlePreprocessor)>,
    disabled: bool,
    announced: bool,
}

impl GpuVideoPixels {
    /// `[n, 3, side, side]` pixel values in `dtype` on `device`, or `None` where the CPU path
    /// should run: not a CUDA device, frames of different sizes (one batch, one plan), a processor
    /// that does not resize, or a GPU error.
    pub(crate) fn pixels(
        &mut self,
        frames: &[VideoFrame],
        cfg: &PixelConfig,
        device: &Device,
        dtype: DType,
    ) -> Option<Tensor> {
        if self.disabled || !device.is_cuda() || !cfg.do_resize {
            return None;
        }
        let (w, h) = (frames.first()?.width, frames.first()?.height);
        if frames.iter().any(|f| f.width != w || f.height != h) {
            return None;
        }
        match self.run(frames, cfg, device, dtype, (w, h)) {
            Ok(t) => {
                if !self.announced {
                    self.announced = true;
                    tracing::info!(
                        "preprocessing video frames with vidlm's CUDA kernels; batches go to the \
                         vision tower without a host copy"
                    );
                }
                Some(t)
            }
            Err(e) => {
                self.disabled = true;
                tracing::warn!(
                    "GPU preprocessing failed ({e}); preprocessing frames on the CPU from now on"
                );
                None
            }
        }
    }

    fn run(
        &mut self,
        frames: &[VideoFrame],
        cfg: &PixelConfig,
        device: &Device,
        dtype: DType,
        (w, h): (u32, u32),
    ) -> Result<Tensor, KernelError> {
        let side = cfg.max_image_size as u32;
        let norm = cfg.normalize();
        let pp = match &mut self.pp {
            Some((pw, ph, pp)) if (*pw, *ph) == (w, h) => pp,
            slot => {
                let pp = CandlePreprocessor::new(device, w, h, side, side, cfg.filter, &norm)?;
                &mut slot.insert((w, h, pp)).2
            }
        };
        match dtype {
            DType::BF16 => fill::<bf16>(pp, frames),
            DType::F16 => fill::<f16>(pp, frames),
            _ => fill::<f32>(pp, frames),
        }
    }
}

fn fill<T: CandleElem>(
    pp: &mut CandlePreprocessor,
    frames: &[VideoFrame],
) -> Result<Tensor, KernelError> {
    let mut batch = pp.batch::<T>(frames.len())?;
    for (slot, f) in frames.iter().enumerate() {
        // Packed RGB input: the colour spec is not used (no YUV conversion).
        let frame = Frame::rgb24(&f.rgb, f.width, f.height)?;
        pp.run(&frame, ColorSpec::BT709_LIMITED, &mut batch, slot)?;
    }
    pp.into_tensor(batch)
}
