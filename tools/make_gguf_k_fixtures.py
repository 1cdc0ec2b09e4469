#!/usr/bin/env python3
"""Writes k-quant GGUF fixtures of a tiny SmolVLM2 the way a llama.cpp user's files are made:
llama.cpp's `convert_hf_to_gguf.py` to f32, then `llama-quantize` to Q4_K_M and Q4_K_S.

DEV-ONLY: CI never runs it; `crates/models/tests/smolvlm_gguf_k.rs` reads what it wrote, which
is committed.

`llama-quantize` picks a type per tensor (src/llama-quant.cpp): Q4_K_M gives most 2-D weights
Q4_K, `attn_v` and `ffn_down` of the "more bits" layers Q6_K, the output Q6_K; Q4_K_S gives the
first `attn_v`s Q5_K. The k-quants need rows (`ne[0]`, the input width) that are multiples of 256;
other rows fall back: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and the output to Q8_0.
SmolVLM2-256M's hidden size (576) is not a multiple of 256 and its intermediate size (1536) is,
so its Q4_K_M file is mostly fallbacks with k-quant `ffn_down`s. The tiny checkpoint here has the
same shape of problem: text hidden 64 (two 32-blocks per row: candle's Q5_0/Q5_1 dot products
want an even count, as 576 = 18 blocks is), intermediate 256, two layers (use_more_bits is false
for layer 0 and true for layer 1, so both Q4_K and Q6_K appear), untied output. Vision as
smolvlm2-256m-tiny (image 512, patch 16, scale factor 4).

It writes crates/models/tests/fixtures/smolvlm2-256m-tiny-k-gguf/:
* smolvlm2-256m-tiny-k-Q4_K_M.gguf, smolvlm2-256m-tiny-k-Q4_K_S.gguf: `llama-quantize` output;
* mmproj-smolvlm2-256m-tiny-k-F16.gguf: the converter's `--mmproj --outtype f16`;
* k-reference.json: per file the tensor -> (GGML type, shape) list as gguf-py reads it,
  the `llama-quantize` fallback summary, the text config, the prompt ids, and transformers'
  greedy tokens (8, no stop) with their top-2 margins on each file's dequantized weights and on the
  f32 GGUF (the unquantized model);
* k-reference.safetensors: `<tensor>@<TYPE>` = gguf-py's dequantization (f32, GGUF layout
  [rows, cols], Q/K rows as the converter permuted them) of every tensor of both files (a tensor
  quantized to the same type in both is stored once: the script checks its bytes are equal), and
  `logits.<FILE>` [seq, vocab] = transformers' logits at every prompt position after loading that
  GGUF (`gguf_file=`: gguf-py dequantizes, transformers un-permutes Q/K), for Q4_K_M, Q4_K_S, F32.

Deterministic (fixed seeds; llama-quantize without an imatrix is deterministic). Run from the
repository root, with llama.cpp's llama-quantize built (cmake --build build --target
llama-quantize):

    eval "$(../shared/tools/reference-venv.sh)"; pip install sentencepiece
    python tools/make_gguf_k_fixtures.py /work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/models/tests/fixtures"
NAME = "smolvlm2-256m-tiny-k"
OUT = FIX / f"{NAME}-gguf"
QUANTS = ["Q4_K_M", "Q4_K_S"]
SIZES = dict(image=512, patch=16, scale=4, longest=2048, video_edge=512, heads=4, kv=2, hidden=64,
             head_dim=16, intermediate=256, layers=2, tied=False, theta=100000.0, seed=4256)
QUESTION = "Write one short sentence about a rabbit."
NEW_TOKENS = 8


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_checkpoint(out: Path) -> None:
    """As tools/make_fidelity_fixtures.py builds smolvlm2-256m-tiny, with SIZES."""
    from transformers import (AutoTokenizer, SmolVLMConfig, SmolVLMForConditionalGeneration,
                              SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor)

    smol = load_module("make_smolvlm_fixtures")
    s = SIZES
    tok = AutoTokenizer.from_pretrained(FIX / "smolvlm-tiny-sf2")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["<|im_start|>", "<|im_end|>", "<image>", "<end_of_utterance>"]}
    seq_len = (s["image"] // s["patch"]) ** 2 // s["scale"] ** 2
    config = SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=s["image"], patch_size=s["patch"], hidden_act="gelu_pytorch_tanh",
                           layer_norm_eps=1e-6),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=s["hidden"],
                         intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["kv"], head_dim=s["head_dim"],
                         max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": s["theta"]},
                         tie_word_embeddings=s["tied"], pad_token_id=ids["<|im_end|>"],
                         bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"]),
        scale_factor=s["scale"], image_token_id=ids["<image>"], tie_word_embeddings=s["tied"],
        pad_token_id=ids["<|im_end|>"],
    )
    torch.manual_seed(s["seed"])
    model = SmolVLMForConditionalGeneration(config).eval()
    smol.init_weights(model, s["seed"], s["tied"])
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
                                 image_seq_len=seq_len, chat_template=smol.CHAT_TEMPLATE)
    processor.save_pretrained(out)


def quantize(binary: Path, src: Path, dst: Path, qtype: str) -> list[str]:
    """Runs llama-quantize; returns its per-tensor fallback warnings and the summary line."""
    p = subprocess.run([str(binary), str(src), str(dst), qtype], check=True, capture_output=True, text=True)
    log = p.stdout + p.stderr
    return [line.strip() for line in log.splitlines()
            if "falling back" in line or "required fallback" in line]


def read_tensors(path: Path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return reader, [(t.name, t.tensor_type.name, [int(x) for x in t.shape], t) for t in reader.tensors]


def greedy(model, ids: list[int]) -> tuple[list[int], list[float]]:
    seq = list(ids)
    margins = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            seq.append(int(logits.argmax()))
    return seq[len(ids):], margins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("llama_cpp", type=Path, help="llama.cpp's directory (convert_hf_to_gguf.py, build/bin)")
    ap.add_argument("--quantize", type=Path, help="llama-quantize (default: LLAMA_CPP/build/bin/llama-quantize)")
    args = ap.parse_args()
    llama = args.llama_cpp.resolve()
    binary = args.quantize or llama / "build/bin/llama-quantize"
    if not binary.is_file():
        sys.exit(f"{binary}: no llama-quantize (cmake --build build --target llama-quantize)")

    from gguf import quants
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / NAME
        build_checkpoint(ckpt)
        conv = tmp / "conv"
        subprocess.run([sys.executable, str(ROOT / "tools/make_gguf_fixtures.py"), str(llama), "--src", str(ckpt),
                        "--out", str(conv), "--types", "f32,f16"], check=True)
        f32 = conv / f"{NAME}-F32.gguf"
        shutil.copy(conv / f"mmproj-{NAME}-F16.gguf", OUT / f"mmproj-{NAME}-F16.gguf")
        fallbacks = {}
        for q in QUANTS:
            fallbacks[q] = quantize(binary, f32, OUT / f"{NAME}-{q}.gguf", q)

        text_config = json.loads((ckpt / "config.json").read_text())["text_config"]
        tok = AutoTokenizer.from_pretrained(ckpt)
        messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]

        tensors: dict[str, np.ndarray] = {}
        raw: dict[str, bytes] = {}
        files = {}
        for q in QUANTS:
            path = OUT / f"{NAME}-{q}.gguf"
            _, ts = read_tensors(path)
            entries = []
            for name, tname, shape, t in ts:
                key = f"{name}@{tname}"
                data = bytes(np.asarray(t.data).tobytes())
                if key in raw:
                    assert raw[key] == data, f"{key}: differs between files"
                else:
                    raw[key] = data
                    tensors[key] = np.ascontiguousarray(
                        quants.dequantize(t.data, t.tensor_type).astype(np.float32))
                # gguf-py's shape is GGUF's ne order (columns first); numpy's is [rows, cols].
                entries.append({"name": name, "type": tname, "ne": shape,
                                "shape": list(tensors[key].shape)})
            files[q] = {"file": path.name, "bytes": path.stat().st_size, "tensors": entries,
                        "llama_quantize_fallbacks": fallbacks[q]}

        runs = {}
        for tag, d, fname in [(q, OUT, f"{NAME}-{q}.gguf") for q in QUANTS] + [("F32", conv, f32.name)]:
            model = AutoModelForCausalLM.from_pretrained(d, gguf_file=fname, dtype=torch.float32).eval()
            with torch.no_grad():
                logits = model(torch.tensor([prompt_ids])).logits[0].float().numpy()
            tensors[f"logits.{tag}"] = np.ascontiguousarray(logits)
            gen, margins = greedy(model, prompt_ids)
            runs[tag] = {"generated_ids": gen, "greedy_top2_margins": margins,
                         "logits_max_abs": float(np.abs(logits).max())}
            del model

    save_file(tensors, str(OUT / "k-reference.safetensors"))
    llama_commit = "0c1e57098"
    ref = {
        "checkpoint": NAME,
        "sizes": SIZES,
        "text_config": text_config,
        "made_by": f"tools/make_gguf_k_fixtures.py: llama.cpp {llama_commit} convert_hf_to_gguf.py (f32) + "
                   f"llama-quantize; gguf-py, transformers {__import__('transformers').__version__}",
        "files": files,
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "new_tokens": NEW_TOKENS,
        "transformers": runs,
    }
    (OUT / "k-reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")
    for q in QUANTS:
        mix = {}
        for e in files[q]["tensors"]:
            mix[e["type"]] = mix.get(e["type"], 0) + 1
        print(q, mix)
        print(q, "\n  ".join(fallbacks[q]))


if __name__ == "__main__":
    main()
