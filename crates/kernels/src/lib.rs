//! vidlm-kernels: the image and token kernels of vidlm's GPU stage, with CPU twins.
//!
//! Three kernel families, one module each:
//! - [`preprocess`]: decoded frame (RGB24, NV12, YUV420P) -> colour conversion -> Pillow-exact
//!   antialiased resize -> rescale/normalize -> planar CHW f32/f16/bf16;
//! - [`pool`]: temporal/spatial mean pooling of visual tokens and per-token cosine similarity
//!   against the previous kept frame;
//! - [`scene`]: downscaled-luma difference and histogram distance for scene detection.
//!
//! Each family has a CPU twin (rayon) here and a CUDA implementation in [`gpu`], compiled from
//! the CUDA C sources in the repository's `kernels/` folder with NVRTC through cudarc, once per
//! process. Both compute the same maths; the tests check them against each other where a GPU
//! exists. Without a driver or NVRTC the GPU entry points return a typed [`KernelError`] and the
//! caller falls back to the CPU twin (see [`gpu::fallback_notice`]).
//!
//! The entry point most callers need is [`preprocess::preprocess_rgb24`] (RGB24 -> Pillow-exact
//! resize -> transformers' rescale/normalize -> CHW f32; bit-exact against Pillow 13 and
//! transformers, see `tests/pil_parity.rs`). For streams of frames, [`preprocess::CpuPreprocessor`]
//! keeps its tables and scratch buffers; on a GPU, [`gpu::preprocess::GpuPreprocessor`] writes
//! into slot `b` of a [`gpu::preprocess::DeviceBatch`]. With the `cuda` feature (candle on CUDA),
//! `gpu::candle::CandlePreprocessor` does that on candle's own device and stream and turns the
//! batch into a candle tensor without a copy through the host.
//!
//! Cargo features: `dynamic-loading` (default) loads libcuda/libnvrtc at run time, so the crate
//! builds and runs anywhere; `cuda` instead links them as candle's CUDA backend does (the two
//! cannot be combined: build with `--no-default-features --features cuda`, see
//! `scripts/build-cuda.sh`).
//!
//! ```
//! use vidlm_kernels::{preprocess_rgb24, Filter, Normalize};
//! let (w, h) = (64u32, 48u32);
//! let rgb = vec![128u8; (w * h * 3) as usize];
//! let mut chw = vec![0f32; 3 * 32 * 32];
//! preprocess_rgb24(&rgb, w, h, 32, 32, Filter::Lanczos3, &Normalize::SIGLIP, &mut chw)?;
//! assert!((chw[0] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
//! # Ok::<(), vidlm_kernels::KernelError>(())
//! ```
//!
//! Without a GPU the kernels' logic can still be checked: `crates/kernels/emu/run.sh` compiles
//! `kernels/*.cu` as C++ and compares every launch with the CPU twins.

#![warn(missing_docs)]

pub mod error;
pub mod gpu;
pub mod pool;
pub mod preprocess;
pub mod scene;

pub use error::KernelError;
pub use preprocess::{preprocess_rgb24, Filter, NormOrder, Normalize, PassOrder};
