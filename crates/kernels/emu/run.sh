#!/usr/bin/env bash
# Checks the CUDA kernels' logic without a GPU: the CPU twins write inputs and outputs
# (tests/emu_dump.rs, an ignored test), kernel_emu.cpp compiles kernels/*.cu as C++ with shims for
# the CUDA built-ins, runs every thread of each launch grid on the CPU and compares bit for bit.
# Needs g++ (or clang++). Usage: bash crates/kernels/emu/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${VIDLM_EMU_DIR:-/tmp/vidlm-emu}"
mkdir -p "$dir"
cd "$here/../../.."
VIDLM_EMU_DIR="$dir" cargo test -q -p vidlm-kernels --release --test emu_dump -- --ignored
"${CXX:-g++}" -O2 -std=c++17 -w -o "$dir/kernel_emu" "$here/kernel_emu.cpp"
"$dir/kernel_emu" "$dir"
