// The permutation on the device: kept (token, slot) entries grouped by expert, stable (token order
// within an expert, the order of the CPU's stable sort), in three passes over the flat indices:
// per-block histograms, one scan, per-block ranking. Entries with expert -1 (dropped) are skipped.
// Then row gathers and the weighted combine, gather-based (no atomics, deterministic).

#define PERM_BLOCK 256

// blockCounts[b][e] = entries of block b (PERM_BLOCK entries of idx) routed to expert e. With
// droppedBin >= 0, entries of expert -1 count as expert droppedBin (so that they sort last).
extern "C" __global__ void perm_block_histogram(const int* __restrict__ idx, int n, int E, int droppedBin, int* __restrict__ blockCounts) {
    extern __shared__ int hist[];
    for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
    __syncthreads();
    int i = blockIdx.x * PERM_BLOCK + threadIdx.x;
    if (i < n) { int e = idx[i]; if (e < 0) e = droppedBin; if (e >= 0) atomicAdd(&hist[e], 1); }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) blockCounts[(long long) blockIdx.x * E + e] = hist[e];
}

// One block of 1024 threads (E <= 1024): counts[e], offsets[0..E] (exclusive scan, offsets[E] = kept
// rows), blockBase[b][e] = first row of block b's entries of expert e. Row scale for gradient scaling:
// avg / n_e with avg = kept / E, as float (written per expert into expertScale).
extern "C" __global__ void perm_scan(const int* __restrict__ blockCounts, int blocks, int E, int* __restrict__ counts,
        int* __restrict__ offsets, int* __restrict__ blockBase, float* __restrict__ expertScale) {
    __shared__ int scan[1024];
    int e = threadIdx.x;
    int total = 0;
    if (e < E) {
        for (int b = 0; b < blocks; b++) {
            blockBase[(long long) b * E + e] = total;
            total += blockCounts[(long long) b * E + e];
        }
        counts[e] = total;
    }
    scan[e] = e < E ? total : 0;
    __syncthreads();
    for (int s = 1; s < 1024; s <<= 1) {  // inclusive Hillis-Steele scan
        int v = e >= s ? scan[e - s] : 0;
        __syncthreads();
        scan[e] += v;
        __syncthreads();
    }
    int start = scan[e] - (e < E ? total : 0);
    if (e < E) {
        offsets[e] = start;
        for (int b = 0; b < blocks; b++) blockBase[(long long) b * E + e] += start;
        double avg = (double) scan[1023] / E;
        expertScale[e] = total > 0 ? (float) (avg / total) : 0.f;
    }
    if (e == 0) offsets[E] = scan[1023];
}

// rowEntry[row] = flat entry (t·K + k), rowToken[row] = t, entryRow[entry] = row (or -1 if dropped and
// droppedBin < 0; with droppedBin >= 0 dropped entries get rows in that bin, after every expert).
// expertBase null: rows packed expert after expert (offsets). Otherwise expert e's rows start at
// expertBase[e] (padded or bucketed layouts of batched products); rows past an expert's count keep the
// -1 the caller wrote.
extern "C" __global__ void perm_scatter(const int* __restrict__ idx, int n, int K, int E, int droppedBin,
        const int* __restrict__ blockBase, const int* __restrict__ offsets, const int* __restrict__ expertBase, int* __restrict__ rowEntry,
        int* __restrict__ rowToken, int* __restrict__ entryRow) {
    __shared__ int chunk[PERM_BLOCK];
    int i = blockIdx.x * PERM_BLOCK + threadIdx.x;
    int e = i < n ? idx[i] : -1;
    if (i < n && e < 0) e = droppedBin;
    chunk[threadIdx.x] = e;
    __syncthreads();
    if (i >= n) return;
    if (e < 0) { entryRow[i] = -1; return; }
    int rank = 0;
    for (int j = 0; j < (int) threadIdx.x; j++) rank += chunk[j] == e;
    int row = blockBase[(long long) blockIdx.x * E + e] + rank;
    if (expertBase) row += expertBase[e] - offsets[e];
    rowEntry[row] = i;
    rowToken[row] = i / K;
    entryRow[i] = row;
}

