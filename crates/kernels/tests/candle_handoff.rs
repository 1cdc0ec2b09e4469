//! The candle hand-off (feature `cuda`): our preprocess kernels fill a batch on candle's CUDA
//! stream and the batch becomes a candle tensor without a host round trip. On a GPU the tensor
//! (copied to the CPU here, in the test only) must equal the CPU twin for every format and dtype,
//! with outputs poisoned first. Without a GPU the GPU test prints why it skipped.
#![cfg(feature = "cuda")]

mod common;
use common::OwnedFrame;

use candle_core::{DType, Device, Tensor, WithDType};
use half::{bf16, f16};
use vidlm_kernels::gpu::candle::{batch_to_tensor, cuda_device, CandleElem, CandlePreprocessor};
use vidlm_kernels::preprocess::{
    ColorMatrix, ColorRange, ColorSpec, CpuPreprocessor, Filter, Normalize, OutElem, PixelFormat,
};
use vidlm_kernels::KernelError;

fn cuda() -> Option<Device> {
    // candle's CUDA init returns an error without a device; a panic (an odd driver) counts too.
    match std::panic::catch_unwind(|| Device::new_cuda(0)) {
        Ok(Ok(d)) => Some(d),
        Ok(Err(e)) => {
            let e = e.to_string();
            common::skip(&format!(
                "no usable CUDA device for candle ({})",
                e.lines().next().unwrap_or_default()
            ));
            None
        }
        Err(_) => {
            common::skip("candle's CUDA device creation panicked");
            None
        }
    }
}

#[test]
fn a_cpu_device_is_refused_with_a_typed_error() {
    let e = cuda_device(&Device::Cpu).unwrap_err();
    assert!(matches!(e, KernelError::InvalidInput(_)), "{e}");
    let e = CandlePreprocessor::new(&Device::Cpu, 4, 4, 2, 2, Filter::Bilinear, &Normalize::UNIT)
        .err()
        .unwrap();
    assert!(e.to_string().contains("CUDA device"), "{e}");
}

/// Fills slots 1 and 2 of a NaN-poisoned 3-slot batch on candle's stream from two frames, wraps
/// it as a tensor and compares it (copied to the host) with the CPU twin. Slot 0 must stay NaN.
#[allow(clippy::too_many_arguments)]
fn check<T: CandleElem + WithDType>(
    dev: &Device,
    a: &OwnedFrame,
    b: &OwnedFrame,
    dw: u32,
    dh: u32,
    filter: Filter,
    spec: ColorSpec,
    tol: f32,
) {
    let norm = Normalize::SIGLIP;
    let what = format!(
        "{:?} {}x{} -> {dw}x{dh} {filter:?} {:?}",
        a.format,
        a.w,
        a.h,
        <T as OutElem>::DTYPE
    );
    let n = (3 * dw * dh) as usize;
    let mut cpu_pp = CpuPreprocessor::new(a.w, a.h, dw, dh, filter, &norm).unwrap();
    let mut want = vec![<T as OutElem>::nan(); 3 * n];
    cpu_pp.run(&a.frame(), spec, &mut want[n..2 * n]).unwrap();
    cpu_pp.run(&b.frame(), spec, &mut want[2 * n..]).unwrap();

    let mut pp = CandlePreprocessor::new(dev, a.w, a.h, dw, dh, filter, &norm).unwrap();
    let stream = cuda_device(dev).unwrap().cuda_stream();
    let mut batch = pp.batch::<T>(3).unwrap();
    batch.fill(&stream, <T as OutElem>::nan()).unwrap();
    pp.run(&a.frame(), spec, &mut batch, 1).unwrap();
    pp.run(&b.frame(), spec, &mut batch, 2).unwrap();
    let ptr_before = {
        use cudarc::driver::DevicePtr;
        let (p, _sync) = batch.data.device_ptr(&stream);
        p
    };
    let t: Tensor = pp.into_tensor(batch).unwrap();
    assert_eq!(t.dims(), &[3, 3, dh as usize, dw as usize], "{what}");
    assert_eq!(t.dtype(), <T as WithDType>::DTYPE, "{what}");
    assert!(t.device().is_cuda(), "{what}");
    // Zero copy: the tensor's storage is the batch's own device buffer.
    {
        let (storage, layout) = t.storage_and_layout();
        let candle_core::Storage::Cuda(cs) = &*storage else {
            panic!("{what}: not CUDA storage")
        };
        use cudarc::driver::DevicePtr;
        let (p, _sync) = cs.as_cuda_slice::<T>().unwrap().device_ptr(&stream);
        assert_eq!(
            p, ptr_before,
            "{what}: the tensor's buffer is not the batch's"
        );
        assert_eq!(layout.start_offset(), 0);
    }
    // A candle op on the device reads it in stream order (no host synchronization in between).
    let doubled = (t.to_dtype(DType::F32).unwrap() * 2.0).unwrap();
    let got: Vec<T> = t.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        got[..n].iter().all(|v| OutElem::to_f32(*v).is_nan()),
        "{what}: slot 0 was written"
    );
    for slot in 1..3 {
        let (g, c) = (
            &got[slot * n..(slot + 1) * n],
            &want[slot * n..(slot + 1) * n],
        );
        assert!(
            g.iter().all(|v| OutElem::to_f32(*v).is_finite()),
            "{what}: slot {slot} not fully written"
        );
        let e = g
            .iter()
            .zip(c)
            .map(|(g, c)| {
                let (g, c) = (OutElem::to_f32(*g), OutElem::to_f32(*c));
                (g - c).abs() / c.abs().max(1e-3)
            })
            .fold(0f32, f32::max);
        assert!(e <= tol, "{what}: slot {slot} max relative error {e}");
        let exact = g.iter().zip(c).filter(|(x, y)| x == y).count();
        eprintln!("{what}: slot {slot}: max rel err {e:e}, {exact}/{n} bit-identical");
    }
    let d: Vec<f32> = doubled
        .narrow(0, 1, 2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (x, c) in d.iter().zip(&want[n..]) {
        let c = OutElem::to_f32(*c);
        assert!(
            (x - 2.0 * c).abs() <= 2.0 * tol * c.abs().max(1e-3),
            "{what}: doubled"
        );
    }
}

