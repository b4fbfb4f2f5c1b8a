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

// the angle of pair i at position p, in double as the CPU computes it: p / scale · θ^(−2i/hd)
__device__ __forceinline__ double rope_angle(int p, double scale, double theta, int i, int hd) {
    return p / scale * pow(theta, -2.0 * i / hd);
}

// pair (x[base], x[base + 1]) rotated by (c, sn) into out, in float without fused multiply-add, as the CPU
__device__ __forceinline__ void rope_rotate(const float* x, float* out, long long base, float c, float sn) {
    float x0 = x[base], x1 = x[base + 1];
    out[base] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
    out[base + 1] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
}

// out = x rotated pairwise by sign·((start + pos)·θ^(−2i/hd)): one thread per pair
extern "C" __global__ void rope(const float* x, double theta, double scale, int start, float sign, int S, int H, int hd, long long pairsTotal,
                                float* out) {
    int pairs = hd / 2;
    GRID_STRIDE(q, pairsTotal) {
        int i = (int) (q % pairs);
        long long row = q / pairs;  // over (b, pos, head)
        int pos = (int) ((row / H) % S);
        double angle = rope_angle(start + pos, scale, theta, i, hd);
        rope_rotate(x, out, row * hd + 2 * i, (float) cos(angle), __fmul_rn(sign, (float) sin(angle)));
    }
}

// The rotations of positions 0 .. S − 1: table[2·(pos·hd/2 + i)] and the next float are cos and sin of
// pos / scale · θ^(−2i/hd), computed exactly as rope computes them for start 0, so rope_from_table gives
// rope's bits without its double-precision pow, cos and sin per element.
extern "C" __global__ void rope_table(double theta, double scale, int S, int hd, float* table) {
    int pairs = hd / 2;
    GRID_STRIDE(q, (long long) S * pairs) {
        int i = (int) (q % pairs);
        int pos = (int) (q / pairs);
        double angle = rope_angle(pos, scale, theta, i, hd);
        table[2 * q] = (float) cos(angle);
        table[2 * q + 1] = (float) sin(angle);
    }
}

