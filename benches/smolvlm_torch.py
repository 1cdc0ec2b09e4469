#!/usr/bin/env python3
"""The transformers baseline of benches/smolvlm.rs: the same measurements on the same checkpoint,
f32, eager attention, torch with $VIDLM_BENCH_THREADS threads (default 2). Prints one JSON object
of medians in seconds. Run through benches/smolvlm.sh (dev-only; not run by CI)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import SmolVLMForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent


def timed(repeats, f):
    f()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    model_dir = Path(os.environ.get("VIDLM_BENCH_MODEL", ROOT / "target/bench-models/smolvlm2-256m-random"))
    repeats = int(os.environ.get("VIDLM_BENCH_REPEATS", "3"))
    threads = int(os.environ.get("VIDLM_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    model = SmolVLMForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    cfg = model.config
    side = cfg.vision_config.image_size
    n_img = (side // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor**2
    text = [100 + (i * 7919) % 40000 for i in range(35)]  # as benches/smolvlm.rs
    ids = torch.tensor([text[:5] + [cfg.image_token_id] * n_img + text[5:]])
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 1, 3, side, side, generator=g)
    sixteen = torch.randn(1, 16, 3, side, side, generator=g)

    with torch.inference_mode():
        vision_1 = timed(repeats, lambda: model.model.get_image_features(one))
        forward_1 = timed(repeats, lambda: model(input_ids=ids, pixel_values=one))
        vision_16 = timed(repeats, lambda: model.model.get_image_features(sixteen))
        generate_32 = timed(
            repeats,
            lambda: model.generate(
                input_ids=ids, pixel_values=one, max_new_tokens=32, min_new_tokens=32, do_sample=False
            ),
        )
    print(
        json.dumps(
            {
                "impl": "transformers",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "repeats": repeats,
                "forward_1frame_35tok_s": forward_1,
                "vision_connector_1frame_s": vision_1,
                "vision_connector_16frames_s": vision_16,
                "generate_32tok_s": generate_32,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
