//! SmolVLM2-256M (full size, random weights) from llama.cpp's GGUF files against the same weights
//! in safetensors, f32 on CPU, in one run: load time, one 512x512 frame through the vision tower
//! and connector, the prefill of 35 text + 64 image tokens, and generation (tokens/s over 32
//! KV-cached steps), for the safetensors baseline, the f32 GGUF, and the Q8_0 GGUF dequantized at
//! load and on candle's quantized matmuls. Prints a table with each line's ratio to the baseline.
//!
//! Files: $VIDLM_BENCH_MODEL (default target/bench-models/smolvlm2-256m-random, from
//! tools/make_smolvlm_bench_checkpoint.py) and $VIDLM_BENCH_GGUF (default
//! target/bench-models/smolvlm2-256m-random-gguf, from `tools/make_gguf_fixtures.py LLAMA_CPP
//! --src <model> --out <that dir> --types f32,q8_0`). Repeats: $VIDLM_BENCH_REPEATS (3).
//! $VIDLM_BENCH_GGUF_TAGS picks the GGUF files (default `F32,Q8_0`; `F16` is dequantized at load
//! like the others; a `Q8_0` tag runs both Q8_0 lines, `Q8_0:deq` or `Q8_0:qmm` one of them).
//! $VIDLM_BENCH_VISION_ONLY=1 measures the vision tower only (benches/llamacpp.sh sets it).
//!
//! It also prints the vision tower's arithmetic (GFLOP per 512x512 frame, counted from the config:
//! every matmul as 2 flops per multiply-add) and each line's achieved GFLOP/s, against this
//! machine's f32 matmul peak measured here with candle's matmul (the gemm crate the tower runs on)
//! and against its arithmetic ceiling: fused multiply-adds on registers alone, on every thread.
//!
//! ```text
//! cargo bench --workspace --bench smolvlm_gguf
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use vidlm_models::generation::argmax;
use vidlm_models::gguf::GgufFiles;
use vidlm_models::smolvlm::SmolVlm;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> f64 {
    f(); // warm-up
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

struct Line {
    load_s: f64,
    vision_s: f64,
    prefill_s: f64,
    gen_tok_s: f64,
}

/// Multiply-adds x 2 of one frame through the vision tower and the connector: patch embedding,
/// per layer the q/k/v/o projections, the two attention products and the MLP, then the pixel
/// shuffle's projection. Norms, GELU and softmax are left out (a few percent).
fn vision_flops(c: &vidlm_models::smolvlm::Config) -> f64 {
    let v = &c.vision_config;
    let n = ((v.image_size / v.patch_size) * (v.image_size / v.patch_size)) as f64;
    let d = v.hidden_size as f64;
    let patch = 2.0 * n * d * (v.num_channels * v.patch_size * v.patch_size) as f64;
    let layer = 2.0 * n * d * d * 4.0
        + 2.0 * n * n * d * 2.0
        + 2.0 * n * d * v.intermediate_size as f64 * 2.0;
    let s = (c.scale_factor * c.scale_factor) as f64;
    let connector = 2.0 * (n / s) * (d * s) * c.text_config.hidden_size as f64;
    patch + layer * v.num_hidden_layers as f64 + connector
}

/// The best f32 matmul rate (GFLOP/s) of candle on this machine over a few shapes: the tower's
/// MLP product (1024 x 768 @ 768 x 3072) and a square 2048 one, best of 5 each.
fn matmul_peak() -> (f64, String) {
    let dev = Device::Cpu;
    let mut best = (0.0, String::new());
    for (m, k, n) in [(1024, 768, 3072), (2048, 2048, 2048)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
        let s = time(5, || a.matmul(&b).unwrap());
        let g = 2.0 * (m * k * n) as f64 / s / 1e9;
        if g > best.0 {
            best = (g, format!("{m}x{k} @ {k}x{n}"));
        }
    }
    best
}

/// This machine's f32 arithmetic ceiling (GFLOP/s), which no matmul can pass: each of candle's
/// threads runs twelve independent chains of 8-lane fused multiply-adds on registers (no memory
/// traffic), best of 3. NaN off x86-64 or without AVX2 and FMA.
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        /// `n` rounds of 12 FMAs of 8 lanes on registers; the sum keeps them from being removed.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn chains(n: u64, a: f32) -> f32 {
            use std::arch::x86_64::*;
            let (b, c) = (_mm256_set1_ps(a), _mm256_set1_ps(1e-4));
            let mut acc: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
            for _ in 0..n {
                for v in &mut acc {
                    *v = _mm256_fmadd_ps(*v, b, c);
                }
            }
            let mut out = [0f32; 8];
            let sum = acc
                .iter()
                .fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
            _mm256_storeu_ps(out.as_mut_ptr(), sum);
            out.iter().sum()
        }
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return f64::NAN;
        }
        let threads = candle_core::utils::get_num_threads().max(1);
        let n = 50_000_000u64;
        let mut best = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    // SAFETY: AVX2 and FMA checked above.
                    s.spawn(|| {
                        std::hint::black_box(unsafe { chains(n, std::hint::black_box(0.999)) })
                    });
                }
            });
            let flop = (threads as u64 * n * 12 * 8 * 2) as f64;
            best = best.max(flop / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    }
    #[cfg(not(target_arch = "x86_64"))]
    f64::NAN
}