// rope with start 0 from a table of rope_table covering at least S positions
extern "C" __global__ void rope_from_table(const float* x, const float* table, float sign, int S, int H, int hd, long long pairsTotal,
                                           float* out) {
    int pairs = hd / 2;
    GRID_STRIDE(q, pairsTotal) {
        int i = (int) (q % pairs);
        long long row = q / pairs;  // over (b, pos, head)
        int pos = (int) ((row / H) % S);
        long long at = 2 * ((long long) pos * pairs + i);
        rope_rotate(x, out, row * hd + 2 * i, table[at], __fmul_rn(sign, table[at + 1]));
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

// The first key that query row i attends to: 0 without a sliding window, else max(0, i − window + 1)
__device__ __forceinline__ int window_start(int i, int window) {
    return window > 0 ? max(0, i - window + 1) : 0;
}

// grid (⌈S / warps⌉, B·Hq), block of 32·warps threads: warp w takes query row i = blockIdx.x·warps + w of
// (b, h) and writes out[b, i, h, :] and lse[b, h, i]
extern "C" __global__ void attention_forward(const float* q, const float* k, const float* v, int S, int Hq, int Hkv, int hd,
        int window, float scale, float* out, float* lse) {
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int b = blockIdx.y / Hq, h = blockIdx.y % Hq, g = h / (Hq / Hkv);
    if (i >= S) return;  // the whole warp leaves together
    float qr[PER_LANE], acc[PER_LANE];
    load_row(q + row_at(b, i, S, Hq, h, hd), hd, lane, qr);
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) acc[c] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int j = window_start(i, window); j <= i; j++) {
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
        int S, int Hq, int Hkv, int hd, int window, float scale, float* gq, float* delta) {
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
    for (int j = window_start(i, window); j <= i; j++) {
        long long kv = row_at(b, j, S, Hkv, g, hd);
        float p = expf(__fmul_rn(dot_row(qr, k + kv, hd, lane), scale) - L);
        dsum += (double) p * dot_row(dor, v + kv, hd, lane);
    }
    float D = (float) dsum;
#pragma unroll
    for (int c = 0; c < PER_LANE; c++) acc[c] = 0.f;
    for (int j = window_start(i, window); j <= i; j++) {
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
// rows i that see key j (j ≤ i < j + window with a window), dV_j = Σ P_ij·dO_i and
// dK_j = scale·Σ P_ij·(dO_i·v_j − delta_i)·q_i.
// grid (⌈S / warps⌉, B·Hkv), block of 32·warps threads.
extern "C" __global__ void attention_backward_kv(const float* gout, const float* q, const float* k, const float* v,
        const float* lse, const float* delta, int S, int Hq, int Hkv, int hd, int window, float scale, float* gk, float* gv) {
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
    int iEnd = window > 0 ? min(S, j + window) : S;
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int i = j; i < iEnd; i++) {
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

// ---------------------------------------------------------------------------------------------------
// bf16 products on tensor cores (head dimension 64 or 128), chosen when the calling thread's products
// take bf16 inputs. The host hands these kernels bf16 copies of q, k, v and dO (rounded to nearest even
// once per call, not once per tile that reads them); tiles travel into shared memory by cp.async, 16
// bytes at a time, the forward's next key tile while the current one's softmax and P·V run. Every product runs as
// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 (fp32 accumulation), and the softmax statistics, the
// rescaling and the gradients' sums stay in fp32 registers. Probabilities and dS are rounded to bf16
// only as the A operand of the next product. No atomics: every output element is summed by the one
// thread that owns it, in a fixed order, so a second run gives the same bits.
//
// Blocks of 4 warps own FLASH_ROWS = 64 rows (16 per warp): query rows for the output and dQ, key rows
// for dK and dV. The other operand streams through shared memory in tiles of FLASH_TILE = 64 rows.
//
// Fragment layouts of m16n8k16 with bf16 inputs (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
// floating point type"), with g = lane / 4 and t = lane % 4; each 32-bit register holds two bf16, the
// lower-indexed element in the low half:
//   A (16 × 16, row-major): reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1],
//                           reg2 = A[g][2t+8, 2t+9], reg3 = A[g+8][2t+8, 2t+9]
//   B (16 × 8, k × n):      reg0 = B[2t, 2t+1][g], reg1 = B[2t+8, 2t+9][g]
//   C, D (16 × 8, fp32):    c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
// So a thread's accumulators cover rows g and g+8 of its warp's 16 rows, and the four threads of a quad
// (same g) together hold whole rows: row statistics are reduced with two xor-shuffles inside the quad.
// Two C fragments side by side (columns 0..7 and 8..15) are, rounded pairwise, exactly the A fragment of
// the 16 × 16 block they form, which is how probabilities go from one product into the next.
//
// Shared tiles are bf16 rows of HD + 8 elements: the row stride of HD/2 + 4 words puts the eight rows a
// fragment load touches four banks apart, so the 32 lanes of a fragment load hit 32 different banks.
// B operands come from ldmatrix, four 8 × 8 matrices per instruction; those whose k runs along the tile's
// rows (V in P·V, K in dS·K, dO and Q in dV and dK) through its transposing form. Their row addresses are
// 16-byte aligned: (HD + 8) · 2 bytes per row, column offsets in multiples of 8 elements.

#define FLASH_ROWS 64
#define FLASH_TILE 64
#define FLASH_THREADS 128
#define FLASH_LOG2E 1.4426950408889634f
#define FLASH_LN2 0.6931471805599453f

struct alignas(8) flash_u2 { unsigned lo, hi; };

// ---- inline PTX begins (the host emulation in CudaAttentionEmulationTest stands in for this section) ----

// two floats rounded to bf16 (nearest even) in one register: lo in bits 0..15, hi in bits 16..31
__device__ __forceinline__ unsigned flash_pack(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // the first source goes to the upper half
    return r;
}

// 2^x (approximate, a few ulp; 2^−inf = 0)
__device__ __forceinline__ float flash_exp2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// D = A·B + D on one 16 × 8 × 16 block, fp32 accumulators
__device__ __forceinline__ void flash_mma(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 × 8 bf16 matrices from shared memory (ldmatrix .x4): lane l names row l % 8 of matrix l / 8 (16
// contiguous bytes, 16-byte aligned) and receives, in r[m], elements (l / 4, 2·(l % 4)) and (l / 4, 2·(l % 4) + 1)
// of matrix m: the B fragment layout of a matrix stored n-major (rows = n, k along the row)
__device__ __forceinline__ void flash_ldsm_x4(unsigned r[4], const unsigned short* row) {
    asm volatile("{\n\t.reg .u64 a;\n\tcvta.to.shared.u64 a, %4;\n\tldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [a];\n\t}"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "l"(row) : "memory");
}

// the same, transposed (.trans): r[m] gets elements (2·(l % 4), l / 4) and (2·(l % 4) + 1, l / 4) of matrix m,
// the B fragment layout of a matrix stored k-major (rows = k, n along the row)
__device__ __forceinline__ void flash_ldsm_x4_t(unsigned r[4], const unsigned short* row) {
    asm volatile("{\n\t.reg .u64 a;\n\tcvta.to.shared.u64 a, %4;\n\tldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [a];\n\t}"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "l"(row) : "memory");
}

// 16 bytes from global to shared memory without passing through registers (cp.async, L2 only); both
// addresses 16-byte aligned. Visible to the block after flash_copy_wait and a __syncthreads.
__device__ __forceinline__ void flash_copy16(unsigned short* dst, const unsigned short* src) {
    asm volatile("{\n\t.reg .u64 a;\n\tcvta.to.shared.u64 a, %0;\n\tcp.async.cg.shared.global [a], [%1], 16;\n\t}"
                 :: "l"(dst), "l"(src) : "memory");
}

// closes the group of this thread's copies issued since the last commit (an empty group is allowed)
__device__ __forceinline__ void flash_copy_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// waits until at most N of this thread's committed groups are still in flight
template <int N>
__device__ __forceinline__ void flash_copy_wait() {
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}

// ---- inline PTX ends ----

// elements (row, col) and (row, col + 1) of a shared tile (col even): one 32-bit load
template <int HD>
__device__ __forceinline__ unsigned flash_pair(const unsigned short* tile, int row, int col) {
    return *reinterpret_cast<const unsigned*>(tile + row * (HD + 8) + col);
}

// starts copying rows pos0 .. pos0 + 63 of head `head` of a (B, S, H, HD) bf16 tensor into a shared tile
// (cp.async; rows at or past S are stored as zeros right away). Every thread of the block takes part;
// the caller commits, waits and synchronises.
template <int HD>
__device__ __forceinline__ void flash_load_tile(const unsigned short* src, int b, int pos0, int S, int H, int head, unsigned short* tile) {
    constexpr int CHUNKS = HD / 8;  // 16-byte pieces of a row
    for (int e = threadIdx.x; e < FLASH_TILE * CHUNKS; e += FLASH_THREADS) {
        int r = e / CHUNKS, c = (e % CHUNKS) * 8, pos = pos0 + r;
        unsigned short* dst = tile + r * (HD + 8) + c;
        if (pos < S) {
            flash_copy16(dst, src + row_at(b, pos, S, H, head, HD) + c);
        } else {
            flash_u2 zero = {0u, 0u};
            *reinterpret_cast<flash_u2*>(dst) = zero;
            *reinterpret_cast<flash_u2*>(dst + 4) = zero;
        }
    }
}

// a whole tile now: copies started, committed and waited for (the caller synchronises)
template <int HD>
__device__ __forceinline__ void flash_load_tile_now(const unsigned short* src, int b, int pos0, int S, int H, int head, unsigned short* tile) {
    flash_load_tile<HD>(src, b, pos0, S, H, head, tile);
    flash_copy_commit();
    flash_copy_wait<0>();
}

// the A fragments of this warp's 16 rows (tile rows 16·warp ..) over the whole head dimension
template <int HD>
__device__ __forceinline__ void flash_a_fragments(const unsigned short* tile, int warp, int g, int t, unsigned a[HD / 16][4]) {
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++) {
        int r = warp * 16 + g, c = kc * 16 + 2 * t;
        a[kc][0] = flash_pair<HD>(tile, r, c);
        a[kc][1] = flash_pair<HD>(tile, r + 8, c);
        a[kc][2] = flash_pair<HD>(tile, r, c + 8);
        a[kc][3] = flash_pair<HD>(tile, r + 8, c + 8);
    }
}

// acc (16 rows × 8 tile rows n0 .. n0 + 7) += A · tileᵀ over the head dimension: B[k][n] = tile[n0 + n][k], two
// k-chunks per ldmatrix (matrices: chunk kc low and high 8 columns, then chunk kc + 1)
template <int HD>
__device__ __forceinline__ void flash_times_tile_t(const unsigned a[HD / 16][4], const unsigned short* tile, int n0, int lane,
                                                   float acc[4]) {
    int m = lane >> 3;
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc += 2) {
        unsigned b[4];
        flash_ldsm_x4(b, tile + (n0 + (lane & 7)) * (HD + 8) + (kc + (m >> 1)) * 16 + (m & 1) * 8);
        flash_mma(acc, a[kc], b[0], b[1]);
        flash_mma(acc, a[kc + 1], b[2], b[3]);
    }
}

// acc[dn] (16 rows × head dims 8·dn ..) += A (16 × 16 tile rows k0 ..) · tile[k0 .. k0 + 15][:], two column
// blocks per ldmatrix (matrices: rows k0 and k0 + 8 of columns 8·dn, then of columns 8·(dn + 1))
template <int HD>
__device__ __forceinline__ void flash_times_tile(const unsigned a[4], const unsigned short* tile, int k0, int lane, float acc[HD / 8][4]) {
    int m = lane >> 3;
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn += 2) {
        unsigned b[4];
        flash_ldsm_x4_t(b, tile + (k0 + (m & 1) * 8 + (lane & 7)) * (HD + 8) + (dn + (m >> 1)) * 8);
        flash_mma(acc[dn], a, b[0], b[1]);
        flash_mma(acc[dn + 1], a, b[2], b[3]);
    }
}

// query row i sees key j
__device__ __forceinline__ bool flash_visible(int i, int j, int S, int window) {
    return j <= i && i < S && (window <= 0 || j > i - window);
}

// every row in [rowFirst, rowLast] sees every key in [keyFirst, keyLast] (and all are below S): the
// warp's part of the tile needs no mask, as on most tiles of a long sequence
__device__ __forceinline__ bool flash_all_visible(int rowFirst, int rowLast, int keyFirst, int keyLast, int S, int window) {
    return keyLast <= rowFirst && rowLast < S && (window <= 0 || keyFirst > rowLast - window);
}

// Forward: grid (B·Hq, ⌈S / 64⌉), the query blocks in reverse so that the longest (last) ones start
// first. Writes out and each row's log-sum-exp. The copies run one tile ahead in two groups: the next
// key tile is on its way while this tile's softmax and P·V run, the next value tile while the next
// scores are computed.
template <int HD>
__device__ __forceinline__ void flash_forward(const unsigned short* q, const unsigned short* k, const unsigned short* v, int S, int Hq,
                                              int Hkv, int window, float scale, float* out, float* lse) {
    alignas(16) __shared__ unsigned short ks[FLASH_TILE * (HD + 8)];
    alignas(16) __shared__ unsigned short vs[FLASH_TILE * (HD + 8)];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int b = blockIdx.x / Hq, h = blockIdx.x % Hq, kvh = h / (Hq / Hkv);
    int q0 = (gridDim.y - 1 - blockIdx.y) * FLASH_ROWS;
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};  // the rows of c0, c1 and of c2, c3
    unsigned qa[HD / 16][4];
    flash_load_tile_now<HD>(q, b, q0, S, Hq, h, ks);
    __syncthreads();
    flash_a_fragments<HD>(ks, warp, g, t, qa);
    __syncthreads();  // every warp has its fragments before the keys overwrite ks

    float o[HD / 8][4];
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // running max (log2 units) and this thread's part of the sum
    float scaleLog2 = scale * FLASH_LOG2E;
    int lastRow = min(S, q0 + FLASH_ROWS) - 1;
    int kFirst = window_start(q0, window) / FLASH_TILE * FLASH_TILE;
    // in flight from here on: two groups, the oldest first (keys of a tile, then its values)
    flash_load_tile<HD>(k, b, kFirst, S, Hkv, kvh, ks);
    flash_copy_commit();
    flash_load_tile<HD>(v, b, kFirst, S, Hkv, kvh, vs);
    flash_copy_commit();
    for (int k0 = kFirst; k0 <= lastRow; k0 += FLASH_TILE) {
        bool more = k0 + FLASH_TILE <= lastRow;
        flash_copy_wait<1>();  // this tile's keys are in
        __syncthreads();
        float s[FLASH_TILE / 8][4];  // scores of the 16 rows against keys k0 + 8j + 2t (+1)
#pragma unroll
        for (int j = 0; j < FLASH_TILE / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
            flash_times_tile_t<HD>(qa, ks, 8 * j, lane, s[j]);
        }
        __syncthreads();  // every warp has read ks: the next keys may come
        if (more) flash_load_tile<HD>(k, b, k0 + FLASH_TILE, S, Hkv, kvh, ks);
        flash_copy_commit();
        float tileMax[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int j = 0; j < FLASH_TILE / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = k0 + 8 * j + 2 * t + (e & 1);
                s[j][e] = flash_visible(rows[e >> 1], key, S, window) && key < S ? s[j][e] * scaleLog2 : NEG_INF;
                tileMax[e >> 1] = fmaxf(tileMax[e >> 1], s[j][e]);
            }
        }
        float base[2];
#pragma unroll
        for (int x = 0; x < 2; x++) {
            tileMax[x] = fmaxf(tileMax[x], __shfl_xor_sync(0xffffffffu, tileMax[x], 1));
            tileMax[x] = fmaxf(tileMax[x], __shfl_xor_sync(0xffffffffu, tileMax[x], 2));
            float mNew = fmaxf(m[x], tileMax[x]);
            base[x] = mNew == NEG_INF ? 0.f : mNew;  // a row with no visible key yet keeps zeros, not NaN
            float correction = flash_exp2(m[x] - base[x]);
            m[x] = mNew;
            l[x] *= correction;
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) {
                o[dn][2 * x] *= correction;
                o[dn][2 * x + 1] *= correction;
            }
        }
#pragma unroll
        for (int j = 0; j < FLASH_TILE / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[j][e] = flash_exp2(s[j][e] - base[e >> 1]);
                l[e >> 1] += s[j][e];
            }
        }
        flash_copy_wait<1>();  // this tile's values are in (the next keys may still be on their way)
        __syncthreads();
#pragma unroll
        for (int kc = 0; kc < FLASH_TILE / 16; kc++) {
            unsigned pa[4] = {flash_pack(s[2 * kc][0], s[2 * kc][1]), flash_pack(s[2 * kc][2], s[2 * kc][3]),
                              flash_pack(s[2 * kc + 1][0], s[2 * kc + 1][1]), flash_pack(s[2 * kc + 1][2], s[2 * kc + 1][3])};
            flash_times_tile<HD>(pa, vs, 16 * kc, lane, o);
        }
        __syncthreads();  // every warp has read vs: the next values may come
        if (more) flash_load_tile<HD>(v, b, k0 + FLASH_TILE, S, Hkv, kvh, vs);
        flash_copy_commit();
    }
    flash_copy_wait<0>();  // nothing of this block is left in flight when it ends
