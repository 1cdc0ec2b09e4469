#!/usr/bin/env python3
"""Builds the file-to-tokens fixtures: one tiny checkpoint per published size, real chat templates,
and what transformers' own video path makes of video FILES.

DEV-ONLY: CI never runs this script; the Rust tests (crates/pipeline/tests/file_parity.rs,
crates/models/tests/chat_templates.rs, tests/cli_file_parity.rs) read what it wrote, which the
repository commits. Re-run it only to change the fixtures, then commit everything it wrote.
Format and sources: crates/models/tests/fixtures/README-fidelity.md.

What it makes, under crates/models/tests/fixtures/:

* clips/: short H.264 clips -- real footage cut from samples/bbb-720p-5s.mp4 (2.44 s, 61 frames
  at 25 fps) and lavfi testsrc2 clips (3.1 s and exactly 4.0 s at 10 fps), at the square sizes
  SmolVLM2's video processors resize to (512 and 384), plus one still image (PNG).
* smolvlm2-{256m,500m,2.2b}-tiny/, qwen3vl-{2b,4b,8b}-tiny/: tiny random checkpoints whose shape
  choices follow the published ones (image size, patch, scale factor / merge, DeepStack layers,
  tied or untied lm_head, M-RoPE sections, processor sizes and frame sampling); a few layers and
  small widths otherwise. The tokenizer is the existing tiny one of each family, copied.
* <name>.file-reference.json + .file-reference.safetensors: for each case (a video FILE sampled by
  transformers itself with `num_frames` and with `fps`, an image, text), the frame indices and
  times transformers' video decoder (torchcodec) chose, the video metadata, the prompt, input ids,
  logits at selected positions of one forward pass, and greedy tokens; for one fixture per family,
  the prompts of summarize chunks (given frames + times, `do_sample_frames=False`).
* chat-templates/: the published chat templates (SmolVLM2; Qwen3-VL Instruct and Thinking) and
  renders.json, what transformers' `apply_chat_template` renders over varied conversations.

How to run (from the repository root; a few minutes on 2 cores):

    eval "$(../shared/tools/reference-venv.sh)"   # torch 2.15, transformers 5.24
    pip install torchcodec==0.17.0                 # transformers 5.24's default video decoder
    python tools/make_fidelity_fixtures.py [FIXTURE ...]   # default: everything

Needs the ffmpeg CLI. torchcodec 0.17 loads the system FFmpeg libraries (Debian's 5.1). Fixed seeds,
one thread; clips are encoded with one x264 thread, so re-running rewrites the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates" / "models" / "tests" / "fixtures"
CLIPS = FIX / "clips"
TEMPLATES = FIX / "chat-templates"
SAMPLE = ROOT / "samples" / "bbb-720p-5s.mp4"
QUESTION = "What is happening in this video?"
IMAGE_QUESTION = "Describe this image."
TEXT_QUESTION = "Write one short sentence about a rabbit."
CHUNK_QUESTION = "Describe this part of the video."
MAX_NEW_TOKENS = 8
# Logit rows kept per case: every non-visual position, every 16th visual one and the last.
VISUAL_STRIDE = 16


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SMOL = load_module("make_smolvlm_fixtures")
QWEN = load_module("make_qwen3vl_fixtures")


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ---------------------------------------------------------------------------------------- clips

CLIP_SPECS = {
    # name: (ffmpeg input args, duration, side)
    "bbb-2s44-512.mp4": (["-i", str(SAMPLE)], "2.44", 512),
    "bbb-2s44-384.mp4": (["-i", str(SAMPLE)], "2.44", 384),
    "testsrc-3s1-512.mp4": (["-f", "lavfi", "-i", "testsrc2=size=512x512:rate=10"], "3.1", 512),
    "testsrc-3s1-384.mp4": (["-f", "lavfi", "-i", "testsrc2=size=384x384:rate=10"], "3.1", 384),
    "testsrc-4s-512.mp4": (["-f", "lavfi", "-i", "testsrc2=size=512x512:rate=10"], "4", 512),
}
IMAGE = "bbb-n030-128x72.png"


def make_clips() -> None:
    CLIPS.mkdir(parents=True, exist_ok=True)
    for name, (inp, dur, side) in CLIP_SPECS.items():
        # setsar=1: square pixels. (A squeezed 16:9 source keeps a 9:16 sample aspect ratio, which
        # vidlm's decoder applies and torchcodec ignores: the frames would differ in size.)
        run(["ffmpeg", "-v", "error", "-y", *inp, "-t", dur, "-vf", f"scale={side}:{side}:flags=bicubic,setsar=1",
             "-an", "-c:v", "libx264", "-preset", "medium", "-crf", "30", "-threads", "1", "-g", "10",
             "-pix_fmt", "yuv420p", "-map_metadata", "-1", "-fflags", "+bitexact",
             str(CLIPS / name)])
    run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE), "-vf", "select=eq(n\\,30),scale=128:72:flags=bicubic",
         "-frames:v", "1", "-pix_fmt", "rgb24", str(CLIPS / IMAGE)])


def clip_metadata(name: str) -> dict:
    """What transformers' default video decoder (torchcodec, exact seek mode) reports."""
    from torchcodec.decoders import VideoDecoder

    m = VideoDecoder(str(CLIPS / name), seek_mode="exact").metadata
    return {"total_num_frames": m.num_frames, "fps": m.average_fps, "duration": m.duration_seconds}


