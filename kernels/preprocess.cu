// vidlm preprocess kernels: decoded frame -> RGB -> Pillow-exact antialiased resize -> normalize
// -> planar CHW f32/f16/bf16 in slot b of a batch. Compiled at run time by NVRTC (through cudarc,
// crates/kernels/src/gpu/mod.rs); no headers needed. The maths mirrors the CPU twin in
// crates/kernels/src/preprocess.rs exactly (integer colour conversion and convolution, a 3x256
// normalization table), so GPU and CPU outputs are identical.
//
// The resize is separable with a u8 intermediate image, as in Pillow. Pass 1 reads the source
// frame (converting YUV to RGB at every tap) and writes the intermediate; pass 2 reads the
// intermediate and writes normalized output. `vertical` says which axis pass 1 resizes.

typedef unsigned char u8;

#define PRECISION_BITS 22

__device__ __forceinline__ int clip8(int acc) {
    int v = acc >> PRECISION_BITS;
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

__device__ __forceinline__ int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

struct Src {
    const u8* base;  // the frame: plane 0 at base, planes 1 and 2 at base + off1 / base + off2
    long long off1, off2;
    int s0, s1, s2;  // row strides in bytes
    int fmt;         // 0 = RGB24, 1 = NV12, 2 = YUV420P
    int y_off, cy, crv, cgu, cgv, cbu;  // 16.16 YUV -> RGB coefficients
};

// RGB of source pixel (x, y); YUV uses the nearest chroma sample (x/2, y/2).
__device__ __forceinline__ void fetch_rgb(const Src& s, int x, int y, int& r, int& g, int& b) {
    if (s.fmt == 0) {
        const u8* p = s.base + (long long)y * s.s0 + 3 * x;
        r = p[0];
        g = p[1];
        b = p[2];
        return;
    }
    int Y = s.base[(long long)y * s.s0 + x];
    int U, V;
    if (s.fmt == 1) {
        const u8* uv = s.base + s.off1 + (long long)(y >> 1) * s.s1 + 2 * (x >> 1);
        U = uv[0];
        V = uv[1];
    } else {
        U = s.base[s.off1 + (long long)(y >> 1) * s.s1 + (x >> 1)];
        V = s.base[s.off2 + (long long)(y >> 1) * s.s2 + (x >> 1)];
    }
    int yy = s.cy * (Y - s.y_off) + (1 << 15);
    U -= 128;
    V -= 128;
    r = clamp255((yy + s.crv * V) >> 16);
    g = clamp255((yy - s.cgu * U - s.cgv * V) >> 16);
    b = clamp255((yy + s.cbu * U) >> 16);
}

// Pass 1: one thread per intermediate pixel (x < tmp_w, r < tmp_rows).
// Horizontal (vertical == 0): source row row0 + r, taps along x from bounds[2x].
// Vertical (vertical == 1): intermediate row r = output row, taps along y from bounds[2r].
extern "C" __global__ void pp_pass1(const u8* base, long long off1, long long off2, int s0, int s1,
                                    int s2, int fmt, int y_off, int cy, int crv, int cgu, int cgv,
                                    int cbu, int vertical, int tmp_w, int tmp_rows, int row0,
                                    int ksize, const int* bounds, const int* weights, u8* tmp) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= tmp_w || r >= tmp_rows) return;
    Src s = {base, off1, off2, s0, s1, s2, fmt, y_off, cy, crv, cgu, cgv, cbu};
    int idx = vertical ? r : x;
    int first = bounds[2 * idx];
    int n = bounds[2 * idx + 1];
    const int* k = weights + (long long)idx * ksize;
    int ar = 1 << (PRECISION_BITS - 1), ag = ar, ab = ar;
    for (int j = 0; j < n; ++j) {
        int pr, pg, pb;
        if (vertical) {
            fetch_rgb(s, x, first + j, pr, pg, pb);
        } else {
            fetch_rgb(s, first + j, row0 + r, pr, pg, pb);
        }
        int w = k[j];
        ar += pr * w;
        ag += pg * w;
        ab += pb * w;
    }
    u8* o = tmp + ((long long)r * tmp_w + x) * 3;
    o[0] = (u8)clip8(ar);
    o[1] = (u8)clip8(ag);
    o[2] = (u8)clip8(ab);
}

// f32 -> IEEE half, round to nearest even (the conversion instruction itself).
__device__ __forceinline__ unsigned short f32_to_f16(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

// f32 -> bfloat16, round to nearest even (NaN stays a quiet NaN), as the `half` crate does.
__device__ __forceinline__ unsigned short f32_to_bf16(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// Pass 2: one thread per output pixel (x < dst_w, y < dst_h); writes the three channel planes of
// batch slot `slot`. Vertical (vertical == 0, i.e. pass 1 was horizontal): taps along the
// intermediate's rows, whose first row is source row row0. Otherwise taps along x.
template <int DT>
__device__ __forceinline__ void pass2(const u8* tmp, int vertical_first, int tmp_w, int row0,
                                      int dst_w, int dst_h, int ksize, const int* bounds,
                                      const int* weights, const float* lut, void* out,
                                      long long slot) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    int idx = vertical_first ? x : y;
    int first = bounds[2 * idx];
    int n = bounds[2 * idx + 1];
    const int* k = weights + (long long)idx * ksize;
    int ar = 1 << (PRECISION_BITS - 1), ag = ar, ab = ar;
    for (int j = 0; j < n; ++j) {
        const u8* p = vertical_first ? tmp + ((long long)y * tmp_w + first + j) * 3
                                     : tmp + ((long long)(first - row0 + j) * tmp_w + x) * 3;
        int w = k[j];
        ar += p[0] * w;
        ag += p[1] * w;
        ab += p[2] * w;
    }
    float v[3] = {lut[clip8(ar)], lut[256 + clip8(ag)], lut[512 + clip8(ab)]};
    long long plane = (long long)dst_w * dst_h;
    long long base = slot * 3 * plane + (long long)y * dst_w + x;
    for (int c = 0; c < 3; ++c) {
        if (DT == 0) {
            ((float*)out)[base + c * plane] = v[c];
        } else if (DT == 1) {
            ((unsigned short*)out)[base + c * plane] = f32_to_f16(v[c]);
        } else {
            ((unsigned short*)out)[base + c * plane] = f32_to_bf16(v[c]);
        }
    }
}

#define PASS2(NAME, DT)                                                                         \
    extern "C" __global__ void NAME(const u8* tmp, int vertical_first, int tmp_w, int row0,     \
                                    int dst_w, int dst_h, int ksize, const int* bounds,         \
                                    const int* weights, const float* lut, void* out,            \
                                    long long slot) {                                           \
        pass2<DT>(tmp, vertical_first, tmp_w, row0, dst_w, dst_h, ksize, bounds, weights, lut,  \
                  out, slot);                                                                   \
    }

PASS2(pp_pass2_f32, 0)
PASS2(pp_pass2_f16, 1)
PASS2(pp_pass2_bf16, 2)
