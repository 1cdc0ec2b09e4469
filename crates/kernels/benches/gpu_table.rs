//! GPU kernel table (run by scripts/gpu-check.sh on a GPU machine): per kernel, time per frame
//! measured with CUDA events (median of RUNS runs after WARMUP), for batches of 64 1080p NV12
//! frames -> 512x512 bf16, achieved GB/s against the card's device-to-device copy bandwidth, and
//! the speed-up over the CPU twin on this machine's cores. Without a GPU it says so and exits 0.

use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, CudaStream};
use half::bf16;
use std::sync::Arc;
use vidlm_kernels::gpu::pool::GpuPool;
use vidlm_kernels::gpu::preprocess::{DeviceBatch, DeviceFrame, GpuPreprocessor};
use vidlm_kernels::gpu::scene::{GpuScene, PlaneBatch};
use vidlm_kernels::gpu::{nvrtc_version, GpuDevice};
use vidlm_kernels::pool::{pool_mean, token_cosine, TokenShape};
use vidlm_kernels::preprocess::{ColorSpec, CpuPreprocessor, Filter, Frame, Normalize};
use vidlm_kernels::scene::{luma_signature, SceneParams};

const BATCH: usize = 64;
const WARMUP: usize = 3;
const RUNS: usize = 15;
const CPU_RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Median milliseconds of `f` on `stream`, timed with CUDA events.
fn gpu_ms(stream: &Arc<CudaStream>, mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let a = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .expect("event");
        f();
        let b = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .expect("event");
        b.synchronize().expect("sync");
        times.push(a.elapsed_ms(&b).expect("elapsed") as f64);
    }
    median(times)
}