#pragma unroll
    for (int x = 0; x < 2; x++) {
        l[x] += __shfl_xor_sync(0xffffffffu, l[x], 1);
        l[x] += __shfl_xor_sync(0xffffffffu, l[x], 2);
        if (rows[x] >= S) continue;
        float inv = 1.f / l[x];
        float* dst = out + row_at(b, rows[x], S, Hq, h, HD);
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            dst[dn * 8 + 2 * t] = o[dn][2 * x] * inv;
            dst[dn * 8 + 2 * t + 1] = o[dn][2 * x + 1] * inv;
        }
        if (t == 0) lse[((long long) b * Hq + h) * S + rows[x]] = m[x] * FLASH_LN2 + logf(l[x]);
    }
}

// delta[b, h, i] = bf16(dO_i)·O_i, the row sums of the softmax backward, with dO rounded as the tensor
// cores see it in dP = dO·Vᵀ (so that Σ_j dS_ij stays near 0: a row with one key gets dS ≈ 0, not the
// rounding error of dO). One warp per row, rows in (b, h, i) order; grid-stride over B·Hq·S rows. With
// {@code wide} (the host checked that both bases are 16-byte aligned and hd is a multiple of 4) each lane
// reads four floats at a time.
__device__ __forceinline__ float bf16_rounded(float x) {
    return __uint_as_float(flash_pack(x, 0.f) << 16);
}

