"""Writes crates/media/tests/fixtures/linspace_numpy.json: the frame indices numpy's
`np.linspace(0, F - 1, N).round().astype(int)` gives (the rule of transformers' Qwen3-VL video
processor, `sample_frames`), for every N <= F <= 30 and for pairs whose exact half-way values
f64 rounds away from the exact result. vidlm-media's `frames:N` must pick the same indices.

Run in the reference venv: `eval "$(/work/shared/tools/reference-venv.sh)"; python tools/linspace_fixture.py`
"""
import json
from fractions import Fraction
from pathlib import Path

import numpy as np


def numpy_rule(f, n):
    return np.linspace(0, f - 1, n).round().astype(int).tolist()


def exact_rule(f, n):
    if n == 1:
        return [0]
    return [round(Fraction(i * (f - 1), n - 1)) for i in range(n)]


cases = [(f, n) for f in range(1, 31) for n in range(1, f + 1)]
# Pairs where f64 arithmetic moves an exact tie: the rule is numpy's, not exact arithmetic.
subtle = []
for f in range(31, 2000):
    for n in range(2, 33):
        if n < f and numpy_rule(f, n) != exact_rule(f, n):
            subtle.append((f, n))
        if len(subtle) >= 40:
            break
    if len(subtle) >= 40:
        break
out = [{"frames": f, "n": n, "indices": numpy_rule(f, n)} for f, n in cases + subtle]
path = Path(__file__).resolve().parent.parent / "crates/media/tests/fixtures/linspace_numpy.json"
path.write_text(json.dumps({"numpy": np.__version__, "cases": out}, separators=(",", ":")) + "\n")
print(f"wrote {len(out)} cases ({len(subtle)} where f64 rounding differs from exact) to {path}")
