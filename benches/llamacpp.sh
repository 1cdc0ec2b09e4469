#!/usr/bin/env bash
# vidlm against llama.cpp on this CPU, side by side in one run: the same GGUF files, the same
# thread count, the same prompt, image and frames. Lines (each with ours / llama.cpp):
#   text    pp512 and tg128 (tokens/s, llama-bench's tests) on the real SmolLM2-135M-Instruct Q4_1
#           and the full-size random SmolVLM2-256M text model in f16 and q8_0 (ours: benches/text_gen.rs)
#   vision  one 512x512 image through the vision tower + connector (ms), f16 and q8_0 mmproj (ours:
#           benches/smolvlm_gguf.rs; llama.cpp: llama-mtmd-cli's encode-time log lines, -lv 4),
#           with the tower's GFLOP/s against this machine's f32 matmul peak (candle's and torch's)
#           and its FMA peak (fused multiply-adds on registers alone, benches/smolvlm_gguf.rs)
#   video   16 frames through llama.cpp's video path (--video, ffmpeg) vs `vidlm ask` on the same clip:
#           vision seconds, and end to end (load + decode + vision + prefill + 16 tokens, wall seconds)
# llama.cpp tiles every image: an idefics3 image is an overview tile plus a grid of 512 px slices (a
# 512x512 image is 16 + 1 tiles at its default 2048 px longest edge). `--image-max-tokens 64` (what
# this script passes) brings a 512x512 image to 1 slice + the overview: 2 tiles of 64 tokens, the
# least it can do; vidlm encodes a frame as one 512 px tile. The table says what each side computed
# and gives per-tile ratios beside the per-image ones.
#
#   bash benches/llamacpp.sh [--threads N] [--reps N] [--e2e-reps N] [--only text,vision,video]
#                            [--skip-build] [--full-tiling]
# env: LLAMA_CPP_DIR (llama.cpp source; default target/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp,
#      fetched and built there when missing), VIDLM_BENCH_CLIP (default samples/bbb-720p-5s.mp4 or
#      /work/shared/media/bbb-720p-5s.mp4). Dev-only; CI does not run it. Run it on an idle machine:
#      the load average is printed before each section.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
THREADS=$(nproc)
REPS=3
E2E_REPS=1
ONLY=text,vision,video
BUILD=1
FULL_TILING=0
while [ $# -gt 0 ]; do
  case $1 in
    --threads) THREADS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --e2e-reps) E2E_REPS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    --full-tiling) FULL_TILING=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
die() { echo "llamacpp.sh: $*" >&2; exit 1; }
for t in cargo python3 ffmpeg ffprobe curl sha256sum tar; do
  command -v "$t" >/dev/null || die "needs $t on PATH"
done

SDIST=llama_cpp_python-0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA=${LLAMA_CPP_DIR:-$ROOT/target/llamacpp/$SDIST/vendor/llama.cpp}
BIN=$LLAMA/build/bin
MODELS=$ROOT/target/bench-models
WORK=$ROOT/target/llamacpp-bench
mkdir -p "$WORK" "$MODELS"
load() { echo "[load average: $(cut -d' ' -f1-3 /proc/loadavg)] $*"; }

