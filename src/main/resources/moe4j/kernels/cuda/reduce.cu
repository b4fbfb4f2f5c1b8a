// float32 reductions, row normalisations, the cross-entropy loss, the AdamW update and the capacity drop
// behind moe4j.kernels.{ReductionKernels, OptimizerKernels, RoutingKernels}. Deterministic: every sum is
// taken in a fixed order (per-thread strided partial sums, then warp trees, then one warp over the
// warps), in double like the CPU's accumulators, and never with float atomics; a row kernel runs one
// block per row. Integer atomics (atomicMin of a position) appear only where the result is order-free.

#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < (n); \
        i += (long long) gridDim.x * blockDim.x)
#define NEG_INF __int_as_float(0xff800000u)

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Σ of v over the block in a fixed order; every thread gets the result. blockDim.x: a multiple of 32.
__device__ double block_sum(double v) {
    __shared__ double warpSums[32];
    __shared__ double total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_d(v);
    if (lane == 0) warpSums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = lane < warps ? warpSums[lane] : 0.0;
        w = warp_sum_d(w);
        if (lane == 0) total = w;
    }
    __syncthreads();
    double r = total;
    __syncthreads();  // the shared slots are free for the next call
    return r;
}

__device__ float block_max(float v) {
    __shared__ float warpMax[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) warpMax[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < warps ? warpMax[lane] : NEG_INF;
        w = warp_max(w);
        if (lane == 0) total = w;
    }
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

// log Σ_j exp r[j] over one row of D (−inf for a row of −inf), the block's threads together
__device__ double row_log_sum_exp(const float* r, int D) {
    float m = NEG_INF;
    for (int j = threadIdx.x; j < D; j += blockDim.x) m = fmaxf(m, r[j]);
    m = block_max(m);
    if (m == NEG_INF) return (double) NEG_INF;
    double z = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) z += exp((double) r[j] - m);
    z = block_sum(z);
    return m + log(z);
}

// ------------------------------------------------------------------ whole-tensor sums

// partial[block] = Σ of a[i] (a[i]² when squares) over the block's grid-stride share
extern "C" __global__ void sum_partial(const float* a, long long n, int squares, double* partial) {
    double acc = 0;
    GRID_STRIDE(i, n) { double x = a[i]; acc += squares ? x * x : x; }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// one block: result[0] = Σ partial[0, count), also stored as float into out when out is not null
extern "C" __global__ void sum_final(const double* partial, int count, double* result, float* out) {
    double acc = 0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        result[0] = acc;
        if (out) out[0] = (float) acc;
    }
}

// first = the smallest position of a NaN or infinity (first starts at all ones: none)
extern "C" __global__ void first_non_finite(const float* a, long long n, unsigned long long* first) {
    GRID_STRIDE(i, n) {
        if ((__float_as_uint(a[i]) & 0x7f800000u) == 0x7f800000u) atomicMin(first, (unsigned long long) i);
    }
}

// ------------------------------------------------------------------ row and column sums (a is rows × D)

extern "C" __global__ void row_sums(const float* a, int D, float* out) {
    const float* r = a + (long long) blockIdx.x * D;
    double acc = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) acc += r[j];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[blockIdx.x] = (float) acc;
}

extern "C" __global__ void row_dots(const float* a, const float* b, int D, float* out) {
    long long base = (long long) blockIdx.x * D;
    double acc = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) acc += (double) a[base + j] * b[base + j];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[blockIdx.x] = (float) acc;
}

// Column reductions out[j] = Σ_i a[i, j]·(b ? b[i, j] : 1)·(scale ? scale[i] : 1), in two passes with a
// fixed order (the same bits on every run): column_partial sums chunk blockIdx.y of the rows for 32
// columns per block (threads 0-31 read 32 neighbouring floats of a row; the 8 warps take every 8th row of
// the chunk) and adds the 8 warps' sums in order; column_final adds the chunks in order.
extern "C" __global__ void column_partial(const float* a, const float* b, const float* scale, int rows, int D, int chunkRows,
        double* partial) {
    __shared__ double lanes[8][32];
    int col = blockIdx.x * 32 + (threadIdx.x & 31), lane = threadIdx.x >> 5;
    int first = blockIdx.y * chunkRows, last = min(rows, first + chunkRows);
    double acc = 0;
    if (col < D) {
        for (int i = first + lane; i < last; i += 8) {
            long long at = (long long) i * D + col;
            double v = a[at];
            if (b) v *= b[at];
            if (scale) v *= scale[i];
            acc += v;
        }
    }
    lanes[lane][threadIdx.x & 31] = acc;
    __syncthreads();
    if (lane == 0 && col < D) {
        double sum = 0;
        for (int l = 0; l < 8; l++) sum += lanes[l][threadIdx.x];
        partial[(long long) blockIdx.y * D + col] = sum;
    }
}

