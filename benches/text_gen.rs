//! Text-decoder speed on CPU, llama-bench style: prefill of a 512-token prompt (pp512) and
//! generation of 128 tokens from an empty cache (tg128), in tokens/s, with 1 and 2 threads, for
//! the real SmolLM2-135M-Instruct Q4_1 GGUF (dequantized to f32; on candle's quantized matmuls
//! for every shape; and the default quantized path: our qgemv kernels on the stored blocks for
//! decode steps, per-call dequantization + f32 gemm for prefill) and the full-size random
//! SmolVLM2-256M text model (safetensors, f32). For the GGUF it also times one projection
//! (`blk.0.ffn_up`, 1536 x 576) for a few row counts through qgemv and through dequantization +
//! gemm: the crossover behind `llama_text::QGEMV_MAX_ROWS`. It also measures
//! the machine's copy bandwidth (a 256 MiB memcpy) and prints each line's memory-bandwidth bound:
//! the bytes of weights one token reads divided by that bandwidth, and our per-token time over it.
//!
//! Files: $VIDLM_BENCH_SMOLLM2 (default target/bench-models/SmolLM2-135M-Instruct.Q4_1.gguf, from
//! /work/shared/models/fetch-smollm2.sh) and $VIDLM_BENCH_MODEL (default
//! target/bench-models/smolvlm2-256m-random, from tools/make_smolvlm_bench_checkpoint.py); a missing
//! one is skipped. Threads: $VIDLM_BENCH_THREADS (default "1,2"); each count runs in a child
//! process because candle and rayon size their pools once per process. Repeats:
//! $VIDLM_BENCH_REPEATS (3). $VIDLM_BENCH_TEXT_GGUF adds comma-separated GGUF text models (e.g. the
//! random SmolVLM2-256M text model converted by tools/make_gguf_fixtures.py to f16 and q8_0), each a
//! line `<file stem> -> f32` (dequantized at load, as `vidlm` loads them by default).
//! $VIDLM_BENCH_ONLY keeps only the lines whose name contains one of its comma-separated parts
//! (benches/llamacpp.sh uses both). Each child first prints the matrix-vector kernels' stream rate
//! on one weight of $VIDLM_BENCH_STREAM_ROWS (default 65536) x 576 rows.
//!
//! ```text
//! cargo bench --workspace --bench text_gen
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use vidlm_models::generation::argmax;
use vidlm_models::llama_text::TextModel;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Memory bandwidth in bytes/s as STREAM's Copy counts it (bytes read + bytes written), from the
/// best of five 256 MiB copies: a decode step that streams its weights from RAM runs at about this.
fn copy_bandwidth() -> f64 {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * n as f64 / best
}

struct Line {
    pp: f64,
    tg: f64,
}

