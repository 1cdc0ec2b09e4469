//! Prompt-side projections `x @ w.t()` (the SmolVLM2-256M text model's weight shapes on a
//! 512-row prompt, its vision tower's on 1024 patches): our panel path
//! (`qgemv::prompt_matmul_f16`, f16 weights decoded a panel at a time and multiplied by
//! `panel_gemm`'s AVX-512 or AVX2 tiles) against candle's matmul on the same weights
//! already in f32 (the `gemm` crate over candle's thread pool, no conversion at all), alternating,
//! 7 rounds; prints GFLOP/s and ours / candle's time per shape.
//!
//! ```text
//! cargo run --release -p vidlm-models --example panel_gemm
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    println!("m    x  n   x k      ours GFLOP/s  candle f32 GFLOP/s  ours/candle time");
    // A 512-token prompt through the text model's projections, then one 512x512 tile (1024
    // patches) through the vision tower's.
    let shapes = [
        (512usize, 1536usize, 576usize),
        (512, 576, 1536),
        (512, 576, 576),
        (512, 192, 576),
        (1024, 768, 768),
        (1024, 3072, 768),
        (1024, 768, 3072),
    ];
    for &(m, n, k) in &shapes {
        let x = (Tensor::arange(0f32, (m * k) as f32, &dev)? * 0.37)?
            .sin()?
            .reshape((1, m, k))?;
        let w = (Tensor::arange(0f32, (n * k) as f32, &dev)? * 0.11)?
            .cos()?
            .reshape((n, k))?
            .to_dtype(DType::F16)?;
        let wf = w.to_dtype(DType::F32)?;
        let wt = wf.t()?;
        let ours_y = vidlm_models::qgemv::prompt_matmul_f16(&x, &w)?;
        let err: f32 = (ours_y - x.broadcast_matmul(&wt)?)?
            .abs()?
            .max_all()?
            .to_scalar()?;
        assert!(err < 1e-3, "results differ by {err}");
        let flop = 2.0 * (m * n * k) as f64;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..8 {
            let t = Instant::now();
            for _ in 0..5 {
                std::hint::black_box(vidlm_models::qgemv::prompt_matmul_f16(&x, &w)?);
            }
            let a = t.elapsed().as_secs_f64() / 5.0;
            let t = Instant::now();
            for _ in 0..5 {
                std::hint::black_box(x.broadcast_matmul(&wt)?);
            }
            let b = t.elapsed().as_secs_f64() / 5.0;
            if round > 0 {
                ours.push(a);
                theirs.push(b);
            }
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (a, b) = (med(ours), med(theirs));
        println!(
            "{m:>4} x {n:>4} x {k:<6} {:>10.1} {:>19.1} {:>17.2}",
            flop / a / 1e9,
            flop / b / 1e9,
            a / b
        );
    }
    Ok(())
}