extern "C" __global__ void column_final(const double* partial, int chunks, int D, float* out) {
    GRID_STRIDE(j, D) {
        double acc = 0;
        for (int c = 0; c < chunks; c++) acc += partial[(long long) c * D + j];
        out[j] = (float) acc;
    }
}

// ------------------------------------------------------------------ softmax family: one block per row

extern "C" __global__ void softmax_rows(const float* a, int D, float* out) {
    long long base = (long long) blockIdx.x * D;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < D; j += blockDim.x) m = fmaxf(m, a[base + j]);
    m = block_max(m);
    double z = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) z += exp((double) a[base + j] - m);
    z = block_sum(z);
    for (int j = threadIdx.x; j < D; j += blockDim.x) out[base + j] = (float) (exp((double) a[base + j] - m) / z);
}

extern "C" __global__ void softmax_rows_backward(const float* y, const float* g, int D, float* gin) {
    long long base = (long long) blockIdx.x * D;
    double s = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += (double) g[base + j] * y[base + j];
    s = block_sum(s);
    for (int j = threadIdx.x; j < D; j += blockDim.x) gin[base + j] = (float) (y[base + j] * (g[base + j] - s));
}

extern "C" __global__ void log_softmax_rows(const float* a, int D, float* out) {
    long long base = (long long) blockIdx.x * D;
    double lse = row_log_sum_exp(a + base, D);
    for (int j = threadIdx.x; j < D; j += blockDim.x) out[base + j] = (float) (a[base + j] - lse);
}

extern "C" __global__ void log_softmax_rows_backward(const float* y, const float* g, int D, float* gin) {
    long long base = (long long) blockIdx.x * D;
    double s = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += g[base + j];
    s = block_sum(s);
    for (int j = threadIdx.x; j < D; j += blockDim.x) gin[base + j] = (float) (g[base + j] - exp((double) y[base + j]) * s);
}

extern "C" __global__ void log_sum_exp_rows(const float* a, int D, float* out) {
    double lse = row_log_sum_exp(a + (long long) blockIdx.x * D, D);
    if (threadIdx.x == 0) out[blockIdx.x] = (float) lse;
}

extern "C" __global__ void log_sum_exp_rows_backward(const float* a, const float* out, const float* g, int D, float* gin) {
    long long base = (long long) blockIdx.x * D;
    double lse = out[blockIdx.x];
    double gi = g[blockIdx.x];
    for (int j = threadIdx.x; j < D; j += blockDim.x) gin[base + j] = (float) (gi * exp((double) a[base + j] - lse));
}

// ------------------------------------------------------------------ RMSNorm

// out = x·inv·w with inv = 1/√(mean x² + eps), products in float in the CPU's order
extern "C" __global__ void rms_norm(const float* x, const float* w, double eps, int D, float* out, float* inv) {
    long long base = (long long) blockIdx.x * D;
    double ss = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) { double v = x[base + j]; ss += v * v; }
    ss = block_sum(ss);
    float r = (float) (1.0 / sqrt(ss / D + eps));
    if (threadIdx.x == 0) inv[blockIdx.x] = r;
    for (int j = threadIdx.x; j < D; j += blockDim.x) out[base + j] = __fmul_rn(__fmul_rn(x[base + j], r), w[j]);
}

// dx = r·(g⊙w) − x·r³·mean(g⊙w⊙x), one block per row
extern "C" __global__ void rms_norm_backward_x(const float* x, const float* w, const float* inv, const float* g, int D, float* gx) {
    long long base = (long long) blockIdx.x * D;
    double r = inv[blockIdx.x];
    double s = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += (double) g[base + j] * w[j] * x[base + j];
    s = block_sum(s) / D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double gwj = (double) g[base + j] * w[j];
        gx[base + j] = (float) (r * gwj - x[base + j] * r * r * r * s);
    }
}