fn measure(m: &mut TextModel, repeats: usize) -> Line {
    let prompt: Vec<u32> = (0..512u32).map(|i| 100 + (i * 7919) % 40000).collect();
    let mut pp = Vec::new();
    for _ in 0..=repeats {
        m.clear_cache();
        let t = Instant::now();
        std::hint::black_box(m.forward_ids(&prompt, false).unwrap());
        pp.push(t.elapsed().as_secs_f64());
    }
    pp.remove(0);
    let steps = 128;
    let mut tg = Vec::new();
    for _ in 0..=repeats {
        m.clear_cache();
        let t = Instant::now();
        let mut tok = 1u32;
        for _ in 0..steps {
            let l: Vec<f32> = m
                .forward_ids(&[tok], false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            tok = argmax(&l).unwrap();
        }
        tg.push(t.elapsed().as_secs_f64());
    }
    tg.remove(0);
    Line {
        pp: 512.0 / median(pp),
        tg: steps as f64 / median(tg),
    }
}

fn child(threads: usize) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models");
    let path = |k: &str, d: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(d))
    };
    let repeats: usize = std::env::var("VIDLM_BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    vidlm_models::memory::keep_freed_memory_for_reuse();
    let bw = copy_bandwidth();
    stream_rates(bw, repeats);
    let dev = Device::Cpu;
    let gguf = path("VIDLM_BENCH_SMOLLM2", "SmolLM2-135M-Instruct.Q4_1.gguf");
    let st = path("VIDLM_BENCH_MODEL", "smolvlm2-256m-random");
    // (name, model, bytes of weights one decode step reads)
    let mut runs: Vec<(String, Loader)> = Vec::new();
    if gguf.is_file() {
        let g = gguf.clone();
        runs.push((
            "smollm2-135m q4_1 -> f32".to_string(),
            Box::new(move || {
                let m = vidlm_models::gguf::GgufChatModel::load(&g, &Device::Cpu, true).unwrap();
                let b = m.model.decode_weight_bytes() as f64;
                (m.model, b)
            }),
        ));
        let g = gguf.clone();
        runs.push((
            "smollm2-135m q4_1 qmatmul".to_string(),
            Box::new(move || {
                let mut m =
                    vidlm_models::gguf::GgufChatModel::load(&g, &Device::Cpu, false).unwrap();
                m.model.use_candle_qmatmul();
                let b = m.model.decode_weight_bytes() as f64;
                (m.model, b)
            }),
        ));
        let g = gguf.clone();
        runs.push((
            "smollm2-135m q4_1 qgemv unfused".to_string(),
            Box::new(move || {
                let mut m =
                    vidlm_models::gguf::GgufChatModel::load(&g, &Device::Cpu, false).unwrap();
                m.model.use_unfused_decode();
                let b = m.model.decode_weight_bytes() as f64;
                (m.model, b)
            }),
        ));
        let g = gguf.clone();
        runs.push((
            "smollm2-135m q4_1 qgemv".to_string(),
            Box::new(move || {
                let m = vidlm_models::gguf::GgufChatModel::load(&g, &Device::Cpu, false).unwrap();
                let b = m.model.decode_weight_bytes() as f64;
                (m.model, b)
            }),
        ));
    } else {
        println!("SKIPPED smollm2: no {}", gguf.display());
    }
    if st.join("config.json").is_file() {
        let s = st.clone();
        runs.push((
            "smolvlm2-256m text f32".to_string(),
            Box::new(move || {
                let m = vidlm_models::smolvlm::SmolVlm::load(&s, DType::F32, &Device::Cpu).unwrap();
                let b = m.text.decode_weight_bytes() as f64;
                (m.text, b)
            }),
        ));
    } else {
        println!("SKIPPED smolvlm2-256m: no {}", st.display());
    }
    let extra = std::env::var("VIDLM_BENCH_TEXT_GGUF").unwrap_or_default();
    for f in extra
        .split(',')
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
    {
        if !f.is_file() {
            println!("SKIPPED {}: no such file", f.display());
            continue;
        }
        let stem = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        // As stored (vidlm's default: qgemv for quantized types) and dequantized at load.
        for dequantize in [false, true] {
            let f = f.clone();
            runs.push((
                format!("{stem} {}", if dequantize { "-> f32" } else { "quantized" }),
                Box::new(move || {
                    let m = vidlm_models::gguf::GgufChatModel::load(&f, &Device::Cpu, dequantize)
                        .unwrap();
                    let b = m.model.decode_weight_bytes() as f64;
                    (m.model, b)
                }),
            ));
        }
    }
    if let Ok(only) = std::env::var("VIDLM_BENCH_ONLY") {
        let parts: Vec<&str> = only.split(',').filter(|p| !p.is_empty()).collect();
        runs.retain(|(name, _)| parts.iter().any(|p| name.contains(p)));
    }
    let _ = dev;
    for (name, load) in runs {
        let (mut m, bytes) = load();
        let l = measure(&mut m, repeats);
        let bound_ms = bytes / bw * 1e3;
        let ms = 1e3 / l.tg;
        println!(
            "{name:34} {threads:>3} {:9.1} {:9.1} {:9.2} {:10.1} {:9.2} {:7.2}",
            l.pp,
            l.tg,
            ms,
            bytes / 1e6,
            bound_ms,
            ms / bound_ms
        );
    }
    if gguf.is_file() {
        crossover(&gguf, repeats);
    }
    println!(
        "  (threads {threads}: copy bandwidth {:.2} GB/s (read + write))",
        bw / 1e9
    );
}