fn cpu_ms(mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..CPU_RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

struct Row {
    name: String,
    gpu_ms_frame: f64,
    bytes_frame: f64,
    cpu_ms_frame: f64,
}

fn main() {
    let dev = match GpuDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED: no usable GPU ({e})");
            return;
        }
    };
    let stream = dev.new_stream().expect("stream");
    let (vmaj, vmin) = nvrtc_version().unwrap_or((0, 0));
    println!(
        "device: {} ({}), NVRTC {vmaj}.{vmin}, CPU threads: {}",
        dev.name(),
        dev.arch(),
        rayon::current_num_threads()
    );

    // The card's copy bandwidth: device-to-device memcpy of 1 GiB (read + write counted).
    let n = 1usize << 30;
    let src: CudaSlice<u8> = stream.alloc_zeros(n).expect("alloc");
    let mut dst: CudaSlice<u8> = stream.alloc_zeros(n).expect("alloc");
    let copy_ms = gpu_ms(&stream, || {
        stream.memcpy_dtod(&src, &mut dst).expect("copy")
    });
    let copy_gbs = 2.0 * n as f64 / (copy_ms * 1e-3) / 1e9;
    drop((src, dst));
    println!("device-to-device copy: {copy_gbs:.0} GB/s (read + write)");

    let mut rows = Vec::new();
    let (w, h, dw, dh) = (1920u32, 1080u32, 512u32, 512u32);
    let spec = ColorSpec::BT709_LIMITED;
    let ysz = (w * h) as usize;
    let frames_host: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| bytes(ysz * 3 / 2, i as u64 + 1))
        .collect();
    let host_frame = |i: usize| {
        let d = &frames_host[i];
        Frame::nv12(&d[..ysz], w as usize, &d[ysz..], w as usize, w, h).expect("frame")
    };

    for filter in [Filter::Lanczos3, Filter::Bicubic, Filter::Bilinear] {
        let mut gp =
            GpuPreprocessor::new(&dev, w, h, dw, dh, filter, &Normalize::SIGLIP).expect("gpu pp");
        let s = gp.stream().clone();
        let dframes: Vec<DeviceFrame> = (0..BATCH)
            .map(|i| DeviceFrame::upload(&s, &host_frame(i)).expect("upload"))
            .collect();
        let mut batch =
            DeviceBatch::<bf16>::new(&s, BATCH, dw as usize, dh as usize).expect("batch");
        let ms = gpu_ms(&s, || {
            for (b, f) in dframes.iter().enumerate() {
                gp.run_device(f, spec, &mut batch, b).expect("run");
            }
        });
        let p = gp.plan().clone();
        let moved =
            ysz as f64 * 1.5 + (p.tmp_rows * p.tmp_w * 3 * 2) as f64 + (3 * dw * dh * 2) as f64;
        // Also the full path from host memory (pinned upload) for the record.
        let ms_up = gpu_ms(&s, || {
            for b in 0..BATCH {
                gp.run(&host_frame(b), spec, &mut batch, b).expect("run");
            }
        });
        let mut cp =
            CpuPreprocessor::new(w, h, dw, dh, filter, &Normalize::SIGLIP).expect("cpu pp");
        let mut out = vec![bf16::ZERO; (3 * dw * dh) as usize];
        let cms = cpu_ms(|| {
            for b in 0..8 {
                cp.run(&host_frame(b), spec, &mut out).expect("cpu");
            }
        }) / 8.0;
        rows.push(Row {
            name: format!("preprocess NV12 1080p->512² bf16 {filter:?}"),
            gpu_ms_frame: ms / BATCH as f64,
            bytes_frame: moved,
            cpu_ms_frame: cms,
        });
        rows.push(Row {
            name: format!("  same, incl. pinned upload from host ({filter:?})"),
            gpu_ms_frame: ms_up / BATCH as f64,
            bytes_frame: moved + ysz as f64 * 1.5,
            cpu_ms_frame: cms,
        });
    }

    // Scene signatures on the 64 luma planes (NV12 frames back to back, Y plane first).
    {
        let gs = GpuScene::new(&dev).expect("scene");
        let s = gs.stream().clone();
        let fb = ysz * 3 / 2;
        let all: Vec<u8> = frames_host.iter().flatten().copied().collect();
        let d = s.clone_htod(&all).expect("upload");
        let p = SceneParams::default();
        let b = PlaneBatch {
            frames: BATCH,
            frame_bytes: fb,
            rgb: false,
            stride: w as usize,
            width: w,
            height: h,
        };
        let cells = (p.grid_w * p.grid_h) as usize;
        let mut grid = s.alloc_zeros::<u8>(BATCH * cells).expect("alloc");
        let mut hist = s
            .alloc_zeros::<u32>(BATCH * p.bins as usize)
            .expect("alloc");
        let ms = gpu_ms(&s, || {
            gs.launch(&d, b, p, &mut grid, &mut hist).expect("scene")
        });
        let cms = cpu_ms(|| {
            for i in 0..8 {
                luma_signature(&host_frame(i), p).expect("cpu");
            }
        }) / 8.0;
        rows.push(Row {
            name: "scene grid+hist 1080p luma".into(),
            gpu_ms_frame: ms / BATCH as f64,
            bytes_frame: ysz as f64,
            cpu_ms_frame: cms,
        });
    }

    // Token pooling on SigLIP-like tokens of the 64 frames: 32x32 tokens x 768 channels.
    {
        let gp = GpuPool::new(&dev).expect("pool");
        let s = gp.stream().clone();
        let shape = TokenShape {
            t: BATCH,
            h: 32,
            w: 32,
            d: 768,
        };
        let x: Vec<f32> = bytes(shape.len(), 7)
            .iter()
            .map(|&b| b as f32 / 64.0 - 2.0)
            .collect();
        let dx = s.clone_htod(&x).expect("upload");
        let o = shape.pooled(2, 2);
        let mut dout = s.alloc_zeros::<f32>(o.len()).expect("alloc");
        let ms = gpu_ms(&s, || {
            gp.pool_mean(&dx, shape, 2, 2, &mut dout).expect("pool");
        });
        let mut out = vec![0f32; o.len()];
        let cms = cpu_ms(|| {
            pool_mean(&x, shape, 2, 2, &mut out).expect("cpu");
        });
        let frame_bytes = (shape.len() / BATCH * 4) as f64;
        rows.push(Row {
            name: "token pool mean 2x(2x2), 32x32x768".into(),
            gpu_ms_frame: ms / BATCH as f64,
            bytes_frame: frame_bytes * 1.25,
            cpu_ms_frame: cms / BATCH as f64,
        });
        let pairs: Vec<(u32, u32)> = (1..BATCH as u32).map(|t| (t, t - 1)).collect();
        let nt = shape.tokens_per_frame();
        let mut dsim = s.alloc_zeros::<f32>(pairs.len() * nt).expect("alloc");
        let ms = gpu_ms(&s, || {
            gp.token_cosine(&dx, shape, &pairs, &mut dsim).expect("cos")
        });
        let mut sim = vec![0f32; pairs.len() * nt];
        let cms = cpu_ms(|| token_cosine(&x, shape, &pairs, &mut sim).expect("cpu"));
        rows.push(Row {
            name: "token cosine vs previous frame".into(),
            gpu_ms_frame: ms / pairs.len() as f64,
            bytes_frame: 2.0 * frame_bytes,
            cpu_ms_frame: cms / pairs.len() as f64,
        });
    }

    println!();
    println!("| kernel | GPU µs/frame | GB/s | % of copy BW | CPU twin µs/frame | speed-up |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let gbs = r.bytes_frame / (r.gpu_ms_frame * 1e-3) / 1e9;
        println!(
            "| {} | {:.1} | {:.0} | {:.1}% | {:.0} | {:.0}x |",
            r.name,
            r.gpu_ms_frame * 1e3,
            gbs,
            100.0 * gbs / copy_gbs,
            r.cpu_ms_frame * 1e3,
            r.cpu_ms_frame / r.gpu_ms_frame
        );
    }
    println!();
    println!("batch {BATCH}, {WARMUP} warm-up + {RUNS} timed runs (median, CUDA events); CPU twin: median of {CPU_RUNS} runs, rayon on {} threads; GB/s counts bytes read + written by the kernels", rayon::current_num_threads());
}
