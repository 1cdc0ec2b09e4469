// vidlm scene-score kernel (NVRTC, no headers). Mirrors crates/kernels/src/scene.rs: each frame's
// luma is box-averaged onto a grid_w x grid_h grid (integer sums, rounded mean) and the grid
// values are counted into a histogram. Exact integers, so GPU and CPU agree exactly.

typedef unsigned char u8;

__device__ __forceinline__ void span(int c, int cells, int size, int& a, int& b) {
    int s = (int)((long long)c * size / cells);
    int e = (int)((long long)(c + 1) * size / cells);
    a = min(s, size - 1);
    b = min(max(e, s + 1), size);
}

// One thread per grid cell; blockIdx.y is the frame. Frame f's plane 0 starts at
// frames + f * frame_bytes. rgb != 0: packed RGB24, luma = (77 R + 150 G + 29 B + 128) >> 8;
// otherwise the plane is luma (the Y plane of NV12 / YUV420P). `hist` must be zeroed.
extern "C" __global__ void scene_grid(const u8* frames, long long frame_bytes, int rgb, int stride,
                                      int width, int height, int grid_w, int grid_h, int shift,
                                      int bins, u8* grid, unsigned int* hist) {
    int cell = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    if (cell >= grid_w * grid_h) return;
    int cx = cell % grid_w, cy = cell / grid_w;
    int x0, x1, y0, y1;
    span(cx, grid_w, width, x0, x1);
    span(cy, grid_h, height, y0, y1);
    const u8* plane = frames + (long long)f * frame_bytes;
    unsigned long long sum = 0;
    for (int y = y0; y < y1; ++y) {
        const u8* line = plane + (long long)y * stride;
        for (int x = x0; x < x1; ++x) {
            if (rgb) {
                const u8* p = line + 3 * x;
                sum += (77u * p[0] + 150u * p[1] + 29u * p[2] + 128u) >> 8;
            } else {
                sum += line[x];
            }
        }
    }
    unsigned long long n = (unsigned long long)(y1 - y0) * (x1 - x0);
    unsigned int v = (unsigned int)((sum + n / 2) / n);
    grid[(long long)f * grid_w * grid_h + cell] = (u8)v;
    atomicAdd(&hist[(long long)f * bins + (v >> shift)], 1u);
}
