#!/usr/bin/env bash
# Visual-token cache: the first `vidlm ask` on a clip (decode + vision encode + answer, tokens
# stored) against repeated questions on it (tokens read back: no decode, no vision), with the
# full-size SmolVLM2-256M random checkpoint on the 55 s trailer. Prints each run's wall seconds
# and the ratio repeated / first (below 1: the cache pays). Also the cost of hashing a clip's
# content (part of every cached run). Dev-only; CI does not run it.
#
#   bash benches/cache.sh    # env: VIDLM_BIN (target/debug/vidlm), VIDLM_BENCH_CLIP, VIDLM_BENCH_SAMPLE (frames:8),
#        VIDLM_BENCH_NOCACHE=1 adds a --no-cache run
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VIDLM_BIN:-$PWD/target/debug/vidlm}
CLIP=${VIDLM_BENCH_CLIP:-samples/bbb-trailer-720p-55s.mp4}
SAMPLE=${VIDLM_BENCH_SAMPLE:-frames:8}
# The checkpoint tool writes the bare weights and, beside them, a copy with the tokenizer and
# processor files the pipeline needs.
MODEL=${VIDLM_BENCH_MODEL:-$PWD/target/bench-models/smolvlm2-256m-random-pipeline}
if [ ! -f "$MODEL/config.json" ]; then
  eval "$(../shared/tools/reference-venv.sh)"
  python tools/make_smolvlm_bench_checkpoint.py "${MODEL%-pipeline}"
fi
[ -x "$BIN" ] || cargo build --bin vidlm
cache=$(mktemp -d); trap 'rm -rf "$cache"' EXIT
unset VIDLM_NO_CACHE
run() { # label, extra flags...
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" ask --model "$MODEL" "$CLIP" "What happens in this video?" --sample "$SAMPLE" \
    --max-new-tokens 16 --cache-dir "$cache" --metrics "$@" > "$cache/$label.out" 2> "$cache/$label.err" ||
    { cat "$cache/$label.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  local s; s=$(echo "$t1 - $t0" | bc)
  local status; status=$(grep -o '"cache":"[a-z]*"' "$cache/$label.err" || echo '"cache":"off"')
  printf '%-10s %8.2f s  %s\n' "$label" "$s" "$status" >&2
  echo "$s"
}
nocache=0
if [ "${VIDLM_BENCH_NOCACHE:-0}" = 1 ]; then nocache=$(run no-cache --no-cache); fi
first=$(run first)
second=$(run repeat-1)
third=$(run repeat-2)
cmp -s "$cache/first.out" "$cache/repeat-1.out" && same=yes || same=no
python3 - "$first" "$second" "$third" "$nocache" "$same" <<'PY'
import sys
first, r1, r2, nocache = map(float, sys.argv[1:5])
rep = min(r1, r2)
print(f"first (miss) {first:.2f} s, repeated (hit) {rep:.2f} s, --no-cache {nocache:.2f} s")
print(f"ratio repeated/first {rep / first:.3f}; answers identical: {sys.argv[5]}")
PY
