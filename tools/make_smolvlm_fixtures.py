#!/usr/bin/env python3
"""Builds the SmolVLM2 test fixtures: tiny random checkpoints and what transformers computes with them.

DEV-ONLY: CI never runs this script; it runs the Rust tests against the files this script wrote and
the repository commits. Re-run it only to change the fixtures, then commit everything it wrote.

What it makes, under crates/models/tests/fixtures/ (format: crates/models/tests/fixtures/README.md):

* frames/: frames decoded from samples/bbb-720p-5s.mp4 by the ffmpeg CLI, saved as RGB24 PNG, at
  the tiny model's size (64x64) and at 1280x720 -- so Rust and Python read the exact same RGB.
* smolvlm-tiny-sf2/ and smolvlm-tiny-sf4/: two tiny random `SmolVLMForConditionalGeneration`
  checkpoints (model_type "smolvlm") saved exactly as transformers saves them (model.safetensors,
  config.json, generation_config.json, tokenizer.json, tokenizer_config.json, processor_config.json,
  chat_template.jinja, ...). Vision: hidden 32, 2 layers, 4 heads, image 64, patch 8. Text (llama):
  hidden 64, 2 layers, 4 heads, 2 kv heads, a ~1k byte-level BPE vocabulary trained here with the
  `tokenizers` library on generated sentences, plus SmolVLM2's added tokens (<global-img>,
  <row_R_col_C>, <fake_token_around_image>, <image>, <end_of_utterance>) in the real order.
  sf2: scale factor 2, tied lm_head (no lm_head.weight in the file); sf4: scale factor 4, untied.
* smolvlm-tiny-sf{2,4}.reference.json + .reference.safetensors: for each case (a 1-frame video
  from a 1280x720 frame, a 4-frame video from 64x64 frames, one 1280x720 image with image
  splitting, text only), what transformers' real processor and model give in f32 with eager
  attention: the prompt text, input_ids, attention_mask, pixel_values, pixel_attention_mask,
  logits at every position, and up to 16 greedy tokens (ids and decoded text).
* smolvlm-processor-extra.json: Python num2words' English cardinals (the video intro writes the
  frame count as a word).
* smollm2-gguf-reference.json: SmolLM2-135M-Instruct Q4_1 GGUF loaded by transformers (dequantized
  to f32) greedily completing a fixed ChatML prompt: prompt ids, generated ids and text, first-step
  top-5 logits.

How to run (from the repository root; takes about a minute on 2 cores):

    eval "$(../shared/tools/reference-venv.sh)"      # torch 2.15, transformers 5.24, num2words
    python tools/make_smolvlm_fixtures.py [--skip-gguf] [--gguf PATH]

Needs the ffmpeg CLI on PATH and, for the GGUF reference, /work/models/SmolLM2-135M-Instruct.Q4_1.gguf
(made by ../shared/models/fetch-smollm2.sh). Deterministic: fixed seeds, fixed inputs, one thread;
re-running it rewrites byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "models" / "tests" / "fixtures"
VIDEO = ROOT / "samples" / "bbb-720p-5s.mp4"
DEFAULT_GGUF = Path("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf")

QUESTION = "What is happening in this video?"
IMAGE_QUESTION = "Describe this image."
TEXT_QUESTION = "Write one short sentence about a rabbit."
GGUF_PROMPT = "Describe a sunset over the sea in two sentences."
MAX_NEW_TOKENS = 16

# Frame indices decoded from the 25 fps clip; timestamp = index / 25 (the stream starts at pts 0).
VIDEO_FPS = 25.0
SMALL_FRAME_INDICES = [0, 40, 80, 120]  # 0.0 s, 1.6 s, 3.2 s, 4.8 s -> 00:00 00:01 00:03 00:04
LARGE_FRAME_INDEX = 60  # 2.4 s

# SmolVLM2's added tokens, in the order (and id offsets) of the real checkpoint: <global-img>, the 36
# <row_r_col_c> tokens, <fake_token_around_image>, <image>, then <end_of_utterance> (the real
# checkpoint has 88 <|reserved_special_token_i|> before it; left out here to keep the vocab ~1k).
ADDED_TOKENS = (
    ["<global-img>"]
    + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    + ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
)
# The real SmolLM2 vocabulary starts with these (ids 0, 1, 2).
BASE_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_VOCAB = 960  # trained vocabulary; + 39 added tokens = 999 ids

# The checkpoint's own chat template (HuggingFaceTB/SmolVLM2-*: chat_template.json). It has no video
# branch: for conversations with a video, transformers' SmolVLMProcessor.apply_chat_template swaps in
# its DEFAULT_CHAT_TEMPLATE instead, which these fixtures exercise.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def extract_frame(index: int, out: Path, size: tuple[int, int] | None) -> None:
    """Decodes frame `index` of the sample clip to an RGB24 PNG (optionally scaled by ffmpeg)."""
    vf = f"select=eq(n\\,{index})"
    if size is not None:
        vf += f",scale={size[0]}:{size[1]}:flags=lanczos"
    run(["ffmpeg", "-v", "error", "-y", "-i", str(VIDEO), "-vf", vf, "-frames:v", "1",
         "-pix_fmt", "rgb24", str(out)])


def make_frames(frames_dir: Path) -> dict:
    frames_dir.mkdir(parents=True, exist_ok=True)
    meta = {"video": "samples/bbb-720p-5s.mp4", "fps": VIDEO_FPS, "frames": []}
    for idx in SMALL_FRAME_INDICES:
        name = f"bbb-n{idx:03d}-64x64.png"
        extract_frame(idx, frames_dir / name, (64, 64))
        meta["frames"].append({"file": f"frames/{name}", "index": idx, "timestamp": idx / VIDEO_FPS})
    name = f"bbb-n{LARGE_FRAME_INDEX:03d}-1280x720.png"
    extract_frame(LARGE_FRAME_INDEX, frames_dir / name, None)
    meta["frames"].append(
        {"file": f"frames/{name}", "index": LARGE_FRAME_INDEX, "timestamp": LARGE_FRAME_INDEX / VIDEO_FPS}
    )
    for f in meta["frames"]:
        w, h = Image.open(FIXTURES / f["file"]).size
        f["width"], f["height"] = w, h
    return meta


def load_rgb(rel: str) -> np.ndarray:
    img = Image.open(FIXTURES / rel)
    assert img.mode == "RGB", (rel, img.mode)
    return np.asarray(img, dtype=np.uint8).copy()


def training_corpus() -> list[str]:
    """Deterministic English-like sentences (plus the prompt words) to train the tiny BPE on."""
    rng = random.Random(1234)
    subjects = ["a rabbit", "the bird", "a big rabbit", "two squirrels", "the sun", "a butterfly",
                "the tree", "a small flower", "the river", "an apple", "the forest", "a cloud"]
    verbs = ["jumps over", "looks at", "sits near", "runs past", "eats", "hides behind", "waits for",
             "plays with", "smiles at", "walks around", "flies above", "sleeps under"]
    objects = ["the grass", "a stone", "the hill", "a red apple", "the water", "an old log",
               "the morning light", "a tall tree", "the meadow", "a quiet pond", "the sky"]
    extras = ["", " slowly", " in the morning", " happily", " again", " for a while", " today"]
    lines = []
    for _ in range(3000):
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(extras)}."
        lines.append(s[0].upper() + s[1:])
    # Pseudo-words from syllables give the trainer enough distinct pairs to reach a ~1k vocabulary.
    onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "ch"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]
    for _ in range(4000):
        words = ["".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
                 for _ in range(rng.randint(3, 9))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
    lines += [QUESTION, IMAGE_QUESTION, TEXT_QUESTION, "User: Assistant: frames video image",
              "You are provided the following series of one two three four frames from a video.",
              "Frame from 00:00: 00:01: 00:02: 00:03: 00:04: 0:00:05 [H:MM:SS]",
              "0123456789 What is happening? Describe it in detail, please!"] * 20
    return lines


def build_tokenizer(out_dir: Path):
    """Trains the byte-level BPE (SmolLM2-style pre-tokenizer) and wraps it as transformers saves it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # As SmolLM2's tokenizer.json: split digits one by one, then GPT-2 byte-level.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, special_tokens=BASE_SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
        truncation_side="left",
    )
    return fast


