//! The hand-off to candle (feature `cuda`): our preprocess kernels run on candle's CUDA device
//! and stream, and the batch buffer they fill becomes a candle [`Tensor`] as it is, with no copy
//! through the host.
//!
//! This works because the `cuda` build has one cudarc: ours and candle's (both 0.19.10, one
//! crate after feature unification), so our `CudaSlice` is the type candle's
//! [`CudaStorage::wrap_cuda_slice`] takes, and candle's context and stream are ours to launch on.
//! Launching on candle's own stream orders the kernels before every candle op that reads the
//! tensor, with no synchronization; a batch filled on another stream is joined first.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use half::bf16;
//! use vidlm_kernels::gpu::candle::CandlePreprocessor;
//! use vidlm_kernels::preprocess::{ColorSpec, Filter, Frame, Normalize};
//!
//! let device = candle_core::Device::new_cuda(0)?;
//! let mut pp = CandlePreprocessor::new(&device, 1280, 720, 512, 512, Filter::Lanczos3, &Normalize::SIGLIP)?;
//! let mut batch = pp.batch::<bf16>(8)?;
//! let rgb = vec![0u8; 1280 * 720 * 3];
//! for slot in 0..8 {
//!     pp.run(&Frame::rgb24(&rgb, 1280, 720)?, ColorSpec::BT709_LIMITED, &mut batch, slot)?;
//! }
//! let pixels = pp.into_tensor(batch)?; // [8, 3, 512, 512] bf16 on device, no copy
//! assert_eq!(pixels.dims(), &[8, 3, 512, 512]);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use candle_core::cuda_backend::CudaDType;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, Device, Storage, Tensor};
use cudarc::driver::CudaStream;

use super::preprocess::{DeviceBatch, DeviceFrame, GpuElem, GpuPreprocessor};
use super::GpuDevice;
use crate::error::{invalid, CudaCtx, KernelError};
use crate::preprocess::{ColorSpec, Filter, Frame, Normalize, ResizePlan};

/// Output dtypes candle can hold without conversion: f32, f16 and bf16 (their device types are
/// candle's own).
pub trait CandleElem: GpuElem<Dev = Self> + CudaDType {}
impl<T: GpuElem<Dev = T> + CudaDType> CandleElem for T {}

/// candle's CUDA device inside `device`.
///
/// # Errors
/// `InvalidInput` when `device` is not a CUDA device.
pub fn cuda_device(device: &Device) -> Result<&CudaDevice, KernelError> {
    match device {
        Device::Cuda(d) => Ok(d),
        other => Err(invalid(format!(
            "the candle hand-off needs a CUDA device, got {:?}",
            other.location()
        ))),
    }
}

/// Our [`GpuDevice`] on candle's context (same driver context, so buffers are shared as they are).
///
/// # Errors
/// `InvalidInput` for a non-CUDA `device`; `Cuda` if the context cannot be queried.
pub fn gpu_device(device: &Device) -> Result<GpuDevice, KernelError> {
    let cuda = cuda_device(device)?;
    GpuDevice::from_context(cuda.cuda_stream().context().clone())
}

/// Wraps `batch` as a `[n, 3, height, width]` tensor on `device` without copying: the tensor owns
/// the batch's device memory from here on.
///
/// If the batch was written on a stream other than candle's, candle's stream first waits for that
/// stream's work (an event, not a host synchronization), so the tensor is never read early. Its
/// memory is still freed on the batch's own stream (cudarc waits there for candle's reads when
/// event tracking is on, its default); allocating on candle's stream, as
/// [`CandlePreprocessor::batch`] does, avoids the question.
///
/// # Errors
/// `InvalidInput` when `device` is not CUDA, the batch lives on another device, or its buffer
/// does not hold `n * 3 * height * width` elements; `Cuda` if the stream join fails.
pub fn batch_to_tensor<T: CandleElem>(
    batch: DeviceBatch<T>,
    device: &Device,
) -> Result<Tensor, KernelError> {
    let cuda = cuda_device(device)?;
    let candle_stream = cuda.cuda_stream();
    let shape = (batch.n, 3, batch.height, batch.width);
    if batch.data.len() != batch.n * batch.slot_len() {
        return Err(invalid(format!(
            "batch buffer holds {} elements, shape {shape:?} needs {}",
            batch.data.len(),
            batch.n * batch.slot_len()
        )));
    }
    let ours = batch.data.stream().clone();
    if ours.context().cu_ctx() != candle_stream.context().cu_ctx() {
        return Err(invalid(format!(
            "batch is on CUDA device {}, candle's tensor would be on device {}",
            ours.context().ordinal(),
            candle_stream.context().ordinal()
        )));
    }
    if !Arc::ptr_eq(&ours, &candle_stream) {
        candle_stream
            .join(&ours)
            .ctx("order candle's stream after the batch's")?;
    }
    let storage = CudaStorage::wrap_cuda_slice(batch.data, cuda.clone());
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        BackpropOp::none(),
        false,
    ))
}

