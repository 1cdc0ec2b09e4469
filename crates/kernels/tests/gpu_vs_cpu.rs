//! GPU kernels against their CPU twins on random frames, odd sizes, every format and dtype, with
//! poisoned outputs. Without a GPU (no driver or no device) each test prints why it skipped.

mod common;
use common::OwnedFrame;

use half::{bf16, f16};
use vidlm_kernels::gpu::pool::GpuPool;
use vidlm_kernels::gpu::preprocess::{DeviceBatch, DeviceFrame, GpuElem, GpuPreprocessor};
use vidlm_kernels::gpu::scene::{GpuScene, PlaneBatch};
use vidlm_kernels::gpu::{driver_present, GpuDevice};
use vidlm_kernels::pool::{pool_mean, token_cosine, TokenShape};
use vidlm_kernels::preprocess::{
    ColorMatrix, ColorRange, ColorSpec, CpuPreprocessor, Filter, Frame, Normalize, PixelFormat,
};
use vidlm_kernels::scene::{luma_signature, SceneParams};
use vidlm_kernels::KernelError;

fn device() -> Option<GpuDevice> {
    match GpuDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            common::skip(&format!("no usable GPU ({e})"));
            None
        }
    }
}

#[test]
fn without_a_driver_the_gpu_path_is_a_typed_error() {
    if cfg!(feature = "cuda") {
        common::skip("the CUDA build links the driver: there is nothing to load");
        return;
    }
    if driver_present() {
        common::skip("a CUDA driver is present here");
        return;
    }
    let e = GpuDevice::new(0).unwrap_err();
    assert!(matches!(e, KernelError::DriverMissing), "{e}");
    assert!(e.is_unavailable());
    vidlm_kernels::gpu::fallback_notice(&e);
}

/// Max relative error of `gpu` vs `cpu` (NaN counts as infinite).
fn max_rel<T: GpuElem>(gpu: &[T], cpu: &[T]) -> f32 {
    gpu.iter()
        .zip(cpu)
        .map(|(g, c)| {
            let (g, c) = (g.to_f32(), c.to_f32());
            if !g.is_finite() {
                f32::INFINITY
            } else {
                (g - c).abs() / c.abs().max(1e-3)
            }
        })
        .fold(0.0, f32::max)
}

fn check_dtype<T: GpuElem>(
    dev: &GpuDevice,
    of: &OwnedFrame,
    dw: u32,
    dh: u32,
    filter: Filter,
    spec: ColorSpec,
    tol: f32,
) {
    let frame = of.frame();
    let norm = Normalize::CLIP;
    let mut cpu_pp = CpuPreprocessor::new(of.w, of.h, dw, dh, filter, &norm).unwrap();
    let n = (3 * dw * dh) as usize;
    let mut cpu = vec![T::nan(); n];
    cpu_pp.run(&frame, spec, &mut cpu).unwrap();
    let mut gpu_pp = GpuPreprocessor::new(dev, of.w, of.h, dw, dh, filter, &norm).unwrap();
    let stream = gpu_pp.stream().clone();
    let mut batch = DeviceBatch::<T>::new(&stream, 3, dw as usize, dh as usize).unwrap();
    batch.fill(&stream, T::nan()).unwrap();
    // Slot 1 through the pinned-upload path, slot 2 from a frame already on the device.
    gpu_pp.run(&frame, spec, &mut batch, 1).unwrap();
    let dframe = DeviceFrame::upload(&stream, &frame).unwrap();
    gpu_pp.run_device(&dframe, spec, &mut batch, 2).unwrap();
    let out = batch.download(&stream).unwrap();
    let what = format!(
        "{:?} {}x{} -> {dw}x{dh} {filter:?} {spec:?} {:?}",
        of.format,
        of.w,
        of.h,
        T::DTYPE
    );
    assert!(
        out[..n].iter().all(|v| v.to_f32().is_nan()),
        "{what}: slot 0 was written"
    );
    for slot in 1..3 {
        let g = &out[slot * n..(slot + 1) * n];
        assert!(
            g.iter().all(|v| v.to_f32().is_finite()),
            "{what}: slot {slot} not fully written"
        );
        let e = max_rel(g, &cpu);
        assert!(e <= tol, "{what}: slot {slot} max relative error {e}");
        let exact = g.iter().zip(&cpu).filter(|(a, b)| a == b).count();
        eprintln!("{what}: slot {slot}: max rel err {e:e}, {exact}/{n} bit-identical");
    }
}

#[test]
fn preprocess_gpu_matches_cpu_twin() {
    let Some(dev) = device() else { return };
    let specs = [
        ColorSpec::BT709_LIMITED,
        ColorSpec {
            matrix: ColorMatrix::Bt601,
            range: ColorRange::Full,
        },
    ];
    let cases = [
        (1279u32, 719u32, 512u32, 512u32, Filter::Lanczos3),
        (1279, 719, 384, 384, Filter::Bicubic),
        (1920, 1080, 512, 512, Filter::Bilinear),
        (300, 200, 384, 160, Filter::Lanczos3), // vertical pass first
        (2, 2, 5, 3, Filter::Lanczos3),
        (2, 2, 1, 1, Filter::Bicubic),
        (37, 23, 16, 11, Filter::Bilinear),
    ];
    let mut seed = 100;
    for (sw, sh, dw, dh, filter) in cases {
        for format in [PixelFormat::Rgb24, PixelFormat::Nv12, PixelFormat::Yuv420p] {
            seed += 3;
            let of = OwnedFrame::random(format, sw, sh, seed);
            let spec = specs[seed as usize % 2];
            // Resize is exact integer maths, then one table lookup: f32 within 1e-5 (expected 0).
            check_dtype::<f32>(&dev, &of, dw, dh, filter, spec, 1e-5);
            check_dtype::<f16>(&dev, &of, dw, dh, filter, spec, 1e-3);
            check_dtype::<bf16>(&dev, &of, dw, dh, filter, spec, 8e-3);
        }
    }
}

