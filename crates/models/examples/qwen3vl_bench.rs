//! Times our Qwen3-VL on the stages tools/bench_qwen3vl.py times in transformers (which runs this):
//! preprocessing of the frames, vision encoding, and processor + vision + prefill + 32 greedy tokens.
//! Prints one JSON line with the medians.
//!
//! `cargo run -p vidlm-models --example qwen3vl_bench -- CKPT FRAMES.rgb 0,18,... SIDE REPEATS`
//! where FRAMES.rgb holds the frames as packed RGB24, SIDE x SIDE each, at `index / 25` seconds.
//! With `VIDLM_BENCH_VISION_ONLY=1` only preprocessing and vision are timed (the other medians
//! are then 0).

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use vidlm_models::generation::decode_loop;
use vidlm_models::qwen3_vl::processor::{rope_index, Expansion, Processor, VisualKind};
use vidlm_models::qwen3_vl::Qwen3Vl;
use vidlm_models::{GenerationParams, VideoFrame};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        return Err("usage: qwen3vl_bench CKPT FRAMES.rgb INDICES SIDE REPEATS".into());
    }
    let dir = Path::new(&a[1]);
    let raw = std::fs::read(&a[2])?;
    let indices: Vec<u32> = a[3].split(',').map(str::parse).collect::<Result<_, _>>()?;
    let side: usize = a[4].parse()?;
    let repeats: usize = a[5].parse()?;
    let frames: Vec<VideoFrame> = indices
        .iter()
        .enumerate()
        .map(|(i, &idx)| VideoFrame {
            rgb: raw[i * side * side * 3..(i + 1) * side * side * 3].to_vec(),
            width: side as u32,
            height: side as u32,
            pts: idx as f64 / 25.0,
        })
        .collect();
    // As the vidlm binary does.
    vidlm_models::memory::keep_freed_memory_for_reuse();
    let dev = Device::Cpu;
    let mut model = Qwen3Vl::load(dir, DType::F32, &dev)?;
    let proc = Processor::load(dir)?;
    let m = model.config.vision_config.spatial_merge_size;
    let params = GenerationParams {
        max_new_tokens: 32,
        ..Default::default()
    };
    let (mut pre, mut vis, mut e2e, mut prefill, mut decode) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut prompt_tokens = 0;
    let vision_only = std::env::var_os("VIDLM_BENCH_VISION_ONLY").is_some_and(|v| v == "1");
    let median = |v: Vec<f64>| if v.is_empty() { 0.0 } else { median(v) };
    for _ in 0..repeats {
        let t = Instant::now();
        let px = proc.video_pixels(&frames, &dev)?;
        pre.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        model.encode(&[(px.pixels.clone(), px.grid)])?;
        vis.push(t.elapsed().as_secs_f64());
        if vision_only {
            continue;
        }

        let t = Instant::now();
        let px = proc.video_pixels(&frames, &dev)?;
        let per = px.grid[1] * px.grid[2] / (m * m);
        let pairs = px.pair_times.iter().map(|&t| (t, per)).collect();
        let chat = proc.chat_prompt(VisualKind::Video, "What is happening in this video?")?;
        let p = proc.expand(&chat, &Expansion::Video { pairs })?;
        let (pos, _) = rope_index(&p.mm_token_type_ids, &[], &[px.grid], m)?;
        let visual = model.encode(&[(px.pixels, px.grid)])?;
        let t1 = Instant::now();
        let first = model.prefill(&p.ids, &pos, Some(&visual), false)?;
        prefill.push(t1.elapsed().as_secs_f64());
        // No stop ids: exactly 32 tokens, as min_new_tokens=32 makes transformers do.
        let d = decode_loop(
            first,
            &p.ids,
            &params,
            &[],
            &proc.tokenizer,
            &mut |x| model.step(x),
            &mut |_| {},
        )?;
        assert_eq!(d.token_ids.len(), 32);
        decode.push(d.seconds);
        e2e.push(t.elapsed().as_secs_f64());
        prompt_tokens = p.ids.len();
    }
    println!(
        "{}",
        serde_json::json!({
            "prompt_tokens": prompt_tokens,
            "preprocess_s": median(pre),
            "vision_s": median(vis),
            "prefill_s": median(prefill),
            "decode_32_s": median(decode),
            "end_to_end_s": median(e2e),
        })
    );
    Ok(())
}
