#!/usr/bin/env python3
"""Builds the Idefics3 (SmolVLM v1) test fixture: a tiny random checkpoint and what transformers
computes with it.

DEV-ONLY: CI never runs this script; the Rust tests read what it wrote, which is committed.

Idefics3 (`Idefics3ForConditionalGeneration`, model_type "idefics3": HuggingFaceTB/SmolVLM-256M-
Instruct and the other SmolVLM v1 checkpoints) is the architecture SmolVLM2 was derived from: the
same vision tower, pixel-shuffle connector and llama text model, an image processor without a video
half. vidlm serves it as the next family of the registry; a clip goes to it as transformers would
take one from a v1 user: its frames as images, one global view each (no splitting), in one turn.

What it makes, under crates/models/tests/fixtures/:

* idefics3-tiny/: the checkpoint as transformers saves it (model.safetensors, config.json,
  processor_config.json, tokenizer files, chat template). Same tiny sizes, tokenizer and weight
  initialisation as smolvlm-tiny-sf2 (tools/make_smolvlm_fixtures.py), scale factor 2, tied lm_head.
* idefics3-tiny.reference.json + .reference.safetensors, for three cases: one 1280x720 image with
  image splitting; the four 64x64 frames of frames/frames.json as four images with
  `do_image_splitting=False` (what vidlm sends for a clip); text only. Each case: the prompt,
  input_ids, pixel_values, the logits at every position (f32, eager attention) and 16 greedy tokens.

Run from the repository root after tools/make_smolvlm_fixtures.py has written frames/:

    eval "$(../shared/tools/reference-venv.sh)"
    python tools/make_idefics3_fixtures.py

Deterministic: fixed seeds, fixed inputs, one thread.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_smolvlm_fixtures as smol  # noqa: E402  (the shared tokenizer, weights and constants)

FIXTURES = smol.FIXTURES
NAME = "idefics3-tiny"
FRAMES_QUESTION = "What happens in these frames?"


def build_checkpoint(out_dir: Path, seed: int) -> None:
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    tokenizer = smol.build_tokenizer(out_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in smol.BASE_SPECIAL + smol.ADDED_TOKENS}
    image_size, patch, scale_factor = 64, 8, 2
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=image_size, patch_size=patch, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        ),
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=2048, rms_norm_eps=1e-5, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            tie_word_embeddings=True, pad_token_id=ids["<|im_end|>"], bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
        ),
        scale_factor=scale_factor,
        image_token_id=ids["<image>"],
        tie_word_embeddings=True,
        pad_token_id=ids["<|im_end|>"],
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    smol.init_weights(model, seed, tied=True)
    model.tie_weights()
    model.generation_config.bos_token_id = ids["<|im_start|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|im_end|>"]
    model.save_pretrained(out_dir, safe_serialization=True)
    image_processor = Idefics3ImageProcessor(
        do_convert_rgb=True, do_resize=True, do_rescale=True, do_normalize=True, do_pad=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=1,  # PIL LANCZOS
        rescale_factor=1 / 255, max_image_size={"longest_edge": image_size},
        do_image_splitting=True, size={"longest_edge": 3 * image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer,
        image_seq_len=(image_size // patch) ** 2 // scale_factor**2, chat_template=smol.CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)


def run_cases(ckpt: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert type(model).__name__ == "Idefics3ForConditionalGeneration", type(model).__name__
    tok = processor.tokenizer
    meta = json.loads((FIXTURES / "frames" / "frames.json").read_text())
    small = [f for f in meta["frames"] if f["width"] == 64]
    large = [f for f in meta["frames"] if f["width"] == 1280]

    def msg(n_images: int, text: str) -> list:
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        return [{"role": "user", "content": content}]

    cases = [
        dict(name="image_split_1280x720", kind="image", frames=large, split=True,
             msg=msg(1, smol.IMAGE_QUESTION)),
        dict(name="frames_4_64x64", kind="frames", frames=small, split=False, msg=msg(4, FRAMES_QUESTION)),
        dict(name="text_only", kind="text", frames=[], split=True, msg=msg(0, smol.TEXT_QUESTION)),
    ]
    stop = tok.convert_tokens_to_ids("<end_of_utterance>")
    tensors: dict[str, torch.Tensor] = {}
    index = {
        "checkpoint": ckpt.name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "image_processor_class": type(processor.image_processor).__name__,
        "stop_token_ids": [stop],
        "cases": [],
    }
    for case in cases:
        prompt = processor.apply_chat_template(case["msg"], add_generation_prompt=True, tokenize=False)
        kw = {}
        if case["frames"]:
            images = [Image.open(FIXTURES / f["file"]).convert("RGB") for f in case["frames"]]
            kw = dict(images=[images], do_image_splitting=case["split"])
        inputs = processor(text=[prompt], return_tensors="pt", **kw)
        with torch.no_grad():
            logits = model(**inputs).logits[0].float()
            gen = model.generate(
                **inputs, do_sample=False, max_new_tokens=smol.MAX_NEW_TOKENS, output_logits=True,
                return_dict_in_generate=True,
            )
        prompt_len = inputs["input_ids"].shape[1]
        new_ids = smol.to_list(gen.sequences[0, prompt_len:])
        margins = []
        for step_logits in gen.logits:
            top2 = torch.topk(step_logits[0].float(), 2).values
            margins.append(float(top2[0] - top2[1]))
        key = case["name"]
        tensors[f"{key}.input_ids"] = inputs["input_ids"][0].to(torch.int64).contiguous()
        tensors[f"{key}.logits"] = logits.contiguous()
        entry = {
            "name": key,
            "kind": case["kind"],
            "question": case["msg"][0]["content"][-1]["text"],
            "frames": [
                {"file": f["file"], "width": f["width"], "height": f["height"], "timestamp": f["timestamp"]}
                for f in case["frames"]
            ],
            "do_image_splitting": case["split"],
            "prompt": prompt,
            "expanded_prompt": tok.decode(inputs["input_ids"][0], skip_special_tokens=False),
            "input_ids": smol.to_list(inputs["input_ids"][0]),
            "seq_len": prompt_len,
            "logits_shape": list(logits.shape),
            "generated_ids": new_ids,
            "greedy_top2_margins": margins,
        }
        if "pixel_values" in inputs:
            pv = inputs["pixel_values"][0].float().contiguous()
            tensors[f"{key}.pixel_values"] = pv
            entry["pixel_values_shape"] = list(pv.shape)
        index["cases"].append(entry)
        print(f"  {NAME}/{key}: {prompt_len} tokens, generated {new_ids[:6]}..., min margin {min(margins):.4f}")
    save_file(tensors, str(FIXTURES / f"{NAME}.reference.safetensors"))
    (FIXTURES / f"{NAME}.reference.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    np.random.seed(0)
    build_checkpoint(FIXTURES / NAME, seed=60)
    run_cases(FIXTURES / NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