# --- llama.cpp: PyPI's llama-cpp-python sdist bundles llama.cpp at commit 0c1e57098 (its GitHub
# repository is too large to fetch here); CPU-only CMake build of the three tools used.
if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-mtmd-cli" ]; then
  [ "$BUILD" = 1 ] || die "no llama.cpp build at $BIN (drop --skip-build, or set LLAMA_CPP_DIR)"
  command -v cmake >/dev/null || die "needs cmake (apt-get install cmake)"
  command -v c++ >/dev/null || die "needs a C++ compiler (apt-get install g++)"
  if [ ! -f "$LLAMA/convert_hf_to_gguf.py" ]; then
    [ -z "${LLAMA_CPP_DIR:-}" ] || die "LLAMA_CPP_DIR=$LLAMA is not a llama.cpp source tree"
    dl=$ROOT/target/llamacpp; mkdir -p "$dl"
    if [ ! -f "$dl/$SDIST.tar.gz" ]; then
      url=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ |
        grep -o "https://files.pythonhosted.org/[^\"#]*/$SDIST.tar.gz" | head -1)
      [ -n "$url" ] || die "no $SDIST.tar.gz on https://pypi.org/simple/llama-cpp-python/"
      curl -fsSL -o "$dl/$SDIST.tar.gz.part" "$url"
      mv "$dl/$SDIST.tar.gz.part" "$dl/$SDIST.tar.gz"
    fi
    echo "$SDIST_SHA256  $dl/$SDIST.tar.gz" | sha256sum -c --quiet - ||
      die "$dl/$SDIST.tar.gz: sha256 mismatch (delete it to fetch again)"
    tar -xzf "$dl/$SDIST.tar.gz" -C "$dl"
  fi
  echo "building llama.cpp in $LLAMA/build (long: ~40-60 min on 2 cores; log $WORK/llama-build.log)"
  # No .git in the sdist: the ceiling keeps CMake's build-info from reading vidlm's own commit.
  GIT_CEILING_DIRECTORIES=$(dirname "$LLAMA") cmake -S "$LLAMA" -B "$LLAMA/build" -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DCMAKE_BUILD_TYPE=Release > "$WORK/llama-build.log" 2>&1 ||
    { tail -20 "$WORK/llama-build.log" >&2; die "llama.cpp cmake configure failed"; }
  cmake --build "$LLAMA/build" -j "$(nproc)" --target llama-bench llama-mtmd-cli >> "$WORK/llama-build.log" 2>&1 ||
    { tail -20 "$WORK/llama-build.log" >&2; die "llama.cpp build failed"; }
fi

# --- Models (all under target/bench-models, gitignored).
SMOLLM2=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
ST=$MODELS/smolvlm2-256m-random
GG=$MODELS/smolvlm2-256m-random-mtmd-gguf
gguf() { echo "$GG/smolvlm2-256m-random-$1.gguf"; }
mmproj() { echo "$GG/mmproj-smolvlm2-256m-random-$1.gguf"; }
venv() {
  [ -n "${VENV_ON:-}" ] && return
  eval "$(bash /work/shared/tools/reference-venv.sh)" || die "no reference venv (/work/shared/tools/reference-venv.sh)"
  python -c "import sentencepiece" 2>/dev/null || pip install -q sentencepiece
  VENV_ON=1
}
if want text && [ ! -s "$SMOLLM2" ]; then
  bash /work/shared/models/fetch-smollm2.sh "$SMOLLM2"
fi
if [ ! -f "$ST/model.safetensors" ]; then
  venv; python tools/make_smolvlm_bench_checkpoint.py "$ST"
fi
if [ ! -f "$(mmproj Q8_0)" ] || [ ! -f "$(gguf F16)" ]; then
  # The "\n\n" token: llama-mtmd-cli's idefics3 layout needs it (see tools/make_gguf_fixtures.py).
  venv; python tools/make_gguf_fixtures.py "$LLAMA" --src "$ST" --out "$GG" --types f16,q8_0 --add-double-newline
fi

# --- vidlm: the benches and the CLI in the release profile (`cargo bench` builds with `bench`, which
# inherits `release`), as llama.cpp is built with CMAKE_BUILD_TYPE=Release. The dev profile with
# vidlm-models at opt-level 3, used here before 2026-12-02 to share the test build, left rayon, pulp
# and other dependencies unoptimized: candle's f32 matmul peak measured 106 GFLOP/s there against
# 203 in release on this machine, and the vision tower took 3.3-4.1 s per tile instead of 1.7-2.1.
echo "building vidlm, release profile (log $WORK/vidlm-build.log)"
cargo bench --workspace --bench text_gen --bench smolvlm_gguf --no-run > "$WORK/vidlm-build.log" 2>&1 ||
  { tail -20 "$WORK/vidlm-build.log" >&2; die "cargo bench --no-run failed"; }
