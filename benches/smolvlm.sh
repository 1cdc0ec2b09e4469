#!/usr/bin/env bash
# SmolVLM2-256M benchmark: our candle implementation against transformers, same checkpoint (full
# size, random weights), same machine, same invocation, f32 on CPU, 2 threads each by default.
# Lines: one 512x512 frame + 35 text tokens forward (and its vision + connector part), vision
# encoding of 16 frames, 32 greedy tokens. Prints both JSON results and ratios (ours / theirs:
# below 1 means faster than transformers). Dev-only; CI does not run it.
#
#   bash benches/smolvlm.sh            # env: VIDLM_BENCH_THREADS (2), VIDLM_BENCH_REPEATS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
export VIDLM_BENCH_THREADS=${VIDLM_BENCH_THREADS:-2}
export VIDLM_BENCH_REPEATS=${VIDLM_BENCH_REPEATS:-3}
export VIDLM_BENCH_MODEL=${VIDLM_BENCH_MODEL:-$PWD/target/bench-models/smolvlm2-256m-random}
export RAYON_NUM_THREADS=$VIDLM_BENCH_THREADS
eval "$(../shared/tools/reference-venv.sh)"
python tools/make_smolvlm_bench_checkpoint.py "$VIDLM_BENCH_MODEL"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
if ! cargo bench --bench smolvlm > "$out/candle.out" 2> "$out/cargo.err"; then
  cat "$out/cargo.err" >&2; exit 1
fi
tail -n 1 "$out/candle.out" > "$out/candle.json"
python benches/smolvlm_torch.py > "$out/torch.json"
python - "$out/candle.json" "$out/torch.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
print("candle      ", json.dumps(ours))
print("transformers", json.dumps(theirs))
print(f"{'line':32} {'candle s':>10} {'torch s':>10} {'ratio':>7}")
for k in ["forward_1frame_35tok_s", "vision_connector_1frame_s", "vision_connector_16frames_s", "generate_32tok_s"]:
    print(f"{k:32} {ours[k]:10.3f} {theirs[k]:10.3f} {ours[k] / theirs[k]:7.2f}")
PY