# ------------------------------------------------------------------------------------ checkpoints

# Shape choices of the published SmolVLM2 checkpoints (sources in README-fidelity.md): vision image
# size and patch (SigLIP), pixel-shuffle scale factor, tokens per image, processor sizes. Text widths
# are tiny; GQA ratio, tying and rope theta as noted there.
SMOL_SIZES = {
    "smolvlm2-256m-tiny": dict(image=512, patch=16, scale=4, longest=2048, video_edge=512,
                               heads=6, kv=2, hidden=96, tied=False, theta=100000.0, seed=256),
    "smolvlm2-500m-tiny": dict(image=512, patch=16, scale=4, longest=2048, video_edge=512,
                               heads=6, kv=2, hidden=96, tied=True, theta=100000.0, seed=500),
    "smolvlm2-2.2b-tiny": dict(image=384, patch=14, scale=3, longest=1536, video_edge=384,
                               heads=4, kv=4, hidden=64, tied=True, theta=130000.0, seed=2200),
}

# Qwen3-VL: vision depth and DeepStack taps, patch 16, spatial merge 2, temporal patch 2, 48x48
# learned position grid, interleaved M-RoPE sections [24, 20, 20] of a 128-wide head, tying.
QWEN_SIZES = {
    "qwen3vl-2b-tiny": dict(depth=24, deepstack=[5, 11, 17], tied=True, seed=2),
    "qwen3vl-4b-tiny": dict(depth=24, deepstack=[5, 11, 17], tied=True, seed=4),
    "qwen3vl-8b-tiny": dict(depth=27, deepstack=[8, 16, 24], tied=False, seed=8),
}


def copy_tokenizer(src: Path, dst: Path) -> None:
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(src / f, dst / f)


def build_smolvlm(name: str, s: dict) -> None:
    from transformers import (AutoTokenizer, SmolVLMConfig, SmolVLMForConditionalGeneration,
                              SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor)

    out = FIX / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(FIX / "smolvlm-tiny-sf2")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["<|im_start|>", "<|im_end|>", "<image>", "<end_of_utterance>"]}
    seq_len = (s["image"] // s["patch"]) ** 2 // s["scale"] ** 2
    config = SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=s["image"], patch_size=s["patch"], hidden_act="gelu_pytorch_tanh",
                           layer_norm_eps=1e-6),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=s["hidden"], intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
                         head_dim=16, max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": s["theta"]},
                         tie_word_embeddings=s["tied"], pad_token_id=ids["<|im_end|>"],
                         bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"]),
        scale_factor=s["scale"], image_token_id=ids["<image>"], tie_word_embeddings=s["tied"],
        pad_token_id=ids["<|im_end|>"],
    )
    torch.manual_seed(s["seed"])
    model = SmolVLMForConditionalGeneration(config).eval()
    SMOL.init_weights(model, s["seed"], s["tied"])
    if s["tied"]:
        model.tie_weights()
    model.generation_config.bos_token_id = ids["<|im_start|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|im_end|>"]
    model.save_pretrained(out, safe_serialization=True)
    common = dict(do_convert_rgb=True, do_resize=True, do_rescale=True, do_normalize=True, do_pad=True,
                  image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=1, rescale_factor=1 / 255,
                  max_image_size={"longest_edge": s["image"]})
    image_processor = SmolVLMImageProcessor(**common, do_image_splitting=True, size={"longest_edge": s["longest"]})
    video_processor = SmolVLMVideoProcessor(
        **common, size={"longest_edge": s["video_edge"]},
        video_sampling={"fps": 1, "max_frames": 64, "video_size": {"longest_edge": s["video_edge"]}})
    processor = SmolVLMProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                 image_seq_len=seq_len, chat_template=SMOL.CHAT_TEMPLATE)
    processor.save_pretrained(out)