extern "C" __global__ void attention_row_dots(const float* gout, const float* out, int S, int Hq, int hd, long long rows, int wide,
                                              float* delta) {
    int lane = threadIdx.x & 31;
    long long warps = (long long) gridDim.x * (blockDim.x >> 5);
    for (long long r = blockIdx.x * (long long) (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
        int i = (int) (r % S);
        long long bh = r / S;
        long long o = row_at((int) (bh / Hq), i, S, Hq, (int) (bh % Hq), hd);
        float acc = 0.f;
        if (wide) {
            for (int d = 4 * lane; d < hd; d += 128) {
                float4 g = *reinterpret_cast<const float4*>(gout + o + d);
                float4 y = *reinterpret_cast<const float4*>(out + o + d);
                acc += bf16_rounded(g.x) * y.x + bf16_rounded(g.y) * y.y + bf16_rounded(g.z) * y.z + bf16_rounded(g.w) * y.w;
            }
        } else {
            for (int d = lane; d < hd; d += 32) acc += bf16_rounded(gout[o + d]) * out[o + d];
        }
        acc = warp_sum(acc);
        if (lane == 0) delta[r] = acc;
    }
}

// dQ_i = scale·Σ_j P_ij·(dP_ij − delta_i)·k_j with P_ij = exp(q_i·k_j·scale − lse_i) and dP_ij = dO_i·v_j:
// same grid and tiles as the forward.
template <int HD>
__device__ __forceinline__ void flash_backward_dq(const unsigned short* gout, const unsigned short* q, const unsigned short* k,
                                                  const unsigned short* v, const float* lse, const float* delta, int S, int Hq, int Hkv,
                                                  int window, float scale, float* gq) {
    alignas(16) __shared__ unsigned short ks[FLASH_TILE * (HD + 8)];
    alignas(16) __shared__ unsigned short vs[FLASH_TILE * (HD + 8)];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int b = blockIdx.x / Hq, h = blockIdx.x % Hq, kvh = h / (Hq / Hkv);
    int q0 = (gridDim.y - 1 - blockIdx.y) * FLASH_ROWS;
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    unsigned qa[HD / 16][4], da[HD / 16][4];
    flash_load_tile<HD>(q, b, q0, S, Hq, h, ks);
    flash_load_tile_now<HD>(gout, b, q0, S, Hq, h, vs);
    __syncthreads();
    flash_a_fragments<HD>(ks, warp, g, t, qa);
    flash_a_fragments<HD>(vs, warp, g, t, da);
    __syncthreads();
    float rowLse[2], rowDelta[2];
#pragma unroll
    for (int x = 0; x < 2; x++) {
        long long stat = ((long long) b * Hq + h) * S + rows[x];
        rowLse[x] = rows[x] < S ? lse[stat] * FLASH_LOG2E : 0.f;
        rowDelta[x] = rows[x] < S ? delta[stat] : 0.f;
    }
    float dq[HD / 8][4];
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) dq[dn][0] = dq[dn][1] = dq[dn][2] = dq[dn][3] = 0.f;
    float scaleLog2 = scale * FLASH_LOG2E;
    int lastRow = min(S, q0 + FLASH_ROWS) - 1;
    for (int k0 = window_start(q0, window) / FLASH_TILE * FLASH_TILE; k0 <= lastRow; k0 += FLASH_TILE) {
        flash_load_tile<HD>(k, b, k0, S, Hkv, kvh, ks);
        flash_load_tile_now<HD>(v, b, k0, S, Hkv, kvh, vs);
        __syncthreads();
        bool edge = !flash_all_visible(q0 + warp * 16, q0 + warp * 16 + 15, k0, k0 + FLASH_TILE - 1, S, window);
#pragma unroll 1
        for (int kc = 0; kc < FLASH_TILE / 16; kc++) {  // 16 keys at a time: scores, dP, dS, then dQ += dS·K
            float s[2][4], dp[2][4];
#pragma unroll
            for (int jj = 0; jj < 2; jj++) {
                s[jj][0] = s[jj][1] = s[jj][2] = s[jj][3] = 0.f;
                dp[jj][0] = dp[jj][1] = dp[jj][2] = dp[jj][3] = 0.f;
                flash_times_tile_t<HD>(qa, ks, 16 * kc + 8 * jj, lane, s[jj]);
                flash_times_tile_t<HD>(da, vs, 16 * kc + 8 * jj, lane, dp[jj]);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int key = k0 + 16 * kc + 8 * jj + 2 * t + (e & 1);
                    float p = !edge || (flash_visible(rows[e >> 1], key, S, window) && key < S)
                            ? flash_exp2(s[jj][e] * scaleLog2 - rowLse[e >> 1]) : 0.f;
                    s[jj][e] = p * (dp[jj][e] - rowDelta[e >> 1]);
                }
            }
            unsigned dsa[4] = {flash_pack(s[0][0], s[0][1]), flash_pack(s[0][2], s[0][3]), flash_pack(s[1][0], s[1][1]),
                               flash_pack(s[1][2], s[1][3])};
            flash_times_tile<HD>(dsa, ks, 16 * kc, lane, dq);
        }
        __syncthreads();
    }