// rowScale[row] = expertScale[expert of row], over the grouped layout (one block per expert;
// expertBase as in perm_scatter).
extern "C" __global__ void expand_expert_scale(const int* __restrict__ offsets, const int* __restrict__ expertBase,
        const float* __restrict__ expertScale, float* __restrict__ rowScale) {
    int e = blockIdx.x;
    float s = expertScale[e];
    int start = expertBase ? expertBase[e] : offsets[e];
    int end = start + offsets[e + 1] - offsets[e];
    for (int r = start + threadIdx.x; r < end; r += blockDim.x) rowScale[r] = s;
}

// dst[r] = src[index[r]] for rows of rowBytes bytes, zeros where index[r] < 0 (padding rows); unit
// (16, 8, 4 or 2) divides rowBytes and both base addresses. Blocks stride over the rows.
extern "C" __global__ void gather_rows(const char* __restrict__ src, const int* __restrict__ index, char* __restrict__ dst,
        int rows, long long rowBytes, int unit) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        char* d = dst + (long long) r * rowBytes;
        long long n = rowBytes / unit;
        if (index[r] < 0) {
            for (long long j = threadIdx.x; j < rowBytes / 2; j += blockDim.x) ((unsigned short*) d)[j] = 0;
            continue;
        }
        const char* s = src + (long long) index[r] * rowBytes;
        for (long long j = threadIdx.x; j < n; j += blockDim.x) {
            switch (unit) {
                case 16: ((uint4*) d)[j] = ((const uint4*) s)[j]; break;
                case 8: ((uint2*) d)[j] = ((const uint2*) s)[j]; break;
                case 4: ((unsigned*) d)[j] = ((const unsigned*) s)[j]; break;
                default: ((unsigned short*) d)[j] = ((const unsigned short*) s)[j]; break;
            }
        }
    }
}

// out[t] = (accumulate ? out[t] : 0) + Σ c_tk · rows[r_tk] over the token's slots k with r_tk =
// entryRow[t·K + k] >= 0 (row -1: a dropped entry, adds nothing), in ascending row order, each product
// rounded before it is added (no fused multiply-add), with c_tk = (w ? w[t·K + k] : 1) · (rowScale ?
// rowScale[row] : 1). In float32 without accumulate and rowScale these are the CPU's bits for the same sum
// (rows taken in ascending order into a zeroed result). K <= 32. Serves the weighted combine (forward) and
// the gather's backward (w = rowScale = null).
template <typename T>
__device__ void combine_rows(const T* __restrict__ rows, const int* __restrict__ entryRow, const float* __restrict__ w,
        const float* __restrict__ rowScale, T* __restrict__ out, int tokens, int K, int D, int accumulate) {
    __shared__ int slotRow[32];
    __shared__ int r_k[32];
    __shared__ float c_k[32];
    for (int t = blockIdx.x; t < tokens; t += gridDim.x) {
        __syncthreads();
        if (threadIdx.x < K) slotRow[threadIdx.x] = entryRow[(long long) t * K + threadIdx.x];
        __syncthreads();
        if (threadIdx.x < K) {
            // slot k's place among the token's rows, ascending, the dropped slots (row -1) last
            int k = threadIdx.x;
            unsigned key = (unsigned) slotRow[k];  // -1 becomes the largest key
            int place = 0;
            for (int j = 0; j < K; j++) {
                unsigned other = (unsigned) slotRow[j];
                place += other < key || (other == key && j < k);
            }
            int r = slotRow[k];
            r_k[place] = r;
            c_k[place] = r < 0 ? 0.f : __fmul_rn(w ? w[(long long) t * K + k] : 1.f, rowScale ? rowScale[r] : 1.f);
        }
        __syncthreads();
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = accumulate ? ld(out, (long long) t * D + d) : 0.f;
            for (int k = 0; k < K && r_k[k] >= 0; k++) acc = __fadd_rn(acc, __fmul_rn(c_k[k], ld(rows, (long long) r_k[k] * D + d)));
            st(out, (long long) t * D + d, acc);
        }
    }
}
#define COMBINE(T, S) extern "C" __global__ void combine_rows_##S(const T* rows, const int* entryRow, const float* w, \
        const float* rowScale, T* out, int tokens, int K, int D, int accumulate) { \
    combine_rows<T>(rows, entryRow, w, rowScale, out, tokens, K, D, accumulate); }