def build_qwen(name: str, s: dict) -> None:
    from transformers import (AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    out = FIX / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(FIX / "qwen3vl-tiny")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN.SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        vision_config=dict(depth=s["depth"], hidden_size=16, hidden_act="gelu_pytorch_tanh", intermediate_size=32,
                           num_heads=2, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           out_hidden_size=64, num_position_embeddings=2304,
                           deepstack_visual_indexes=s["deepstack"], initializer_range=0.02),
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=128, hidden_act="silu",
                         max_position_embeddings=8192, rms_norm_eps=1e-6, attention_bias=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                          "mrope_section": [24, 20, 20], "mrope_interleaved": True},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=s["tied"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s["tied"],
    )
    torch.manual_seed(s["seed"])
    model = Qwen3VLForConditionalGeneration(config).eval()
    QWEN.init_weights(model, s["seed"])
    if s["tied"]:
        model.tie_weights()
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    # The published processor settings: image budget 65536..16777216 pixels, video 4096..25165824.
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 65536, "longest_edge": 16777216}, patch_size=16,
                                            temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                            image_std=[0.5] * 3)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 25165824}, patch_size=16,
                                            temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                            image_std=[0.5] * 3, fps=2, min_frames=4, max_frames=768)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                 chat_template=template_source("qwen3vl-instruct.jinja"))
    processor.save_pretrained(out)


# --------------------------------------------------------------------------------------- cases

# Per fixture: (case name, clip, sampling kwargs). Every fixture samples one clip with num_frames and
# one with fps; both families see the real-footage clip and a generated one whose duration is not
# whole seconds; smolvlm2-256m's 4.0 s clip is the duration case (frames at 0, 1.3, 2.6, 3.9 s).
CASES = {
    "smolvlm2-256m-tiny": [("video_frames", "testsrc-4s-512.mp4", {"num_frames": 4}),
                           ("video_fps", "bbb-2s44-512.mp4", {"fps": 2})],
    "smolvlm2-500m-tiny": [("video_frames", "bbb-2s44-512.mp4", {"num_frames": 4}),
                           ("video_fps", "testsrc-3s1-512.mp4", {"fps": 2})],
    "smolvlm2-2.2b-tiny": [("video_frames", "testsrc-3s1-384.mp4", {"num_frames": 8}),
                           ("video_fps", "bbb-2s44-384.mp4", {"fps": 1})],
    # Qwen3-VL's video processor takes `fps` from its config unless told None; with `num_frames`
    # the two are mutually exclusive, so a user sampling N frames passes fps=None.
    "qwen3vl-2b-tiny": [("video_frames", "bbb-2s44-384.mp4", {"num_frames": 4, "fps": None}),
                        ("video_fps", "testsrc-3s1-384.mp4", {"fps": 2})],
    "qwen3vl-4b-tiny": [("video_frames", "testsrc-3s1-384.mp4", {"num_frames": 4, "fps": None}),
                        ("video_fps", "bbb-2s44-384.mp4", {"fps": 2})],
    "qwen3vl-8b-tiny": [("video_frames", "testsrc-4s-512.mp4", {"num_frames": 4, "fps": None}),
                        ("video_fps", "bbb-2s44-384.mp4", {"fps": 1})],
}
# Frames transformers is handed from its own decoder (torchcodec through `load_video`, with the
# indices vidlm's `fps:1` picks on the 4.0 s clip: 0, 1, 2, 3 s) with the metadata it reads:
# the intro line must say 0:00:04 (int(duration)), not the last frame's 0:00:03.
GIVEN = {"smolvlm2-256m-tiny": [("video_fps1_4s", "testsrc-4s-512.mp4", "fps:1", [0, 10, 20, 30])]}
# Summarize: `vidlm summarize --sample fps:2 --chunk fixed:1 --to 3` on this clip; chunk k holds the
# frames at k and k + 0.5 s (indices 10k, 10k + 5 at 10 fps). (--to 3 leaves out a last chunk of one
# frame, which transformers' Qwen3-VL video processor refuses: a video needs a whole frame pair.)
SUMMARIZE = {"smolvlm2-500m-tiny": "testsrc-3s1-512.mp4", "qwen3vl-2b-tiny": "testsrc-3s1-384.mp4"}
SUMMARIZE_CHUNKS = [[0, 5], [10, 15], [20, 25]]


