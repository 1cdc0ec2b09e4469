// vidlm token pooling kernels (NVRTC, no headers). Mirrors crates/kernels/src/pool.rs: the same
// sums in the same order with explicitly rounded operations (__fadd_rn / __fmul_rn are never
// fused into FMAs), so GPU and CPU agree bit for bit.

// Mean over windows of kt frames x ks x ks tokens of a [T, H, W, D] tensor; one thread per output
// value of the [oT, oH, oW, D] result. Partial windows at the ends average what they hold.
extern "C" __global__ void pool_mean(const float* in, int T, int H, int W, int D, int kt, int ks,
                                     int oT, int oH, int oW, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)oT * oH * oW * D;
    if (i >= total) return;
    int c = (int)(i % D);
    long long p = i / D;
    int ow = (int)(p % oW);
    int oh = (int)((p / oW) % oH);
    int ot = (int)(p / ((long long)oW * oH));
    int t1 = min(ot * kt + kt, T), h1 = min(oh * ks + ks, H), w1 = min(ow * ks + ks, W);
    float s = 0.0f;
    for (int t = ot * kt; t < t1; ++t)
        for (int h = oh * ks; h < h1; ++h)
            for (int w = ow * ks; w < w1; ++w)
                s = __fadd_rn(s, in[(((long long)t * H + h) * W + w) * D + c]);
    int count = (t1 - ot * kt) * (h1 - oh * ks) * (w1 - ow * ks);
    out[i] = __fdiv_rn(s, (float)count);
}

// Per-token cosine similarity of frames pa[p] and pb[p]: one warp per (pair, token). Lane l sums
// channels l, l+32, ...; the lanes are then combined by a butterfly (xor 16, 8, 4, 2, 1).
extern "C" __global__ void token_cosine(const float* tok, int N, int D, const int* pa,
                                        const int* pb, int npairs, float eps, float* out) {
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (warp >= (long long)npairs * N) return;  // whole warps leave together
    int p = (int)(warp / N);
    int n = (int)(warp % N);
    const float* a = tok + ((long long)pa[p] * N + n) * D;
    const float* b = tok + ((long long)pb[p] * N + n) * D;
    float dot = 0.0f, na = 0.0f, nb = 0.0f;
    for (int i = lane; i < D; i += 32) {
        float x = a[i], y = b[i];
        dot = __fadd_rn(dot, __fmul_rn(x, y));
        na = __fadd_rn(na, __fmul_rn(x, x));
        nb = __fadd_rn(nb, __fmul_rn(y, y));
    }
    for (int off = 16; off > 0; off >>= 1) {
        dot = __fadd_rn(dot, __shfl_xor_sync(0xffffffffu, dot, off));
        na = __fadd_rn(na, __shfl_xor_sync(0xffffffffu, na, off));
        nb = __fadd_rn(nb, __shfl_xor_sync(0xffffffffu, nb, off));
    }
    if (lane == 0) {
        float den = fmaxf(__fmul_rn(__fsqrt_rn(na), __fsqrt_rn(nb)), eps);
        out[warp] = __fdiv_rn(dot, den);
    }
}
