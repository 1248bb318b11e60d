// Shared by every unetc kernel. Tensors are NHWC and live in one activation arena (f32 or bf16,
// see elem.cuh; arithmetic is f32); kernels take the arena's base pointer and element offsets
// into it, so one launch can read and write different regions of the same allocation.

typedef long long i64;

// NVRTC ships no headers, so no INFINITY macro: the bit pattern of -inf.
#define NEG_INF __int_as_float(0xff800000)

// Activation codes; must match `activation_code` in src/exec/cuda/mod.rs.
#define ACT_LINEAR 0
#define ACT_RELU 1
#define ACT_SIGMOID 2
#define ACT_SOFTMAX 3 // over channels: the `softmax` kernel (layers.cu) after the producer, or a fused head
#define ACT_TANH 4
#define ACT_ELU 5
#define ACT_SELU 6
#define ACT_SOFTPLUS 7
#define ACT_SOFTSIGN 8
#define ACT_SWISH 9
#define ACT_GELU 10
#define ACT_EXPONENTIAL 11
#define ACT_HARD_SIGMOID 12
#define ACT_RELU6 13
#define ACT_MISH 14
#define ACT_LEAKY_RELU 15
#define ACT_GELU_TANH 16

__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__device__ __forceinline__ float activate(float x, int act) {
    switch (act) {
    case ACT_RELU: return fmaxf(x, 0.0f);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case ACT_TANH: return tanhf(x);
    case ACT_ELU: return x > 0.0f ? x : expm1f(x);
    case ACT_SELU: return 1.0507009873554805f * (x > 0.0f ? x : 1.6732632423543772f * expm1f(x));
    case ACT_SOFTPLUS: return softplus_f(x);
    case ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
    case ACT_SWISH: return x / (1.0f + expf(-x));
    case ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case ACT_EXPONENTIAL: return expf(x);
    case ACT_HARD_SIGMOID: return fminf(fmaxf(0.2f * x + 0.5f, 0.0f), 1.0f);
    case ACT_RELU6: return fminf(fmaxf(x, 0.0f), 6.0f);
    case ACT_MISH: return x * tanhf(softplus_f(x));
    case ACT_LEAKY_RELU: return x >= 0.0f ? x : 0.2f * x;
    // keras-unet-collection's GELU layer (the tanh approximation), not a Keras activation.
    case ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.7978846f * (x + 0.044715f * (x * x * x))));
    default: return x;
    }
}

// One thread per element of a flat index space.
#define FOR_EACH_INDEX(total)                                         \
    i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;             \
    if (idx >= (total)) return;

// An NHWC window of a tensor in the arena: element (n, y, x, c) is at
//   offset + n * item_stride + y * row_stride + x * pixel_stride + c.
// A concat slice is a window whose `offset` includes its first channel and whose pixel_stride
// is the whole buffer's channel count; a crop is a window starting at a row/column offset.
// Must match `View` in src/exec/cuda/mod.rs (#[repr(C)], 40 bytes).
struct View {
    i64 offset;
    i64 item_stride;
    i64 row_stride;
    int pixel_stride;
    int h, w, c;
};

__device__ __forceinline__ i64 view_at(const View& v, int n, int y, int x, int c) {
    return v.offset + (i64)n * v.item_stride + (i64)y * v.row_stride + (i64)x * v.pixel_stride + c;
}

// One axis of an image resize from n to out positions, as TensorFlow's resize kernels (and
// ResizeAxis in src/exec/cpu/kernels.rs) compute it: the scale n / out in f32 ((n - 1) /
// (out - 1) with aligned corners, mode 2); the source coordinate of output o, (o + 0.5) *
// scale - 0.5 at half-pixel centres, o * scale with aligned corners; the nearest input
// floor((o + 0.5) * scale) within the axis.
__device__ __forceinline__ float resize_scale(int n, int out, int mode) {
    if (mode == 2) return out > 1 ? (float)(n - 1) / (float)(out - 1) : 0.0f;
    return (float)n / (float)(out > 1 ? out : 1);
}
__device__ __forceinline__ float resize_source(int o, float scale, int mode) {
    return mode == 2 ? (float)o * scale : __fsub_rn(__fmul_rn((float)o + 0.5f, scale), 0.5f);
}
__device__ __forceinline__ int resize_nearest(int o, float scale, int n) {
    int i = (int)floorf(__fmul_rn((float)o + 0.5f, scale));
    return i < n - 1 ? i : n - 1;
}
