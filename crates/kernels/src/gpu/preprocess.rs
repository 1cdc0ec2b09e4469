//! GPU preprocess (`kernels/preprocess.cu`): decoded frame in device memory -> RGB -> Pillow-exact
//! resize -> normalize -> planar CHW f32/f16/bf16 written into slot `b` of a device batch.
//! Same maths as [`crate::preprocess::CpuPreprocessor`], bit for bit.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg,
    ValidAsZeroBits,
};
use half::{bf16, f16};

use super::{blocks, GpuDevice, PREPROCESS};
use crate::error::{invalid, CudaCtx, KernelError};
use crate::preprocess::{ColorSpec, Filter, Frame, Normalize, OutElem, PixelFormat, ResizePlan};

/// Output element types the GPU can write, with their device storage type (the type itself:
/// cudarc's `f16` feature makes half's f16/bf16 device types, which candle wraps as they are).
pub trait GpuElem: OutElem {
    /// Device storage type.
    type Dev: DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + Send + Sync;
    /// Index of this dtype's pass-2 kernel in `PREPROCESS.functions`.
    const PASS2: usize;
    /// From the device representation.
    fn from_dev(d: Self::Dev) -> Self;
    /// To the device representation.
    fn to_dev(self) -> Self::Dev;
}

impl GpuElem for f32 {
    type Dev = f32;
    const PASS2: usize = 1;
    fn from_dev(d: f32) -> Self {
        d
    }
    fn to_dev(self) -> f32 {
        self
    }
}

impl GpuElem for f16 {
    type Dev = f16;
    const PASS2: usize = 2;
    fn from_dev(d: f16) -> Self {
        d
    }
    fn to_dev(self) -> f16 {
        self
    }
}

impl GpuElem for bf16 {
    type Dev = bf16;
    const PASS2: usize = 3;
    fn from_dev(d: bf16) -> Self {
        d
    }
    fn to_dev(self) -> bf16 {
        self
    }
}

/// A batch `[n, 3, height, width]` in device memory: the vision encoder's input.
pub struct DeviceBatch<T: GpuElem> {
    /// The elements, slot-major then channel, row, column.
    pub data: CudaSlice<T::Dev>,
    /// Slots.
    pub n: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
}

impl<T: GpuElem> DeviceBatch<T> {
    /// Allocates a zeroed batch on `stream`.
    ///
    /// # Errors
    /// `InvalidInput` for an empty shape, `Cuda` if allocation fails.
    pub fn new(
        stream: &Arc<CudaStream>,
        n: usize,
        width: usize,
        height: usize,
    ) -> Result<Self, KernelError> {
        if n == 0 || width == 0 || height == 0 {
            return Err(invalid(format!("batch {n}x3x{height}x{width} is empty")));
        }
        let data = stream
            .alloc_zeros::<T::Dev>(n * 3 * height * width)
            .ctx("allocate batch")?;
        Ok(DeviceBatch {
            data,
            n,
            height,
            width,
        })
    }

    /// Elements per slot (`3 * height * width`).
    pub fn slot_len(&self) -> usize {
        3 * self.height * self.width
    }

    /// Sets every element to `v` (tests poison outputs with NaN before a run).
    ///
    /// # Errors
    /// `Cuda`.
    pub fn fill(&mut self, stream: &Arc<CudaStream>, v: T) -> Result<(), KernelError> {
        let host = vec![v.to_dev(); self.data.len()];
        stream.memcpy_htod(&host, &mut self.data).ctx("fill batch")
    }

    /// Copies the batch to the host.
    ///
    /// # Errors
    /// `Cuda`.
    pub fn download(&self, stream: &Arc<CudaStream>) -> Result<Vec<T>, KernelError> {
        let d = stream.clone_dtoh(&self.data).ctx("download batch")?;
        Ok(d.into_iter().map(T::from_dev).collect())
    }
}

/// A decoded frame in device memory: one buffer holding its planes.
pub struct DeviceFrame {
    data: CudaSlice<u8>,
    format: PixelFormat,
    width: u32,
    height: u32,
    offsets: [usize; 3],
    strides: [usize; 3],
}