#pragma unroll
    for (int x = 0; x < 2; x++) {
        if (rows[x] >= S) continue;
        float* dst = gq + row_at(b, rows[x], S, Hq, h, HD);
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            dst[dn * 8 + 2 * t] = dq[dn][2 * x] * scale;
            dst[dn * 8 + 2 * t + 1] = dq[dn][2 * x + 1] * scale;
        }
    }
}

// dV_j = Σ_i P_ij·dO_i and dK_j = scale·Σ_i P_ij·(dP_ij − delta_i)·q_i over the query heads of the kv
// head's group in order and, per head, the query tiles in order: grid (B·Hkv, ⌈S / 64⌉), key block
// blockIdx.y (the first blocks see the most queries and start first). The products are computed
// transposed (keys as rows): Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, then dV += Pᵀ·dO and dK += dSᵀ·Q.
template <int HD>
__device__ __forceinline__ void flash_backward_dkdv(const unsigned short* gout, const unsigned short* q, const unsigned short* k,
        const unsigned short* v, const float* lse, const float* delta, int S, int Hq, int Hkv, int window, float scale, float* gk,
        float* gv) {
    alignas(16) __shared__ unsigned short qs[FLASH_TILE * (HD + 8)];
    alignas(16) __shared__ unsigned short dos[FLASH_TILE * (HD + 8)];
    __shared__ float tileLse[FLASH_TILE], tileDelta[FLASH_TILE];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int b = blockIdx.x / Hkv, kvh = blockIdx.x % Hkv, group = Hq / Hkv;
    int k0 = blockIdx.y * FLASH_ROWS;
    int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
    unsigned ka[HD / 16][4], va[HD / 16][4];
    flash_load_tile<HD>(k, b, k0, S, Hkv, kvh, qs);
    flash_load_tile_now<HD>(v, b, k0, S, Hkv, kvh, dos);
    __syncthreads();
    flash_a_fragments<HD>(qs, warp, g, t, ka);
    flash_a_fragments<HD>(dos, warp, g, t, va);
    __syncthreads();
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) {
        dk[dn][0] = dk[dn][1] = dk[dn][2] = dk[dn][3] = 0.f;
        dv[dn][0] = dv[dn][1] = dv[dn][2] = dv[dn][3] = 0.f;
    }
    float scaleLog2 = scale * FLASH_LOG2E;
    int queryEnd = window > 0 ? min(S, k0 + FLASH_ROWS - 1 + window) : S;  // past the last query that sees a key of the block
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int q0 = k0; q0 < queryEnd; q0 += FLASH_TILE) {
            flash_load_tile<HD>(q, b, q0, S, Hq, h, qs);
            flash_load_tile_now<HD>(gout, b, q0, S, Hq, h, dos);
            if (threadIdx.x < FLASH_TILE) {
                int i = q0 + threadIdx.x;
                long long stat = ((long long) b * Hq + h) * S + i;
                tileLse[threadIdx.x] = i < S ? lse[stat] * FLASH_LOG2E : 0.f;
                tileDelta[threadIdx.x] = i < S ? delta[stat] : 0.f;
            }
            __syncthreads();
            bool edge = !flash_all_visible(q0, q0 + FLASH_TILE - 1, k0 + warp * 16, k0 + warp * 16 + 15, S, window);
#pragma unroll 1
            for (int qc = 0; qc < FLASH_TILE / 16; qc++) {  // 16 queries at a time
                float st[2][4], dpt[2][4];
#pragma unroll
                for (int jj = 0; jj < 2; jj++) {
                    st[jj][0] = st[jj][1] = st[jj][2] = st[jj][3] = 0.f;
                    dpt[jj][0] = dpt[jj][1] = dpt[jj][2] = dpt[jj][3] = 0.f;
                    flash_times_tile_t<HD>(ka, qs, 16 * qc + 8 * jj, lane, st[jj]);
                    flash_times_tile_t<HD>(va, dos, 16 * qc + 8 * jj, lane, dpt[jj]);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int local = 16 * qc + 8 * jj + 2 * t + (e & 1);
                        float p = !edge || flash_visible(q0 + local, keys[e >> 1], S, window)
                                ? flash_exp2(st[jj][e] * scaleLog2 - tileLse[local]) : 0.f;
                        st[jj][e] = p;
                        dpt[jj][e] = p * (dpt[jj][e] - tileDelta[local]);
                    }
                }
                unsigned pa[4] = {flash_pack(st[0][0], st[0][1]), flash_pack(st[0][2], st[0][3]), flash_pack(st[1][0], st[1][1]),
                                  flash_pack(st[1][2], st[1][3])};
                unsigned dsa[4] = {flash_pack(dpt[0][0], dpt[0][1]), flash_pack(dpt[0][2], dpt[0][3]), flash_pack(dpt[1][0], dpt[1][1]),
                                   flash_pack(dpt[1][2], dpt[1][3])};
                flash_times_tile<HD>(pa, dos, 16 * qc, lane, dv);
                flash_times_tile<HD>(dsa, qs, 16 * qc, lane, dk);
            }
            __syncthreads();
        }
    }