def vidlm_frames_rule(total: int, n: int) -> list[int]:
    """vidlm's `frames:N` (issue 10): round(linspace(0, total - 1, N)), numpy's rounding."""
    return [int(i) for i in np.linspace(0, total - 1, n).round().astype(int)]


def grid_sample(indices: list[int], fps: float) -> str:
    """vidlm's `fps:R` whose grid 0, 1/R, 2/R, ... s lands exactly on these evenly spaced frames
    (today's sampler takes the first frame at or after each grid time)."""
    step = indices[1] - indices[0]
    assert indices[0] == 0 and all(b - a == step for a, b in zip(indices, indices[1:])), indices
    return f"fps:{fps / step!r}"


def keep_rows(ids: list[int], visual: set[int]) -> list[int]:
    rows, seen = [], 0
    for i, t in enumerate(ids):
        if t in visual:
            if seen % VISUAL_STRIDE == 0:
                rows.append(i)
            seen += 1
        else:
            rows.append(i)
    if rows[-1] != len(ids) - 1:
        rows.append(len(ids) - 1)
    return rows


def greedy(model, inputs, stops: set[int]) -> tuple[list[int], list[float]]:
    with torch.no_grad():
        if hasattr(model.model, "rope_deltas"):
            model.model.rope_deltas = None
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, output_logits=True,
                             return_dict_in_generate=True)
    new = gen.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    margins = [float(torch.topk(l[0].float(), 2).values.diff().abs()) for l in gen.logits]
    out = []
    for t in new:
        if t in stops:
            break
        out.append(t)
    return out, margins


