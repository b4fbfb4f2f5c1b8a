// Rotary position embedding and fused causal grouped-query attention on (B, S, H, hd) float32
// activations, behind moe4j.kernels.AttentionKernels. The attention never forms the S × S score matrix:
// the forward runs an online softmax over the keys and keeps only each query row's log-sum-exp L; the
// backward recomputes the probabilities P_ij = exp(q_i·k_j/√hd − L_i) from it.
//
// One warp per row (a query row in the forward and for dQ, a key row for dK and dV), the head
// dimension spread over the lanes (element d on lane d mod 32, up to HD_MAX), dot products summed by a
// warp tree: fixed order, no atomics, the same bits on every run. A score is rounded before the
// log-sum-exp is subtracted (no fused multiply-add), so the backward's P is exp(0) = 1 exactly where the
// forward saw a single key. Every gradient is written by the one
// warp that owns its row, so dK and dV sum the query heads of their group in order inside the warp.

#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < (n); \
        i += (long long) gridDim.x * blockDim.x)
#define NEG_INF __int_as_float(0xff800000u)
#define HD_MAX 256
#define PER_LANE (HD_MAX / 32)

// out = x rotated pairwise by sign·(pos·θ^(−2i/hd)): one thread per pair, the angle in double and the
// rotation in float without fused multiply-add, as the CPU computes it
extern "C" __global__ void rope(const float* x, double theta, double scale, int start, float sign, int S, int H, int hd, long long pairsTotal,
                                float* out) {
    int pairs = hd / 2;
    GRID_STRIDE(q, pairsTotal) {
        int i = (int) (q % pairs);
        long long row = q / pairs;  // over (b, pos, head)
        int pos = (int) ((row / H) % S);
        double angle = (start + pos) / scale * pow(theta, -2.0 * i / hd);  // as the CPU: (start + s) / scale · θ^(−2i/hd)
        float c = (float) cos(angle);
        float sn = __fmul_rn(sign, (float) sin(angle));
        long long base = row * hd + 2 * i;
        float x0 = x[base], x1 = x[base + 1];
        out[base] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
        out[base + 1] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
    }
}

// element offset of row (b, pos, head) of a (B, S, H, hd) tensor
__device__ __forceinline__ long long row_at(int b, int pos, int S, int H, int head, int hd) {
    return (((long long) b * S + pos) * H + head) * hd;
}

__device__ __forceinline__ void load_row(const float* p, int hd, int lane, float r[PER_LANE]) {
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) {
        int d = lane + 32 * c;
        r[c] = d < hd ? p[d] : 0.f;
    }
}

// Σ_d r[d]·p[d] over the warp (r held in registers, p in memory); every lane gets it
__device__ __forceinline__ float dot_row(const float r[PER_LANE], const float* p, int hd, int lane) {
    float acc = 0;
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) {
        int d = lane + 32 * c;
        if (d < hd) acc += r[c] * p[d];
    }
    return warp_sum(acc);
}

// grid (⌈S / warps⌉, B·Hq), block of 32·warps threads: warp w takes query row i = blockIdx.x·warps + w of
// (b, h) and writes out[b, i, h, :] and lse[b, h, i]
extern "C" __global__ void attention_forward(const float* q, const float* k, const float* v, int S, int Hq, int Hkv, int hd,
        float scale, float* out, float* lse) {
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int b = blockIdx.y / Hq, h = blockIdx.y % Hq, g = h / (Hq / Hkv);
    if (i >= S) return;  // the whole warp leaves together
    float qr[PER_LANE], acc[PER_LANE];
    load_row(q + row_at(b, i, S, Hq, h, hd), hd, lane, qr);
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) acc[c] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int j = 0; j <= i; j++) {
        long long kv = row_at(b, j, S, Hkv, g, hd);
        float s = __fmul_rn(dot_row(qr, k + kv, hd, lane), scale);
        float mNew = fmaxf(m, s);
        float correction = expf(m - mNew);  // 0 at the first key (m = −inf)
        float p = expf(s - mNew);
        l = l * correction + p;
#pragma unroll
        for (int c = 0; c < PER_LANE; c++) {
            int d = lane + 32 * c;
            acc[c] = acc[c] * correction + (d < hd ? p * v[kv + d] : 0.f);
        }
        m = mNew;
    }
    float invL = 1.f / l;
    long long o = row_at(b, i, S, Hq, h, hd);
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) {
        int d = lane + 32 * c;
        if (d < hd) out[o + d] = acc[c] * invL;
    }
    if (lane == 0) lse[((long long) b * Hq + h) * S + i] = m + logf(l);
}