#[test]
fn pooling_gpu_matches_cpu_twin() {
    let Some(dev) = device() else { return };
    let gp = GpuPool::new(&dev).unwrap();
    let stream = gp.stream().clone();
    for (shape, kt, ks) in [
        (
            TokenShape {
                t: 9,
                h: 27,
                w: 27,
                d: 1152,
            },
            2,
            2,
        ),
        (
            TokenShape {
                t: 4,
                h: 3,
                w: 5,
                d: 7,
            },
            3,
            1,
        ),
        (
            TokenShape {
                t: 5,
                h: 8,
                w: 8,
                d: 64,
            },
            1,
            2,
        ),
    ] {
        let bytes = common::lcg_bytes(shape.len(), shape.d as u32);
        let x: Vec<f32> = bytes.iter().map(|&b| b as f32 / 37.0 - 3.0).collect();
        let o = shape.pooled(kt, ks);
        let mut cpu = vec![f32::NAN; o.len()];
        pool_mean(&x, shape, kt, ks, &mut cpu).unwrap();
        let dx = stream.clone_htod(&x).unwrap();
        let mut dout = stream.clone_htod(&vec![f32::NAN; o.len()]).unwrap();
        gp.pool_mean(&dx, shape, kt, ks, &mut dout).unwrap();
        let gpu = stream.clone_dtoh(&dout).unwrap();
        assert!(
            gpu.iter().all(|v| v.is_finite()),
            "{shape:?}: not fully written"
        );
        assert_eq!(gpu, cpu, "{shape:?} kt={kt} ks={ks}");
        let pairs: Vec<(u32, u32)> = (1..shape.t as u32)
            .map(|t| (t, t - 1))
            .chain([(0, 0)])
            .collect();
        let n = shape.tokens_per_frame();
        let mut cpu = vec![f32::NAN; pairs.len() * n];
        token_cosine(&x, shape, &pairs, &mut cpu).unwrap();
        let mut dout = stream.clone_htod(&vec![f32::NAN; pairs.len() * n]).unwrap();
        gp.token_cosine(&dx, shape, &pairs, &mut dout).unwrap();
        let gpu = stream.clone_dtoh(&dout).unwrap();
        let e = gpu
            .iter()
            .zip(&cpu)
            .map(|(g, c)| {
                if g.is_finite() {
                    (g - c).abs()
                } else {
                    f32::INFINITY
                }
            })
            .fold(0.0, f32::max);
        assert!(e <= 1e-5, "{shape:?}: cosine max abs err {e}");
        eprintln!(
            "cosine {shape:?}: max abs err {e:e}, identical: {}",
            gpu == cpu
        );
        let s = gp.frame_similarity(&dx, shape, 1, 0).unwrap();
        assert!(
            (s - vidlm_kernels::pool::frame_similarity(&x, shape, 1, 0).unwrap()).abs() <= 1e-6
        );
    }
}

#[test]
fn scene_gpu_matches_cpu_twin() {
    let Some(dev) = device() else { return };
    let gs = GpuScene::new(&dev).unwrap();
    let stream = gs.stream().clone();
    for (rgb, w, h, p) in [
        (false, 1279u32, 719u32, SceneParams::default()),
        (true, 641, 359, SceneParams::default()),
        (
            false,
            2,
            2,
            SceneParams {
                grid_w: 4,
                grid_h: 3,
                bins: 16,
            },
        ),
    ] {
        let frames = 5;
        let row = w as usize * if rgb { 3 } else { 1 };
        let stride = row + 3;
        let fb = stride * h as usize;
        let data = common::lcg_bytes(frames * fb, w + h);
        let d = stream.clone_htod(&data).unwrap();
        let b = PlaneBatch {
            frames,
            frame_bytes: fb,
            rgb,
            stride,
            width: w,
            height: h,
        };
        let got = gs.signatures(&d, b, p).unwrap();
        for (f, g) in got.iter().enumerate() {
            let plane = &data[f * fb..(f + 1) * fb];
            let frame = Frame {
                format: if rgb {
                    PixelFormat::Rgb24
                } else {
                    PixelFormat::Yuv420p
                },
                width: w,
                height: h,
                planes: [plane, &[128; 1 << 20], &[128; 1 << 20]],
                strides: [stride, (w as usize).div_ceil(2), (w as usize).div_ceil(2)],
            };
            let want = luma_signature(&frame, p).unwrap();
            assert_eq!(g, &want, "frame {f} {w}x{h} rgb={rgb}");
        }
    }
}
