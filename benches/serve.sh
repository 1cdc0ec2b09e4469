#!/usr/bin/env bash
# vidlm serve benchmark, full-size random SmolVLM2-256M (tools/make_smolvlm_bench_checkpoint.py):
# N concurrent video requests to one `vidlm serve` against the same N requests run one after
# another through `vidlm ask` (same binary, clip, settings; greedy; every server answer must equal
# `vidlm ask`'s), and time to first token: the latency of a streamed request for one token (the
# random checkpoint's tokens mostly decode to no text, so text chunks cannot be timed), alone and
# as N such requests at once.
# The ratio shows what serving adds: the model loaded once, and the frames of concurrent requests
# sharing vision-encoder batches. Dev-only; CI does not run it; run it on an idle machine.
#
#   bash benches/serve.sh     # env: VIDLM_BENCH_N (8), VIDLM_BENCH_THREADS (2), VIDLM_BENCH_MODEL,
#                             #      VIDLM_BIN (target/release/vidlm, built when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${VIDLM_BENCH_N:-8}
THREADS=${VIDLM_BENCH_THREADS:-2}
export RAYON_NUM_THREADS=$THREADS
BIN=${VIDLM_BIN:-target/release/vidlm}
MODEL=${VIDLM_BENCH_MODEL:-$PWD/target/bench-models/smolvlm2-256m-random-pipeline}
CLIP=samples/bbb-720p-5s.mp4
SAMPLE=frames:8
TOKENS=32
[ -x "$BIN" ] || cargo build --release --bin vidlm
if [ ! -e "$MODEL/tokenizer.json" ]; then
  eval "$(../shared/tools/reference-venv.sh)"
  python tools/make_smolvlm_bench_checkpoint.py "${MODEL%-pipeline}"
fi
out=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$out"' EXIT

# Baseline: one `vidlm ask` after another (each loads the model, as a script would).
t0=$(date +%s.%N)
for k in $(seq 1 "$N"); do
  "$BIN" ask "$CLIP" "Question $k: what happens in this video?" --model "$MODEL" --sample "$SAMPLE" \
    --max-new-tokens "$TOKENS" --threads "$THREADS" --json > "$out/ask-$k.json"
done
t1=$(date +%s.%N)

"$BIN" serve --model "bench=$MODEL" --port 0 --threads "$THREADS" --sample "$SAMPLE" \
  --max-new-tokens "$TOKENS" --max-batch "$N" 2> "$out/serve.err" &
server=$!
for _ in $(seq 1 600); do
  grep -q "listening on" "$out/serve.err" 2>/dev/null && break
  sleep 0.1
done
addr=$(grep -o 'http://[0-9.:]*' "$out/serve.err" | head -1)

python3 - "$addr" "$N" "$CLIP" "$out" "$t0" "$t1" <<'PY'
import json, sys, threading, time, urllib.request

addr, n, clip, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seq_s = float(sys.argv[6]) - float(sys.argv[5])
for _ in range(3000):
    try:
        if urllib.request.urlopen(addr + "/health", timeout=5).status == 200:
            break
    except Exception:
        time.sleep(0.1)

def body(k, stream, tokens=None):
    extra = {"max_tokens": tokens} if tokens else {}
    return json.dumps({
        "model": "bench", "stream": stream, **extra,
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "file://" + clip}},
            {"type": "text", "text": f"Question {k}: what happens in this video?"}]}],
    }).encode()

def ask(k, stream=False, tokens=None):
    """(answer, seconds to the first chunk after the role chunk, seconds in all)."""
    t = time.perf_counter()
    req = urllib.request.Request(addr + "/v1/chat/completions", body(k, stream, tokens),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        if not stream:
            v = json.load(r)
            return v["choices"][0]["message"]["content"], None, time.perf_counter() - t
        text, first = "", None
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for c in json.loads(line[6:]).get("choices", []):
                piece = c["delta"].get("content")
                if piece or c.get("finish_reason"):
                    first = first if first is not None else time.perf_counter() - t
                text += piece or ""
        return text, first, time.perf_counter() - t


def concurrent(**kw):
    results = [None] * n
    def client(k):
        results[k - 1] = ask(k, **kw)
    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(1, n + 1)]
    for th in threads: th.start()
    for th in threads: th.join()
    return results, time.perf_counter() - t

results, conc_s = concurrent(stream=True)
_, ttft_alone, _ = ask(1, stream=True, tokens=1)
ttfts = sorted(r[1] for r in concurrent(stream=True, tokens=1)[0])

loads = 0.0
for k in range(1, n + 1):
    want = json.load(open(f"{out}/ask-{k}.json"))
    loads += want["usage"]["seconds"]["load"]
    assert results[k - 1][0] == want["answer"], (k, results[k - 1][0], want["answer"])
print(f"{n} requests, SmolVLM2-256M (random), {clip}, frames:8, 32 tokens, greedy; all {n} answers equal vidlm ask's")
print(f"sequential vidlm ask     {seq_s:8.2f} s  ({seq_s - loads:.2f} s without its {n} model loads)")
print(f"vidlm serve, concurrent  {conc_s:8.2f} s")
print(f"ratio sequential/serve   {seq_s / conc_s:8.2f}   (without loads: {(seq_s - loads) / conc_s:.2f})")
print(f"time to first token: alone {ttft_alone:.2f} s; {n} at once: median {ttfts[len(ttfts) // 2]:.2f} s, max {ttfts[-1]:.2f} s")
PY