#pragma unroll
    for (int x = 0; x < 2; x++) {
        if (keys[x] >= S) continue;
        long long kv = row_at(b, keys[x], S, Hkv, kvh, HD);
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            gk[kv + dn * 8 + 2 * t] = dk[dn][2 * x] * scale;
            gk[kv + dn * 8 + 2 * t + 1] = dk[dn][2 * x + 1] * scale;
            gv[kv + dn * 8 + 2 * t] = dv[dn][2 * x];
            gv[kv + dn * 8 + 2 * t + 1] = dv[dn][2 * x + 1];
        }
    }
}

// The entry points, one per head dimension (the Java side names them flash_<pass>_hd<HD>). Blocks of
// FLASH_THREADS threads; the second launch bound (blocks per multiprocessor) caps the registers at
// 65536 / (128 · blocks). The bounds are where ptxas (CUDA 13, sm_90a) spills nothing or a few bytes
// (the head dimension 64 forward fits best left to ptxas): 148, 128, 168, 168, 217 and 255 registers in
// the order below, so 3, 4, 3, 3, 2 and 2 blocks per multiprocessor (shared memory allows 6 blocks at
// head dimension 128, 12 at 64).
extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_forward_hd64(const unsigned short* q, const unsigned short* k, const unsigned short* v, int S, int Hq, int Hkv, int window,
        float scale, float* out, float* lse) {
    flash_forward<64>(q, k, v, S, Hq, Hkv, window, scale, out, lse);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS, 4) flash_backward_dq_hd64(const unsigned short* gout, const unsigned short* q, const unsigned short* k, const unsigned short* v, const float* lse,
        const float* delta, int S, int Hq, int Hkv, int window, float scale, float* gq) {
    flash_backward_dq<64>(gout, q, k, v, lse, delta, S, Hq, Hkv, window, scale, gq);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS, 3) flash_backward_dkdv_hd64(const unsigned short* gout, const unsigned short* q, const unsigned short* k, const unsigned short* v, const float* lse,
        const float* delta, int S, int Hq, int Hkv, int window, float scale, float* gk, float* gv) {
    flash_backward_dkdv<64>(gout, q, k, v, lse, delta, S, Hq, Hkv, window, scale, gk, gv);
}

extern "C" __global__ void __launch_bounds__(FLASH_THREADS, 3) flash_forward_hd128(const unsigned short* q, const unsigned short* k, const unsigned short* v, int S, int Hq, int Hkv, int window,
        float scale, float* out, float* lse) {
    flash_forward<128>(q, k, v, S, Hq, Hkv, window, scale, out, lse);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS, 2) flash_backward_dq_hd128(const unsigned short* gout, const unsigned short* q, const unsigned short* k, const unsigned short* v, const float* lse,
        const float* delta, int S, int Hq, int Hkv, int window, float scale, float* gq) {
    flash_backward_dq<128>(gout, q, k, v, lse, delta, S, Hq, Hkv, window, scale, gq);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS, 2) flash_backward_dkdv_hd128(const unsigned short* gout, const unsigned short* q, const unsigned short* k, const unsigned short* v, const float* lse,
        const float* delta, int S, int Hq, int Hkv, int window, float scale, float* gk, float* gv) {
    flash_backward_dkdv<128>(gout, q, k, v, lse, delta, S, Hq, Hkv, window, scale, gk, gv);
}