def reference(name: str) -> None:
    from safetensors.torch import save_file
    from torchcodec.decoders import VideoDecoder
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    ckpt = FIX / name
    qwen = name.startswith("qwen")
    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    tok = processor.tokenizer
    cfg = model.config
    stops = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                else [model.generation_config.eos_token_id])
    visual = {cfg.image_token_id} | ({cfg.video_token_id} if qwen else set())
    index = {"checkpoint": name, "transformers": __import__("transformers").__version__, "torch": torch.__version__,
             "video_decoder": "torchcodec " + __import__("torchcodec").__version__, "dtype": "float32",
             "attn_implementation": "eager", "stop_token_ids": sorted(stops), "max_new_tokens": MAX_NEW_TOKENS,
             "visual_stride": VISUAL_STRIDE, "cases": []}
    tensors: dict[str, torch.Tensor] = {}

    def record(case: dict, inputs, prompt: str) -> None:
        key = case["name"]
        ids = inputs["input_ids"][0].tolist()
        with torch.no_grad():
            if qwen:
                model.model.rope_deltas = None
            logits = model(**inputs).logits[0].float()
        rows = keep_rows(ids, visual)
        gen, margins = greedy(model, inputs, stops)
        tensors[f"{key}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"{key}.logit_rows"] = torch.tensor(rows, dtype=torch.int64)
        tensors[f"{key}.logits"] = logits[rows].contiguous()
        case.update({"prompt": prompt, "seq_len": len(ids), "max_abs_logit": float(logits.abs().max()),
                     "greedy_ids": gen, "greedy_text": tok.decode(gen, skip_special_tokens=True),
                     "greedy_top2_margins": margins,
                     "visual_tokens": sum(1 for t in ids if t in visual)})
        index["cases"].append(case)
        print(f"  {name}/{key}: {len(ids)} tokens, greedy {gen} (min margin {min(margins):.3g})")

    for key, clip, sampling in CASES[name]:
        path = str(CLIPS / clip)
        meta = clip_metadata(clip)
        msg = [{"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": QUESTION}]}]
        prompt = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
        # transformers' own path from the file: its video processor decodes (torchcodec) and samples.
        vp_out = processor.video_processor(videos=[path], do_sample_frames=True, return_metadata=True, **sampling)
        vmeta = vp_out["video_metadata"][0]
        indices = [int(i) for i in vmeta.frames_indices]
        inputs = processor(text=[prompt], videos=[path], do_sample_frames=True, return_tensors="pt", **sampling)
        one = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            return_tensors="pt", do_sample_frames=True, **sampling)
        assert torch.equal(one["input_ids"], inputs["input_ids"]), f"{name}/{key}: one-call path differs"
        # The processor's own decode sampled the same frames as the video processor alone.
        sampled = (int(inputs["video_grid_thw"][0][0]) * 2 if qwen else inputs["pixel_values"].shape[1])
        assert sampled == len(indices) + (len(indices) % 2 if qwen else 0), (name, key, sampled, indices)
        # The vidlm --sample that gives the same frames: frames:N picks round(linspace(0, F-1, N)).
        assert indices == vidlm_frames_rule(meta["total_num_frames"], len(indices)), (name, key, indices)
        times = [i / vmeta.fps for i in indices]
        record({"name": key, "kind": "video", "clip": f"clips/{clip}", "transformers_sampling": sampling,
                "vidlm_sample": f"frames:{len(indices)}", "vidlm_sample_grid": grid_sample(indices, vmeta.fps),
                "frame_indices": indices, "frame_times": times,
                "video_metadata": {"total_num_frames": vmeta.total_num_frames, "fps": vmeta.fps,
                                   "duration": vmeta.duration, "backend": vmeta.video_backend},
                "question": QUESTION}, inputs, prompt)

    for key, clip, vidlm_sample, idx in GIVEN.get(name, []):
        from transformers.video_utils import load_video

        frames, vmeta = load_video(str(CLIPS / clip), backend="torchcodec",
                                   sample_indices_fn=lambda metadata, **kw: np.array(idx))
        msg = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
        prompt = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[prompt], videos=[frames], video_metadata=[vmeta], do_sample_frames=False,
                           return_tensors="pt")
        record({"name": key, "kind": "video", "clip": f"clips/{clip}", "transformers_sampling": "given indices",
                "vidlm_sample": vidlm_sample, "vidlm_sample_grid": grid_sample(idx, vmeta.fps),
                "frame_indices": idx, "frame_times": [i / vmeta.fps for i in idx],
                "video_metadata": {"total_num_frames": vmeta.total_num_frames, "fps": vmeta.fps,
                                   "duration": vmeta.duration, "backend": vmeta.video_backend},
                "question": QUESTION,
                "expanded_prompt": tok.decode(inputs["input_ids"][0], skip_special_tokens=False)},
               inputs, prompt)

    img = Image.open(CLIPS / IMAGE).convert("RGB")
    msg = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": IMAGE_QUESTION}]}]
    prompt = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[img] if qwen else [[img]], return_tensors="pt")
    record({"name": "image", "kind": "image", "image": f"clips/{IMAGE}", "question": IMAGE_QUESTION}, inputs, prompt)

    msg = [{"role": "user", "content": [{"type": "text", "text": TEXT_QUESTION}]}]
    prompt = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], return_tensors="pt")
    record({"name": "text", "kind": "text", "question": TEXT_QUESTION}, inputs, prompt)

    if name in SUMMARIZE:
        clip = SUMMARIZE[name]
        meta = clip_metadata(clip)
        dec = VideoDecoder(str(CLIPS / clip), seek_mode="exact")
        chunks = []
        for k, idx in enumerate(SUMMARIZE_CHUNKS):
            frames = dec.get_frames_at(indices=idx).data  # (T, C, H, W) uint8, as load_video gives them
            md = VideoMetadata(total_num_frames=meta["total_num_frames"], fps=meta["fps"],
                               duration=meta["duration"], frames_indices=idx, width=frames.shape[3],
                               height=frames.shape[2])
            msg = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": CHUNK_QUESTION}]}]
            prompt = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
            inputs = processor(text=[prompt], videos=[frames], video_metadata=[md], do_sample_frames=False,
                               return_tensors="pt")
            ids = inputs["input_ids"][0].tolist()
            chunks.append({"frame_indices": idx, "frame_times": [i / meta["fps"] for i in idx],
                           "input_ids": ids,
                           "expanded_prompt": tok.decode(ids, skip_special_tokens=False)})
        index["summarize"] = {"clip": f"clips/{clip}", "vidlm_sample": "fps:2", "vidlm_chunk": "fixed:1", "to": 3.0,
                              "question": CHUNK_QUESTION, "video_metadata": meta, "chunks": chunks}

    save_file(tensors, str(FIX / f"{name}.file-reference.safetensors"))
    (FIX / f"{name}.file-reference.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------ templates

def template_source(file: str) -> str:
    return (TEMPLATES / file).read_text()


def render_templates() -> None:
    """transformers' apply_chat_template (its Jinja environment) over varied conversations."""
    from transformers import AutoTokenizer

    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    smol_convs = {
        "system_image_multi_turn": [
            {"role": "system", "content": [{"type": "text", "text": "You are a careful assistant."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A rabbit in a meadow."}]},
            {"role": "user", "content": [{"type": "text", "text": "And the colour?"}, {"type": "image"}]},
        ],
        "two_images_text_first": [
            {"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "image"}]},
        ],
        "tool_turn": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}]},
            {"role": "tool", "content": [{"type": "text", "text": "{\"temp\": 21}"}]},
        ],
    }
    qwen_convs = {
        "system_image_video_multi_turn": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Same place?"}]},
            {"role": "assistant", "content": "Yes, the same meadow."},
            {"role": "user", "content": [{"type": "text", "text": "When does the bird appear?"}]},
        ],
        "system_list_content_vision_ids": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Count."}]},
        ],
        "tools_calls_and_responses": [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                            {"type": "function", "function": {"name": "get_weather",
                                                              "arguments": "{\"city\": \"Rome\"}"}}]},
            {"role": "tool", "content": "{\"temp\": 21}"},
            {"role": "tool", "content": "{\"temp\": 25}"},
            {"role": "assistant", "content": "Paris 21, Rome 25."},
            {"role": "user", "content": "<tool_response>\nlate\n</tool_response>"},
        ],
        "thinking_history": [
            {"role": "user", "content": "Is 7 prime?"},
            {"role": "assistant", "content": "<think>\nIt has no divisors.\n</think>\n\nYes."},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]},
            {"role": "assistant", "reasoning_content": "Looking at frames.", "content": "A rabbit."},
        ],
    }
    smol_tok = AutoTokenizer.from_pretrained(FIX / "smolvlm-tiny-sf2")
    qwen_tok = AutoTokenizer.from_pretrained(FIX / "qwen3vl-tiny")
    out = {"transformers": __import__("transformers").__version__, "cases": []}
    plan = [("smolvlm2.jinja", smol_tok, smol_convs, [{}]),
            ("qwen3vl-instruct.jinja", qwen_tok, qwen_convs, [{}, {"tools": tools}, {"add_vision_id": True}]),
            ("qwen3vl-thinking.jinja", qwen_tok, qwen_convs, [{}, {"tools": tools}, {"add_vision_id": True}])]
    for file, tok, convs, extras in plan:
        source = template_source(file)
        for conv_name, conv in convs.items():
            for extra in extras:
                for gen in (True, False):
                    kw = dict(extra)
                    tools_kw = kw.pop("tools", None)
                    text = tok.apply_chat_template(conv, chat_template=source, tools=tools_kw, tokenize=False,
                                                   add_generation_prompt=gen, **kw)
                    special = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
                    out["cases"].append({"template": file, "conversation": conv_name, "messages": conv,
                                         "add_generation_prompt": gen, "tools": tools_kw, "extra": kw,
                                         "special_tokens": special, "expected": text})
    (TEMPLATES / "renders.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"  chat templates: {len(out['cases'])} renders")


def main() -> int:
    only = set(sys.argv[1:])  # optional fixture names (default: everything)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assert (TEMPLATES / "qwen3vl-instruct.jinja").is_file(), "chat-templates/ holds the published templates"
    if not only:
        (TEMPLATES / "smolvlm2.jinja").write_text(SMOL.CHAT_TEMPLATE)
        render_templates()
        make_clips()
    for name, s in SMOL_SIZES.items():
        if not only or name in only:
            build_smolvlm(name, s)
            reference(name)
    for name, s in QWEN_SIZES.items():
        if not only or name in only:
            build_qwen(name, s)
            reference(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
