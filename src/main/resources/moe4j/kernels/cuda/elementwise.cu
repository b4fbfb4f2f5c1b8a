// Element-wise kernels: expert activations and their backward, casts, scaling. Grid-stride loops
// over n elements (n may exceed 2³¹).

#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < (n); \
        i += (long long) gridDim.x * blockDim.x)

// gu (rows, 2H) = [gate | up] per row; h (rows, H) = silu(gate) · up.
template <typename I, typename O>
__device__ void swiglu_forward(const I* __restrict__ gu, O* __restrict__ h, long long rows, int H) {
    GRID_STRIDE(i, rows * H) {
        long long r = i / H; int j = (int) (i - r * H);
        float g = ld(gu, r * 2 * H + j), u = ld(gu, r * 2 * H + H + j);
        st(h, i, g / (1.f + expf(-g)) * u);
    }
}
// dgu = [dgate | dup]: dgate = dh · u · σ(g)(1 + g(1 − σ(g))), dup = dh · silu(g).
template <typename I, typename O>
__device__ void swiglu_backward(const I* __restrict__ gu, const I* __restrict__ dh, O* __restrict__ dgu, long long rows, int H) {
    GRID_STRIDE(i, rows * H) {
        long long r = i / H; int j = (int) (i - r * H);
        float g = ld(gu, r * 2 * H + j), u = ld(gu, r * 2 * H + H + j), d = ld(dh, i);
        float s = sigmoidf_(g);
        st(dgu, r * 2 * H + j, d * u * s * (1.f + g * (1.f - s)));
        st(dgu, r * 2 * H + H + j, d * g * s);
    }
}
// exact GELU x·Φ(x), Φ(x) = (1 + erf(x/√2)) / 2
template <typename T>
__device__ void gelu_forward(const T* __restrict__ a, T* __restrict__ h, long long n) {
    GRID_STRIDE(i, n) { float x = ld(a, i); st(h, i, 0.5f * x * (1.f + erff(x * 0.70710678118654752f))); }
}
template <typename T>
__device__ void gelu_backward(const T* __restrict__ a, const T* __restrict__ dh, T* __restrict__ da, long long n) {
    GRID_STRIDE(i, n) {
        float x = ld(a, i);
        float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        st(da, i, ld(dh, i) * (cdf + x * pdf));
    }
}
template <typename T>
__device__ void relu_forward(const T* __restrict__ a, T* __restrict__ h, long long n) {
    GRID_STRIDE(i, n) { float x = ld(a, i); st(h, i, x > 0.f ? x : 0.f); }
}
template <typename T>
__device__ void relu_backward(const T* __restrict__ a, const T* __restrict__ dh, T* __restrict__ da, long long n) {
    GRID_STRIDE(i, n) { st(da, i, ld(a, i) > 0.f ? ld(dh, i) : 0.f); }
}
// x[i] *= alpha (gradient scaling by a constant)
template <typename T>
__device__ void scale_(T* __restrict__ x, long long n, float alpha) {
    GRID_STRIDE(i, n) { st(x, i, alpha * ld(x, i)); }
}
// x[r, :] *= f[r] (per-row factors, e.g. the experts' gradient scale)
template <typename T>
__device__ void scale_rows(T* __restrict__ x, const float* __restrict__ f, long long rows, int D) {
    GRID_STRIDE(i, rows * D) { st(x, i, f[i / D] * ld(x, i)); }
}

#define ACT(T, S) \
extern "C" __global__ void swiglu_forward_##S(const T* gu, T* h, long long rows, int H) { swiglu_forward<T, T>(gu, h, rows, H); } \
extern "C" __global__ void swiglu_backward_##S(const T* gu, const T* dh, T* dgu, long long rows, int H) { swiglu_backward<T, T>(gu, dh, dgu, rows, H); } \
extern "C" __global__ void gelu_forward_##S(const T* a, T* h, long long n) { gelu_forward<T>(a, h, n); } \
extern "C" __global__ void gelu_backward_##S(const T* a, const T* dh, T* da, long long n) { gelu_backward<T>(a, dh, da, n); } \
extern "C" __global__ void relu_forward_##S(const T* a, T* h, long long n) { relu_forward<T>(a, h, n); } \
extern "C" __global__ void relu_backward_##S(const T* a, const T* dh, T* da, long long n) { relu_backward<T>(a, dh, da, n); } \
extern "C" __global__ void scale_##S(T* x, long long n, float alpha) { scale_<T>(x, n, alpha); } \
extern "C" __global__ void scale_rows_##S(T* x, const float* f, long long rows, int D) { scale_rows<T>(x, f, rows, D); }
FOR_BOTH(ACT)