def init_weights(model: torch.nn.Module, seed: int, tied: bool) -> None:
    """Re-randomizes every parameter with scales that keep activations O(1) (clear argmax margins).

    With a tied lm_head, large input embeddings make every position predict its own input token
    (logit |e|^2); smaller embeddings there let the layers, and so the image, drive the output.
    """
    g = torch.Generator().manual_seed(seed)
    embed_std = 0.05 if tied else 1.0
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(embed_std * torch.randn(p.shape, generator=g))
            elif "position_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))


def build_checkpoint(out_dir: Path, scale_factor: int, tied: bool, seed: int):
    from transformers import (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor,
                              SmolVLMProcessor, SmolVLMVideoProcessor)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    tokenizer = build_tokenizer(out_dir)
    vocab = len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in BASE_SPECIAL + ADDED_TOKENS}
    image_size, patch = 64, 8
    image_seq_len = (image_size // patch) ** 2 // (scale_factor ** 2)
    config = SmolVLMConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=image_size, patch_size=patch, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        ),
        text_config=dict(
            model_type="llama", vocab_size=vocab, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=2048, rms_norm_eps=1e-5, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            tie_word_embeddings=tied, pad_token_id=ids["<|im_end|>"], bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
        ),
        scale_factor=scale_factor,
        image_token_id=ids["<image>"],
        tie_word_embeddings=tied,
        pad_token_id=ids["<|im_end|>"],
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config).eval()
    init_weights(model, seed, tied)
    if tied:
        model.tie_weights()
    model.generation_config.bos_token_id = ids["<|im_start|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|im_end|>"]
    model.save_pretrained(out_dir, safe_serialization=True)

    common = dict(
        do_convert_rgb=True, do_resize=True, do_rescale=True, do_normalize=True, do_pad=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=1,  # PIL LANCZOS
        rescale_factor=1 / 255, max_image_size={"longest_edge": image_size},
    )
    # Real checkpoint: size = 4 x max_image_size; 3 x here keeps the image case small (2x3 crops
    # for a 16:9 image) while still splitting rows and columns differently.
    image_processor = SmolVLMImageProcessor(
        **common, do_image_splitting=True, size={"longest_edge": 3 * image_size},
    )
    video_processor = SmolVLMVideoProcessor(
        **common, size={"longest_edge": image_size},
        video_sampling={"fps": 1, "max_frames": 64, "video_size": {"longest_edge": image_size}},
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    return ids


def to_list(t: torch.Tensor) -> list:
    return t.detach().cpu().tolist()


def run_cases(ckpt: Path, frames_meta: dict, name: str) -> None:
    """Loads the checkpoint back as any user would and records what transformers computes."""
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tok = processor.tokenizer
    small = [f for f in frames_meta["frames"] if f["width"] == 64]
    large = [f for f in frames_meta["frames"] if f["width"] == 1280]

    video_msg = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    image_msg = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": IMAGE_QUESTION}]}]
    text_msg = [{"role": "user", "content": [{"type": "text", "text": TEXT_QUESTION}]}]

    cases = []
    # 1 frame at 1280x720 (exercises the resize), no container duration: transformers then writes
    # int(last timestamp) as the duration.
    cases.append(dict(name="video_1frame_1280x720", kind="video", frames=large, duration=None, msg=video_msg))
    # 4 frames already at the model size (pixel values must match to 1e-5), duration of the clip.
    cases.append(dict(name="video_4frames_64x64", kind="video", frames=small, duration=5.312, msg=video_msg))
    cases.append(dict(name="image_split_1280x720", kind="image", frames=large, duration=None, msg=image_msg))
    cases.append(dict(name="text_only", kind="text", frames=[], duration=None, msg=text_msg))

    tensors: dict[str, torch.Tensor] = {}
    index = {
        "checkpoint": ckpt.name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "image_processor_class": type(processor.image_processor).__name__,
        "video_processor_class": type(processor.video_processor).__name__,
        "stop_token_ids": [tok.convert_tokens_to_ids("<end_of_utterance>")],
        "image_token_id": model.config.image_token_id,
        "cases": [],
    }
    for case in cases:
        prompt = processor.apply_chat_template(case["msg"], add_generation_prompt=True, tokenize=False)
        kw = {}
        if case["kind"] == "video":
            video = np.stack([load_rgb(f["file"]) for f in case["frames"]])  # (T, H, W, 3) uint8
            meta = VideoMetadata(
                total_num_frames=132, fps=VIDEO_FPS, width=video.shape[2], height=video.shape[1],
                duration=case["duration"], frames_indices=[f["index"] for f in case["frames"]],
            )
            kw = dict(videos=[video], video_metadata=[meta], do_sample_frames=False)
        elif case["kind"] == "image":
            kw = dict(images=[[Image.open(FIXTURES / case["frames"][0]["file"]).convert("RGB")]])
        inputs = processor(text=[prompt], return_tensors="pt", **kw)
        # The processor's own chat-template+tokenize path must agree with the two-step path above.
        ids_direct = tok(processor.batch_decode(inputs["input_ids"])[0], add_special_tokens=False)["input_ids"]
        assert ids_direct == to_list(inputs["input_ids"][0]), "tokenization is not a round trip"
        expanded = tok.decode(inputs["input_ids"][0], skip_special_tokens=False)
        if case["kind"] != "video":
            # The one-call path users take (template + tokenize, no special tokens added after a BOS)
            # gives the same ids and pixels as the two-step path recorded here.
            msg = json.loads(json.dumps(case["msg"]))
            if case["kind"] == "image":
                msg[0]["content"][0]["image"] = Image.open(FIXTURES / case["frames"][0]["file"]).convert("RGB")
            one = processor.apply_chat_template(
                msg, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            assert torch.equal(one["input_ids"], inputs["input_ids"]), case["name"]
            if "pixel_values" in inputs:
                assert torch.equal(one["pixel_values"], inputs["pixel_values"]), case["name"]

        with torch.no_grad():
            out = model(**inputs)
            logits = out.logits[0].float()
            gen = model.generate(
                **inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, output_logits=True,
                return_dict_in_generate=True,
            )
        prompt_len = inputs["input_ids"].shape[1]
        new_ids = to_list(gen.sequences[0, prompt_len:])
        margins = []
        for step_logits in gen.logits:
            top2 = torch.topk(step_logits[0].float(), 2).values
            margins.append(float(top2[0] - top2[1]))
        finish = "stop" if new_ids and new_ids[-1] in index["stop_token_ids"] else "length"

        key = case["name"]
        tensors[f"{key}.input_ids"] = inputs["input_ids"][0].to(torch.int64).contiguous()
        tensors[f"{key}.attention_mask"] = inputs["attention_mask"][0].to(torch.int64).contiguous()
        tensors[f"{key}.logits"] = logits.contiguous()
        entry = {
            "name": key,
            "kind": case["kind"],
            "question": case["msg"][0]["content"][-1]["text"],
            "frames": [
                {"file": f["file"], "width": f["width"], "height": f["height"], "timestamp": f["timestamp"]}
                for f in case["frames"]
            ],
            "video_duration": case["duration"],
            "chat_template": "processor DEFAULT_CHAT_TEMPLATE (video)" if case["kind"] == "video" else "checkpoint",
            "prompt": prompt,
            "expanded_prompt": expanded,
            "input_ids": to_list(inputs["input_ids"][0]),
            "seq_len": prompt_len,
            "image_token_count": int((inputs["input_ids"][0] == model.config.image_token_id).sum()),
            "logits_shape": list(logits.shape),
            "logits_max_abs": float(logits.abs().max()),
            "generated_ids": new_ids,
            "generated_text": tok.decode(new_ids, skip_special_tokens=True),
            "generated_text_with_special": tok.decode(new_ids, skip_special_tokens=False),
            "greedy_top2_margins": margins,
            "finish": finish,
        }
        if "pixel_values" in inputs:
            pv = inputs["pixel_values"][0].float().contiguous()  # [n_images, 3, H, W]
            tensors[f"{key}.pixel_values"] = pv
            entry["pixel_values_shape"] = list(pv.shape)
            if "pixel_attention_mask" in inputs:
                tensors[f"{key}.pixel_attention_mask"] = inputs["pixel_attention_mask"][0].to(torch.int64).contiguous()
        index["cases"].append(entry)
        print(f"  {name}/{key}: {prompt_len} tokens, generated {new_ids[:6]}... ({finish}), "
              f"min margin {min(margins):.4f}")

    save_file(tensors, str(FIXTURES / f"{name}.reference.safetensors"))
    (FIXTURES / f"{name}.reference.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")


def processor_extra() -> None:
    from num2words import num2words

    words = {str(n): num2words(n) for n in list(range(0, 301)) + [999, 1000, 1001, 1100, 1234, 2000, 12345]}
    (FIXTURES / "smolvlm-processor-extra.json").write_text(
        json.dumps({"num2words_en": words}, indent=0) + "\n"
    )


def gguf_reference(gguf: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.exists():
        print(f"skipping the GGUF reference: {gguf} not found (../shared/models/fetch-smollm2.sh)")
        return
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": GGUF_PROMPT}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(
            prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False, max_new_tokens=24,
            output_logits=True, return_dict_in_generate=True,
        )
    new_ids = to_list(gen.sequences[0, prompt_ids.shape[1]:])
    first = gen.logits[0][0].float()
    top = torch.topk(first, 5)
    margins = [float(torch.topk(l[0].float(), 2).values.diff().abs()) for l in gen.logits]
    ref = {
        "gguf": gguf.name,
        "transformers": __import__("transformers").__version__,
        "dtype": "float32 (transformers dequantizes the Q4_1 weights)",
        "chat_template": tok.chat_template,
        "messages": messages,
        "prompt": prompt,
        "prompt_ids": to_list(prompt_ids[0]),
        "max_new_tokens": 24,
        "eos_token_id": model.generation_config.eos_token_id,
        "generated_ids": new_ids,
        "generated_text": tok.decode(new_ids, skip_special_tokens=True),
        "greedy_top2_margins": margins,
        "first_step_top5": [{"id": int(i), "token": tok.convert_ids_to_tokens(int(i)), "logit": float(v)}
                            for v, i in zip(top.values, top.indices)],
    }
    (FIXTURES / "smollm2-gguf-reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    print(f"  gguf: {ref['generated_text']!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-gguf", action="store_true", help="do not (re)write smollm2-gguf-reference.json")
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    frames_meta = make_frames(FIXTURES / "frames")
    (FIXTURES / "frames" / "frames.json").write_text(json.dumps(frames_meta, indent=1) + "\n")
    processor_extra()
    for name, sf, tied, seed in [("smolvlm-tiny-sf2", 2, True, 20), ("smolvlm-tiny-sf4", 4, False, 40)]:
        build_checkpoint(FIXTURES / name, sf, tied, seed)
        run_cases(FIXTURES / name, frames_meta, name)
    if not args.skip_gguf:
        gguf_reference(args.gguf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
