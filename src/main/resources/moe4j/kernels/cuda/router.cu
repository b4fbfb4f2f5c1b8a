// Routers: softmax and sigmoid top-k with the selection bias, their backward, and the load-balance
// (aux) and z losses. Logits and scores are float32 in both precisions (the router is tiny and
// its selection must not flip on rounding). One warp per token; a token's row is staged in shared
// memory (E <= 1024, ROUTER_WARPS warps per block).

#define ROUTER_WARPS 4
#define MAX_E 1024

// a beats b: larger value; on ties the lower index; a number beats NaN (the CPU rule).
__device__ __forceinline__ bool beats(float av, int ai, float bv, int bi) {
    if (bi < 0) return ai >= 0;
    if (ai < 0) return false;
    bool an = av != av, bn = bv != bv;
    if (an != bn) return bn;
    if (av > bv) return true;
    if (av == bv || an) return ai < bi;
    return false;
}

// Top-k of row[0..E) (selection values) for one warp; writes idx[0..K); taken[] is scratch.
__device__ void warp_topk(const float* row, unsigned char* taken, int E, int K, int* idx) {
    int lane = threadIdx.x & 31;
    for (int e = lane; e < E; e += 32) taken[e] = 0;
    __syncwarp();
    for (int s = 0; s < K; s++) {
        float bv = 0.f; int bi = -1;
        for (int e = lane; e < E; e += 32) {
            if (!taken[e] && beats(row[e], e, bv, bi)) { bv = row[e]; bi = e; }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (beats(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) { idx[s] = bi; taken[bi] = 1; }
        __syncwarp();
    }
}

// probs = softmax(logits) row-wise; idx = top K of probs; w = selected probs / (their sum + 1e-30);
// lse = logsumexp(logits) (for the z loss).
extern "C" __global__ void router_softmax_topk(const float* __restrict__ logits, int T, int E, int K,
        float* __restrict__ probs, int* __restrict__ idx, float* __restrict__ w, float* __restrict__ lse) {
    __shared__ float rows[ROUTER_WARPS][MAX_E];
    __shared__ unsigned char taken[ROUTER_WARPS][MAX_E];
    __shared__ int sel[ROUTER_WARPS][32];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t = blockIdx.x * ROUTER_WARPS + warp;
    if (t >= T) return;
    const float* l = logits + (long long) t * E;
    float m = __int_as_float(0xff800000);
    for (int e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
    m = warp_max(m);
    float z = 0.f;
    for (int e = lane; e < E; e += 32) z += expf(l[e] - m);
    z = warp_sum(z);
    for (int e = lane; e < E; e += 32) {
        float p = expf(l[e] - m) / z;
        rows[warp][e] = p;
        probs[(long long) t * E + e] = p;
    }
    if (lane == 0) lse[t] = m + logf(z);
    __syncwarp();
    warp_topk(rows[warp], taken[warp], E, K, sel[warp]);
    float v = lane < K ? rows[warp][sel[warp][lane]] : 0.f;
    float s = warp_sum(v) + 1e-30f;
    if (lane < K) {
        idx[(long long) t * K + lane] = sel[warp][lane];
        w[(long long) t * K + lane] = v / s;
    }
}

// scores = sigmoid(logits); idx = top K of scores + bias (bias only selects); w = selected scores
// renormalised; lse = logsumexp(logits).
extern "C" __global__ void router_sigmoid_topk(const float* __restrict__ logits, const float* __restrict__ bias,
        int T, int E, int K, float* __restrict__ scores, int* __restrict__ idx, float* __restrict__ w,
        float* __restrict__ lse) {
    __shared__ float rows[ROUTER_WARPS][MAX_E];
    __shared__ unsigned char taken[ROUTER_WARPS][MAX_E];
    __shared__ int sel[ROUTER_WARPS][32];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t = blockIdx.x * ROUTER_WARPS + warp;
    if (t >= T) return;
    const float* l = logits + (long long) t * E;
    float m = __int_as_float(0xff800000);
    for (int e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
    m = warp_max(m);
    float z = 0.f;
    for (int e = lane; e < E; e += 32) {
        z += expf(l[e] - m);
        float sc = sigmoidf_(l[e]);
        scores[(long long) t * E + e] = sc;
        rows[warp][e] = sc + bias[e];
    }
    z = warp_sum(z);
    if (lane == 0) lse[t] = m + logf(z);
    __syncwarp();
    warp_topk(rows[warp], taken[warp], E, K, sel[warp]);
    float v = lane < K ? scores[(long long) t * E + sel[warp][lane]] : 0.f;
    float s = warp_sum(v) + 1e-30f;
    if (lane < K) {
        idx[(long long) t * K + lane] = sel[warp][lane];
        w[(long long) t * K + lane] = v / s;
    }
}

// Per-chunk column sums of p (T, E) and the sum of lse² over the chunk's tokens: partial[c][e],
// partial[c][E]. Deterministic: the final sums are taken in chunk order by router_losses.
#define LOSS_CHUNK 256
extern "C" __global__ void router_loss_partials(const float* __restrict__ p, const float* __restrict__ lse,
        int T, int E, float* __restrict__ partial) {
    int c = blockIdx.x;
    int t0 = c * LOSS_CHUNK, t1 = min(T, t0 + LOSS_CHUNK);
    for (int e = threadIdx.x; e <= E; e += blockDim.x) {
        float acc = 0.f;
        if (e < E) { for (int t = t0; t < t1; t++) acc += p[(long long) t * E + e]; }
        else { for (int t = t0; t < t1; t++) acc += lse[t] * lse[t]; }
        partial[(long long) c * (E + 1) + e] = acc;
    }
}

// out[0] = auxScale · E · Σ_e f_e · mean_t p[t,e] with f_e = counts[e] / (T·K); out[1] = mean_t lse².
// Also auxGrad[e] = auxCoef · auxScale · E · f_e / T: d(auxCoef · aux) / dp[t, e] (any t). One block.
extern "C" __global__ void router_losses(const float* __restrict__ partial, int chunks, const int* __restrict__ counts,
        int T, int E, int K, float auxScale, float auxCoef, float* __restrict__ out, float* __restrict__ auxGrad) {
    __shared__ float red[1024];
    float aux = 0.f, zs = 0.f;
    for (int e = threadIdx.x; e <= E; e += blockDim.x) {
        float col = 0.f;
        for (int c = 0; c < chunks; c++) col += partial[(long long) c * (E + 1) + e];
        if (e < E) {
            float f = (float) counts[e] / ((float) T * K);
            aux += f * (col / T);
            auxGrad[e] = auxCoef * auxScale * E * f / T;
        } else {
            zs = col / T;
        }
    }
    red[threadIdx.x] = aux;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = auxScale * E * red[0];
    __syncthreads();
    red[threadIdx.x] = zs;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[1] = red[0];
}

// dlogits from: dw (T, K) (gradient of the routing weights), auxGrad (E) (gradient of the aux loss
// term w.r.t. p[t, e], the same for every t), zCoef (weight of the z loss in the total loss).
// sigmoid = 0: p = softmax probs; sigmoid = 1: p = sigmoid scores.
extern "C" __global__ void router_backward(int sigmoid, const float* __restrict__ logits, const float* __restrict__ p,
        const float* __restrict__ lse, const int* __restrict__ idx, const float* __restrict__ w,
        const float* __restrict__ dw, const float* __restrict__ auxGrad, float zCoef, int T, int E, int K,
        float* __restrict__ dlogits) {
    __shared__ float dp[ROUTER_WARPS][MAX_E];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t = blockIdx.x * ROUTER_WARPS + warp;
    if (t >= T) return;
    const float* pt = p + (long long) t * E;
    for (int e = lane; e < E; e += 32) dp[warp][e] = auxGrad ? auxGrad[e] : 0.f;
    __syncwarp();
    // w_k = v_k / S: dv_k = (dw_k − Σ_j dw_j w_j) / S
    int e_k = lane < K ? idx[(long long) t * K + lane] : -1;
    float v = e_k >= 0 ? pt[e_k] : 0.f;
    float S = warp_sum(v) + 1e-30f;
    float dwk = lane < K ? dw[(long long) t * K + lane] : 0.f;
    float wk = lane < K ? w[(long long) t * K + lane] : 0.f;
    float dot = warp_sum(dwk * wk);
    for (int s = 0; s < K; s++) {  // serial over slots: selected experts are distinct, no race
        float dv = __shfl_sync(0xffffffffu, (dwk - dot) / S, s);
        int es = __shfl_sync(0xffffffffu, e_k, s);
        if (lane == 0 && es >= 0) dp[warp][es] += dv;
        __syncwarp();
    }
    float zc = zCoef * 2.f * lse[t] / T;
    const float* l = logits + (long long) t * E;
    if (!sigmoid) {
        float sdp = 0.f;
        for (int e = lane; e < E; e += 32) sdp += dp[warp][e] * pt[e];
        sdp = warp_sum(sdp);
        for (int e = lane; e < E; e += 32)
            dlogits[(long long) t * E + e] = pt[e] * (dp[warp][e] - sdp) + zc * pt[e];
    } else {
        for (int e = lane; e < E; e += 32) {
            float s = pt[e];
            dlogits[(long long) t * E + e] = dp[warp][e] * s * (1.f - s) + zc * expf(l[e] - lse[t]);
        }
    }
}

// idx[i, s] = column of the s-th largest value of row i of a (N, D), ties to the lower column, NaN last
// (the CPU's topK); one warp per row, D <= MAX_E.
extern "C" __global__ void topk_rows(const float* __restrict__ a, int N, int D, int K, int* __restrict__ idx) {
    __shared__ float rows[ROUTER_WARPS][MAX_E];
    __shared__ unsigned char taken[ROUTER_WARPS][MAX_E];
    __shared__ int sel[ROUTER_WARPS][32];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t = blockIdx.x * ROUTER_WARPS + warp;
    if (t >= N) return;
    for (int e = lane; e < D; e += 32) rows[warp][e] = a[(long long) t * D + e];
    __syncwarp();
    warp_topk(rows[warp], taken[warp], D, K, sel[warp]);
    if (lane < K) idx[(long long) t * K + lane] = sel[warp][lane];
}

// Group-limited selection (the CPU's limitToTopGroups): the D columns of row i form `groups` equal groups,
// each scored by the sum (in double) of its two largest values; columns outside the best topKGroups groups
// (ties to the lower group) become -inf. One thread per row: D is an expert count, groups <= MAX_GROUPS.
#define MAX_GROUPS 64
#define ROUTER_NEG_INF __int_as_float(0xff800000u)
extern "C" __global__ void limit_to_top_groups(const float* __restrict__ a, int N, int D, int groups, int topKGroups,
                                               float* __restrict__ out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    const float* row = a + (long long) i * D;
    float* dst = out + (long long) i * D;
    int size = D / groups;
    double score[MAX_GROUPS];
    bool keep[MAX_GROUPS];
    for (int g = 0; g < groups; g++) {
        float first = ROUTER_NEG_INF, second = ROUTER_NEG_INF;
        for (int e = g * size; e < (g + 1) * size; e++) {
            float v = row[e];
            if (v > first) {
                second = first;
                first = v;
            } else if (v > second) {
                second = v;
            }
        }
        score[g] = (double) first + (double) second;
        keep[g] = false;
    }
    for (int chosen = 0; chosen < topKGroups; chosen++) {
        int best = -1;
        for (int g = 0; g < groups; g++) if (!keep[g] && (best < 0 || score[g] > score[best])) best = g;
        keep[best] = true;
    }
    for (int g = 0; g < groups; g++) {
        for (int e = g * size; e < (g + 1) * size; e++) dst[e] = keep[g] ? row[e] : ROUTER_NEG_INF;
    }
}
