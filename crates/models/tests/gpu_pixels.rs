//! `cuda` builds on a GPU: SmolVLM2 video frames preprocessed by our CUDA kernels straight into
//! the vision tower's input (smolvlm/gpu.rs) against the CPU processor, on real frames (the
//! 1280x720 Big Buck Bunny frame: two resizes on the CPU, one on the GPU; 64x64 frames: upscale).
//! Prints why it skipped where there is no GPU. Run by scripts/gpu-check.sh
//! (VIDLM_GPU_CHECK_CUDA=1) on a GPU machine.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vidlm_models::smolvlm::SmolVlmEngine;
use vidlm_models::LoadOptions;
use vidlm_models::{VideoFrame, VisionLanguageModel};

fn fixtures() -> PathBuf {
    std::env::var_os("VIDLM_MODELS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn load_png(path: &Path, timestamp: f64) -> VideoFrame {
    let img = image::open(path).unwrap().to_rgb8();
    let (width, height) = img.dimensions();
    VideoFrame {
        rgb: img.into_raw(),
        width,
        height,
        pts: timestamp,
    }
}

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            // candle's error carries a backtrace; its first line says why.
            let why = e.to_string();
            println!(
                "SKIPPED: no usable GPU ({})",
                why.lines().next().unwrap_or("")
            );
            None
        }
    }
}

fn engine(device: Device, dtype: DType) -> SmolVlmEngine {
    let dir = fixtures().join("smolvlm-tiny-sf2");
    let opts = LoadOptions {
        device,
        dtype,
        ..Default::default()
    };
    SmolVlmEngine::load(dir.to_str().unwrap(), &opts).unwrap()
}

fn diffs(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    let max: f32 = d.max(0).unwrap().to_scalar().unwrap();
    let mean: f32 = d.mean(0).unwrap().to_scalar().unwrap();
    (max, mean)
}

#[test]
fn gpu_pixels_match_the_cpu_processor() {
    let Some(dev) = gpu() else { return };
    let frames_dir = fixtures().join("frames");
    let mut cpu = engine(Device::Cpu, DType::F32);
    let mut gpu = engine(dev.clone(), DType::F32);
    // One level of the 0..255 scale after normalize (mean = std = 0.5) is 2/255.
    let level = 2.0 / 255.0;
    for (name, mean_levels) in [("bbb-n060-1280x720.png", 2.0), ("bbb-n000-64x64.png", 1.0)] {
        let frames = vec![load_png(&frames_dir.join(name), 2.4); 3];
        let want = cpu.video_pixels(&frames).unwrap();
        let got = gpu.video_pixels(&frames).unwrap();
        assert!(got.device().is_cuda(), "{name}: the pixels left the GPU");
        assert_eq!(got.dims(), want.dims(), "{name}");
        let (max, mean) = diffs(&got.to_device(&Device::Cpu).unwrap(), &want);
        println!("{name}: max abs {max:.5}, mean abs {mean:.6} (one level = {level:.5})");
        assert!(mean <= mean_levels * level, "{name}: mean abs {mean}");
        assert!(max <= 16.0 * level, "{name}: max abs {max}");
    }
}

#[test]
fn gpu_frames_encode_to_the_cpu_tokens_in_bf16_and_f32() {
    let Some(dev) = gpu() else { return };
    let frames_dir = fixtures().join("frames");
    // Frames already at the model size: no resize on either path, so the tokens agree closely.
    let frames: Vec<VideoFrame> = ["bbb-n000-64x64.png", "bbb-n040-64x64.png"]
        .iter()
        .enumerate()
        .map(|(i, n)| load_png(&frames_dir.join(n), i as f64))
        .collect();
    let want = tokens(&mut engine(Device::Cpu, DType::F32), &frames);
    for (dtype, tol) in [(DType::F32, 1e-4f32), (DType::BF16, 5e-2)] {
        let got = tokens(&mut engine(dev.clone(), dtype), &frames);
        let scale: f32 = want
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        let (max, _) = diffs(&got, &want);
        println!("{dtype:?}: max abs {max} (largest |token| {scale})");
        assert!(max <= tol * scale.max(1.0), "{dtype:?}: max abs {max}");
    }
}

fn tokens(e: &mut SmolVlmEngine, frames: &[VideoFrame]) -> Tensor {
    let groups = e.encode_frames(frames).unwrap();
    let rows: Vec<Tensor> = groups
        .iter()
        .map(|g| {
            g.embeddings
                .to_device(&Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        })
        .collect();
    Tensor::stack(&rows, 0).unwrap()
}
