// The CUDA builtins the attention module uses, emulated on the host for CudaAttentionEmulationTest: one
// std::thread per CUDA thread, one block at a time, so `__shared__` arrays become function statics shared
// by the block's threads. Warp collectives (shuffles, mma.sync, ldmatrix) meet at a per-warp barrier,
// exchange their operands through a per-warp buffer, and meet again. mma.sync m16n8k16 and ldmatrix
// follow the PTX ISA's fragment layouts, written out here independently of the kernels' own helpers.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
using std::max;
using std::min;

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
struct alignas(16) float4 { float x, y, z, w; };
thread_local Dim3 threadIdx, blockIdx;
Dim3 gridDim, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

static std::barrier<>* blockBarrier;
static std::barrier<>* warpBarrier[32];
static float shuffled[32][32];
static unsigned mmaA[32][32][4], mmaB[32][32][2];
static float mmaC[32][32][4];
static const unsigned short* rowAddress[32][32];

inline int warpOf() { return threadIdx.x >> 5; }
inline int laneOf() { return threadIdx.x & 31; }
inline void warpSync() { warpBarrier[warpOf()]->arrive_and_wait(); }
inline void __syncthreads() { blockBarrier->arrive_and_wait(); }

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    shuffled[warpOf()][laneOf()] = v;
    warpSync();
    float r = shuffled[warpOf()][laneOf() ^ mask];
    warpSync();
    return r;
}

// round to nearest even (finite inputs)
inline unsigned short toBf16(float f) {
    unsigned u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short) (u >> 16);
}
inline float fromBf16(unsigned short h) { return __uint_as_float(((unsigned) h) << 16); }

inline unsigned flash_pack(float lo, float hi) { return (unsigned) toBf16(lo) | ((unsigned) toBf16(hi) << 16); }
inline float flash_exp2(float x) { return std::exp2(x); }

// D = A·B + C on 16 × 8 × 16: A reg r of lane (g, t) holds rows g (r even) or g + 8 (r odd), columns
// 2t, 2t + 1 (r < 2) or 2t + 8, 2t + 9; B reg r holds rows 2t, 2t + 1 (+ 8 for r = 1) of column g; C
// element e holds row g (e < 2) or g + 8, column 2t + (e & 1)
inline void flash_mma(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
    int w = warpOf(), l = laneOf();
    for (int i = 0; i < 4; i++) {
        mmaA[w][l][i] = a[i];
        mmaC[w][l][i] = d[i];
    }
    mmaB[w][l][0] = b0;
    mmaB[w][l][1] = b1;
    warpSync();
    float A[16][16], B[16][8];
    for (int lane = 0; lane < 32; lane++) {
        int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; r++) {
            int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
            A[row][col] = fromBf16(mmaA[w][lane][r] & 0xffff);
            A[row][col + 1] = fromBf16(mmaA[w][lane][r] >> 16);
        }
        for (int r = 0; r < 2; r++) {
            B[2 * t + 8 * r][g] = fromBf16(mmaB[w][lane][r] & 0xffff);
            B[2 * t + 8 * r + 1][g] = fromBf16(mmaB[w][lane][r] >> 16);
        }
    }
    int g = l >> 2, t = l & 3;
    float out[4];
    for (int e = 0; e < 4; e++) {
        int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float acc = 0;
        for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
        out[e] = mmaC[w][l][e] + acc;
    }
    warpSync();
    for (int e = 0; e < 4; e++) d[e] = out[e];
}

// ldmatrix .x4: lane l names row l % 8 of matrix l / 8; lane l receives, for matrix m, the elements
// (l / 4, 2(l % 4)) and (l / 4, 2(l % 4) + 1), or with .trans (2(l % 4), l / 4) and (2(l % 4) + 1, l / 4)
inline void emulatedLdmatrix(unsigned r[4], const unsigned short* row, bool trans) {
    int w = warpOf(), l = laneOf();
    rowAddress[w][l] = row;
    warpSync();
    for (int m = 0; m < 4; m++) {
        if (!trans) {
            const unsigned short* p = rowAddress[w][m * 8 + l / 4];
            r[m] = (unsigned) p[2 * (l % 4)] | ((unsigned) p[2 * (l % 4) + 1] << 16);
        } else {
            const unsigned short* p0 = rowAddress[w][m * 8 + 2 * (l % 4)];
            const unsigned short* p1 = rowAddress[w][m * 8 + 2 * (l % 4) + 1];
            r[m] = (unsigned) p0[l / 4] | ((unsigned) p1[l / 4] << 16);
        }
    }
    warpSync();
}
inline void flash_ldsm_x4(unsigned r[4], const unsigned short* row) { emulatedLdmatrix(r, row, false); }
inline void flash_ldsm_x4_t(unsigned r[4], const unsigned short* row) { emulatedLdmatrix(r, row, true); }

// cp.async: a copy lands only when a wait_group completes its group (the latest the hardware may land it), and its
// destination holds NaNs from the issue until then, so a read before the wait or a write while another warp still reads
// the tile shows; a thread that ends with copies pending is an error
struct PendingCopy { unsigned short* dst; const unsigned short* src; };
thread_local std::vector<std::vector<PendingCopy>> committedGroups;
thread_local std::vector<PendingCopy> openGroup;
inline void flash_copy16(unsigned short* dst, const unsigned short* src) {
    std::memset(dst, 0xff, 16);  // undefined until the copy's group is waited for: NaNs show any earlier read
    openGroup.push_back({dst, src});
}
inline void flash_copy_commit() { committedGroups.push_back(openGroup); openGroup.clear(); }
template <int N> inline void flash_copy_wait() {
    while (committedGroups.size() > (size_t) N) {
        for (auto& c : committedGroups.front()) std::memcpy(c.dst, c.src, 16);
        committedGroups.erase(committedGroups.begin());
    }
}
inline void checkNoCopyPending() {
    if (!openGroup.empty() || !committedGroups.empty()) {
        std::printf("thread %u of block (%u, %u) ends with %zu uncommitted and %zu committed copy groups pending\n", threadIdx.x,
                    blockIdx.x, blockIdx.y, openGroup.size(), committedGroups.size());
        std::exit(3);
    }
}

// runs body() on every thread of every block of a (gx, gy) grid of `threads`-thread blocks, block after block
template <class F> void launch(unsigned gx, unsigned gy, unsigned threads, F body) {
    gridDim = {gx, gy, 1};
    blockDim = {threads, 1, 1};
    std::barrier<> block(threads);
    blockBarrier = &block;
    for (unsigned w = 0; w < threads / 32; w++) warpBarrier[w] = new std::barrier<>(32);
    for (unsigned y = 0; y < gy; y++) {
        for (unsigned x = 0; x < gx; x++) {
            std::vector<std::thread> ts;
            for (unsigned i = 0; i < threads; i++) {
                ts.emplace_back([=] {
                    threadIdx = {i, 0, 0};
                    blockIdx = {x, y, 0};
                    body();
                    checkNoCopyPending();
                });
            }
            for (auto& th : ts) th.join();
        }
    }
    for (unsigned w = 0; w < threads / 32; w++) delete warpBarrier[w];
}