impl DeviceFrame {
    /// Wraps a device buffer (e.g. a hardware decoder's NV12 output) with its layout.
    ///
    /// # Errors
    /// `InvalidInput` when the planes do not fit in `data`.
    pub fn from_device(
        data: CudaSlice<u8>,
        format: PixelFormat,
        width: u32,
        height: u32,
        offsets: [usize; 3],
        strides: [usize; 3],
    ) -> Result<Self, KernelError> {
        let f = DeviceFrame {
            data,
            format,
            width,
            height,
            offsets,
            strides,
        };
        let probe = Frame {
            format,
            width,
            height,
            planes: [&[], &[], &[]],
            strides,
        };
        for (i, (row, rows)) in probe.plane_dims().into_iter().enumerate() {
            if strides[i] < row || offsets[i] + strides[i] * (rows - 1) + row > f.data.len() {
                return Err(invalid(format!(
                    "device frame plane {i} does not fit its buffer"
                )));
            }
        }
        if offsets[0] != 0 {
            return Err(invalid("device frame plane 0 must start at offset 0"));
        }
        Ok(f)
    }

    /// Uploads a host frame into a new device buffer (planes packed back to back).
    ///
    /// # Errors
    /// `InvalidInput` for a malformed frame, `Cuda` on failure.
    pub fn upload(stream: &Arc<CudaStream>, frame: &Frame) -> Result<Self, KernelError> {
        frame.validate()?;
        let (packed, offsets, strides) = pack(frame);
        let data = stream.clone_htod(&packed).ctx("upload frame")?;
        DeviceFrame::from_device(
            data,
            frame.format,
            frame.width,
            frame.height,
            offsets,
            strides,
        )
    }

    /// The device buffer.
    pub fn data(&self) -> &CudaSlice<u8> {
        &self.data
    }
}

/// Size, offsets and strides of a frame's planes packed back to back without padding.
fn packed_layout(frame: &Frame) -> (usize, [usize; 3], [usize; 3]) {
    let mut offsets = [0; 3];
    let mut strides = [0; 3];
    let mut total = 0;
    for (i, (row, rows)) in frame.plane_dims().into_iter().enumerate() {
        offsets[i] = total;
        strides[i] = row;
        total += row * rows;
    }
    (total, offsets, strides)
}

fn pack_into(frame: &Frame, out: &mut [u8]) {
    let mut at = 0;
    for (i, (row, rows)) in frame.plane_dims().into_iter().enumerate() {
        for r in 0..rows {
            let s = r * frame.strides[i];
            out[at..at + row].copy_from_slice(&frame.planes[i][s..s + row]);
            at += row;
        }
    }
}

fn pack(frame: &Frame) -> (Vec<u8>, [usize; 3], [usize; 3]) {
    let (total, offsets, strides) = packed_layout(frame);
    let mut v = vec![0u8; total];
    pack_into(frame, &mut v);
    (v, offsets, strides)
}

/// Upload buffers reused round-robin, so a stream of frames allocates nothing per frame.
const RING: usize = 2;

/// GPU preprocessor for one geometry and one worker: owns its stream, the uploaded coefficient
/// tables, the intermediate image, a small ring of device frame buffers and a pinned staging
/// buffer for uploads.
pub struct GpuPreprocessor {
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
    plan: ResizePlan,
    h_bounds: CudaSlice<i32>,
    h_weights: CudaSlice<i32>,
    v_bounds: CudaSlice<i32>,
    v_weights: CudaSlice<i32>,
    lut: CudaSlice<f32>,
    tmp: CudaSlice<u8>,
    ring: Vec<DeviceFrame>,
    next: usize,
    staging: Option<PinnedHostSlice<u8>>,
}

impl GpuPreprocessor {
    /// Prepares `src_w x src_h` -> `dst_w x dst_h` on a new stream of `dev`.
    ///
    /// # Errors
    /// `InvalidInput` for bad geometry/normalization; `NvrtcMissing`, `Compile` or `Cuda`.
    pub fn new(
        dev: &GpuDevice,
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
        norm: &Normalize,
    ) -> Result<Self, KernelError> {
        Self::with_stream(
            dev,
            dev.new_stream()?,
            src_w,
            src_h,
            dst_w,
            dst_h,
            filter,
            norm,
        )
    }