/// Median time of `f` over `repeats` runs after one warm-up, in ms.
fn time_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..repeats.max(3))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// One real projection for m activation rows: qgemv on the blocks vs dequantize + f32 gemm.
fn crossover(gguf: &std::path::Path, repeats: usize) {
    let (ct, mut f) = vidlm_models::gguf::open(gguf).unwrap();
    let w = ct
        .tensor(&mut f, "blk.0.ffn_up.weight", &Device::Cpu)
        .unwrap();
    let k = w.shape().dims2().unwrap().1;
    let mut line = String::from("  blk.0.ffn_up qgemv / dequant+gemm ms:");
    for m in [1usize, 2, 4, 8, 16, 32] {
        let x = candle_core::Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).unwrap();
        let q = time_ms(repeats * 4, || {
            std::hint::black_box(vidlm_models::qgemv::matmul(&x, &w).unwrap());
        });
        let d = time_ms(repeats * 4, || {
            let wd = w.dequantize(&Device::Cpu).unwrap();
            std::hint::black_box(x.broadcast_matmul(&wd.t().unwrap()).unwrap());
        });
        line += &format!(" m={m} {q:.3}/{d:.3}");
    }
    println!("{line}");
}

/// The matrix-vector kernels alone on one weight far larger than the caches (about 48 MB as
/// stored), in GB/s of weight read, against the copy bandwidth: the ceiling of a decode step
/// before its per-op costs (the rest of "x bound").
fn stream_rates(bw: f64, repeats: usize) {
    use candle_core::quantized::{GgmlDType, QTensor};
    let n: usize = std::env::var("VIDLM_BENCH_STREAM_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 16);
    let k = 576;
    let dev = Device::Cpu;
    let w = candle_core::Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
    let x = candle_core::Tensor::randn(0f32, 1.0, (1, k), &dev).unwrap();
    let mut line = format!("  gemv stream ({n} x {k}) GB/s, copy {:.1}:", bw / 1e9);
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        let bytes = q.storage_size_in_bytes() as f64;
        let ms = time_ms(repeats * 3, || {
            std::hint::black_box(vidlm_models::qgemv::matmul(&x, &q).unwrap());
        });
        line += &format!(" {dtype:?} {:.1}", bytes / ms / 1e6);
    }
    let h = w.to_dtype(candle_core::DType::F16).unwrap();
    let ms = time_ms(repeats * 3, || {
        std::hint::black_box(vidlm_models::qgemv::matmul_f16(&x, &h).unwrap());
    });
    line += &format!(" F16 {:.1}", (n * k * 2) as f64 / ms / 1e6);
    println!("{line}");
}

/// Builds one benchmarked model: the model and the bytes of weights one decode step reads.
type Loader = Box<dyn Fn() -> (TextModel, f64)>;

fn main() {
    if let Some(t) = std::env::var("VIDLM_BENCH_CHILD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return child(t);
    }
    let threads = std::env::var("VIDLM_BENCH_THREADS").unwrap_or_else(|_| "1,2".into());
    println!(
        "{:34} {:>3} {:>9} {:>9} {:>9} {:>10} {:>9} {:>7}",
        "line", "thr", "pp512 t/s", "tg128 t/s", "ms/token", "weights MB", "bound ms", "x bound"
    );
    let exe = std::env::current_exe().unwrap();
    for t in threads
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let st = std::process::Command::new(&exe)
            .env("VIDLM_BENCH_CHILD", t.to_string())
            .env("RAYON_NUM_THREADS", t.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "bench child with {t} threads failed");
    }
}