// ------------------------------------------------------------------ cross-entropy (logits N × V, int32 targets)

// rowLoss[i] = logsumexp(row i) − logits[i, t_i], 0 for an ignored row (t = −1); a target outside
// [0, V) records the smallest such row in badRow (all ones: none)
extern "C" __global__ void cross_entropy_rows(const float* logits, const int* targets, int V, double* rowLoss,
        unsigned long long* badRow) {
    int i = blockIdx.x, t = targets[i];
    if (t < 0 || t >= V) {  // uniform over the block: it returns before any barrier
        if (threadIdx.x == 0) {
            rowLoss[i] = 0;
            if (t != -1) atomicMin(badRow, (unsigned long long) i);
        }
        return;
    }
    long long base = (long long) i * V;
    double lse = row_log_sum_exp(logits + base, V);
    if (threadIdx.x == 0) rowLoss[i] = lse - logits[base + t];
}

// one block: loss = Σ rowLoss / max(counted rows, 1); counted[0] = the number of rows with a target
extern "C" __global__ void cross_entropy_mean(const double* rowLoss, const int* targets, int N, float* loss, int* counted) {
    double total = 0, count = 0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        total += rowLoss[i];
        if (targets[i] != -1) count += 1;
    }
    total = block_sum(total);
    count = block_sum(count);
    if (threadIdx.x == 0) {
        int c = (int) count;
        if (loss) loss[0] = (float) (total / (c > 1 ? c : 1));
        counted[0] = c;
    }
}

// grad[i, j] = scale·softmax(row i)[j] − scale·[j = t_i] with scale = g / max(counted, 1) in float (the
// CPU's float division); ignored rows are left as they are
extern "C" __global__ void cross_entropy_backward(const float* logits, const int* targets, const float* g, const int* counted,
        int V, float* grad) {
    int i = blockIdx.x, t = targets[i];
    if (t < 0 || t >= V) return;
    int c = counted[0] > 1 ? counted[0] : 1;
    double scale = __fdiv_rn(g[0], (float) c);
    long long base = (long long) i * V;
    double lse = row_log_sum_exp(logits + base, V);
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float p = (float) (scale * exp((double) logits[base + j] - lse));
        grad[base + j] = j == t ? (float) ((double) p - scale) : p;
    }
}

// ------------------------------------------------------------------ AdamW

// The CPU's formula in its order of float operations, each rounded (no fused multiply-add), so the
// update is the same bits: m ← β1·m + (1−β1)·g, v ← β2·v + g²·(1−β2), p ← p − lr·((m/c1)/(√(v/c2)+ε) + decay·p)
extern "C" __global__ void adamw(float* p, const float* g, float* m, float* v, long long n, float lr, float beta1, float beta2,
        float eps, float decay, float c1, float c2, float gradScale) {
    float oneMinusB1 = __fsub_rn(1.f, beta1), oneMinusB2 = __fsub_rn(1.f, beta2);
    GRID_STRIDE(i, n) {
        float gi = __fmul_rn(g[i], gradScale);
        float mi = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(gi, oneMinusB1));
        float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(gi, gi), oneMinusB2));
        m[i] = mi;
        v[i] = vi;
        float pi = p[i];
        float denom = __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, c2)), eps);
        float update = __fadd_rn(__fdiv_rn(__fdiv_rn(mi, c1), denom), __fmul_rn(decay, pi));
        p[i] = __fsub_rn(pi, __fmul_rn(lr, update));
    }
}

// ------------------------------------------------------------------ capacity drop

// One thread per (slot s, expert e) walks the tokens in order and keeps the first `capacity` entries of
// e in slot s; each entry is written by exactly one thread (the one of its expert). Ids in [0, E).
extern "C" __global__ void drop_over_capacity(const int* idx, int T, int K, int E, int capacity, int* out) {
    GRID_STRIDE(q, (long long) K * E) {
        int s = (int) (q / E), e = (int) (q % E), used = 0;
        for (int t = 0; t < T; t++) {
            long long at = (long long) t * K + s;
            if (idx[at] == e) out[at] = used++ >= capacity ? -1 : e;
        }
    }
}
