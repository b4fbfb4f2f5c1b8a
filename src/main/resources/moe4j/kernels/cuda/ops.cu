// float32 kernels behind the device-neutral kernel interfaces (moe4j.kernels): element-wise arithmetic,
// row/column broadcasts, column gathers and the integer side of routing. n counts elements; rows are
// the first dimension of an (N, D) tensor.

#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < (n); \
        i += (long long) gridDim.x * blockDim.x)

extern "C" __global__ void add_scaled(const float* a, float alpha, const float* b, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = a[i] + alpha * b[i];
}
extern "C" __global__ void axpy(float alpha, const float* x, float* y, long long n) {
    GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
extern "C" __global__ void mul(const float* a, const float* b, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}
extern "C" __global__ void scale(float alpha, const float* a, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = alpha * a[i];
}
extern "C" __global__ void add_scalar(const float* a, double c, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = (float) ((double) a[i] + c);
}
extern "C" __global__ void fill_with(const float* scalar, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = scalar[0];
}
extern "C" __global__ void silu(const float* a, float* out, long long n) {
    GRID_STRIDE(i, n) { float x = a[i]; out[i] = x / (1.f + expf(-x)); }
}
extern "C" __global__ void silu_backward(const float* a, const float* g, float* gin, long long n) {
    GRID_STRIDE(i, n) { float x = a[i], s = sigmoidf_(x); gin[i] = g[i] * s * (1.f + x * (1.f - s)); }
}
extern "C" __global__ void swiglu_split(const float* gate, const float* up, float* out, long long n) {
    GRID_STRIDE(i, n) { float x = gate[i]; out[i] = x / (1.f + expf(-x)) * up[i]; }
}
extern "C" __global__ void swiglu_split_backward(const float* gate, const float* up, const float* g, float* gg, float* gu,
        long long n) {
    GRID_STRIDE(i, n) {
        float x = gate[i], s = sigmoidf_(x);
        gg[i] = g[i] * up[i] * s * (1.f + x * (1.f - s));
        gu[i] = g[i] * x * s;
    }
}
extern "C" __global__ void sigmoid(const float* a, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = (float) (1.0 / (1.0 + exp(-(double) a[i])));
}
extern "C" __global__ void sigmoid_backward(const float* out, const float* g, float* gin, long long n) {
    GRID_STRIDE(i, n) { float s = out[i]; gin[i] = g[i] * s * (1.f - s); }
}
extern "C" __global__ void reciprocal(const float* a, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = 1.f / a[i];
}
extern "C" __global__ void reciprocal_backward(const float* out, const float* g, float* gin, long long n) {
    GRID_STRIDE(i, n) { float r = out[i]; gin[i] = -g[i] * r * r; }
}
extern "C" __global__ void mul_rows(const float* x, const float* c, float* out, long long rows, int D) {
    GRID_STRIDE(i, rows * D) out[i] = x[i] * c[i / D];
}
extern "C" __global__ void div_rows(const float* x, const float* c, float* out, long long rows, int D) {
    GRID_STRIDE(i, rows * D) out[i] = x[i] / c[i / D];
}
extern "C" __global__ void add_columns(const float* x, const float* v, float* out, long long rows, int D) {
    GRID_STRIDE(i, rows * D) out[i] = x[i] + v[i % D];
}
extern "C" __global__ void mul_columns(const float* x, const float* v, float* out, long long rows, int D) {
    GRID_STRIDE(i, rows * D) out[i] = x[i] * v[i % D];
}
extern "C" __global__ void broadcast_rows(const float* v, float* out, long long rows, int D) {
    GRID_STRIDE(i, rows * D) out[i] = v[i / D];
}
extern "C" __global__ void broadcast_columns(const float* v, float* out, long long rows, int D) {
    GRID_STRIDE(i, rows * D) out[i] = v[i % D];
}
// gc[i] = −Σ_j g[i, j]·x[i, j] / c[i]², one warp per row, double accumulation.
extern "C" __global__ void div_rows_divisor_grad(const float* g, const float* x, const float* c, float* gc, int rows, int D) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    double acc = 0;
    for (int j = lane; j < D; j += 32) acc += (double) g[(long long) row * D + j] * x[(long long) row * D + j];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) { double cv = c[row]; gc[row] = (float) (-acc / (cv * cv)); }
}
// out[i, s] = a[i, idx[i, s]]
extern "C" __global__ void gather_columns(const float* a, const int* idx, float* out, long long rows, int D, int K) {
    GRID_STRIDE(i, rows * K) out[i] = a[(i / K) * D + idx[i]];
}
// gin[i, idx[i, s]] += g[i, s]: one thread per row, slots in order (no two threads share a row)
extern "C" __global__ void scatter_add_columns(const float* g, const int* idx, float* gin, long long rows, int D, int K) {
    GRID_STRIDE(i, rows) {
        for (int s = 0; s < K; s++) gin[i * D + idx[i * K + s]] += g[i * K + s];
    }
}
// *fromEnd = max over bad positions i of n - i (0: none), so the first bad position is n - *fromEnd: the
// slot starts as zero from a stream-ordered memset, and the check costs one host read, not two.
extern "C" __global__ void check_indices(const int* idx, long long n, int bound, unsigned long long* fromEnd) {
    GRID_STRIDE(i, n) { int v = idx[i]; if (v < 0 || v >= bound) atomicMax(fromEnd, (unsigned long long) (n - i)); }
}
extern "C" __global__ void bincount(const int* values, long long n, int bins, int* counts) {
    GRID_STRIDE(i, n) { int v = values[i]; if (v >= 0 && v < bins) atomicAdd(&counts[v], 1); }
}
extern "C" __global__ void inverse_permutation(const int* perm, int* inv, long long n) {
    GRID_STRIDE(i, n) inv[perm[i]] = (int) i;
}
// Deduplicated dispatch, source side: out[t·K + k] = the rank owning the slot's expert (e / perRank) when
// no earlier kept slot of token t goes to that rank, else -1, so every (token, rank) pair with a kept
// entry is marked once. One thread per token, slots in order.
extern "C" __global__ void first_slot_per_rank(const int* idx, long long tokens, int K, int perRank, int* out) {
    GRID_STRIDE(t, tokens) {
        for (int s = 0; s < K; s++) {
            int e = idx[t * K + s];
            int owner = e < 0 ? -1 : e / perRank;
            for (int j = 0; j < s && owner >= 0; j++) {
                int f = idx[t * K + j];
                if (f >= 0 && f / perRank == owner) owner = -1;
            }
            out[t * K + s] = owner;
        }
    }
}
// Deduplicated dispatch, owner side: the received expert ids as local experts of [first, first + count),
// -1 for every other id (another rank's expert, or a dropped slot).
extern "C" __global__ void local_experts(const int* idx, long long n, int first, int count, int* out) {
    GRID_STRIDE(i, n) { int e = idx[i]; out[i] = e >= first && e < first + count ? e - first : -1; }
}