    /// As [`GpuPreprocessor::new`] but on a given stream (e.g. candle's, to hand the batch to the
    /// model without synchronizing).
    ///
    /// # Errors
    /// As [`GpuPreprocessor::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn with_stream(
        dev: &GpuDevice,
        stream: Arc<CudaStream>,
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
        norm: &Normalize,
    ) -> Result<Self, KernelError> {
        let plan = ResizePlan::new(src_w, src_h, dst_w, dst_h, filter)?;
        let table = norm.table()?;
        let funcs = dev.functions(&PREPROCESS)?;
        let up = |v: &[i32], what: &str| stream.clone_htod(v).ctx(what);
        let h_bounds = up(&plan.horiz.bounds, "upload coefficients")?;
        let h_weights = up(&plan.horiz.weights, "upload coefficients")?;
        let v_bounds = up(&plan.vert.bounds, "upload coefficients")?;
        let v_weights = up(&plan.vert.weights, "upload coefficients")?;
        let lut = stream
            .clone_htod(&table)
            .ctx("upload normalization table")?;
        let tmp = stream
            .alloc_zeros::<u8>(plan.tmp_rows * plan.tmp_w * 3)
            .ctx("allocate intermediate")?;
        Ok(GpuPreprocessor {
            stream,
            funcs,
            plan,
            h_bounds,
            h_weights,
            v_bounds,
            v_weights,
            lut,
            tmp,
            ring: Vec::new(),
            next: 0,
            staging: None,
        })
    }

    /// The worker's stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The resize plan.
    pub fn plan(&self) -> &ResizePlan {
        &self.plan
    }

    /// Uploads `frame` through pinned memory into the next pooled device buffer and preprocesses
    /// it into `batch` slot `slot` (asynchronous on the worker's stream).
    ///
    /// # Errors
    /// `InvalidInput` for a frame or batch that does not match the plan; `Cuda`.
    pub fn run<T: GpuElem>(
        &mut self,
        frame: &Frame,
        color: ColorSpec,
        batch: &mut DeviceBatch<T>,
        slot: usize,
    ) -> Result<(), KernelError> {
        frame.validate()?;
        let (total, offsets, strides) = packed_layout(frame);
        if self.staging.as_ref().is_none_or(|s| s.len() != total) {
            // SAFETY: the buffer is fully written by `pack_into` before any read.
            self.staging = Some(
                unsafe { self.stream.context().alloc_pinned::<u8>(total) }
                    .ctx("allocate pinned")?,
            );
        }
        let staging = self
            .staging
            .as_mut()
            .ok_or_else(|| invalid("no staging buffer"))?;
        // `as_mut_slice` waits for the previous upload from this buffer to finish.
        let host = staging.as_mut_slice().ctx("map pinned buffer")?;
        pack_into(frame, &mut host[..total]);
        let i = self.next % RING;
        self.next += 1;
        let reuse = self.ring.get(i).is_some_and(|f| f.data.len() == total);
        if !reuse {
            let data = self
                .stream
                .alloc_zeros::<u8>(total)
                .ctx("allocate frame buffer")?;
            let f = DeviceFrame::from_device(
                data,
                frame.format,
                frame.width,
                frame.height,
                offsets,
                strides,
            )?;
            if i < self.ring.len() {
                self.ring[i] = f;
            } else {
                self.ring.push(f);
            }
        }
        let dst = &mut self.ring[i];
        dst.format = frame.format;
        dst.width = frame.width;
        dst.height = frame.height;
        dst.offsets = offsets;
        dst.strides = strides;
        let staging = self
            .staging
            .as_ref()
            .ok_or_else(|| invalid("no staging buffer"))?;
        self.stream
            .memcpy_htod(staging, &mut dst.data)
            .ctx("upload frame")?;
        // Split borrows: the frame is read from the ring while the rest of self is used.
        let ring = std::mem::take(&mut self.ring);
        let r = self.run_device(&ring[i], color, batch, slot);
        self.ring = ring;
        r
    }

    /// Preprocesses a frame already in device memory into `batch` slot `slot` (two kernel
    /// launches on the worker's stream, asynchronous).
    ///
    /// # Errors
    /// `InvalidInput` for a frame or batch that does not match the plan; `Cuda`.
    pub fn run_device<T: GpuElem>(
        &mut self,
        frame: &DeviceFrame,
        color: ColorSpec,
        batch: &mut DeviceBatch<T>,
        slot: usize,
    ) -> Result<(), KernelError> {
        let p = &self.plan;
        if (frame.width as usize, frame.height as usize) != (p.src_w, p.src_h) {
            return Err(invalid(format!(
                "gpu preprocess: frame is {}x{}, plan expects {}x{}",
                frame.width, frame.height, p.src_w, p.src_h
            )));
        }
        if (batch.width, batch.height) != (p.dst_w, p.dst_h) || slot >= batch.n {
            return Err(invalid(format!(
                "gpu preprocess: slot {slot} of a {}x3x{}x{} batch for {}x{} output",
                batch.n, batch.height, batch.width, p.dst_h, p.dst_w
            )));
        }
        let cc = color.coeffs();
        let fmt: i32 = match frame.format {
            PixelFormat::Rgb24 => 0,
            PixelFormat::Nv12 => 1,
            PixelFormat::Yuv420p => 2,
        };
        let (off1, off2) = (frame.offsets[1] as i64, frame.offsets[2] as i64);
        let (s0, s1, s2) = (
            frame.strides[0] as i32,
            frame.strides[1] as i32,
            frame.strides[2] as i32,
        );
        let vertical = p.vertical_first as i32;
        let (tmp_w, tmp_rows, row0) = (p.tmp_w as i32, p.tmp_rows as i32, p.row0 as i32);
        let (b1, w1, k1) = if p.vertical_first {
            (&self.v_bounds, &self.v_weights, p.vert.ksize as i32)
        } else {
            (&self.h_bounds, &self.h_weights, p.horiz.ksize as i32)
        };
        let cfg1 = LaunchConfig {
            grid_dim: (blocks(p.tmp_w, 32), blocks(p.tmp_rows, 8), 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.funcs[0]);
        l.arg(&frame.data)
            .arg(&off1)
            .arg(&off2)
            .arg(&s0)
            .arg(&s1)
            .arg(&s2)
            .arg(&fmt);
        l.arg(&cc.y_off)
            .arg(&cc.cy)
            .arg(&cc.crv)
            .arg(&cc.cgu)
            .arg(&cc.cgv)
            .arg(&cc.cbu);
        l.arg(&vertical)
            .arg(&tmp_w)
            .arg(&tmp_rows)
            .arg(&row0)
            .arg(&k1)
            .arg(b1)
            .arg(w1);
        l.arg(&mut self.tmp);
        // SAFETY: the argument list matches pp_pass1's signature; every index the kernel reads
        // is within the buffers by construction of the plan (bounds come from the same sizes).
        unsafe { l.launch(cfg1) }.ctx("launch pp_pass1")?;

        let (b2, w2, k2) = if p.vertical_first {
            (&self.h_bounds, &self.h_weights, p.horiz.ksize as i32)
        } else {
            (&self.v_bounds, &self.v_weights, p.vert.ksize as i32)
        };
        let (dw, dh) = (p.dst_w as i32, p.dst_h as i32);
        let slot = slot as i64;
        let cfg2 = LaunchConfig {
            grid_dim: (blocks(p.dst_w, 32), blocks(p.dst_h, 8), 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.funcs[T::PASS2]);
        l.arg(&self.tmp)
            .arg(&vertical)
            .arg(&tmp_w)
            .arg(&row0)
            .arg(&dw)
            .arg(&dh)
            .arg(&k2);
        l.arg(b2)
            .arg(w2)
            .arg(&self.lut)
            .arg(&mut batch.data)
            .arg(&slot);
        // SAFETY: matches pp_pass2_*'s signature; the slot was checked against the batch.
        unsafe { l.launch(cfg2) }.ctx("launch pp_pass2")?;
        Ok(())
    }
}
