//! Per-op timings of the SmolVLM2-256M vision layer shapes on the CPU (1024 tokens, hidden 768,
//! 12 heads of 64, MLP 3072, f32): candle's generic ops against our fused ones in
//! `vidlm_models::cpu_ops`, in the same run, with the ratio. With a checkpoint directory as the
//! argument it also times the whole vision tower + connector on one 512x512 frame.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p vidlm-models --example vision_ops [-- DIR]
//!
//! Prints medians of 5 runs after one warm-up.

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use vidlm_models::cpu_ops;

fn median_ms<T>(mut f: impl FnMut() -> T) -> f64 {
    f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            std::hint::black_box(f());
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

fn line(name: &str, ms: f64, gflop: f64) {
    if gflop > 0.0 {
        println!("{name:34} {ms:9.2} ms {:8.1} GFLOP/s", gflop / ms);
    } else {
        println!("{name:34} {ms:9.2} ms");
    }
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (n, d, heads, ff) = (1024usize, 768usize, 12usize, 3072usize);
    let hd = d / heads;
    let x = Tensor::randn(0f32, 1.0, (1, n, d), &dev)?;
    let h = Tensor::randn(0f32, 1.0, (1, n, ff), &dev)?;
    let lin = |o: usize, i: usize| -> candle_core::Result<candle_nn::Linear> {
        Ok(candle_nn::Linear::new(
            Tensor::randn(0f32, 0.02, (o, i), &dev)?,
            None,
        ))
    };
    let (p, fc1, fc2) = (lin(d, d)?, lin(ff, d)?, lin(d, ff)?);
    let g = |m, k, n| 2.0 * (m * k * n) as f64 / 1e6;
    line("linear 768->768", median_ms(|| p.forward(&x)), g(n, d, d));
    line(
        "linear 768->3072",
        median_ms(|| fc1.forward(&x)),
        g(n, d, ff),
    );
    line(
        "linear 3072->768",
        median_ms(|| fc2.forward(&h)),
        g(n, ff, d),
    );

    let qkv = |_| Tensor::randn(0f32, 1.0, (1, n, heads, hd), &dev)?.transpose(1, 2);
    let (q, k, v) = (qkv(0)?, qkv(1)?, qkv(2)?);
    let scale = 1.0 / (hd as f64).sqrt();
    let attn_gflop = 2.0 * g(heads * n, hd, n);
    let candle_attn = median_ms(|| -> candle_core::Result<Tensor> {
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let w = (q.matmul(&k.t()?)? * scale)?;
        candle_nn::ops::softmax_last_dim(&w)?.matmul(&v)
    });
    let fused_attn = median_ms(|| cpu_ops::attention(&q, &k, &v, scale, &[]));
    line("attention: candle matmul+softmax", candle_attn, attn_gflop);
    line("attention: cpu_ops::attention", fused_attn, attn_gflop);
    let candle_gelu = median_ms(|| h.gelu());
    let fused_gelu = median_ms(|| cpu_ops::gelu_tanh(&h));
    line("gelu tanh: candle", candle_gelu, 0.0);
    line("gelu tanh: cpu_ops::gelu_tanh", fused_gelu, 0.0);
    println!(
        "ratios (ours / candle): attention {:.2}, gelu {:.2}",
        fused_attn / candle_attn,
        fused_gelu / candle_gelu
    );

    if let Some(dir) = std::env::args().nth(1) {
        let m = vidlm_models::smolvlm::SmolVlm::load(std::path::Path::new(&dir), DType::F32, &dev)
            .map_err(candle_core::Error::wrap)?;
        let side = m.config.vision_config.image_size;
        let one = Tensor::randn(0f32, 1.0, (1, 3, side, side), &dev)?;
        line(
            "vision tower + connector, 1 frame",
            median_ms(|| m.vision.forward(&one).map_err(candle_core::Error::wrap)),
            0.0,
        );
    }
    Ok(())
}