// The fused gated experts' activation: fp32 [gate | up] rows from the products, bf16 out for the next
// product (forward: h; backward: [dgate | dup]), so the hidden rows are written once, already rounded.
// Four columns per thread when H is a multiple of 4 (the rows then start 16-byte aligned: the buffers come
// from the pool), else one; the same arithmetic as swiglu_forward / swiglu_backward either way.
__device__ __forceinline__ void st4(bf16* p, long long i, float4 v) {
    bf16 packed[4];
    st(packed, 0, v.x); st(packed, 1, v.y); st(packed, 2, v.z); st(packed, 3, v.w);
    *reinterpret_cast<uint2*>(p + i) = *reinterpret_cast<uint2*>(packed);
}
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + expf(-g)) * u; }

extern "C" __global__ void swiglu_forward_f32_bf16(const float* __restrict__ gu, bf16* __restrict__ h, long long rows, int H) {
    if (H % 4 != 0) {
        swiglu_forward<float, bf16>(gu, h, rows, H);
        return;
    }
    int quads = H / 4;
    GRID_STRIDE(i, rows * quads) {
        long long r = i / quads; int j = 4 * (int) (i - r * quads);
        float4 g = *reinterpret_cast<const float4*>(gu + r * 2 * H + j), u = *reinterpret_cast<const float4*>(gu + r * 2 * H + H + j);
        st4(h, r * H + j, make_float4(silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z), silu_times(g.w, u.w)));
    }
}

__device__ __forceinline__ float swiglu_dgate(float g, float u, float d) { float s = sigmoidf_(g); return d * u * s * (1.f + g * (1.f - s)); }
__device__ __forceinline__ float swiglu_dup(float g, float d) { return d * g * sigmoidf_(g); }

extern "C" __global__ void swiglu_backward_f32_bf16(const float* __restrict__ gu, const float* __restrict__ dh, bf16* __restrict__ dgu,
                                                    long long rows, int H) {
    if (H % 4 != 0) {
        swiglu_backward<float, bf16>(gu, dh, dgu, rows, H);
        return;
    }
    int quads = H / 4;
    GRID_STRIDE(i, rows * quads) {
        long long r = i / quads; int j = 4 * (int) (i - r * quads);
        float4 g = *reinterpret_cast<const float4*>(gu + r * 2 * H + j), u = *reinterpret_cast<const float4*>(gu + r * 2 * H + H + j);
        float4 d = *reinterpret_cast<const float4*>(dh + r * H + j);
        st4(dgu, r * 2 * H + j, make_float4(swiglu_dgate(g.x, u.x, d.x), swiglu_dgate(g.y, u.y, d.y), swiglu_dgate(g.z, u.z, d.z),
                                            swiglu_dgate(g.w, u.w, d.w)));
        st4(dgu, r * 2 * H + H + j, make_float4(swiglu_dup(g.x, d.x), swiglu_dup(g.y, d.y), swiglu_dup(g.z, d.z), swiglu_dup(g.w, d.w)));
    }
}

extern "C" __global__ void cast_f32_bf16(const float* __restrict__ src, bf16* __restrict__ dst, long long n) {
    GRID_STRIDE(i, n) st(dst, i, src[i]);
}
extern "C" __global__ void cast_bf16_f32(const bf16* __restrict__ src, float* __restrict__ dst, long long n) {
    GRID_STRIDE(i, n) dst[i] = ld(src, i);
}

// x[i] = scale · u_i, u_i uniform in [-1, 1) from a counter-based hash of (seed, i): reproducible
// random fill on the device (benchmark inputs and weights) without a host copy.
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
template <typename T>
__device__ void fill_uniform(T* __restrict__ x, long long n, unsigned long long seed, float scale) {
    GRID_STRIDE(i, n) {
        unsigned long long r = splitmix64(seed * 0x100000001b3ull + (unsigned long long) i);
        float u = (float) (r >> 40) * (1.0f / 8388608.0f) - 1.0f;
        st(x, i, scale * u);
    }
}
#define FILL(T, S) extern "C" __global__ void fill_uniform_##S(T* x, long long n, unsigned long long seed, float scale) { \
    fill_uniform<T>(x, n, seed, scale); }
FOR_BOTH(FILL)
