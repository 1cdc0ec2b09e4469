#!/usr/bin/env bash
# Decode benchmark: vidlm-media's Sampler (decode + sample + RGB 384x384) against the ffmpeg CLI
# in the same run, on the 55 s trailer and (when present or fetchable) the 10-minute film.
#
#   bash benches/decode.sh [--reps N] [--mode auto|sequential|seek|parallel] [--only fps:1,frames:64,keyframes,all] [FILE...]
#
# Default files: samples/bbb-trailer-720p-55s.mp4, /tmp/bbb-720p-596s.mp4 (fetched with
# ../shared/media/fetch-long.sh when missing; skipped with a note when that fails) and its
# Matroska remux /tmp/bbb-720p-596s.mkv (`ffmpeg -c copy`), whose frames must be the MP4's.
# Release build.
# Run it on an idle machine: it measures wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=(--reps 3)
only=()
mode=()
files=()
while [ $# -gt 0 ]; do
  case $1 in
    --reps) reps=(--reps "$2"); shift 2 ;;
    --mode) mode=(--mode "$2"); shift 2 ;;
    --only) only=(--only "$2"); shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
if [ ${#files[@]} -eq 0 ]; then
  files=(samples/bbb-trailer-720p-55s.mp4)
  long=/tmp/bbb-720p-596s.mp4
  fetch=../shared/media/fetch-long.sh
  if [ ! -s "$long" ] && [ -f "$fetch" ]; then bash "$fetch" "$long" >/dev/null 2>&1 || true; fi
  if [ -s "$long" ]; then
    files+=("$long")
    # The same film remuxed to Matroska (most downloaded video is MKV/WebM): same frames expected.
    mkv=${long%.mp4}.mkv
    if [ ! -s "$mkv" ]; then ffmpeg -nostdin -v error -y -i "$long" -c copy "$mkv.tmp.mkv" && mv -f "$mkv.tmp.mkv" "$mkv"; fi
    files+=("$mkv")
  else echo "note: $long not available (fetch failed); trailer only"; fi
fi
if pgrep -x rustc >/dev/null; then echo "warning: rustc is running; timings will be noisy"; fi
cargo build --release -q -p vidlm-media --example decode_bench
echo "machine: $(nproc) cores, $(ffmpeg -version | head -1)"
target/release/examples/decode_bench "${reps[@]}" "${mode[@]}" "${only[@]}" "${files[@]}"