#[test]
fn batch_becomes_a_candle_tensor_equal_to_the_cpu_twin() {
    let Some(dev) = cuda() else { return };
    let spec = ColorSpec {
        matrix: ColorMatrix::Bt601,
        range: ColorRange::Full,
    };
    let cases = [
        (1279u32, 719u32, 512u32, 512u32, Filter::Lanczos3),
        (300, 200, 384, 160, Filter::Bicubic),
        (2, 2, 5, 3, Filter::Bilinear),
    ];
    let mut seed = 500;
    for (sw, sh, dw, dh, filter) in cases {
        for format in [PixelFormat::Rgb24, PixelFormat::Nv12, PixelFormat::Yuv420p] {
            seed += 7;
            let a = OwnedFrame::random(format, sw, sh, seed);
            let b = OwnedFrame::random(format, sw, sh, seed + 3);
            let s = if seed % 2 == 0 {
                ColorSpec::BT709_LIMITED
            } else {
                spec
            };
            check::<f32>(&dev, &a, &b, dw, dh, filter, s, 1e-5);
            check::<f16>(&dev, &a, &b, dw, dh, filter, s, 1e-3);
            check::<bf16>(&dev, &a, &b, dw, dh, filter, s, 8e-3);
        }
    }
}

#[test]
fn a_batch_from_another_stream_is_joined_before_candle_reads_it() {
    let Some(dev) = cuda() else { return };
    let gpu = vidlm_kernels::gpu::candle::gpu_device(&dev).unwrap();
    let (w, h) = (64u32, 48u32);
    let a = OwnedFrame::random(PixelFormat::Nv12, w, h, 9);
    let mut pp = vidlm_kernels::gpu::preprocess::GpuPreprocessor::new(
        &gpu,
        w,
        h,
        32,
        32,
        Filter::Lanczos3,
        &Normalize::SIGLIP,
    )
    .unwrap();
    let stream = pp.stream().clone();
    let mut batch =
        vidlm_kernels::gpu::preprocess::DeviceBatch::<f32>::new(&stream, 1, 32, 32).unwrap();
    pp.run(&a.frame(), ColorSpec::BT709_LIMITED, &mut batch, 0)
        .unwrap();
    let t = batch_to_tensor(batch, &dev).unwrap();
    let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let mut cpu = CpuPreprocessor::new(w, h, 32, 32, Filter::Lanczos3, &Normalize::SIGLIP).unwrap();
    let mut want = vec![0f32; 3 * 32 * 32];
    cpu.run(&a.frame(), ColorSpec::BT709_LIMITED, &mut want)
        .unwrap();
    let e = got
        .iter()
        .zip(&want)
        .map(|(g, c)| (g - c).abs() / c.abs().max(1e-3))
        .fold(0f32, f32::max);
    assert!(e <= 1e-5, "max relative error {e}");
}
