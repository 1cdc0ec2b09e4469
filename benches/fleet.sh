#!/usr/bin/env bash
# Fleet benchmark: the same manifest (many short clips, the tiny SmolVLM2 fixture, 4 new tokens)
# through `vidlm batch` and through 1, 2 and 4 `vidlm worker --drain` processes on a local
# `nats-server -js`, in the same run. Prints wall seconds, jobs per second, the speedup over
# batch, and the queue's overhead per job: (1-worker wall - batch wall) / jobs, i.e. what a job
# pays for going through JetStream (pull, in-progress acks, storing its record, ack) and for the
# worker running jobs one pipeline run each instead of one run over the whole manifest.
#
#   bash benches/fleet.sh [--jobs N] [--debug]     # N: 120 by default
#
# Release build (--debug: the dev build, whose numeric crates are optimized too). Every process
# runs the model with --threads 1, so N workers on N cores compare with N machines. Run it on an
# idle machine: it measures wall time. Needs nats-server (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=120
profile=release
while [ $# -gt 0 ]; do
  case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v nats-server >/dev/null || { echo "nats-server is missing (scripts/setup.sh)" >&2; exit 1; }
if [ "$profile" = release ]; then cargo build --release -q --bin vidlm; else cargo build -q --bin vidlm; fi
bin=$PWD/target/$profile/vidlm
bash samples/make-synthetic.sh
model=$PWD/crates/models/tests/fixtures/smolvlm-tiny-sf2
flags=(--model "$model" --max-new-tokens 4 --threads 1)
if pgrep -x rustc >/dev/null; then echo "warning: rustc is running; timings will be noisy"; fi

work=$(mktemp -d)
nats_pid=
cleanup() { [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

clips=(samples/gen/square.mp4 samples/gen/vfr.mp4 samples/gen/rotated.mp4 samples/gen/anamorphic.mp4
  samples/gen/yuv420p10.mp4 samples/gen/square.ts samples/gen/pal8.mkv samples/bbb-720p-5s.mp4)
for ((i = 0; i < jobs; i++)); do
  clip=$PWD/${clips[i % ${#clips[@]}]}
  if ((i % 2)); then echo "{\"id\":\"j$i\",\"input\":\"$clip\",\"question\":\"What is shown?\"}"
  else echo "{\"id\":\"j$i\",\"input\":\"$clip\"}"; fi
done > "$work/jobs.jsonl"

now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }

t0=$(now)
"$bin" batch "$work/jobs.jsonl" --out "$work/batch.jsonl" --overwrite "${flags[@]}" 2>/dev/null
batch_s=$(calc "$(now) - $t0")

declare -A wall
for n in 1 2 4; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$work/store"
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/store" >"$work/nats.log" 2>&1 &
  nats_pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  q=(--queue "nats://127.0.0.1:$port")
  "$bin" submit "$work/jobs.jsonl" "${q[@]}" >/dev/null
  t0=$(now)
  pids=()
  for ((w = 0; w < n; w++)); do
    "$bin" worker "${q[@]}" --drain "${flags[@]}" 2>"$work/worker-$w.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  wall[$n]=$(calc "$(now) - $t0")
  "$bin" results "${q[@]}" --out "$work/fleet-$n.jsonl" 2>/dev/null
  got=$(wc -l < "$work/fleet-$n.jsonl")
  [ "$got" -eq "$jobs" ] || { echo "$n workers: $got results for $jobs jobs" >&2; exit 1; }
  kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; nats_pid=
done

echo "machine: $(nproc) cores; $jobs jobs (short clips, tiny model, --threads 1), $profile build, $(nats-server --version)"
printf '%-10s %8s %8s %9s\n' run wall_s jobs/s vs_batch
printf '%-10s %8.2f %8.2f %9.2f\n' batch "$batch_s" "$(calc "$jobs / $batch_s")" 1
for n in 1 2 4; do
  printf '%-10s %8.2f %8.2f %9.2f\n' "$n worker$([ "$n" -gt 1 ] && echo s)" "${wall[$n]}" \
    "$(calc "$jobs / ${wall[$n]}")" "$(calc "$batch_s / ${wall[$n]}")"
done
printf 'queue overhead per job (1 worker vs batch): %.1f ms; 1-worker wall / batch wall: %.2f\n' \
  "$(calc "(${wall[1]} - $batch_s) * 1000 / $jobs")" "$(calc "${wall[1]} / $batch_s")"
