#!/usr/bin/env bash
# One-time setup for building and testing vidlm on Debian/Ubuntu (run as root or with sudo):
#  1. FFmpeg development libraries + clang (for ffmpeg-sys-next's bindgen) + the ffmpeg CLI (tests
#     compare against ffprobe, and samples/make-synthetic.sh makes test clips with it) + nats-server
#     and openssl (tests/cli_fleet.rs runs the worker fleet against a real `nats-server -js`, and
#     over TLS with a CA it makes), and a font for the labels of `vidlm eval`'s report.png;
#  2. NVIDIA's NVRTC and CUDA headers from PyPI into .cuda/ (no GPU needed: CI compiles every kernel);
#  3. the synthetic sample clips (samples/gen/) and the conformance matrix (samples/gen/conformance/).
# Safe to rerun: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev
  libswresample-dev clang libclang-dev pkg-config ffmpeg nats-server openssl fonts-dejavu-core)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# NVRTC 13.0 (pinned: the GPU machines' driver is CUDA 13.0 and cannot load newer PTX). vidlm-kernels
# loads .cuda/nvidia/cu13/lib/libnvrtc.so.13 by path when it is not on the library path, so tests
# need no LD_LIBRARY_PATH (VIDLM_NVRTC_DIR points elsewhere). The kernels include no CUDA headers.
if [ ! -e .cuda/nvidia/cu13/lib/libnvrtc.so.13 ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target .cuda \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96
fi

# The official openai Python client, which tests/cli_serve.rs drives `vidlm serve` with, and
# prometheus-client, which parses its /metrics, in a venv of their own (.venv-ci/, git-ignored).
if ! .venv-ci/bin/python -c "import openai, prometheus_client" 2>/dev/null; then
  python3 -m venv .venv-ci 2>/dev/null || {
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv .venv-ci
  }
  .venv-ci/bin/python -m pip install -q --disable-pip-version-check "openai==3.57.0" "prometheus-client==0.26.0"
fi

bash samples/make-synthetic.sh
bash samples/make-conformance.sh
echo "setup done"
