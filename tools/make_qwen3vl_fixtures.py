#!/usr/bin/env python3
"""Builds the Qwen3-VL test fixtures: a tiny random checkpoint and what transformers computes with it.

DEV-ONLY: CI never runs this script; the Rust tests (crates/models/tests/qwen3vl_*.rs) read the files
it wrote, which the repository commits. Re-run it only to change the fixtures, then commit them all.

What it makes, under crates/models/tests/fixtures/ (format: README-qwen3vl.md there):

* qwen3vl-tiny-frames/: frames decoded from samples/bbb-720p-5s.mp4 (25 fps) by the ffmpeg CLI,
  saved as RGB24 PNG: eight at 64x48 (already a multiple of patch x merge = 16, so the video
  processor does not resize them) and one at 320x180 (the image case; the image processor resizes
  it with its smart-resize rule and bicubic antialiasing).
* qwen3vl-tiny/: a tiny random `Qwen3VLForConditionalGeneration` (model_type "qwen3_vl") saved as
  transformers saves it. Vision: hidden 32, depth 3, 4 heads, patch 8, temporal patch 2, spatial
  merge 2, 36 learned position embeddings (a 6x6 grid, bilinearly resampled per image), DeepStack
  after blocks 0 and 1. Text (Qwen3, q/k norm): hidden 64, 3 layers, 4 heads, 2 kv heads, head dim
  16, interleaved M-RoPE with mrope_section [4, 2, 2], tied lm_head (as Qwen3-VL-2B). Tokenizer: a
  ~1k byte-level BPE trained here with the `tokenizers` library and Qwen2's pre-tokenizer regex,
  plus Qwen3-VL's special tokens in the real order. The chat template follows
  Qwen/Qwen3-VL-2B-Instruct's (tool-call branches left out). Processor configs scaled down from the
  real ones (same keys; smaller pixel budgets).
* qwen3vl-tiny.reference.json + qwen3vl-tiny.reference.safetensors: for an image, a 4-frame video
  and an 8-frame video, what transformers' real processor and model give in f32 with eager
  attention: the prompt text, input_ids, mm_token_type_ids, pixel values, grid_thw, the 3-D M-RoPE
  position ids (3 x seq), logits at every position and up to 16 greedy tokens (generate()).

How to run (from the repository root; about a minute on 2 cores):

    eval "$(../shared/tools/reference-venv.sh)"      # torch 2.15, transformers 5.24
    python tools/make_qwen3vl_fixtures.py

Needs the ffmpeg CLI on PATH. Deterministic: fixed seeds, fixed inputs, one thread.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "models" / "tests" / "fixtures"
VIDEO = ROOT / "samples" / "bbb-720p-5s.mp4"
NAME = "qwen3vl-tiny"
FRAMES_DIR = FIXTURES / f"{NAME}-frames"

VIDEO_FPS = 25.0  # the sample clip; frame index i shows at i / 25 s (its stream starts at pts 0)
TOTAL_FRAMES = 132
VIDEO_FRAME_INDICES = [0, 18, 36, 54, 72, 90, 108, 126]
VIDEO_SIZE = (64, 48)  # width, height
IMAGE_FRAME_INDEX = 60
IMAGE_SIZE = (320, 180)
MAX_NEW_TOKENS = 16
BPE_VOCAB = 1000

QUESTION = "What is happening in this video?"
IMAGE_QUESTION = "Describe this image."

# Qwen3-VL's special tokens, in the order (and relative ids) of the real vocabulary (151643...).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Then these added, non-special tokens follow in the real vocabulary (a subset kept here).
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]

# Qwen2's pre-tokenizer split (as in Qwen3-VL's tokenizer.json): digits one by one.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen/Qwen3-VL-2B-Instruct's chat template without its tool-calling branches (tools, tool
# responses, tool calls): system, user (text / image / video parts) and assistant turns.
CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set image_count = namespace(value=0) %}"
    "{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content_item in message.content %}{%- if 'text' in content_item %}"
    "{{- content_item.text }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def extract_frame(index: int, out: Path, size: tuple[int, int]) -> None:
    """Decodes frame `index` of the sample clip to an RGB24 PNG scaled by ffmpeg."""
    vf = f"select=eq(n\\,{index}),scale={size[0]}:{size[1]}:flags=bicubic"
    run(["ffmpeg", "-v", "error", "-y", "-i", str(VIDEO), "-vf", vf, "-frames:v", "1",
         "-pix_fmt", "rgb24", str(out)])


def load_rgb(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "RGB", (path, img.mode)
    return np.asarray(img, dtype=np.uint8).copy()


def make_frames() -> list[dict]:
    if FRAMES_DIR.exists():
        shutil.rmtree(FRAMES_DIR)
    FRAMES_DIR.mkdir(parents=True)
    frames = []
    for idx in VIDEO_FRAME_INDICES:
        name = f"bbb-n{idx:03d}-{VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}.png"
        extract_frame(idx, FRAMES_DIR / name, VIDEO_SIZE)
        frames.append({"file": f"{FRAMES_DIR.name}/{name}", "index": idx, "timestamp": idx / VIDEO_FPS})
    name = f"bbb-n{IMAGE_FRAME_INDEX:03d}-{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}.png"
    extract_frame(IMAGE_FRAME_INDEX, FRAMES_DIR / name, IMAGE_SIZE)
    frames.append({"file": f"{FRAMES_DIR.name}/{name}", "index": IMAGE_FRAME_INDEX,
                   "timestamp": IMAGE_FRAME_INDEX / VIDEO_FPS})
    for f in frames:
        w, h = Image.open(FIXTURES / f["file"]).size
        f["width"], f["height"] = w, h
    return frames


def training_corpus() -> list[str]:
    """Deterministic English-like sentences plus the prompt words and timestamp texts."""
    rng = random.Random(4321)
    subjects = ["a rabbit", "the bird", "a big rabbit", "two squirrels", "the sun", "a butterfly",
                "the tree", "a small flower", "the river", "an apple", "the forest", "a cloud"]
    verbs = ["jumps over", "looks at", "sits near", "runs past", "eats", "hides behind", "waits for",
             "plays with", "smiles at", "walks around", "flies above", "sleeps under"]
    objects = ["the grass", "a stone", "the hill", "a red apple", "the water", "an old log",
               "the morning light", "a tall tree", "the meadow", "a quiet pond", "the sky"]
    lines = []
    for _ in range(3000):
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} at {rng.randint(0, 99)}.{rng.randint(0, 9)} seconds."
        lines.append(s[0].upper() + s[1:])
    onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "ch"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]
    for _ in range(4000):
        words = ["".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
                 for _ in range(rng.randint(3, 9))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
    lines += [QUESTION, IMAGE_QUESTION, "system user assistant\n", "<0.4 seconds> <1.8 seconds>",
              "You are a helpful assistant.", "0123456789 What is happening? Describe it!"] * 20
    return lines


def build_tokenizer():
    """Trains the byte-level BPE with Qwen2's pre-tokenizer and wraps it as transformers saves it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        clean_up_tokenization_spaces=False,
        model_max_length=262144,
        split_special_tokens=False,
    )


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-randomizes every parameter with scales that keep activations O(1) (clear argmax margins)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # Tied lm_head: small embeddings keep a position from just predicting its own token.
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))