FOR_BOTH(COMBINE)

// The combine's backward, one block per grouped row r (entry i = rowEntry[r], token t = i / K):
// dRows[r] = w[i] · s_r · dOut[t]; dw[i] = s_r · <rows[r], dOut[t]> (fp32 accumulation, a fixed order).
// Padding rows (rowEntry -1) get zeros, so that they add nothing to the weight gradients. dRows or dw
// may be null (that gradient is not wanted).
template <typename T>
__device__ void combine_backward(const T* __restrict__ dOut, const T* __restrict__ rows, const int* __restrict__ rowEntry,
        const float* __restrict__ w, const float* __restrict__ rowScale, T* __restrict__ dRows, float* __restrict__ dw,
        int nRows, int K, int D) {
    __shared__ float red[32];
    for (int r = blockIdx.x; r < nRows; r += gridDim.x) {
        int i = rowEntry[r];
        if (i < 0) {
            if (dRows) for (int d = threadIdx.x; d < D; d += blockDim.x) st(dRows, (long long) r * D + d, 0.f);
            continue;
        }
        long long t = i / K;
        float s = rowScale ? rowScale[r] : 1.f;
        float c = w[i] * s;
        float dot = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float g = ld(dOut, t * D + d);
            if (dRows) st(dRows, (long long) r * D + d, c * g);
            if (dw) dot += g * ld(rows, (long long) r * D + d);
        }
        if (!dw) continue;
        dot = warp_sum(dot);
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = dot;
        __syncthreads();
        if (threadIdx.x < 32) {
            float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.f;
            v = warp_sum(v);
            if (threadIdx.x == 0) dw[i] = s * v;
        }
        __syncthreads();
    }
}
#define COMBINE_BWD(T, S) extern "C" __global__ void combine_backward_##S(const T* dOut, const T* rows, const int* rowEntry, \
        const float* w, const float* rowScale, T* dRows, float* dw, int nRows, int K, int D) { \
    combine_backward<T>(dOut, rows, rowEntry, w, rowScale, dRows, dw, nRows, K, D); }
FOR_BOTH(COMBINE_BWD)

// dst[index[r]] += src[r] (float32, atomics): the general scatter-add of rows (index_add).
extern "C" __global__ void scatter_add_rows_f32(const float* __restrict__ src, const int* __restrict__ index,
        float* __restrict__ dst, int rows, int D) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        long long to = (long long) index[r] * D;
        for (int d = threadIdx.x; d < D; d += blockDim.x) atomicAdd(&dst[to + d], src[(long long) r * D + d]);
    }
}

// ------------------------------------------------------------------ padded layout of a grouped product
// meta holds 4 ints per group g (G groups): compact[g] (first row of g in the packed rows), padded[g] (its
// first row in the padded layout), count[g] (its rows) and cap[g] (its padded rows: count rounded up to its
// bucket's size, 0 for a group in no bucket). Block row blockIdx.y is group g.

// Blocks take rows of their group (blockIdx.x, blockIdx.x + gridDim.x, ...), threads the columns, four at
// a time when `wide` (the caller checked that cols is a multiple of 4 and the packed rows' base is 16-byte
// aligned, so every row is).

