// Host emulation of kernels/*.cu: compiles the CUDA C sources as C++ with small shims for the
// CUDA built-ins, runs each kernel body over its launch grid on the CPU, and compares with the
// CPU twins' outputs written by tests/emu_dump.rs. Checks the kernels' indexing and integer/float
// maths without a GPU (not warp shuffles: token_cosine is not run). Usage: see run.sh.
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <vector>
#include <string>
#include <algorithm>
using std::min; using std::max;
struct dim3 { unsigned x, y, z; };
static dim3 blockIdx, blockDim, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
static inline unsigned int __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
// The kernel converts to f16 with inline PTX; here the compiler's _Float16 (also RNE).
static unsigned short host_f2h(float v) {
    _Float16 h = (_Float16)v; unsigned short b; memcpy(&b, &h, 2); return b; }
#define asm(...) (h = host_f2h(v))
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __shfl_xor_sync(unsigned, float v, int) { return v; }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p += v; return o; }
#include "../../../kernels/preprocess.cu"
#include "../../../kernels/pool.cu"
#include "../../../kernels/scene.cu"

template <class T> std::vector<T> rd(const std::string& p) {
    FILE* f = fopen(p.c_str(), "rb"); std::vector<T> v; if (!f) { printf("missing %s\n", p.c_str()); exit(1); }
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET); v.resize(n / sizeof(T)); fread(v.data(), 1, n, f); fclose(f); return v; }

template <class F> void grid(dim3 g, dim3 b, F f) {
    blockDim = b;
    for (unsigned z = 0; z < g.z; ++z) for (unsigned by = 0; by < g.y; ++by) for (unsigned bx = 0; bx < g.x; ++bx)
    for (unsigned ty = 0; ty < b.y; ++ty) for (unsigned tx = 0; tx < b.x; ++tx) {
        blockIdx = {bx, by, z}; threadIdx = {tx, ty, 0}; f(); }
}

static std::string DIR;

int main(int argc, char** argv) {
    DIR = argc > 1 ? argv[1] : "/tmp/vidlm-emu";
    int bad = 0;
    for (int c = 0; c < 4; ++c) {
        std::string d = DIR + "/c" + std::to_string(c) + "_";
        auto m = rd<int>(d + "meta"); auto src = rd<uint8_t>(d + "src");
        auto hb = rd<int>(d + "hb"), hw = rd<int>(d + "hw"), vb = rd<int>(d + "vb"), vw = rd<int>(d + "vw");
        auto lut = rd<float>(d + "lut");
        int sw = m[0], sh = m[1], dw = m[2], dh = m[3], fmt = m[4];
        int vertical = m[16], tmp_w = m[17], tmp_rows = m[18], row0 = m[19], khs = m[20], kvs = m[21];
        std::vector<uint8_t> tmp(tmp_w * tmp_rows * 3, 0xAB);
        const int* b1 = vertical ? vb.data() : hb.data(); const int* w1 = vertical ? vw.data() : hw.data(); int k1 = vertical ? kvs : khs;
        grid({(unsigned)(tmp_w + 31) / 32, (unsigned)(tmp_rows + 7) / 8, 1}, {32, 8, 1}, [&] {
            pp_pass1(src.data(), m[5], m[6], m[7], m[8], m[9], fmt, m[10], m[11], m[12], m[13], m[14], m[15], vertical, tmp_w, tmp_rows, row0, k1, b1, w1, tmp.data()); });
        const int* b2 = vertical ? hb.data() : vb.data(); const int* w2 = vertical ? hw.data() : vw.data(); int k2 = vertical ? khs : kvs;
        size_t n = 3 * (size_t)dw * dh;
        std::vector<float> of(2 * n, NAN); std::vector<unsigned short> oh(2 * n, 0x7e00), ob(2 * n, 0x7fc0);
        dim3 g2 = {(unsigned)(dw + 31) / 32, (unsigned)(dh + 7) / 8, 1};
        grid(g2, {32, 8, 1}, [&] { pp_pass2_f32(tmp.data(), vertical, tmp_w, row0, dw, dh, k2, b2, w2, lut.data(), of.data(), 1); });
        grid(g2, {32, 8, 1}, [&] { pp_pass2_f16(tmp.data(), vertical, tmp_w, row0, dw, dh, k2, b2, w2, lut.data(), oh.data(), 1); });
        grid(g2, {32, 8, 1}, [&] { pp_pass2_bf16(tmp.data(), vertical, tmp_w, row0, dw, dh, k2, b2, w2, lut.data(), ob.data(), 1); });
        auto ef = rd<float>(d + "f32"); auto eh = rd<unsigned short>(d + "f16"); auto eb = rd<unsigned short>(d + "bf16");
        size_t df = 0, dh16 = 0, db = 0, slot0 = 0;
        for (size_t i = 0; i < n; ++i) {
            if (memcmp(&of[n + i], &ef[i], 4)) df++;
            if (oh[n + i] != eh[i]) dh16++;
            if (ob[n + i] != eb[i]) db++;
            if (!std::isnan(of[i])) slot0++;
        }
        printf("case %d %dx%d fmt %d -> %dx%d vertical_first=%d: f32 mismatches %zu, f16 %zu, bf16 %zu (of %zu), slot0 writes %zu\n", c, sw, sh, fmt, dw, dh, vertical, df, dh16, db, n, slot0);
        bad += df + dh16 + db + slot0;
    }
    { // pool_mean, T=5 H=7 W=9 D=33, kt=2 ks=2
        auto x = rd<float>(DIR + "/pool_in"); auto e = rd<float>(DIR + "/pool_out");
        std::vector<float> o(e.size(), NAN);
        grid({(unsigned)(o.size() + 255) / 256, 1, 1}, {256, 1, 1}, [&] { pool_mean(x.data(), 5, 7, 9, 33, 2, 2, 3, 4, 5, o.data()); });
        size_t bd = 0; for (size_t i = 0; i < o.size(); ++i) bd += memcmp(&o[i], &e[i], 4) != 0;
        printf("pool_mean mismatches %zu of %zu\n", bd, o.size()); bad += bd;
    }
    { // scene 641x359, 64x36 grid, 32 bins
        auto y = rd<uint8_t>(DIR + "/scene_in"); auto eg = rd<uint8_t>(DIR + "/scene_grid"); auto eh = rd<int>(DIR + "/scene_hist");
        std::vector<uint8_t> g(64 * 36); std::vector<unsigned> h(32, 0);
        grid({(64 * 36 + 127) / 128, 1, 1}, {128, 1, 1}, [&] { scene_grid(y.data(), 0, 0, 641, 641, 359, 64, 36, 3, 32, g.data(), h.data()); });
        size_t bd = 0; for (size_t i = 0; i < g.size(); ++i) bd += g[i] != eg[i]; for (int i = 0; i < 32; ++i) bd += (int)h[i] != eh[i];
        printf("scene mismatches %zu\n", bd); bad += bd;
    }
    printf(bad ? "EMULATION: MISMATCH\n" : "EMULATION: all kernels match the CPU twins exactly\n");
    return bad != 0;
}
