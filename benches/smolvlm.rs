//! SmolVLM2-256M (full size, random weights) timings of our candle implementation, f32 on CPU:
//! one 512x512 frame + 35 text tokens forward (and its vision + connector part), vision encoding
//! of 16 frames, and 32 greedy tokens after that prompt. `benches/smolvlm.sh` runs this and the
//! same measurements in transformers (benches/smolvlm_torch.py) in one invocation and prints the
//! ratios; run that script rather than this alone.
//!
//! Checkpoint: $VIDLM_BENCH_MODEL or target/bench-models/smolvlm2-256m-random (made by
//! tools/make_smolvlm_bench_checkpoint.py). Repeats: $VIDLM_BENCH_REPEATS (default 3) after one
//! warm-up; prints one JSON object of medians in seconds.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use vidlm_models::generation::argmax;
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

/// The benchmark prompt: 35 text tokens with one image's 64 `<image>` tokens after the fifth.
fn prompt_ids(image_token: u32, image_tokens: usize) -> Vec<u32> {
    let text: Vec<u32> = (0..35u32).map(|i| 100 + (i * 7919) % 40000).collect();
    let mut ids = text[..5].to_vec();
    ids.extend(std::iter::repeat_n(image_token, image_tokens));
    ids.extend_from_slice(&text[5..]);
    ids
}

fn main() {
    let dir = std::env::var_os("VIDLM_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench-models/smolvlm2-256m-random")
        });
    if !dir.join("config.json").is_file() {
        println!(
            "SKIPPED: no benchmark checkpoint at {} (run tools/make_smolvlm_bench_checkpoint.py)",
            dir.display()
        );
        return;
    }
    let repeats: usize = std::env::var("VIDLM_BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // As the vidlm binary does.
    vidlm_models::memory::keep_freed_memory_for_reuse();
    let dev = Device::Cpu;
    let mut model = SmolVlm::load(&dir, DType::F32, &dev).expect("load the benchmark checkpoint");
    let side = model.config.vision_config.image_size;
    let ids = prompt_ids(model.config.image_token_id, model.config.image_seq_len());
    let one = Tensor::randn(0f32, 1.0, (1, 3, side, side), &dev).unwrap();
    let sixteen = Tensor::randn(0f32, 1.0, (16, 3, side, side), &dev).unwrap();

    let vision_1 = time(repeats, || model.vision.forward(&one).unwrap());
    let forward_1 = time(repeats, || model.forward_all(&ids, Some(&one)).unwrap());
    // Frames per vision batch, as the engine's LoadOptions::vision_batch.
    let batch: usize = std::env::var("VIDLM_BENCH_VISION_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(vidlm_models::LoadOptions::default().vision_batch);
    let vision_16 = time(repeats, || {
        let mut outs = Vec::new();
        let mut i = 0;
        while i < 16 {
            let b = batch.min(16 - i);
            outs.push(
                model
                    .vision
                    .forward(&sixteen.narrow(0, i, b).unwrap())
                    .unwrap(),
            );
            i += b;
        }
        outs
    });
    let mut generate = || {
        // Vision, prefill (last position only), then 31 KV-cached steps: 32 tokens.
        let f = model.vision.forward(&one).unwrap();
        let (b, n, d) = f.dims3().unwrap();
        let e = model
            .embed_with_images(&ids, Some(&f.reshape((b * n, d)).unwrap()))
            .unwrap();
        model.text.clear_cache();
        let mut logits = model.text.forward_embeds(&e, false).unwrap();
        let mut out = Vec::with_capacity(32);
        loop {
            let l: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
            let t = argmax(&l).unwrap();
            out.push(t);
            if out.len() == 32 {
                break;
            }
            logits = model.text.forward_ids(&[t], false).unwrap();
        }
        out
    };
    let generate_32 = time(repeats, &mut generate);
    let json = serde_json::json!({
        "impl": "candle",
        "threads": candle_core::utils::get_num_threads(),
        "repeats": repeats,
        "vision_batch": batch,
        "forward_1frame_35tok_s": forward_1,
        "vision_connector_1frame_s": vision_1,
        "vision_connector_16frames_s": vision_16,
        "generate_32tok_s": generate_32,
    });
    println!("{json}");
}