def build_checkpoint(out_dir: Path, seed: int):
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    patch, merge, tpatch = 8, 2, 2
    config = Qwen3VLConfig(
        vision_config=dict(
            depth=3, hidden_size=32, hidden_act="gelu_pytorch_tanh", intermediate_size=64, num_heads=4,
            in_channels=3, patch_size=patch, spatial_merge_size=merge, temporal_patch_size=tpatch,
            out_hidden_size=64, num_position_embeddings=36, deepstack_visual_indexes=[0, 1],
            initializer_range=0.02,
        ),
        text_config=dict(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
            max_position_embeddings=4096, rms_norm_eps=1e-6, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                             "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=True,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    init_weights(model, seed)
    model.tie_weights()
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir, safe_serialization=True)

    # The real checkpoint's processor settings, with smaller pixel budgets for a tiny model.
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 32 * 32, "longest_edge": 96 * 96}, patch_size=patch,
        temporal_patch_size=tpatch, merge_size=merge, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 32 * 32, "longest_edge": 16 * 64 * 64}, patch_size=patch,
        temporal_patch_size=tpatch, merge_size=merge, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5], fps=2, min_frames=4, max_frames=768,
    )
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out_dir)
    return model, processor


def to_list(t: torch.Tensor) -> list:
    return t.detach().cpu().tolist()