fn measure(model: &mut SmolVlm, load_s: f64, repeats: usize, vision_only: bool) -> Line {
    let dev = Device::Cpu;
    let side = model.config.vision_config.image_size;
    let one = Tensor::randn(0f32, 1.0, (1, 3, side, side), &dev).unwrap();
    let n_img = model.config.image_seq_len();
    let text: Vec<u32> = (0..35u32).map(|i| 100 + (i * 7919) % 40000).collect();
    let mut ids = text[..5].to_vec();
    ids.extend(std::iter::repeat_n(model.config.image_token_id, n_img));
    ids.extend_from_slice(&text[5..]);
    let vision_s = time(repeats, || model.vision.forward(&one).unwrap());
    if vision_only {
        return Line {
            load_s,
            vision_s,
            prefill_s: f64::NAN,
            gen_tok_s: f64::NAN,
        };
    }
    let f = model.vision.forward(&one).unwrap();
    let (b, n, d) = f.dims3().unwrap();
    let feats = f.reshape((b * n, d)).unwrap();
    let e = model.embed_with_images(&ids, Some(&feats)).unwrap();
    let prefill_s = time(repeats, || {
        model.text.clear_cache();
        model.text.forward_embeds(&e, false).unwrap()
    });
    let steps = 32;
    // Decode steps alone (after a prefill each time), one warm-up.
    let mut per = Vec::new();
    for _ in 0..=repeats {
        model.text.clear_cache();
        let mut logits = model.text.forward_embeds(&e, false).unwrap();
        let t0 = Instant::now();
        for _ in 0..steps {
            let l: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
            let t = argmax(&l).unwrap();
            logits = model.text.forward_ids(&[t], false).unwrap();
        }
        per.push(t0.elapsed().as_secs_f64());
    }
    per.remove(0);
    Line {
        load_s,
        vision_s,
        prefill_s,
        gen_tok_s: steps as f64 / median(per),
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models");
    let env_dir = |k: &str, d: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(d))
    };
    let st = env_dir("VIDLM_BENCH_MODEL", "smolvlm2-256m-random");
    let gg = env_dir("VIDLM_BENCH_GGUF", "smolvlm2-256m-random-gguf");
    let stem = st.file_name().unwrap().to_string_lossy().into_owned();
    let files = |tag: &str| GgufFiles {
        text: gg.join(format!("{stem}-{tag}.gguf")),
        mmproj: gg.join(format!("mmproj-{stem}-{tag}.gguf")),
    };
    if !st.join("config.json").is_file() {
        println!(
            "SKIPPED: no benchmark files at {} and {} (see the bench's docs)",
            st.display(),
            gg.display()
        );
        return;
    }
    let repeats: usize = std::env::var("VIDLM_BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let vision_only = std::env::var("VIDLM_BENCH_VISION_ONLY").is_ok_and(|v| v == "1");
    // (line name, file tag, dequantize at load)
    let mut picked: Vec<(String, String, bool)> = Vec::new();
    let tags = std::env::var("VIDLM_BENCH_GGUF_TAGS").unwrap_or_else(|_| "F32,Q8_0".into());
    for t in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (tag, mode) = t.split_once(':').unwrap_or((t, ""));
        let lower = tag.to_ascii_lowercase();
        if mode != "qmm" {
            let how = if tag == "F32" { "" } else { " dequantized" };
            picked.push((format!("gguf {lower}{how}"), tag.to_string(), true));
        }
        if mode != "deq" && tag != "F32" && tag != "F16" {
            picked.push((format!("gguf {lower} quantized mm"), tag.to_string(), false));
        }
    }
    for (_, tag, _) in &picked {
        if !files(tag).text.is_file() || !files(tag).mmproj.is_file() {
            println!(
                "SKIPPED: no {} or {}",
                files(tag).text.display(),
                files(tag).mmproj.display()
            );
            return;
        }
    }
    vidlm_models::memory::keep_freed_memory_for_reuse();
    let dev = Device::Cpu;
    let mut lines = Vec::new();
    let t = Instant::now();
    let mut m = SmolVlm::load(&st, DType::F32, &dev).unwrap();
    let load = t.elapsed().as_secs_f64();
    let flops = vision_flops(&m.config);
    let side = m.config.vision_config.image_size;
    lines.push((
        "safetensors f32".to_string(),
        measure(&mut m, load, repeats, vision_only),
    ));
    drop(m);
    for (name, tag, deq) in picked {
        let t = Instant::now();
        let (mut m, _) =
            vidlm_models::smolvlm::gguf::load(&files(&tag), DType::F32, &dev, deq).unwrap();
        let load = t.elapsed().as_secs_f64();
        lines.push((name, measure(&mut m, load, repeats, vision_only)));
    }
    let (peak, shape) = matmul_peak();
    let fma = fma_peak();
    println!(
        "threads {}, repeats {repeats}; ratio = line / safetensors f32 (time; tokens/s inverted)",
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:24} {:>8} {:>6} {:>9} {:>6} {:>10} {:>6} {:>8} {:>6}",
        "line", "load s", "ratio", "vision s", "ratio", "prefill s", "ratio", "gen t/s", "ratio"
    );
    let base = &lines[0].1;
    for (name, l) in &lines {
        println!(
            "{name:24} {:8.3} {:6.2} {:9.3} {:6.2} {:10.3} {:6.2} {:8.1} {:6.2}",
            l.load_s,
            l.load_s / base.load_s,
            l.vision_s,
            l.vision_s / base.vision_s,
            l.prefill_s,
            l.prefill_s / base.prefill_s,
            l.gen_tok_s,
            base.gen_tok_s / l.gen_tok_s,
        );
    }
    println!(
        "vision tower + connector: {:.1} GFLOP per {side}x{side} frame; f32 matmul peak {peak:.1} GFLOP/s (candle, {shape}); FMA peak {fma:.1} GFLOP/s (registers only)",
        flops / 1e9,
    );
    for (name, l) in &lines {
        let g = flops / l.vision_s / 1e9;
        println!(
            "vision GFLOP/s {name:24} {g:8.1}  ({:.0}% of the matmul peak, {:.0}% of the FMA peak)",
            100.0 * g / peak,
            100.0 * g / fma
        );
    }
}
