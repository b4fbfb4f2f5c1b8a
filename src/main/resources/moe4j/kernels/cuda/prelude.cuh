// Shared by every moe4j kernel module: prepended to each module's source before it is compiled, so
// the kernels need no header from the CUDA toolkit (NVRTC then needs no include path).
//
// Element types: `float` (f32) and `bf16` (bfloat16 bits). Every kernel computes in float and
// rounds to the storage type on store (round to nearest even, NaN kept quiet), so bf16 kernels
// accumulate in fp32. Kernels that exist for both types are templates with one extern "C" wrapper
// per type, named NAME_f32 and NAME_bf16 (FOR_BOTH below).

struct bf16 { unsigned short bits; };

__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, long long i) {
    return __uint_as_float(((unsigned) p[i].bits) << 16);
}
__device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, long long i, float v) {
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) { p[i].bits = 0x7fc0; return; }
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i].bits = (unsigned short) (u >> 16);
}

#define FOR_BOTH(M) M(float, f32) M(bf16, bf16)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