cargo build --release --workspace --bin vidlm >> "$WORK/vidlm-build.log" 2>&1 ||
  { tail -20 "$WORK/vidlm-build.log" >&2; die "cargo build --release --bin vidlm failed"; }
VIDLM=$ROOT/target/release/vidlm

echo "vidlm $(git rev-parse --short HEAD) vs llama.cpp 0c1e57098 ($SDIST sdist), $THREADS threads, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
load "start"
R=$WORK/results; rm -rf "$R"; mkdir -p "$R"

# --- Text.
if want text; then
  load "text: llama-bench"
  for f in "$SMOLLM2" "$(gguf F16)" "$(gguf Q8_0)"; do
    "$BIN/llama-bench" -m "$f" -t "$THREADS" -p 512 -n 128 -r "$REPS" -o json > "$R/llama-bench-$(basename "$f" .gguf).json" 2> "$R/llama-bench.err" ||
      { tail "$R/llama-bench.err" >&2; die "llama-bench failed on $f"; }
  done
  load "text: vidlm (benches/text_gen.rs)"
  VIDLM_BENCH_THREADS=$THREADS VIDLM_BENCH_REPEATS=$REPS VIDLM_BENCH_SMOLLM2=$SMOLLM2 \
    VIDLM_BENCH_MODEL=/nonexistent VIDLM_BENCH_TEXT_GGUF="$(gguf F16),$(gguf Q8_0)" \
    cargo bench --workspace --bench text_gen > "$R/text_gen.txt" 2> "$R/text_gen.err" ||
    { tail "$R/text_gen.err" >&2; die "text_gen bench failed"; }
fi

# --- The image and the clip: 16 frames of the 5 s clip at 4 fps, scaled to 512x512 (one tile each
# for vidlm), and the first of them as a PNG.
CLIP_SRC=${VIDLM_BENCH_CLIP:-}
[ -n "$CLIP_SRC" ] || for c in samples/bbb-720p-5s.mp4 /work/shared/media/bbb-720p-5s.mp4; do
  [ -f "$c" ] && { CLIP_SRC=$c; break; }
done
[ -f "$CLIP_SRC" ] || die "no clip (set VIDLM_BENCH_CLIP)"
CLIP=$WORK/clip16-512.mp4
IMG=$WORK/frame-512.png
ffmpeg -loglevel error -y -i "$CLIP_SRC" -vf fps=4,scale=512:512 -frames:v 16 -an -c:v libx264 -crf 18 -pix_fmt yuv420p "$CLIP"
ffmpeg -loglevel error -y -i "$CLIP" -frames:v 1 "$IMG"
PROMPT="What happens in this video?"
MTMD_TILES=(--image-max-tokens 64 --image-min-tokens 64)

# --- Vision: one 512x512 image.
if want vision; then
  load "vision: llama-mtmd-cli"
  for q in F16 Q8_0; do
    for i in $(seq "$REPS"); do
      "$BIN/llama-mtmd-cli" -m "$(gguf "$q")" --mmproj "$(mmproj "$q")" --image "$IMG" -p "Describe this image." \
        -n 1 --temp 0 -t "$THREADS" -c 2048 -lv 4 "${MTMD_TILES[@]}" > "$R/mtmd-image-$q-$i.log" 2>&1 ||
        { tail "$R/mtmd-image-$q-$i.log" >&2; die "llama-mtmd-cli failed on the image ($q)"; }
    done
    if [ "$FULL_TILING" = 1 ]; then
      "$BIN/llama-mtmd-cli" -m "$(gguf "$q")" --mmproj "$(mmproj "$q")" --image "$IMG" -p "Describe this image." \
        -n 1 --temp 0 -t "$THREADS" -c 4096 -lv 4 > "$R/mtmd-image-full-$q.log" 2>&1 ||
        { tail "$R/mtmd-image-full-$q.log" >&2; die "llama-mtmd-cli failed on the image, default tiling ($q)"; }
    fi
  done
  load "vision: vidlm (benches/smolvlm_gguf.rs)"
  RAYON_NUM_THREADS=$THREADS VIDLM_BENCH_REPEATS=$REPS VIDLM_BENCH_MODEL=$ST VIDLM_BENCH_GGUF=$GG \
    VIDLM_BENCH_GGUF_TAGS=F16,Q8_0:deq VIDLM_BENCH_VISION_ONLY=1 \
    cargo bench --workspace --bench smolvlm_gguf > "$R/smolvlm_gguf.txt" 2> "$R/smolvlm_gguf.err" ||
    { tail "$R/smolvlm_gguf.err" >&2; die "smolvlm_gguf bench failed"; }
  # An independent f32 matmul peak: torch (oneDNN/MKL) on the same threads.
  venv
  python - "$THREADS" > "$R/torch-peak.txt" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