// The query side of the backward, per query row i of (b, h): with dP_ij = dO_i·v_j,
// delta_i = Σ_j P_ij·dP_ij (= dO_i·O_i), then dQ_i = scale·Σ_j P_ij·(dP_ij − delta_i)·k_j. Same grid as the forward.
extern "C" __global__ void attention_backward_q(const float* gout, const float* q, const float* k, const float* v, const float* lse,
        int S, int Hq, int Hkv, int hd, float scale, float* gq, float* delta) {
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int b = blockIdx.y / Hq, h = blockIdx.y % Hq, g = h / (Hq / Hkv);
    if (i >= S) return;
    long long o = row_at(b, i, S, Hq, h, hd);
    long long stat = ((long long) b * Hq + h) * S + i;
    float qr[PER_LANE], dor[PER_LANE], acc[PER_LANE];
    load_row(q + o, hd, lane, qr);
    load_row(gout + o, hd, lane, dor);
    float L = lse[stat];
    double dsum = 0;
    for (int j = 0; j <= i; j++) {
        long long kv = row_at(b, j, S, Hkv, g, hd);
        float p = expf(__fmul_rn(dot_row(qr, k + kv, hd, lane), scale) - L);
        dsum += (double) p * dot_row(dor, v + kv, hd, lane);
    }
    float D = (float) dsum;
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) acc[c] = 0.f;
    for (int j = 0; j <= i; j++) {
        long long kv = row_at(b, j, S, Hkv, g, hd);
        float p = expf(__fmul_rn(dot_row(qr, k + kv, hd, lane), scale) - L);
        float ds = p * (dot_row(dor, v + kv, hd, lane) - D);
#pragma unroll
        for (int c = 0; c < PER_LANE; c++) {
            int d = lane + 32 * c;
            if (d < hd) acc[c] += ds * k[kv + d];
        }
    }
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) {
        int d = lane + 32 * c;
        if (d < hd) gq[o + d] = acc[c] * scale;
    }
    if (lane == 0) delta[stat] = D;
}

// The key side, per key row j of (b, kv head g): over the group's query heads in order and the query
// rows i ≥ j, dV_j = Σ P_ij·dO_i and dK_j = scale·Σ P_ij·(dO_i·v_j − delta_i)·q_i.
// grid (⌈S / warps⌉, B·Hkv), block of 32·warps threads.
extern "C" __global__ void attention_backward_kv(const float* gout, const float* q, const float* k, const float* v,
        const float* lse, const float* delta, int S, int Hq, int Hkv, int hd, float scale, float* gk, float* gv) {
    int lane = threadIdx.x & 31;
    int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int b = blockIdx.y / Hkv, g = blockIdx.y % Hkv, group = Hq / Hkv;
    if (j >= S) return;
    long long kv = row_at(b, j, S, Hkv, g, hd);
    float kr[PER_LANE], vr[PER_LANE], dk[PER_LANE], dv[PER_LANE];
    load_row(k + kv, hd, lane, kr);
    load_row(v + kv, hd, lane, vr);
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) { dk[c] = 0.f; dv[c] = 0.f; }
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int i = j; i < S; i++) {
            long long o = row_at(b, i, S, Hq, h, hd);
            long long stat = ((long long) b * Hq + h) * S + i;
            float p = expf(__fmul_rn(dot_row(kr, q + o, hd, lane), scale) - lse[stat]);
            float ds = p * (dot_row(vr, gout + o, hd, lane) - delta[stat]);
#pragma unroll
            for (int c = 0; c < PER_LANE; c++) {
                int d = lane + 32 * c;
                if (d < hd) {
                    dv[c] += p * gout[o + d];
                    dk[c] += ds * q[o + d];
                }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) {
        int d = lane + 32 * c;
        if (d < hd) {
            gk[kv + d] = dk[c] * scale;
            gv[kv + d] = dv[c];
        }
    }
}
