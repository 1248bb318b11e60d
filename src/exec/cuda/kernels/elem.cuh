// Element types of the activation arena: f32, or bf16 stored as its 16 bits. Every layer
// kernel is a template over the element type and is instantiated once per type below each
// kernel (`_f32`, `_bf16`); arithmetic is always f32.

typedef unsigned short bf16_bits;

__device__ __forceinline__ float load_elem(const float* p) { return *p; }
__device__ __forceinline__ float load_elem(const bf16_bits* p) {
    return __uint_as_float((unsigned)*p << 16);
}
__device__ __forceinline__ void store_elem(float* p, float v) { *p = v; }
// Round to nearest even, as cvt.rn.bf16.f32 (NaN stays a quiet NaN).
__device__ __forceinline__ void store_elem(bf16_bits* p, float v) {
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        *p = (bf16_bits)((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    *p = (bf16_bits)(u >> 16);
}

// One thread per element of a window: (n, y, x, c) of `v` from the flat index.
#define FOR_EACH_IN_VIEW(v, N)                                        \
    FOR_EACH_INDEX((i64)(N) * (v).h * (v).w * (v).c)                  \
    int c = (int)(idx % (v).c);                                       \
    i64 p_ = idx / (v).c;                                             \
    int ox = (int)(p_ % (v).w);                                       \
    p_ /= (v).w;                                                      \
    int oy = (int)(p_ % (v).h);                                       \
    int n = (int)(p_ / (v).h);

// extern "C" entry points `name_f32` and `name_bf16` of a template kernel `name<T>(T* arena,
// ...)`: the arena is passed untyped (pointers are alike to the launcher) and cast here.
// INSTANTIATE(name, (void* arena, more params), (, more arguments))
#define UNPAREN(...) __VA_ARGS__
#define INSTANTIATE(name, params, args)                                                      \
    extern "C" __global__ void name##_f32 params { name<float>((float*)arena UNPAREN args); } \
    extern "C" __global__ void name##_bf16 params {                                          \
        name<bf16_bits>((bf16_bits*)arena UNPAREN args);                                     \
    }