def run_cases(ckpt: Path, frames: list[dict]) -> None:
    from safetensors.torch import save_file
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(ckpt)
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    tensors: dict[str, torch.Tensor] = {}
    meta = {
        "checkpoint": NAME, "transformers": __import__("transformers").__version__,
        "torch": torch.__version__, "dtype": "float32", "attn_implementation": "eager",
        "video_fps": VIDEO_FPS, "total_frames": TOTAL_FRAMES,
        "stop_token_ids": model.generation_config.eos_token_id,
        "image_token_id": cfg.image_token_id, "video_token_id": cfg.video_token_id,
        "vision_start_token_id": cfg.vision_start_token_id,
        "frames": frames, "cases": [],
    }
    for f in frames:
        tensors[f"frame.{Path(f['file']).stem}"] = torch.from_numpy(load_rgb(FIXTURES / f["file"]))

    video_frames = frames[: len(VIDEO_FRAME_INDICES)]
    cases = [
        ("image", "image", [frames[-1]], IMAGE_QUESTION),
        ("video_4frames", "video", [video_frames[i] for i in (0, 2, 4, 6)], QUESTION),
        ("video_8frames", "video", video_frames, QUESTION),
    ]
    for name, kind, fr, question in cases:
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        arrays = [load_rgb(FIXTURES / f["file"]) for f in fr]
        if kind == "image":
            inputs = processor(text=[prompt], images=[Image.fromarray(arrays[0])], return_tensors="pt")
            pix, grid = inputs["pixel_values"], inputs["image_grid_thw"]
        else:
            md = VideoMetadata(total_num_frames=TOTAL_FRAMES, fps=VIDEO_FPS, width=fr[0]["width"],
                               height=fr[0]["height"], duration=TOTAL_FRAMES / VIDEO_FPS,
                               frames_indices=[f["index"] for f in fr])
            inputs = processor(text=[prompt], videos=[np.stack(arrays)], video_metadata=[md],
                               do_sample_frames=False, return_tensors="pt")
            pix, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
        assert "mm_token_type_ids" in inputs, "the processor must return mm_token_type_ids"
        input_ids = inputs["input_ids"]
        expanded = processor.tokenizer.decode(input_ids[0], skip_special_tokens=False)

        # The 3-D M-RoPE positions, exactly as forward() computes them from mm_token_type_ids.
        kw = {"image_grid_thw": grid} if kind == "image" else {"video_grid_thw": grid}
        pos, deltas = model.model.get_rope_index(input_ids, inputs["mm_token_type_ids"], **kw)
        seq = input_ids.shape[1]
        flat = torch.arange(seq).view(1, 1, -1).expand(3, 1, -1)
        assert not torch.equal(pos, flat), f"{name}: position ids fell back to 1-D"
        assert not torch.equal(pos[1], pos[2]) or kind == "image" and grid[0, 1] == grid[0, 2], name

        with torch.no_grad():
            model.model.rope_deltas = None
            out = model(**inputs)
            logits = out.logits[0]
            # The same forward with the explicit 3-D positions must agree: proves forward used them.
            model.model.rope_deltas = None
            out2 = model(**{k: v for k, v in inputs.items()}, position_ids=pos)
            assert torch.allclose(out2.logits[0], logits, atol=0, rtol=0), name
            # And 1-D positions must give different logits (the M-RoPE path is exercised).
            model.model.rope_deltas = None
            out1 = model(**inputs, position_ids=flat)
            assert (out1.logits[0] - logits).abs().max() > 1e-3, name
            model.model.rope_deltas = None
            gen = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        new = gen[0, seq:]
        stops = set(meta["stop_token_ids"])
        greedy = []
        for t in new.tolist():
            if t in stops:
                break
            greedy.append(t)
        # Generated tokens must follow the prefill logits' argmax.
        assert greedy[:1] == [] or greedy[0] == int(logits[-1].argmax()), name

        tensors[f"{name}.input_ids"] = input_ids[0].to(torch.int64).contiguous()
        tensors[f"{name}.mm_token_type_ids"] = inputs["mm_token_type_ids"][0].to(torch.int64).contiguous()
        tensors[f"{name}.pixel_values"] = pix.to(torch.float32).contiguous()
        tensors[f"{name}.grid_thw"] = grid.to(torch.int64).contiguous()
        tensors[f"{name}.position_ids"] = pos[:, 0, :].to(torch.int64).contiguous()
        tensors[f"{name}.logits"] = logits.to(torch.float32).contiguous()
        tensors[f"{name}.greedy_ids"] = torch.tensor(greedy, dtype=torch.int64)
        meta["cases"].append({
            "name": name, "kind": kind, "question": question,
            "frames": [{"file": f["file"], "index": f["index"], "timestamp": f["timestamp"],
                        "width": f["width"], "height": f["height"]} for f in fr],
            "prompt": prompt, "expanded_prompt": expanded, "seq_len": seq,
            "grid_thw": to_list(grid), "pixel_values_shape": list(pix.shape),
            "rope_delta": int(deltas[0, 0]), "max_abs_logit": float(logits.abs().max()),
            "greedy_ids": greedy,
            "greedy_text": processor.tokenizer.decode(greedy, skip_special_tokens=True),
            "generated_raw": to_list(new),
        })
        print(f"{name}: seq {seq}, grid {to_list(grid)}, greedy {len(greedy)} tokens: "
              f"{meta['cases'][-1]['greedy_text']!r}")
    save_file(tensors, str(FIXTURES / f"{NAME}.reference.safetensors"))
    (FIXTURES / f"{NAME}.reference.json").write_text(json.dumps(meta, indent=1) + "\n")


def main() -> int:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    frames = make_frames()
    build_checkpoint(FIXTURES / NAME, seed=20251130)
    run_cases(FIXTURES / NAME, frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
