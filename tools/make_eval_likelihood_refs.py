#!/usr/bin/env python3
"""Reference option log-probabilities for `vidlm eval run --mode likelihood`, from transformers.

DEV-ONLY: CI never runs this; crates/eval/tests/likelihood_parity.rs reads what it writes
(crates/eval/tests/fixtures/likelihood-reference.json, committed).

For each tiny fixture checkpoint and clip (the file-to-tokens cases of make_fidelity_fixtures.py,
whose frames vidlm's `frames:4` reproduces), a multiple-choice question in lmms-eval's MVBench prompt
layout is asked about the video FILE through transformers' own processor (torchcodec decode,
`num_frames=4`). Two scores per option, float64 log_softmax over the vocabulary:
* letter: one forward pass over the prompt, at its last position, at the option letter's token;
* option text: one forward pass over prompt + the option's tokens, the sum over its tokens of the
  log-probability at the position that predicts each.

How to run (from the repository root):

    eval "$(../shared/tools/reference-venv.sh)"   # torch 2.15, transformers 5.24
    pip install torchcodec==0.17.0
    python tools/make_eval_likelihood_refs.py
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates" / "models" / "tests" / "fixtures"
OUT = ROOT / "crates" / "eval" / "tests" / "fixtures" / "likelihood-reference.json"

QUESTION = "Which pattern fills most of the frame?"
OPTIONS = ["coloured bars", "a rabbit", "a black screen", "moving text"]
# (fixture, clip, transformers sampling kwargs, vidlm --sample)
CASES = [
    ("smolvlm2-256m-tiny", "testsrc-4s-512.mp4", {"num_frames": 4}, "frames:4"),
    # SmolVLM2 2.2B's processor keeps 3 of the 8 asked for on this 3.1 s clip (its fps cap).
    ("smolvlm2-2.2b-tiny", "testsrc-3s1-384.mp4", {"num_frames": 8}, "frames:3"),
    ("qwen3vl-2b-tiny", "bbb-2s44-384.mp4", {"num_frames": 4, "fps": None}, "frames:4"),
]


def mvbench_prompt(question: str, options: list[str]) -> str:
    """lmms-eval's mvbench_doc_to_text with its default post_prompt."""
    opts = "".join(f"({string.ascii_uppercase[i]}) {o}\n" for i, o in enumerate(options))
    return "Question:" + question + "\nOption:\n" + opts + "Answer with the option's letter from the given choices directly."


def main() -> int:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    torch.set_num_threads(1)
    text = mvbench_prompt(QUESTION, OPTIONS)
    cases = []
    for name, clip, sampling, vidlm_sample in CASES:
        ckpt = FIX / name
        processor = AutoProcessor.from_pretrained(ckpt)
        model = AutoModelForImageTextToText.from_pretrained(
            ckpt, dtype=torch.float32, attn_implementation="eager").eval()
        path = str(FIX / "clips" / clip)
        msg = [{"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[prompt], videos=[path], do_sample_frames=True, return_tensors="pt", **sampling)
        qwen = name.startswith("qwen")
        sampled = int(inputs["video_grid_thw"][0][0]) * 2 if qwen else inputs["pixel_values"].shape[1]
        assert f"frames:{sampled}" == vidlm_sample, (name, sampled)
        with torch.no_grad():
            if qwen:
                model.model.rope_deltas = None
            logits = model(**inputs).logits[0, -1].double()
        lsm = torch.log_softmax(logits, dim=-1)
        letters = [string.ascii_uppercase[i] for i in range(len(OPTIONS))]
        letter_ids = []
        for letter in letters:
            ids = processor.tokenizer.encode(letter, add_special_tokens=False)
            assert len(ids) == 1, (name, letter, ids)
            letter_ids.append(ids[0])
        # Each option's text after the prompt: one forward pass over prompt + option tokens, the
        # sum of log_softmax at the positions that predict them.
        seq = inputs["input_ids"].shape[1]
        option_ids, option_lp = [], []
        for opt in OPTIONS:
            ids = processor.tokenizer.encode(opt, add_special_tokens=False)
            ext = dict(inputs)
            for k, v in inputs.items():
                if torch.is_tensor(v) and v.dim() == 2 and v.shape == (1, seq):
                    fill = torch.tensor([ids]) if k == "input_ids" else (
                        torch.ones((1, len(ids)), dtype=v.dtype) if k == "attention_mask"
                        else torch.zeros((1, len(ids)), dtype=v.dtype))
                    ext[k] = torch.cat([v, fill.to(v.dtype)], dim=1)
            with torch.no_grad():
                if qwen:
                    model.model.rope_deltas = None
                lg = model(**ext).logits[0].double()
            rows = torch.log_softmax(lg[seq - 1: seq - 1 + len(ids)], dim=-1)
            option_ids.append(ids)
            option_lp.append(float(sum(rows[k, t] for k, t in enumerate(ids))))
        cases.append({
            "fixture": name, "clip": f"clips/{clip}", "transformers_sampling": sampling,
            "vidlm_sample": vidlm_sample, "seq_len": int(inputs["input_ids"].shape[1]),
            "letter_ids": letter_ids, "logprobs": [float(lsm[i]) for i in letter_ids],
            "option_ids": option_ids, "option_logprobs": option_lp,
        })
        print(name, cases[-1]["logprobs"], option_lp)
    import transformers
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "transformers": transformers.__version__, "torch": torch.__version__,
        "video_decoder": "torchcodec " + __import__("torchcodec").__version__,
        "dtype": "float32", "attn_implementation": "eager",
        "question": QUESTION, "options": OPTIONS, "prompt_text": text, "cases": cases,
    }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
