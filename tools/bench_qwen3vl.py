#!/usr/bin/env python3
"""Benchmarks our Qwen3-VL against transformers on a full-size random Qwen3-VL-2B, on CPU, f32.

DEV-ONLY (not run by CI). Same run, same checkpoint, same 8 frames, same thread count:

1. builds (once) a Qwen3-VL-2B-Instruct-shaped checkpoint with random weights in
   /tmp/vidlm-qwen3vl-2b-random (the real config: vision 1024 hidden, depth 24, DeepStack after
   blocks 5/11/17, patch 16; text 2048 hidden, 28 layers, 16 heads, 8 kv heads, head dim 128, FFN
   6144, vocab 151936, tied; stored bf16 to halve the disk, loaded as f32 by both sides; the tiny
   fixture's tokenizer, so the special-token ids are the tiny ones) -- never committed;
2. decodes 8 frames of samples/bbb-720p-5s.mp4 at 448x448 with the ffmpeg CLI;
3. times transformers: preprocessing, vision encoding of the 8 frames (4 temporal patches of
   28x28 patches), and processor + generate() of 32 new tokens (min_new_tokens=32, greedy);
4. runs `cargo run --example qwen3vl_bench` (crates/models/examples/qwen3vl_bench.rs), which times
   the same stages in our code, and prints the ratios (ours / transformers; < 1 is faster).

    eval "$(../shared/tools/reference-venv.sh)"
    python tools/bench_qwen3vl.py [--threads 2] [--repeats 3] [--vision-only]

--vision-only skips the end-to-end line on both sides (the vision line takes a few minutes; the
end-to-end one, with a 2B prefill, much longer). Our side is built with --release.

Needs ~10 GB free memory per side (the two run one after the other) and ~5 GB of disk in /tmp.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "crates" / "models" / "tests" / "fixtures" / "qwen3vl-tiny"
VIDEO = ROOT / "samples" / "bbb-720p-5s.mp4"
CKPT = Path("/tmp/vidlm-qwen3vl-2b-random")
FRAMES = CKPT / "bench-frames-448.rgb"
INDICES = [0, 18, 36, 54, 72, 90, 108, 126]
SIDE = 448
FPS = 25.0
QUESTION = "What is happening in this video?"
NEW_TOKENS = 32


def build_checkpoint() -> None:
    from transformers import AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if (CKPT / "config.json").exists():
        return
    CKPT.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(TINY)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>", "<|endoftext|>"]}
    config = Qwen3VLConfig(
        vision_config=dict(depth=24, hidden_size=1024, hidden_act="gelu_pytorch_tanh", intermediate_size=4096,
                           num_heads=16, in_channels=3, patch_size=16, spatial_merge_size=2,
                           temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304,
                           deepstack_visual_indexes=[5, 11, 17]),
        text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
                         max_position_embeddings=262144, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                          "mrope_section": [24, 20, 20], "mrope_interleaved": True},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         tie_word_embeddings=True),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.save_pretrained(CKPT, safe_serialization=True)
    # The real video budget (longest_edge 25165824) keeps 448x448 frames as they are.
    processor.video_processor.size = {"shortest_edge": 4096, "longest_edge": 25165824}
    processor.video_processor.patch_size = 16
    processor.image_processor.patch_size = 16
    processor.image_processor.size = {"shortest_edge": 65536, "longest_edge": 16777216}
    processor.save_pretrained(CKPT)


def decode_frames() -> np.ndarray:
    frames = []
    for i in INDICES:
        raw = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(VIDEO), "-vf", f"select=eq(n\\,{i}),scale={SIDE}:{SIDE}:flags=bicubic",
             "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            check=True, capture_output=True).stdout
        frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(SIDE, SIDE, 3))
    arr = np.stack(frames)
    arr.tofile(FRAMES)
    return arr


def bench_transformers(frames: np.ndarray, repeats: int, vision_only: bool) -> dict:
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(CKPT)
    model = Qwen3VLForConditionalGeneration.from_pretrained(CKPT, dtype=torch.float32,
                                                            attn_implementation="sdpa").eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    md = VideoMetadata(total_num_frames=132, fps=FPS, width=SIDE, height=SIDE, duration=132 / FPS,
                       frames_indices=INDICES)

    def process():
        return processor(text=[prompt], videos=[frames], video_metadata=[md], do_sample_frames=False,
                         cap_pixels_per_frame=False, return_tensors="pt")

    pre, vis, e2e = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        inputs = process()
        pre.append(time.perf_counter() - t)
        with torch.no_grad():
            t = time.perf_counter()
            model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
            vis.append(time.perf_counter() - t)
            if vision_only:
                continue
            t = time.perf_counter()
            inputs = process()
            model.model.rope_deltas = None
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
            e2e.append(time.perf_counter() - t)
    if vision_only:
        return {"grid_thw": inputs["video_grid_thw"].tolist(), "preprocess_s": statistics.median(pre),
                "vision_s": statistics.median(vis)}
    assert out.shape[1] - inputs["input_ids"].shape[1] == NEW_TOKENS
    return {"prompt_tokens": int(inputs["input_ids"].shape[1]), "grid_thw": inputs["video_grid_thw"].tolist(),
            "preprocess_s": statistics.median(pre), "vision_s": statistics.median(vis),
            "end_to_end_s": statistics.median(e2e)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vision-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    build_checkpoint()
    frames = decode_frames()
    py = bench_transformers(frames, args.repeats, args.vision_only)
    print("transformers:", json.dumps(py))
    cmd = ["cargo", "run", "-q", "--release", "-p", "vidlm-models", "--example", "qwen3vl_bench", "--",
           str(CKPT), str(FRAMES), ",".join(map(str, INDICES)), str(SIDE), str(args.repeats)]
    env = {**__import__("os").environ, "RAYON_NUM_THREADS": str(args.threads),
           "VIDLM_BENCH_VISION_ONLY": "1" if args.vision_only else "0"}
    res = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=env)
    rs = json.loads(res.stdout.strip().splitlines()[-1])
    print("vidlm:       ", json.dumps(rs))
    keys = ["preprocess_s", "vision_s"]
    if not args.vision_only:
        assert rs["prompt_tokens"] == py["prompt_tokens"], (rs, py)
        keys.append("end_to_end_s")
    for k in keys:
        print(f"{k:14s} transformers {py[k]:8.3f}  vidlm {rs[k]:8.3f}  ratio {rs[k] / py[k]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
