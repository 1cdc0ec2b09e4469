#!/usr/bin/env bash
# eval benchmark: `vidlm eval run` against the same items through `vidlm batch` in one run (items/s
# and their ratio: eval adds no cost beyond the pipeline), and what `--conditions` saves by decoding
# each video once for all conditions (frames decoded and wall time against one run per condition).
#
#   bash benches/eval.sh [--model DIR] [--per-task N] [--sample S] [--bin PATH]
#
# Default: the tiny smolvlm-tiny-sf2 fixture (the model's cost is small, so the harness's own cost
# shows), 2 items per synthetic task (16 items), frames:4, the release binary (built here).
# Run it on an idle machine: it measures wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
model=crates/models/tests/fixtures/smolvlm-tiny-sf2
per_task=2
sample=frames:4
bin=
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --per-task) per_task=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then cargo build --release -q --bin vidlm; bin=target/release/vidlm; fi
if pgrep -x rustc >/dev/null; then echo "warning: rustc is running; timings will be noisy"; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" eval synth --out "$work/synth" --seed 1 --per-task "$per_task" 2>/dev/null
suite=$work/synth/suite.jsonl
# The same items as a batch manifest: the prompts eval gives the model, as batch questions.
python3 - "$suite" "$work/batch.jsonl" <<'PY'
import json, string, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src) as f, open(dst, "w") as out:
    for line in f:
        r = json.loads(line)
        q = r["question"]
        if "options" in r:
            opts = "".join(f"({string.ascii_uppercase[i]}) {o}\n" for i, o in enumerate(r["options"]))
            q = "Question:" + q + "\nOption:\n" + opts + "Answer with the option's letter from the given choices directly."
        out.write(json.dumps({"id": r["id"], "input": f"{src.rsplit('/', 1)[0]}/{r['video']}", "question": q}) + "\n")
PY
n=$(wc -l < "$suite")
flags=(--model "$model" --sample "$sample" --max-new-tokens 16 --metrics)
now() { date +%s.%N; }
metric() { grep -o "\"$1\":[0-9.]*" "$2" | head -1 | cut -d: -f2; }
t0=$(now); "$bin" batch "$work/batch.jsonl" -o "$work/batch.out.jsonl" --overwrite "${flags[@]}" 2>"$work/batch.err" || true; t1=$(now)
"$bin" eval run "$suite" --out "$work/video" "${flags[@]}" 2>"$work/video.err" || true; t2=$(now)
"$bin" eval run "$suite" --out "$work/all" --conditions video,blind,single-frame,shuffled "${flags[@]}" 2>"$work/all.err" || true; t3=$(now)
"$bin" eval run "$suite" --out "$work/fresh" --conditions video,blind,single-frame,shuffled --no-encoding-reuse "${flags[@]}" 2>"$work/fresh.err" || true; t4=$(now)
sep=0
for c in blind single-frame shuffled; do
  s0=$(now); "$bin" eval run "$suite" --out "$work/$c" --conditions "$c" "${flags[@]}" 2>"$work/$c.err" || true; s1=$(now)
  sep=$(echo "$sep + $s1 - $s0" | bc -l)
done
reused=$(grep -o "[0-9]* frame groups, [0-9]* reused" "$work/all.err" | head -1)
python3 - "$n" "$t0" "$t1" "$t2" "$t3" "$sep" "$t4" "$reused" \
  "$(metric frames_decoded "$work/video.err")" "$(metric frames_decoded "$work/all.err")" \
  "$(metric frames_decoded "$work/blind.err")" "$(metric frames_decoded "$work/single-frame.err")" \
  "$(metric frames_decoded "$work/shuffled.err")" \
  "$(metric frames_encoded "$work/all.err")" "$(metric frames_encoded "$work/video.err")" <<'PY'
import sys
n, t0, t1, t2, t3, sep, t4 = int(sys.argv[1]), *map(float, sys.argv[2:8])
reused = sys.argv[8]
dv, dall, db, ds, dsh = map(int, sys.argv[9:14])
eall, ev1 = map(int, sys.argv[14:16])
batch, ev, allc = t1 - t0, t2 - t1, t3 - t2
print(f"items: {n}")
print(f"vidlm batch:          {batch:7.2f} s  {n / batch:6.2f} items/s")
print(f"vidlm eval run:       {ev:7.2f} s  {n / ev:6.2f} items/s  (eval/batch items/s ratio {batch / ev:.3f})")
print(f"4 conditions, 1 run:  {allc:7.2f} s  frames decoded {dall}")
print(f"4 conditions, 4 runs: {ev + sep:7.2f} s  frames decoded {dv + db + ds + dsh}  "
      f"(one run: {allc / (ev + sep):.3f} of the time, {dall / (dv + db + ds + dsh):.3f} of the decoding)")
print(f"4 conditions, 1 run, encodings reused: {allc:7.2f} s (encoder: {reused}); "
      f"afresh (--no-encoding-reuse): {t4 - t3:7.2f} s (ratio {allc / (t4 - t3):.3f}); "
      f"frames into the encode stage: {eall} (video alone {ev1})")
PY