/// A [`GpuPreprocessor`] on candle's CUDA device and stream, whose batches become candle tensors
/// without a copy ([`CandlePreprocessor::into_tensor`]).
pub struct CandlePreprocessor {
    device: Device,
    stream: Arc<CudaStream>,
    inner: GpuPreprocessor,
}

impl CandlePreprocessor {
    /// Prepares `src_w x src_h` -> `dst_w x dst_h` with `filter` and `norm` on candle's CUDA
    /// `device`, launching on candle's own stream.
    ///
    /// # Errors
    /// `InvalidInput` for a non-CUDA device or bad geometry/normalization; `NvrtcMissing`,
    /// `Compile` or `Cuda` from kernel compilation and upload.
    pub fn new(
        device: &Device,
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
        norm: &Normalize,
    ) -> Result<Self, KernelError> {
        let stream = cuda_device(device)?.cuda_stream();
        let gpu = GpuDevice::from_context(stream.context().clone())?;
        let inner = GpuPreprocessor::with_stream(
            &gpu,
            stream.clone(),
            src_w,
            src_h,
            dst_w,
            dst_h,
            filter,
            norm,
        )?;
        Ok(CandlePreprocessor {
            device: device.clone(),
            stream,
            inner,
        })
    }

    /// The candle device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The resize plan.
    pub fn plan(&self) -> &ResizePlan {
        self.inner.plan()
    }

    /// A new zeroed batch of `n` slots of the plan's output size, on candle's stream.
    ///
    /// # Errors
    /// `InvalidInput` for `n == 0`; `Cuda` if allocation fails.
    pub fn batch<T: CandleElem>(&self, n: usize) -> Result<DeviceBatch<T>, KernelError> {
        let p = self.inner.plan();
        DeviceBatch::new(&self.stream, n, p.dst_w, p.dst_h)
    }

    /// Uploads a host frame and preprocesses it into `batch` slot `slot` (asynchronous, on
    /// candle's stream).
    ///
    /// # Errors
    /// As [`GpuPreprocessor::run`].
    pub fn run<T: CandleElem>(
        &mut self,
        frame: &Frame,
        color: ColorSpec,
        batch: &mut DeviceBatch<T>,
        slot: usize,
    ) -> Result<(), KernelError> {
        self.inner.run(frame, color, batch, slot)
    }

    /// Preprocesses a frame already in device memory (e.g. a hardware decoder's NV12) into
    /// `batch` slot `slot`.
    ///
    /// # Errors
    /// As [`GpuPreprocessor::run_device`].
    pub fn run_device<T: CandleElem>(
        &mut self,
        frame: &DeviceFrame,
        color: ColorSpec,
        batch: &mut DeviceBatch<T>,
        slot: usize,
    ) -> Result<(), KernelError> {
        self.inner.run_device(frame, color, batch, slot)
    }

    /// The batch as a `[n, 3, height, width]` candle tensor, without a copy (see
    /// [`batch_to_tensor`]).
    ///
    /// # Errors
    /// As [`batch_to_tensor`].
    pub fn into_tensor<T: CandleElem>(&self, batch: DeviceBatch<T>) -> Result<Tensor, KernelError> {
        batch_to_tensor(batch, &self.device)
    }
}