// dst (padded rows × cols, bf16) = src's rows of each group, then zero rows up to the group's cap
// With `index` (else null), packed row i is row index[i] of src: the rows are gathered on the way.
extern "C" __global__ void pad_rows_f32_bf16(const float* __restrict__ src, bf16* __restrict__ dst, const int* __restrict__ meta,
        const int* __restrict__ index, int G, int cols, int wide) {
    int g = blockIdx.y;
    int compact = meta[g], padded = meta[G + g], count = meta[2 * G + g], cap = meta[3 * G + g];
    for (int r = blockIdx.x; r < cap; r += gridDim.x) {
        bf16* out = dst + (long long) (padded + r) * cols;
        const float* in = src + (long long) (r < count && index != nullptr ? index[compact + r] : compact + r) * cols;
        if (wide) {
#pragma unroll 4
            for (int c = 4 * threadIdx.x; c < cols; c += 4 * blockDim.x) {
                float4 v = r < count ? *reinterpret_cast<const float4*>(in + c) : make_float4(0.f, 0.f, 0.f, 0.f);
                bf16 packed[4];
                st(packed, 0, v.x); st(packed, 1, v.y); st(packed, 2, v.z); st(packed, 3, v.w);
                *reinterpret_cast<uint2*>(out + c) = *reinterpret_cast<uint2*>(packed);
            }
        } else {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) st(out, c, r < count ? in[c] : 0.f);
        }
    }
}

// dst += each group's first count rows of the f32 layout src, packed row i added into row index[i] of dst
// (atomically: several packed rows may name one dst row, as a gather's gradient does). Launched with a
// block per row of the largest group, so many rows' additions are in flight at once; with `wide` (cols a
// multiple of 4, both bases 16-byte aligned: the host checks) each thread reads four floats at a time.
extern "C" __global__ void unpad_scatter_add_rows_f32(const float* __restrict__ src, float* __restrict__ dst, const int* __restrict__ meta,
        const int* __restrict__ index, int G, int cols, int wide) {
    int g = blockIdx.y;
    int compact = meta[g], padded = meta[G + g], count = meta[2 * G + g];
    for (int r = blockIdx.x; r < count; r += gridDim.x) {
        const float* in = src + (long long) (padded + r) * cols;
        float* out = dst + (long long) index[compact + r] * cols;
        if (wide) {
            for (int c = 4 * threadIdx.x; c < cols; c += 4 * blockDim.x) {
                float4 v = *reinterpret_cast<const float4*>(in + c);
                atomicAdd(out + c, v.x);
                atomicAdd(out + c + 1, v.y);
                atomicAdd(out + c + 2, v.z);
                atomicAdd(out + c + 3, v.w);
            }
        } else {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) atomicAdd(out + c, in[c]);
        }
    }
}

// out[entryOfRow[compact + r]] = padded + r for each group's rows: the layout row of every entry of a gather
// (out holds -1 beforehand, which stays at entries of no row), for a sum per source row over the layout
extern "C" __global__ void layout_row_of_entry(const int* __restrict__ meta, const int* __restrict__ entryOfRow, int G,
        int* __restrict__ out) {
    int g = blockIdx.y;
    int compact = meta[g], padded = meta[G + g], count = meta[2 * G + g];
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < count; r += gridDim.x * blockDim.x) out[entryOfRow[compact + r]] = padded + r;
}

// dst (packed rows × cols, f32) = the first count rows of each group's padded rows in src
extern "C" __global__ void unpad_rows_f32(const float* __restrict__ src, float* __restrict__ dst, const int* __restrict__ meta,
        int G, int cols, int wide) {
    int g = blockIdx.y;
    int compact = meta[g], padded = meta[G + g], count = meta[2 * G + g];
    for (int r = blockIdx.x; r < count; r += gridDim.x) {
        const float* in = src + (long long) (padded + r) * cols;
        float* out = dst + (long long) (compact + r) * cols;
        if (wide) {
#pragma unroll 4
            for (int c = 4 * threadIdx.x; c < cols; c += 4 * blockDim.x) {
                *reinterpret_cast<float4*>(out + c) = *reinterpret_cast<const float4*>(in + c);
            }
        } else {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = in[c];
        }
    }
}
