#!/usr/bin/env python3
"""Builds a full-size SmolVLM2-256M checkpoint with random weights, for the benchmark only.

DEV-ONLY (benches/smolvlm.sh runs it when the checkpoint is missing). The architecture is the real
HuggingFaceTB/SmolVLM2-256M-Video-Instruct one -- vision 768 hidden, 12 layers, 12 heads, MLP 3072,
image 512, patch 16; scale factor 4 (64 tokens per image); text (llama) 576 hidden, 30 layers, 9
heads, 3 kv heads, head dim 64, MLP 1536, vocab 49280, rope theta 100000, untied lm_head -- with
transformers' own random initialisation (seed 0), saved in f32 by `save_pretrained`. About 1 GB:
written under target/ (gitignored), never committed. Timing does not depend on the values.

    eval "$(../shared/tools/reference-venv.sh)"
    python tools/make_smolvlm_bench_checkpoint.py [OUT_DIR]   # default target/bench-models/smolvlm2-256m-random

It also writes OUT_DIR-pipeline, the same weights (symlinked) with a tokenizer, chat template and
processor config, so the whole pipeline can run on it (crates/pipeline/benches/pipeline.rs): the
tokenizer is the tiny fixture's (its ids fit the 49280-row embedding), config.json's image_token_id
is set to that tokenizer's <image> id, and the processor sizes are the real 512 px ones.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "target" / "bench-models" / "smolvlm2-256m-random"

IMAGE_TOKEN_ID = 49190
END_OF_UTTERANCE_ID = 49279


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    if (out / "model.safetensors").is_file():
        print(f"{out} already there")
    else:
        write_checkpoint(out)
    write_pipeline_variant(out)


def write_pipeline_variant(out: Path) -> None:
    """OUT-pipeline: the random weights with a working tokenizer and the real processor sizes."""
    dst = out.with_name(out.name + "-pipeline")
    if (dst / "config.json").is_file():
        print(f"{dst} already there")
        return
    tiny = ROOT / "crates" / "models" / "tests" / "fixtures" / "smolvlm-tiny-sf4"
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(tiny / name, tmp / name)
    shutil.copy(out / "generation_config.json", tmp / "generation_config.json")
    (tmp / "model.safetensors").symlink_to(Path("..") / out.name / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    config["image_token_id"] = json.loads((tiny / "config.json").read_text())["image_token_id"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    proc = json.loads((tiny / "processor_config.json").read_text())
    for key in ["image_processor", "video_processor"]:
        proc[key]["max_image_size"] = {"longest_edge": 512}
    proc["image_processor"]["size"] = {"longest_edge": 2048}
    proc["video_processor"]["size"] = {"longest_edge": 512}
    proc["video_processor"]["video_sampling"]["video_size"] = {"longest_edge": 512}
    proc["image_seq_len"] = 64
    (tmp / "processor_config.json").write_text(json.dumps(proc, indent=2))
    tmp.rename(dst)  # nothing written half
    print(f"wrote {dst}")


def write_checkpoint(out: Path) -> None:
    config = SmolVLMConfig(
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=512, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        ),
        text_config=dict(
            model_type="llama", vocab_size=49280, hidden_size=576, intermediate_size=1536,
            num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
            max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            tie_word_embeddings=False, pad_token_id=2, bos_token_id=1, eos_token_id=END_OF_UTTERANCE_ID,
        ),
        scale_factor=4,
        image_token_id=IMAGE_TOKEN_ID,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config).eval().to(torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(out)  # nothing written half
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n / 1e6:.0f}M parameters)")


if __name__ == "__main__":
    main()
