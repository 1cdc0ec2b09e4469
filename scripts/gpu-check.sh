#!/usr/bin/env bash
# GPU check of vidlm-kernels, in two halves:
#   bash scripts/gpu-check.sh          (here, any machine with Rust) builds the release test and
#       bench binaries of vidlm-kernels and gathers them into .gpu/ (gitignored);
#   bash scripts/gpu-check.sh --run    (on the GPU machine: CUDA 13 libraries, no Rust, no network)
#       finds NVRTC there, runs every test binary (GPU vs CPU twins for real) and prints the kernel
#       table (benches/gpu_table.rs). Output also goes to $OUT/gpu-check.log when $OUT is set.
#   VIDLM_GPU_CHECK_CUDA=1 bash scripts/gpu-check.sh   also gathers two tests of the CUDA build
#       (scripts/build-cuda.sh): the candle hand-off (crates/kernels/tests/candle_handoff.rs) and
#       SmolVLM2 frames through our kernels into the vision tower (crates/models/tests/gpu_pixels.rs),
#       xz-packed; --run unpacks and runs them with the others.
# The binaries load libcuda/libnvrtc at run time (cudarc dynamic loading) and link no FFmpeg.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--run" ]; then
  rm -rf .gpu && mkdir -p .gpu/bin
  list=$(mktemp)
  for sub in "test --release" "bench --bench gpu_table"; do
    # shellcheck disable=SC2086  # several words on purpose; cpu_preprocess (FFmpeg) stays here
    cargo $sub -p vidlm-kernels --no-run --message-format=json \
      | python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' >>"$list"
  done
  # Stripped: the release profile keeps line tables, which would make the folder too big to carry.
  sort -u "$list" | while read -r exe; do strip -o ".gpu/bin/$(basename "$exe")" "$exe"; done
  rm -f "$list"
  # Opt-in, VIDLM_GPU_CHECK_CUDA=1: also the candle hand-off test of the CUDA build
  # (scripts/build-cuda.sh; ~20 min the first time, 36 MB stripped). It links libcuda, libnvrtc,
  # libcublas, libcurand and libcudart, which --run finds beside NVRTC (the toolkit's lib64).
  if [ "${VIDLM_GPU_CHECK_CUDA:-0}" = 1 ]; then
    cuda_exes() {
      bash scripts/build-cuda.sh test --release --no-default-features --features cuda "$@" \
        --no-run --message-format=json | python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])'
    }
    strip -o .gpu/bin/candle_handoff_cuda "$(cuda_exes -p vidlm-kernels --test candle_handoff)"
    # SmolVLM2 frames through our kernels into the vision tower (crates/models/tests/gpu_pixels.rs).
    strip -o .gpu/bin/gpu_pixels_cuda "$(cuda_exes -p vidlm-models --test gpu_pixels)"
    # Each links candle's CUDA kernels (~37 MB stripped); xz keeps the folder under the 64 MiB a
    # GPU session can carry. --run unpacks them.
    for b in .gpu/bin/*_cuda; do
      python3 -c 'import lzma, shutil, sys
with open(sys.argv[1], "rb") as i, lzma.open(sys.argv[1] + ".xz", "wb", preset=6) as o: shutil.copyfileobj(i, o)' "$b"
      rm "$b"
    done
  fi
  for b in .gpu/bin/*; do
    case "$b" in *.xz) continue ;; esac
    if ldd "$b" | grep -Eq 'libav|libsw|libpostproc'; then echo "error: $b links FFmpeg" >&2; exit 1; fi
  done
  echo "newest glibc symbol needed: $(objdump -T $(ls .gpu/bin/* | grep -v '\.xz$') | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)"
  ls -la .gpu/bin
  du -sh .gpu
  echo "now, on the GPU machine: bash scripts/gpu-check.sh --run"
  exit 0
fi

log=/dev/null
if [ -n "${OUT:-}" ]; then log="$OUT/gpu-check.log"; fi
exec > >(tee -a "$log") 2>&1
echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') gpu-check on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# Prefer the toolkit's NVRTC (it matches the driver); else any other copy on the machine.
nvrtc=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  if [ -e "$d/libnvrtc.so.13" ]; then nvrtc="$d/libnvrtc.so.13"; break; fi
done
if [ -z "$nvrtc" ]; then
  nvrtc=$(find / -xdev -name 'libnvrtc.so.13*' -not -name '*alt*' 2>/dev/null | head -1 || true)
fi
if [ -z "$nvrtc" ]; then echo "error: no libnvrtc.so.13 on this machine" >&2; exit 1; fi
export LD_LIBRARY_PATH="$(dirname "$(readlink -f "$nvrtc")"):$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "NVRTC: $nvrtc"
export VIDLM_KERNELS_FIXTURES="$PWD/crates/kernels/tests/fixtures"
export VIDLM_MODELS_FIXTURES="$PWD/crates/models/tests/fixtures"
for z in .gpu/bin/*.xz; do
  [ -e "$z" ] || continue
  python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[1][:-3], "wb") as o: shutil.copyfileobj(i, o)' "$z"
  chmod +x "${z%.xz}" && rm "$z"
done
export RUST_BACKTRACE=1
status=0
for t in .gpu/bin/*; do
  case "$(basename "$t")" in gpu_table-*) continue ;; esac
  echo "== test $(basename "$t")"
  if ! timeout 240 "$t" --nocapture; then status=1; echo "FAILED: $t"; fi
done
echo "== kernel table"
timeout 300 .gpu/bin/gpu_table-* || status=1
echo "== gpu-check exit status $status"
exit $status