best = 0.0
for n in (1024, 2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(5):
        t = time.perf_counter(); a @ b; best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
print(f"{best:.1f}")
PY
fi

# --- Video and end to end: the same 16 frames, the same question, 16 new tokens, q8_0 files.
if want video; then
  for i in $(seq "$E2E_REPS"); do
    load "video: llama-mtmd-cli --video (run $i)"
    t0=$(date +%s.%N)
    "$BIN/llama-mtmd-cli" -m "$(gguf Q8_0)" --mmproj "$(mmproj Q8_0)" --video "$CLIP" --video-fps 4 -p "$PROMPT" \
      -n 16 --ignore-eos --temp 0 -t "$THREADS" -c 4096 -lv 4 "${MTMD_TILES[@]}" > "$R/mtmd-video-$i.log" 2>&1 ||
      { tail "$R/mtmd-video-$i.log" >&2; die "llama-mtmd-cli failed on the clip"; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" > "$R/mtmd-video-$i.wall"
    load "video: vidlm ask (run $i)"
    t0=$(date +%s.%N)
    "$VIDLM" ask --model "$(gguf Q8_0)" --mmproj "$(mmproj Q8_0)" "$CLIP" "$PROMPT" --sample frames:16 \
      --max-new-tokens 16 --temperature 0 --threads "$THREADS" --no-cache --json > "$R/ask-$i.out" 2> "$R/ask-$i.err" ||
      { tail "$R/ask-$i.err" >&2; die "vidlm ask failed"; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" > "$R/ask-$i.wall"
  done
fi
load "end"

# --- The table.
python3 - "$R" "$THREADS" "$REPS" "$E2E_REPS" <<'PY'
import glob, json, os, re, statistics as st, sys
R, threads, reps, e2e_reps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
med = st.median
rows = []  # (line, ours, llama.cpp, unit, time ratio ours/llama.cpp, note)

def row(line, ours, theirs, unit, note="", rate=False):
    if ours is None or theirs is None:
        rows.append((line, ours, theirs, unit, None, note))
        return
    # rates (tokens/s) are inverted so every ratio reads as time: < 1 is vidlm faster
    rows.append((line, ours, theirs, unit, theirs / ours if rate else ours / theirs, note))

def read(p):
    return open(p).read() if os.path.exists(p) else ""

# text
ours_text = {}
for ln in read(f"{R}/text_gen.txt").splitlines():
    f = ln.split()
    if len(f) > 8 and all(re.fullmatch(r"[\d.]+", x) for x in f[-7:]):
        ours_text[" ".join(f[:-7])] = (float(f[-6]), float(f[-5]))
for name, mine in [("SmolLM2-135M-Instruct.Q4_1", ["smollm2-135m q4_1 qgemv", "smollm2-135m q4_1 -> f32"]),
                   ("smolvlm2-256m-random-F16", ["smolvlm2-256m-random-F16 quantized", "smolvlm2-256m-random-F16 -> f32"]),
                   ("smolvlm2-256m-random-Q8_0", ["smolvlm2-256m-random-Q8_0 quantized", "smolvlm2-256m-random-Q8_0 -> f32"])]:
    p = f"{R}/llama-bench-{name}.json"
    if not os.path.exists(p):
        continue
    lb = {}
    for e in json.load(open(p)):
        key = "pp512" if e["n_prompt"] == 512 and e["n_gen"] == 0 else "tg128" if e["n_gen"] == 128 else None
        if key:
            lb[key] = med(e.get("samples_ts") or [e["avg_ts"]])
    for m in mine:
        o = ours_text.get(m)
        f32 = m.endswith("-> f32")
        how = "dequantized to f32 at load (--dequantize)" if f32 else "as stored (vidlm's default; qgemv with 8-bit activations for quantized types)"
        for i, key in enumerate(["pp512", "tg128"]):
            tag = " (ours --dequantize)" if f32 else ""
            row(f"text {name} {key}{tag}", o[i] if o else None, lb.get(key), "t/s",
                f"ours: {how}; llama.cpp on the file's own type", rate=True)

# vision
ours_vis, flops, peak_candle, peak_fma = {}, None, None, float("nan")
for ln in read(f"{R}/smolvlm_gguf.txt").splitlines():
    m = re.match(r"(gguf \S+(?: dequantized)?|safetensors f32)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", ln)
    if m:
        ours_vis[m.group(1)] = float(m.group(4)) * 1e3
    m = re.search(r"([\d.]+) GFLOP per .*matmul peak ([\d.]+) GFLOP/s", ln)
    if m:
        flops, peak_candle = float(m.group(1)), float(m.group(2))
    m = re.search(r"FMA peak ([\d.]+) GFLOP/s", ln)
    if m:
        peak_fma = float(m.group(1))
peak_torch = float(read(f"{R}/torch-peak.txt") or "nan")
# llama.cpp's encode timings: "encoding mtmd batch, n_chunks = K" ... "mtmd batch encoding done in
# N ms" (this commit: K tiles of 64 tokens per batch), or "image slice encoded in N ms" (older ones).
BATCH = re.compile(r"encoding mtmd batch, n_chunks = (\d+).*?mtmd batch encoding done in (\d+) ms", re.S)
SLICE = re.compile(r"image slice encoded in (\d+) ms")
def slices(p):
    """Per-tile milliseconds, one entry per tile."""
    t = read(p)
    out = []
    for k, ms in BATCH.findall(t):
        out += [int(ms) / int(k)] * int(k)
    return out or [int(x) for x in SLICE.findall(t)]
mtmd_tile = {}
for q, mine in [("F16", "gguf f16 dequantized"), ("Q8_0", "gguf q8_0 dequantized")]:
    runs = [slices(p) for p in sorted(glob.glob(f"{R}/mtmd-image-{q}-*.log"))]
    runs = [r for r in runs if r]
    if not runs and mine not in ours_vis:
        continue
    o = ours_vis.get(mine)
    if not runs:
        row(f"vision 512x512 image {q.lower()} mmproj", o, None, "ms", "llama.cpp: no slice timings in its log")
        continue
    tiles = len(runs[0])
    per_tile = med([x for r in runs for x in r])
    mtmd_tile[q] = per_tile
    row(f"vision 512x512 image {q.lower()} mmproj (per image)", o, med([sum(r) for r in runs]), "ms",
        f"ours 1 tile (64 tokens); llama.cpp {tiles} tiles (overview + {tiles - 1} slice, {64 * tiles} tokens)")
    row(f"vision 512x512 image {q.lower()} mmproj (per tile)", o, per_tile, "ms",
        "the same work on both sides: one 512x512 tile through the tower + connector")
    full = slices(f"{R}/mtmd-image-full-{q}.log")
    if full:
        rows.append((f"  llama.cpp default tiling, {q.lower()}", None, sum(full), "ms", None,
                     f"{len(full)} tiles, {64 * len(full)} tokens (no --image-max-tokens); not a ratio"))

# video + end to end
def mtmd_perf(log):
    t = read(log)
    pe = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", t)
    ev = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", t)
    return pe, ev
vid_ours, vid_theirs, e2e_ours, e2e_theirs, notes = [], [], [], [], {}
for i in range(1, int(e2e_reps) + 1):
    lg = f"{R}/mtmd-video-{i}.log"
    if not os.path.exists(lg):
        break
    s = slices(lg)
    t0, t1 = map(float, read(f"{R}/mtmd-video-{i}.wall").split())
    vid_theirs.append(sum(s) / 1e3)
    e2e_theirs.append(t1 - t0)
    pe, ev = mtmd_perf(lg)
    notes["theirs"] = (f"llama.cpp {len(s)} tiles ({len(s) / 16:g} per frame, 64 tokens each)"
                       + (f", prompt {pe.group(2)} tokens, {ev.group(2)} eval runs" if pe and ev else ""))
    try:
        a = json.loads(read(f"{R}/ask-{i}.out").strip().splitlines()[-1])
        u = a["usage"]
        vid_ours.append(u["seconds"]["vision"])
        notes["ours"] = (f"ours {len(a.get('frames') or [])} frames x 1 tile, prompt {u['prompt_tokens']} tokens, "
                         f"{u['generated_tokens']} generated, load {u['seconds']['load']:.2f} s")
    except (ValueError, KeyError, IndexError) as e:
        notes["ours"] = f"ours: no JSON from vidlm ask ({e})"
    t0, t1 = map(float, read(f"{R}/ask-{i}.wall").split())
    e2e_ours.append(t1 - t0)
if vid_theirs:
    note = "; ".join(notes.get(k, "") for k in ("ours", "theirs"))
    row("video 16 frames q8_0: vision s", med(vid_ours) if vid_ours else None, med(vid_theirs), "s", note)
    per_ours = med(vid_ours) / 16 * 1e3 if vid_ours else None
    tiles = len(slices(f"{R}/mtmd-video-1.log"))
    row("video 16 frames q8_0: vision per tile", per_ours, med(vid_theirs) / tiles * 1e3, "ms", "same work per tile")
    row("end to end (ask vs llama-mtmd-cli) q8_0", med(e2e_ours), med(e2e_theirs), "s wall",
        "load + decode + vision + prefill + 16 tokens; llama.cpp encodes 2 tiles per frame")

def fmt(x):
    return "-" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.2f}"
print()
print(f"threads {threads}, repeats {reps} (medians), video/end-to-end runs {e2e_reps}")
print("time ratio = ours time / llama.cpp time (tokens/s inverted): < 1 is vidlm faster")
w = max(len(r[0]) for r in rows) if rows else 10
print(f"{'line':{w}}  {'vidlm':>9}  {'llama.cpp':>9}  {'unit':6}  {'ratio':>6}  what")
for line, o, t, unit, ratio, note in rows:
    print(f"{line:{w}}  {fmt(o):>9}  {fmt(t):>9}  {unit:6}  {fmt(ratio) if ratio else '-':>6}  {note}")
if flops:
    print()
    print(f"vision tower + connector: {flops} GFLOP per 512x512 tile; f32 matmul peak {peak_candle} GFLOP/s "
          f"(candle) / {peak_torch} GFLOP/s (torch); FMA peak {peak_fma} GFLOP/s (registers only), "
          f"{threads} threads")
    peak = max(peak_candle, peak_torch if peak_torch == peak_torch else 0)
    for name, ms in ours_vis.items():
        g = flops / ms * 1e3
        print(f"  vidlm {name:24} {g:7.1f} GFLOP/s  {100 * g / peak:5.1f}% of the matmul peak  "
              f"{100 * g / peak_fma:5.1f}% of the FMA peak")
    for q, ms in mtmd_tile.items():
        g = flops / ms * 1e3
        print(f"  llama.cpp {q.lower():20} {g:7.1f} GFLOP/s  {100 * g / peak:5.1f}% of the matmul peak  "
              f"{100 * g / peak_fma:5.1f}% of the FMA peak")
PY
