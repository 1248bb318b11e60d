// Tensor-core implicit-GEMM convolutions (bf16, tf32 and f32-accurate 3xTF32), sm_80+ PTX
// (mma.sync, ldmatrix, cp.async), run on sm_90.
//
// GEMM view. Mode 0 (convolution): M = n*y.h*y.w output pixels, N = f, K = k. Mode 1 (transposed
// conv with kernel == strides): M = n*x0.h*x0.w input pixels, N = kh*kw*f, K = x0.c. A rows are
// gathered from the NHWC input on the fly (no im2col); B is the host-packed weight matrix
// w[row * k_padded + kk] (one row per GEMM column, zero beyond k), read K-contiguous.
//
// Entry points, all with the same launch shape:
//   conv_igemm_bf16(const unsigned short* x, unsigned short* y, const unsigned short* w,
//                   const float* bias, ConvParams p)             fast path, bf16
//   conv_igemm_bf16_small(...same...)                            any alignment, bf16
//   conv_igemm_tf32(const float* x, float* y, const float* w, const float* bias, ConvParams p)
//   conv_igemm_tf32_small(...same...)                            any alignment, f32 / tf32
//   block: 256 threads (8 warps, 2 x 4 over a 128 x 128 output tile, 64 x 32 per warp).
//   grid:  (ceil(M / 128), ceil(N / 128), 1): blockIdx.x walks M, blockIdx.y walks N.
//   dynamic shared memory: 3 stages * (128 + 128) * 32 elements:
//     bf16: 49152 bytes (exactly the default 48 KiB limit, no attribute needed);
//     tf32: 98304 bytes (> 48 KiB: set CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to 98304).
//   always: k_padded = k rounded up to a multiple of 32; x1.h == x0.h, x1.w == x0.w when
//     x1.c > 0; the output window does not overlap the inputs.
//   fast path (conv_igemm_bf16 / conv_igemm_tf32) also needs, with E = 8 (bf16) or 4 (f32):
//     x0.c, x1.c multiples of E; x0.offset, x0.pixel_stride, x0.row_stride, x0.item_stride
//     multiples of E (and the same for x1 when x1.c > 0); x and w 16-byte aligned.
//   The output needs no alignment (stores are element-wise, consecutive threads on consecutive
//   channels).
//
// f32 accuracy on tf32 tensor cores (3xTF32, for --precision f32): each operand v is split into
// big = tf32(v) and small = tf32(v - big), and a * b is accumulated (f32) as
// as * bb + ab * bs + ab * bb: about f32 accuracy (the dropped as * bs is ~2^-22 relative) for
// 3x the mma work of tf32.
//   conv_igemm_f32x3(const float* x, float* y, const float* w, const float* bias, ConvParams p)
//   conv_igemm_f32x3_small(...same...)
//   conv_igemm_f32x3_head(...as conv_igemm_tf32_head...)
//   conv_igemm_f32x3_small_head(...as conv_igemm_tf32_small_head...)
//   Arguments, block, grid, dynamic shared memory (98304 bytes: set the attribute), alignment
//   rules and fast/small split exactly as their tf32 counterparts. They are compiled for one
//   block per SM (__launch_bounds__(256, 1), ~170 registers): at 128 registers the split
//   fragments spill.
//
// Split-K, for layers whose (M / 128) * (N / 128) blocks cannot fill the GPU (batch-1 deep
// layers). Fast path only (alignment as conv_igemm_bf16 / conv_igemm_tf32), mode 0 only:
//   conv_igemm_bf16_splitk(const unsigned short* x, unsigned short* y, const unsigned short* w,
//                          const float* bias, ConvParams p, float* partial, int splits)
//   conv_igemm_tf32_splitk(const float* x, float* y, const float* w, const float* bias,
//                          ConvParams p, float* partial, int splits)
//   conv_igemm_f32x3_splitk(...as conv_igemm_tf32_splitk...)
//   block: 256 threads; grid: (ceil(M / 128), ceil(N / 128), splits); dynamic shared memory
//   as the unsplit kernel of the same type (bf16 49152, tf32 and f32x3 98304 bytes); f32x3
//   again one block per SM. y and bias are not read or written.
//   Slice z reduces K tiles [z * T / splits, (z + 1) * T / splits) (T = ceil(k / 32), integer
//   division) and writes its raw f32 sums (no bias, no act) to
//   partial[z * M * N + m * N + n], m < M = n * y.h * y.w, n < N = p.f: every element of the
//   workspace of splits * M * N floats is written (an empty slice writes zeros), nothing else.
//   1 <= splits; splits <= T keeps every slice busy.
// then, on the same stream:
//   splitk_reduce_f32 / splitk_reduce_bf16(void* arena, const float* partial,
//                                          const float* bias, View y, int N, int splits, int act)
//   y = act(bias + sum over z of partial[z]) into the output window y (== p.y), N = batch
//   (ACT_SOFTMAX: the pre-activation); one thread per element of y: block 256, grid
//   ceil(N * y.h * y.w * y.c / 256), no shared memory.
//   Choosing splits (host), with S = number of SMs, B = ceil(M / 128) * ceil(N / 128), R =
//   resident blocks per SM (2 for bf16 and tf32, 1 for f32x3):
//     splits = min(floor(R * S / B), floor(T / 4), 16); split-K only when splits >= 2
//   i.e. fill about one wave, keep at least 4 K tiles (128 of K) per slice so the pipeline still
//   amortizes, and cap the workspace traffic. Example, H100 (S = 132), 28x28 output, 512
//   filters, K = 9 * 512, bf16: B = 7 * 4 = 28, T = 144 -> splits = 9 (252 blocks, 16 K tiles
//   each), workspace 9 * 784 * 512 floats = 14.5 MB; f32x3: splits = 4. Once B >= R * S it
//   gives 1. The workspace must not overlap the arena windows the reduce writes.
//
// Fused 1x1 head (the U-Net's last conv, F = p.f filters + act, then a 1x1 conv to head_f
// channels): the first convolution as above, then per output pixel
//   z[o] = head_bias[o] + sum_c act(conv[c] + bias[c]) * head_w[c * head_f + o]
// written as head_act(z) (ACT_SOFTMAX: softmax over the head_f channels, here) to head_y.
//   conv_igemm_bf16_head(const unsigned short* x, unsigned short* y, const unsigned short* w,
//                        const float* bias, ConvParams p, const float* head_w,
//                        const float* head_bias, View head_y, int head_f, int head_act)
//   conv_igemm_bf16_small_head(...same...)
//   conv_igemm_tf32_head(const float* x, float* y, const float* w, const float* bias,
//                        ConvParams p, const float* head_w, const float* head_bias,
//                        View head_y, int head_f, int head_act)
//   conv_igemm_tf32_small_head(...same...)
//   head_w: f32 [p.f][head_f] (Keras 1x1 kernel [1, 1, F, F2]); head_bias: f32 [head_f];
//   y: the arena base that head_y indexes; p.y gives only the intermediate's shape (h, w,
//   c == p.f) and is never written; head_y.h == p.y.h, head_y.w == p.y.w, head_y.c == head_f.
//   Same block, dynamic shared memory, alignment rules and fast/small split as above, and
//   p.mode == 0, p.f <= 128, 1 <= head_f <= 8, p.act != ACT_SOFTMAX;
//   grid: (ceil(M / 128), 1, 1).
//   The intermediate activation and head_w stay f32 (unfused, bf16 stores the intermediate as
//   bf16, about 2^-9 relative per value, and a tensor-core 1x1 rounds both operands to bf16 or
//   tf32), so only the output is rounded; softmax runs on f32 logits (unfused: bf16 logits).
//
// The 128 x 64 block tile (`_n64`), for GEMMs with N <= 64 (the U-Net's top level: F = 64,
// where the 128-wide tile spends half its mma on zero columns). Every entry point above has one:
//   conv_igemm_bf16_n64          conv_igemm_tf32_n64          conv_igemm_f32x3_n64
//   conv_igemm_bf16_small_n64    conv_igemm_tf32_small_n64    conv_igemm_f32x3_small_n64
//   conv_igemm_bf16_head_n64     conv_igemm_tf32_head_n64     conv_igemm_f32x3_head_n64
//   conv_igemm_bf16_small_head_n64  conv_igemm_tf32_small_head_n64  conv_igemm_f32x3_small_head_n64
//   conv_igemm_bf16_splitk_n64   conv_igemm_tf32_splitk_n64   conv_igemm_f32x3_splitk_n64
//   Arguments, alignment rules, fast/small split, head limits (but p.f <= 64) and split-K
//   workspace contract exactly as the entry point of the same name without `_n64`; any N works
//   (columns >= N are zero), it is only slower than the wide tile beyond 64.
//   block: 128 threads (4 warps, 2 x 2 over the 128 x 64 tile, 64 x 32 per warp: the same warp
//     tile, so the same ldmatrix : mma ratio, as the wide kernels).
//   grid:  (ceil(M / 128), ceil(N / 64), 1) (split-K: (.., .., splits)); head: (ceil(M / 128),
//     1, 1).
//   dynamic shared memory: STAGES * (128 + 64) * 32 elements:
//     bf16  (every bf16 _n64):  4 stages, 49152 bytes (the default 48 KiB limit, no attribute);
//     tf32  (every tf32 _n64):  3 stages, 73728 bytes (set the attribute to at least 73728);
//     f32x3 (every f32x3 _n64): 4 stages, 98304 bytes (set the attribute to 98304).
//   Resident blocks per SM, by __launch_bounds__ and registers (H100: 64K registers, 228 KiB
//   shared): bf16 4 (16 warps; bf16_head_n64 3, 158 registers), tf32 3 (12 warps), f32x3 2
//   (8 warps; ~185 registers, at 168 the split fragments spill). R for the split-K rule below:
//   4 (bf16), 3 (tf32), 2 (f32x3), with B = ceil(M / 128) * ceil(N / 64).
//   Host rule: mode 0 with f <= 64, and mode 1 with kh * kw * f <= 64 (N <= 64): the `_n64`
//   entry point instead of the wide one; the fused head with p.f <= 64: `_head_n64` /
//   `_small_head_n64`; split-K with f <= 64: `_splitk_n64` (then splits by the rule with R and B
//   as above).
//
// Every piece of inline PTX sits in a small wrapper below, so that with UNETC_EMULATE defined
// the same code compiles as host C++ against tests/kernel_emu/emu.h, which emulates the wrappers.

// Must match the #[repr(C)] Rust struct field for field (176 bytes).
struct ConvParams {
    View x0;  // first input (channels 0 .. x0.c)
    View x1;  // second input, concatenated after x0 along channels (x1.c == 0: none)
    View y;   // output window, y.c == f; nothing outside it is written
    int n;    // batch
    int kh, kw, sh, sw, dh, dw, pt, pl; // kernel, strides, dilation, padding before (mode 1: crop)
    int f;        // output channels
    int k;        // kh * kw * (x0.c + x1.c) (mode 1: x0.c)
    int k_padded; // weight row length: k rounded up to a multiple of 32, zero-filled
    int act;      // ACT_* after bias (ACT_SOFTMAX: the pre-activation is written)
    int mode;     // 0: convolution; 1: transposed convolution with kernel == strides
};
static_assert(sizeof(ConvParams) == 176, "ConvParams layout");

#ifndef UNETC_EMULATE
__device__ __forceinline__ unsigned smem_u32(const void* p) {
    unsigned r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}

// 16-byte global -> shared copy; bytes beyond src_bytes (0 or 16) are zero-filled.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// volatile: it reads shared memory behind the compiler's back, so it must stay between barriers.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

// d += a * b, 16x8x16, bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4],
                                               const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a * b, 16x8x8, tf32 inputs, f32 accumulators.
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const unsigned (&a)[4],
                                              const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ unsigned short f32_to_bf16(float v) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
    return r;
}
__device__ __forceinline__ unsigned f32_to_tf32(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

// Read-only loads for the element-wise gather (inputs never alias the output window).
__device__ __forceinline__ unsigned short ldg(const unsigned short* p) {
    unsigned short r;
    asm("ld.global.nc.u16 %0, [%1];" : "=h"(r) : "l"(p));
    return r;
}
__device__ __forceinline__ float ldg(const float* p) {
    float r;
    asm("ld.global.nc.f32 %0, [%1];" : "=f"(r) : "l"(p));
    return r;
}
#endif

extern __shared__ __align__(128) unsigned char igemm_smem[];

namespace igemm {

constexpr int BM = 128, BK = 32;

// The block tile: BM x BN_ outputs, 2 x (BN_ / 32) warps of 64 x 32 each (warp w: rows
// (w & 1) * 64, columns (w >> 1) * 32), a STAGES-deep cp.async pipeline of BK-wide K tiles.
// BN_ = 128: the wide tile (256 threads, 3 stages); BN_ = 64: the `_n64` entry points (128
// threads; 4 stages for bf16 and 3xTF32, 3 for tf32: see the top of the file).
template <typename T, int BN_, bool X3> struct Tile {
    static_assert(BN_ == 128 || BN_ == 64, "block tile width");
    static constexpr int BN = BN_;
    static constexpr int THREADS = 2 * (BN / 32) * 32;
    static constexpr int STAGES = BN == 128 ? 3 : (sizeof(T) == 2 || X3 ? 4 : 3);
    static constexpr int SMEM = STAGES * (BM + BN) * BK * (int)sizeof(T); // dynamic, bytes
};

template <typename T> struct Elem;
template <> struct Elem<unsigned short> {
    static constexpr int EPC = 8;    // elements per 16-byte chunk
    static constexpr int KSTEP = 16; // mma k
};
template <> struct Elem<float> {
    static constexpr int EPC = 4;
    static constexpr int KSTEP = 8;
};

// Rows of the A and B tiles are BK elements (4 or 8 chunks of 16 bytes). ldmatrix reads one
// chunk column from 8 consecutive rows, so the chunk index is XORed with a row hash that sends
// those 8 rows to 8 different bank groups.
template <int CPR> __device__ __forceinline__ int swz(int row) {
    return CPR == 8 ? (row & 7) : ((row >> 1) & 3);
}

// The A-row geometry: which input pixel an A row and a tap read. Mode 1 is a 1x1 "convolution"
// over the input pixels; the scatter to output pixels happens in the epilogue.
struct Geo {
    int gh, gw, kh, kw, sh, sw, dh, dw, pt, pl;
    int c0, c, m, n;
};

__device__ __forceinline__ Geo make_geo(const ConvParams& p) {
    Geo g;
    g.c0 = p.x0.c;
    g.c = p.x0.c + p.x1.c;
    if (p.mode == 0) {
        g.gh = p.y.h, g.gw = p.y.w;
        g.kh = p.kh, g.kw = p.kw, g.sh = p.sh, g.sw = p.sw, g.dh = p.dh, g.dw = p.dw;
        g.pt = p.pt, g.pl = p.pl;
        g.n = p.f;
    } else {
        g.gh = p.x0.h, g.gw = p.x0.w;
        g.kh = g.kw = g.sh = g.sw = g.dh = g.dw = 1;
        g.pt = g.pl = 0;
        g.n = p.kh * p.kw * p.f;
    }
    g.m = p.n * g.gh * g.gw;
    return g;
}

// Input pixel of A row m at tap (0, 0): the item, and the top-left y/x (out of range if m >= M).
__device__ __forceinline__ void row_origin(const Geo& g, int m, int& n, int& iy, int& ix) {
    if (m < g.m) {
        int hw = g.gh * g.gw;
        n = m / hw;
        int r = m - n * hw;
        int oy = r / g.gw;
        int ox = r - oy * g.gw;
        iy = oy * g.sh - g.pt;
        ix = ox * g.sw - g.pl;
    } else {
        n = 0;
        iy = -(1 << 29); // fails every bounds check
        ix = 0;
    }
}

// Reduction index -> (channel within the concatenated input, kx, ky), advanced incrementally.
struct KPos {
    int c, kx, ky;
    __device__ __forceinline__ void init(const Geo& g, int kk) {
        int tap = kk / g.c;
        c = kk - tap * g.c;
        ky = tap / g.kw;
        kx = tap - ky * g.kw;
    }
    __device__ __forceinline__ void advance(const Geo& g, int by) {
        c += by;
        while (c >= g.c) {
            c -= g.c;
            if (++kx == g.kw) {
                kx = 0;
                ++ky;
            }
        }
    }
};

// Where tap `kp` of the input lives: base offset of (item 0, pixel (0,0), channel) and strides.
struct Src {
    i64 base, item, row;
    int pix, dy, dx;
    bool valid;
};
__device__ __forceinline__ Src tap_src(const ConvParams& p, const Geo& g, const KPos& kp) {
    Src s;
    bool use1 = kp.c >= g.c0;
    int c = use1 ? kp.c - g.c0 : kp.c;
    s.base = (use1 ? p.x1.offset : p.x0.offset) + c;
    s.item = use1 ? p.x1.item_stride : p.x0.item_stride;
    s.row = use1 ? p.x1.row_stride : p.x0.row_stride;
    s.pix = use1 ? p.x1.pixel_stride : p.x0.pixel_stride;
    s.dy = kp.ky * g.dh;
    s.dx = kp.kx * g.dw;
    s.valid = kp.ky < g.kh;
    return s;
}

__device__ __forceinline__ void store1(unsigned short* p, float v) { *p = f32_to_bf16(v); }
__device__ __forceinline__ void store1(float* p, float v) { *p = v; }

// Epilogue: a 128 x 64 f32 half tile (row stride 72 floats: conflict-free fragment stores), then
// per row where its output pixel lives.
constexpr int CT_LD = 72;
struct RowOut {
    i64 base; // y.offset + item * y.item_stride
    int ry, rx; // output pixel of tap (0, 0)
};
constexpr int EPI_BYTES = BM * CT_LD * 4 + BM * (int)sizeof(RowOut);

// ---- fused 1x1 head (the `_head` entry points).
constexpr int HEAD_MAX = 8;
struct Head {
    const float* w;    // [f][head_f], Keras 1x1 kernel [1, 1, f, head_f]
    const float* bias; // [head_f]
    View y;            // output window, c == head_f
    int f, act;        // head_f, ACT_* (ACT_SOFTMAX: softmax over the head_f channels)
};
// Shared memory of the head epilogue (floats), after ct: the conv bias, head_w transposed to
// [o][BN] (lanes read consecutive columns: no bank conflicts), the second half's partial sums.
template <int BN> struct HeadSmem {
    static constexpr int CB = BM * CT_LD, W = CB + BN, Z = W + HEAD_MAX * BN;
    static constexpr int BYTES = (Z + HEAD_MAX * BM) * 4;
};

// z[o] = head_bias[o] + sum_c act(conv[c]) * head_w[c][o] per output pixel, in f32 (the
// intermediate activation is never rounded to the arena type). Thread (r, half): row r, and
// columns half * COLS .. + COLS of each 64-column pass (256 threads: two halves of 32 columns
// that add up through shared memory; 128 threads: one thread per row, all 64 columns).
template <typename T, int BN, int THREADS, class Stage>
__device__ __forceinline__ void head_epilogue(T* __restrict__ y, const float* __restrict__ bias,
                                              const ConvParams& p, const Head& hd, const Geo& g,
                                              int m0, float* ct, Stage stage_pass) {
    using HS = HeadSmem<BN>;
    constexpr int HALVES = THREADS / BM, COLS = 64 / HALVES;
    static_assert(HALVES * BM == THREADS && (HALVES == 1 || HALVES == 2), "head threads");
    const int tid = threadIdx.x;
    float* cb = ct + HS::CB;
    float* hw = ct + HS::W;
    float* zs = ct + HS::Z;
    // Columns >= f get zero bias and weights: their accumulators are 0 (B rows zero-filled), so
    // they add act(0) * 0 = 0.
    for (int i = tid; i < BN; i += THREADS) cb[i] = i < p.f ? bias[i] : 0.0f;
    for (int i = tid; i < HEAD_MAX * BN; i += THREADS) {
        int o = i / BN, c = i - o * BN;
        hw[i] = (o < hd.f && c < p.f) ? hd.w[c * hd.f + o] : 0.0f;
    }
    const int r = tid % BM, half = tid / BM;
    float z[HEAD_MAX];
#pragma unroll
    for (int o = 0; o < HEAD_MAX; ++o) z[o] = 0.0f;
#pragma unroll 1
    for (int pass = 0; pass < BN / 64 && pass * 64 < p.f; ++pass) {
        stage_pass(pass);
        __syncthreads();
        // Rotated start column: lanes (consecutive rows, CT_LD = 72) hit 32 different banks.
#pragma unroll 1
        for (int j = 0; j < COLS; ++j) {
            const int col = half * COLS + ((j + r) & (COLS - 1)), c = pass * 64 + col;
            const float v = activate(ct[r * CT_LD + col] + cb[c], p.act);
#pragma unroll
            for (int o = 0; o < HEAD_MAX; ++o)
                if (o < hd.f) z[o] += v * hw[o * BN + c];
        }
        __syncthreads();
    }
    if (HALVES == 2) {
        if (half == 1) {
#pragma unroll
            for (int o = 0; o < HEAD_MAX; ++o)
                if (o < hd.f) zs[o * BM + r] = z[o];
        }
        __syncthreads();
    }
    const int m = m0 + r;
    if (half == 1 || m >= g.m) return;
#pragma unroll
    for (int o = 0; o < HEAD_MAX; ++o)
        if (o < hd.f) z[o] += (HALVES == 2 ? zs[o * BM + r] : 0.0f) + hd.bias[o];
    if (hd.act == ACT_SOFTMAX) {
        float mx = z[0];
#pragma unroll
        for (int o = 1; o < HEAD_MAX; ++o)
            if (o < hd.f) mx = fmaxf(mx, z[o]);
        float s = 0.0f;
#pragma unroll
        for (int o = 0; o < HEAD_MAX; ++o)
            if (o < hd.f) {
                z[o] = expf(z[o] - mx);
                s += z[o];
            }
        const float inv = 1.0f / s;
#pragma unroll
        for (int o = 0; o < HEAD_MAX; ++o) z[o] *= inv;
    } else {
#pragma unroll
        for (int o = 0; o < HEAD_MAX; ++o)
            if (o < hd.f) z[o] = activate(z[o], hd.act);
    }
    const int hw_ = g.gh * g.gw;
    const int n = m / hw_, rem = m - n * hw_;
    const int oy = rem / g.gw, ox = rem - oy * g.gw;
    T* out = y + view_at(hd.y, n, oy, ox, 0);
#pragma unroll
    for (int o = 0; o < HEAD_MAX; ++o)
        if (o < hd.f) store1(out + o, z[o]);
}

// One k-step of the warp's 64 x 32 tile: 4 A fragments (m16), 4 B fragments (n8), 16 mma.
__device__ __forceinline__ void mma_step(float (&acc)[4][4][4], unsigned (&af)[4][4],
                                         unsigned (&bf)[4][2], const unsigned short*) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[i][j], af[i], bf[j]);
}
__device__ __forceinline__ void mma_step(float (&acc)[4][4][4], unsigned (&af)[4][4],
                                         unsigned (&bf)[4][2], const float*) {
    // The tensor core reads only the tf32 bits; round them (ties away) rather than truncate.
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int r = 0; r < 4; ++r) af[i][r] = f32_to_tf32(__uint_as_float(af[i][r]));
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int r = 0; r < 2; ++r) bf[j][r] = f32_to_tf32(__uint_as_float(bf[j][r]));
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32_1688(acc[i][j], af[i], bf[j]);
}

// 3xTF32: v = big + small with big = tf32(v), small = tf32(v - big) (v - big is exact in f32),
// and a * b ~ as * bb + ab * bs + ab * bb: the dropped as * bs and the rounding of the small
// parts are ~2^-22 relative, so the products are f32-accurate. Small terms first: they are
// accumulated before the big one swamps them. A is split one m16 fragment at a time to keep
// the live registers (64 accumulators + 16 B + 8 A) within 128: `load_a(i, a)` fetches A
// fragment i (ldmatrix) just before its 12 mma.
__device__ __forceinline__ void split_tf32(unsigned v, unsigned& big, unsigned& small) {
    const float f = __uint_as_float(v);
    big = f32_to_tf32(f);
    small = f32_to_tf32(f - __uint_as_float(big));
}
template <class LoadA>
__device__ __forceinline__ void mma_step_x3(float (&acc)[4][4][4], const unsigned (&bf)[4][2],
                                            LoadA load_a) {
    unsigned bb[4][2], bs[4][2];
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int r = 0; r < 2; ++r) split_tf32(bf[j][r], bb[j][r], bs[j][r]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        unsigned af[4], ab[4], as[4];
        load_a(i, af);
#pragma unroll
        for (int r = 0; r < 4; ++r) split_tf32(af[r], ab[r], as[r]);
        // Three passes over j: consecutive mma never wait on each other's accumulator.
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32_1688(acc[i][j], as, bb[j]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32_1688(acc[i][j], ab, bs[j]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32_1688(acc[i][j], ab, bb[j]);
    }
}

// What the block does with its accumulators: bias + act into y, the fused head, or raw sums of
// its K range into the split-K workspace.
enum { EPI_STORE, EPI_HEAD, EPI_PARTIAL };
struct SplitK {
    float* partial; // [splits][M][N] f32
    int splits;
};

template <typename T, bool VEC, int EPI = EPI_STORE, bool X3 = false, int BN_ = 128>
__device__ __forceinline__ void conv_body(const T* __restrict__ x, T* __restrict__ y,
                                          const T* __restrict__ w, const float* __restrict__ bias,
                                          const ConvParams& p, const Head& hd = Head(),
                                          const SplitK& sk = SplitK()) {
    using Cfg = Tile<T, BN_, X3>;
    constexpr int BN = Cfg::BN, THREADS = Cfg::THREADS, STAGES = Cfg::STAGES;
    static_assert(EPI_BYTES <= Cfg::SMEM, "the epilogue fits in the pipeline's shared memory");
    static_assert(EPI != EPI_HEAD || HeadSmem<BN>::BYTES <= Cfg::SMEM,
                  "the head epilogue fits in the pipeline's shared memory");
    constexpr int EPC = Elem<T>::EPC;
    constexpr int KSTEP = Elem<T>::KSTEP;
    constexpr int CPR = BK / EPC;              // chunks per tile row
    constexpr int STAGE = (BM + BN) * BK;      // elements per stage
    T* smem = reinterpret_cast<T*>(igemm_smem);

    const Geo g = make_geo(p);
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    // Split-K: slice z reduces whole K tiles [kt0, kt1), balanced to within one tile.
    int kt0 = 0, ktiles = (p.k + BK - 1) / BK;
    if (EPI == EPI_PARTIAL) {
        const int all = ktiles;
        kt0 = (int)((i64)blockIdx.z * all / sk.splits);
        ktiles = (int)((i64)(blockIdx.z + 1) * all / sk.splits) - kt0;
    }
    const int H = p.x0.h, W = p.x0.w;

    // ---- loaders. VEC: each thread owns one chunk column and rows r0 + i * RSTEP.
    constexpr int RSTEP = THREADS / CPR;
    constexpr int VROWS = BM / RSTEP;   // A rows per thread: 2 (bf16) or 4 (f32); n64: 4 or 8
    constexpr int VROWS_B = BN / RSTEP; // B rows per thread: as A; n64: 2 or 4
    // Element-wise: A by rows (consecutive threads read consecutive pixels), B by k columns.
    constexpr int SROWS = BK * BM / THREADS;   // A elements per thread per tile: 16; n64: 32
    constexpr int SROWS_B = BK * BN / THREADS; // B elements per thread per tile: 16
    static_assert(RSTEP * VROWS == BM && RSTEP * VROWS_B == BN && THREADS % BM == 0, "loaders");

    int an[VEC ? VROWS : 1], ay[VEC ? VROWS : 1], ax[VEC ? VROWS : 1];
    KPos kp;
    const int vcc = tid % CPR, vr0 = tid / CPR;
    if (VEC) {
#pragma unroll
        for (int i = 0; i < VROWS; ++i) row_origin(g, m0 + vr0 + i * RSTEP, an[i], ay[i], ax[i]);
        kp.init(g, kt0 * BK + vcc * EPC);
    } else {
        row_origin(g, m0 + tid % BM, an[0], ay[0], ax[0]);
    }
    const T* wv = w + (i64)(n0 + vr0) * p.k_padded + vcc * EPC; // VEC: this thread's B chunk

    auto load_tile = [&](int stage, int kt) {
        T* As = smem + stage * STAGE;
        T* Bs = As + BM * BK;
        if (VEC) {
            Src s = tap_src(p, g, kp);
#pragma unroll
            for (int i = 0; i < VROWS; ++i) {
                int iy = ay[i] + s.dy, ix = ax[i] + s.dx;
                bool ok = s.valid && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W;
                const T* src = ok ? x + s.base + an[i] * s.item + iy * s.row + (i64)ix * s.pix : x;
                int r = vr0 + i * RSTEP;
                cp_async_16(As + r * BK + ((vcc ^ swz<CPR>(r)) * EPC), src, ok ? 16 : 0);
            }
            kp.advance(g, BK);
#pragma unroll
            for (int i = 0; i < VROWS_B; ++i) {
                int r = vr0 + i * RSTEP;
                bool ok = n0 + r < g.n;
                const T* src = wv + (i64)i * RSTEP * p.k_padded + kt * BK;
                cp_async_16(Bs + r * BK + ((vcc ^ swz<CPR>(r)) * EPC), ok ? src : w, ok ? 16 : 0);
            }
        } else {
            const int r = tid % BM;
            KPos q;
            int kk = kt * BK + tid / BM;
            q.init(g, kk);
#pragma unroll 4
            for (int i = 0; i < SROWS; ++i, kk += THREADS / BM) {
                Src s = tap_src(p, g, q);
                int iy = ay[0] + s.dy, ix = ax[0] + s.dx;
                bool ok = kk < p.k && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W;
                T v = ok ? ldg(x + s.base + an[0] * s.item + iy * s.row + (i64)ix * s.pix) : T(0);
                int col = kk - kt * BK;
                As[r * BK + (((col / EPC) ^ swz<CPR>(r)) * EPC) + col % EPC] = v;
                q.advance(g, THREADS / BM);
            }
            const int col = tid % BK;
#pragma unroll 4
            for (int i = 0; i < SROWS_B; ++i) {
                int rr = tid / BK + i * (THREADS / BK);
                int f = n0 + rr;
                T v = f < g.n ? ldg(w + (i64)f * p.k_padded + kt * BK + col) : T(0);
                Bs[rr * BK + (((col / EPC) ^ swz<CPR>(rr)) * EPC) + col % EPC] = v;
            }
        }
    };

    // ---- warp tile and fragment addresses (the swizzle depends only on lane & 7 here).
    const int lane = tid & 31, warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1;
    const int sw = swz<CPR>(lane & 7);
    const int a_row = wm * 64 + (lane & 7) + ((lane >> 3) & 1) * 8; // + i * 16
    const int a_hi = lane >> 4;
    const int b_row = wn * 32 + (lane & 7) + (lane >> 4) * 8; // + j * 16
    const int b_hi = (lane >> 3) & 1;

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    // ---- STAGES-deep pipeline: tiles kt + 1 .. kt + STAGES - 1 are in flight while tile kt is
    // multiplied.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ktiles) load_tile(s, kt0 + s);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads(); // tile kt visible to all; everyone is done with tile kt - 1's stage
        int next = kt + STAGES - 1;
        if (next < ktiles) load_tile(next % STAGES, kt0 + next);
        cp_async_commit();

        const T* As = smem + (kt % STAGES) * STAGE;
        const T* Bs = As + BM * BK;
#pragma unroll
        for (int ks = 0; ks < BK / KSTEP; ++ks) {
            unsigned af[4][4], bf[4][2];
            auto load_a = [&](int i, unsigned(&a)[4]) {
                ldmatrix_x4(a, As + (a_row + i * 16) * BK + (((2 * ks + a_hi) ^ sw) * EPC));
            };
            if constexpr (!X3) {
#pragma unroll
                for (int i = 0; i < 4; ++i) load_a(i, af[i]);
            }
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                unsigned r[4];
                ldmatrix_x4(r, Bs + (b_row + j * 16) * BK + (((2 * ks + b_hi) ^ sw) * EPC));
                bf[2 * j][0] = r[0];
                bf[2 * j][1] = r[1];
                bf[2 * j + 1][0] = r[2];
                bf[2 * j + 1][1] = r[3];
            }
            if constexpr (X3)
                mma_step_x3(acc, bf, load_a);
            else
                mma_step(acc, af, bf, x);
        }
    }

    // ---- epilogue, in BN / 64 passes of 64 columns through shared memory (the stages are free by
    // now): coalesced stores, and one copy of the activation code instead of 128 inlined ones.
    cp_async_wait<0>();
    __syncthreads();
    float* ct = reinterpret_cast<float*>(igemm_smem);
    const int gq = lane >> 2, tq = lane & 3;
    // The warps whose columns are in pass `pass` write their accumulators to ct.
    auto stage_pass = [&](int pass) {
        if ((wn >> 1) == pass) {
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        float* d = ct + (wm * 64 + i * 16 + gq + h * 8) * CT_LD + (wn & 1) * 32 +
                                   j * 8 + tq * 2;
                        d[0] = acc[i][j][2 * h];
                        d[1] = acc[i][j][2 * h + 1];
                    }
        }
    };
    if constexpr (EPI == EPI_HEAD) {
        head_epilogue<T, BN, THREADS>(y, bias, p, hd, g, m0, ct, stage_pass);
        return;
    }
    const int ecol = tid % 64;
    if constexpr (EPI == EPI_PARTIAL) {
        float* out = sk.partial + (i64)blockIdx.z * g.m * g.n;
#pragma unroll 1
        for (int pass = 0; pass < BN / 64; ++pass) {
            stage_pass(pass);
            __syncthreads();
            const int c = n0 + pass * 64 + ecol;
            if (c < g.n) {
#pragma unroll 1
                for (int r = tid / 64; r < BM && m0 + r < g.m; r += THREADS / 64)
                    out[(i64)(m0 + r) * g.n + c] = ct[r * CT_LD + ecol];
            }
            __syncthreads();
        }
        return;
    }
    RowOut* ro = reinterpret_cast<RowOut*>(igemm_smem + BM * CT_LD * sizeof(float));
    if (tid < BM) {
        int m = m0 + tid;
        RowOut r;
        r.base = 0;
        r.ry = -(1 << 29); // rows past M fail the bounds check
        r.rx = 0;
        if (m < g.m) {
            int hw = g.gh * g.gw;
            int n = m / hw;
            int rem = m - n * hw;
            r.ry = rem / g.gw;
            r.rx = rem - r.ry * g.gw;
            if (p.mode != 0) {
                r.ry = r.ry * p.sh - p.pt;
                r.rx = r.rx * p.sw - p.pl;
            }
            r.base = p.y.offset + n * p.y.item_stride;
        }
        ro[tid] = r;
    }
#pragma unroll 1
    for (int pass = 0; pass < BN / 64; ++pass) {
        stage_pass(pass);
        __syncthreads();
        const int c = n0 + pass * 64 + ecol;
        if (c < g.n) {
            // GEMM column -> output channel o and, in mode 1, the pixel offset (a, b).
            int o = c, a = 0, b = 0;
            if (p.mode != 0) {
                int tap = c / p.f;
                o = c - tap * p.f;
                a = tap / p.kw;
                b = tap - a * p.kw;
            }
            const float bv = bias[o];
#pragma unroll 1
            for (int r = tid / 64; r < BM; r += THREADS / 64) {
                RowOut q = ro[r];
                int oy = q.ry + a, ox = q.rx + b;
                if ((unsigned)oy >= (unsigned)p.y.h || (unsigned)ox >= (unsigned)p.y.w) continue;
                float v = ct[r * CT_LD + ecol] + bv;
                v = p.act == ACT_SOFTMAX ? v : activate(v, p.act);
                store1(y + q.base + oy * p.y.row_stride + (i64)ox * p.y.pixel_stride + o, v);
            }
        }
        __syncthreads();
    }
}

} // namespace igemm

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_bf16(const unsigned short* x, unsigned short* y, const unsigned short* w,
                    const float* bias, ConvParams p) {
    igemm::conv_body<unsigned short, true>(x, y, w, bias, p);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_bf16_small(const unsigned short* x, unsigned short* y, const unsigned short* w,
                          const float* bias, ConvParams p) {
    igemm::conv_body<unsigned short, false>(x, y, w, bias, p);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_tf32(const float* x, float* y, const float* w, const float* bias, ConvParams p) {
    igemm::conv_body<float, true>(x, y, w, bias, p);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_tf32_small(const float* x, float* y, const float* w, const float* bias,
                          ConvParams p) {
    igemm::conv_body<float, false>(x, y, w, bias, p);
}

// 3x3 (any mode-0) convolution + bias + act with a 1x1 head fused into the epilogue.
#define HEAD_PARAMS                                                                            \
    ConvParams p, const float* head_w, const float* head_bias, View head_y, int head_f,        \
        int head_act
#define HEAD_ARGS p, igemm::Head{head_w, head_bias, head_y, head_f, head_act}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_bf16_head(const unsigned short* x, unsigned short* y, const unsigned short* w,
                         const float* bias, HEAD_PARAMS) {
    igemm::conv_body<unsigned short, true, igemm::EPI_HEAD>(x, y, w, bias, HEAD_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_bf16_small_head(const unsigned short* x, unsigned short* y,
                               const unsigned short* w, const float* bias, HEAD_PARAMS) {
    igemm::conv_body<unsigned short, false, igemm::EPI_HEAD>(x, y, w, bias, HEAD_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_tf32_head(const float* x, float* y, const float* w, const float* bias,
                         HEAD_PARAMS) {
    igemm::conv_body<float, true, igemm::EPI_HEAD>(x, y, w, bias, HEAD_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_tf32_small_head(const float* x, float* y, const float* w, const float* bias,
                               HEAD_PARAMS) {
    igemm::conv_body<float, false, igemm::EPI_HEAD>(x, y, w, bias, HEAD_ARGS);
}

// f32 accuracy on tf32 tensor cores (3xTF32): same arguments and launch shape as the tf32 ones.
// One block per SM: the split fragments need ~170 registers, and at 128 (two blocks) ptxas spills.
extern "C" __global__ void __launch_bounds__(256, 1)
    conv_igemm_f32x3(const float* x, float* y, const float* w, const float* bias, ConvParams p) {
    igemm::conv_body<float, true, igemm::EPI_STORE, true>(x, y, w, bias, p);
}

extern "C" __global__ void __launch_bounds__(256, 1)
    conv_igemm_f32x3_small(const float* x, float* y, const float* w, const float* bias,
                           ConvParams p) {
    igemm::conv_body<float, false, igemm::EPI_STORE, true>(x, y, w, bias, p);
}

extern "C" __global__ void __launch_bounds__(256, 1)
    conv_igemm_f32x3_head(const float* x, float* y, const float* w, const float* bias,
                          HEAD_PARAMS) {
    igemm::conv_body<float, true, igemm::EPI_HEAD, true>(x, y, w, bias, HEAD_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 1)
    conv_igemm_f32x3_small_head(const float* x, float* y, const float* w, const float* bias,
                                HEAD_PARAMS) {
    igemm::conv_body<float, false, igemm::EPI_HEAD, true>(x, y, w, bias, HEAD_ARGS);
}
#undef HEAD_PARAMS
#undef HEAD_ARGS

// Split-K (fast path, mode 0): slice blockIdx.z writes the raw sums of its K range; y and bias
// are unused here (splitk_reduce_* applies them).
#define SPLIT_ARGS p, igemm::Head(), igemm::SplitK{partial, splits}
extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_bf16_splitk(const unsigned short* x, unsigned short* y, const unsigned short* w,
                           const float* bias, ConvParams p, float* partial, int splits) {
    igemm::conv_body<unsigned short, true, igemm::EPI_PARTIAL>(x, y, w, bias, SPLIT_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 2)
    conv_igemm_tf32_splitk(const float* x, float* y, const float* w, const float* bias,
                           ConvParams p, float* partial, int splits) {
    igemm::conv_body<float, true, igemm::EPI_PARTIAL>(x, y, w, bias, SPLIT_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 1)
    conv_igemm_f32x3_splitk(const float* x, float* y, const float* w, const float* bias,
                            ConvParams p, float* partial, int splits) {
    igemm::conv_body<float, true, igemm::EPI_PARTIAL, true>(x, y, w, bias, SPLIT_ARGS);
}
#undef SPLIT_ARGS

// ---- The 128 x 64 block tile (`_n64`): the same kernels for GEMMs with N <= 64, where the
// wide tile would spend half its mma on zero columns. 128 threads (2 x 2 warps of 64 x 32);
// arguments as the 128-wide entry point of the same name without `_n64`.
#define BLOCKS_4 __launch_bounds__(128, 4)
#define BLOCKS_3 __launch_bounds__(128, 3)
#define BLOCKS_2 __launch_bounds__(128, 2)
#define HEAD_PARAMS                                                                            \
    ConvParams p, const float* head_w, const float* head_bias, View head_y, int head_f,        \
        int head_act
#define HEAD_ARGS p, igemm::Head{head_w, head_bias, head_y, head_f, head_act}
#define SPLIT_ARGS p, igemm::Head(), igemm::SplitK{partial, splits}
#define N64_ENTRY(bounds, name, T, VEC, EPI, X3, PARAMS, ARGS)                                 \
    extern "C" __global__ void bounds name(const T* x, T* y, const T* w, const float* bias,    \
                                           PARAMS) {                                           \
        igemm::conv_body<T, VEC, igemm::EPI, X3, 64>(x, y, w, bias, ARGS);                     \
    }
#define PLAIN_PARAMS ConvParams p
#define PLAIN_ARGS p
#define SPLIT_PARAMS ConvParams p, float* partial, int splits
// bf16
N64_ENTRY(BLOCKS_4, conv_igemm_bf16_n64, unsigned short, true, EPI_STORE, false, PLAIN_PARAMS,
          PLAIN_ARGS)
N64_ENTRY(BLOCKS_4, conv_igemm_bf16_small_n64, unsigned short, false, EPI_STORE, false,
          PLAIN_PARAMS, PLAIN_ARGS)
N64_ENTRY(BLOCKS_3, conv_igemm_bf16_head_n64, unsigned short, true, EPI_HEAD, false, HEAD_PARAMS,
          HEAD_ARGS)
N64_ENTRY(BLOCKS_4, conv_igemm_bf16_small_head_n64, unsigned short, false, EPI_HEAD, false,
          HEAD_PARAMS, HEAD_ARGS)
N64_ENTRY(BLOCKS_4, conv_igemm_bf16_splitk_n64, unsigned short, true, EPI_PARTIAL, false,
          SPLIT_PARAMS, SPLIT_ARGS)
// tf32
N64_ENTRY(BLOCKS_3, conv_igemm_tf32_n64, float, true, EPI_STORE, false, PLAIN_PARAMS, PLAIN_ARGS)
N64_ENTRY(BLOCKS_3, conv_igemm_tf32_small_n64, float, false, EPI_STORE, false, PLAIN_PARAMS,
          PLAIN_ARGS)
N64_ENTRY(BLOCKS_3, conv_igemm_tf32_head_n64, float, true, EPI_HEAD, false, HEAD_PARAMS,
          HEAD_ARGS)
N64_ENTRY(BLOCKS_3, conv_igemm_tf32_small_head_n64, float, false, EPI_HEAD, false, HEAD_PARAMS,
          HEAD_ARGS)
N64_ENTRY(BLOCKS_3, conv_igemm_tf32_splitk_n64, float, true, EPI_PARTIAL, false, SPLIT_PARAMS,
          SPLIT_ARGS)
// 3xTF32
N64_ENTRY(BLOCKS_2, conv_igemm_f32x3_n64, float, true, EPI_STORE, true, PLAIN_PARAMS, PLAIN_ARGS)
N64_ENTRY(BLOCKS_2, conv_igemm_f32x3_small_n64, float, false, EPI_STORE, true, PLAIN_PARAMS,
          PLAIN_ARGS)
N64_ENTRY(BLOCKS_2, conv_igemm_f32x3_head_n64, float, true, EPI_HEAD, true, HEAD_PARAMS, HEAD_ARGS)
N64_ENTRY(BLOCKS_2, conv_igemm_f32x3_small_head_n64, float, false, EPI_HEAD, true, HEAD_PARAMS,
          HEAD_ARGS)
N64_ENTRY(BLOCKS_2, conv_igemm_f32x3_splitk_n64, float, true, EPI_PARTIAL, true, SPLIT_PARAMS,
          SPLIT_ARGS)
#undef N64_ENTRY
#undef BLOCKS_4
#undef BLOCKS_3
#undef BLOCKS_2
#undef HEAD_PARAMS
#undef HEAD_ARGS
#undef SPLIT_ARGS
#undef PLAIN_PARAMS
#undef PLAIN_ARGS
#undef SPLIT_PARAMS

// y = act(bias + sum over the splits of partial[z]): one thread per element of y. The flat
// index of y's element (n, oy, ox, c) is m * y.c + c, the workspace's own layout.
template <typename T>
__device__ void splitk_reduce(T* arena, const float* __restrict__ partial,
                              const float* __restrict__ bias, View y, int N, int splits, int act) {
    FOR_EACH_IN_VIEW(y, N)
    const i64 slice = (i64)N * y.h * y.w * y.c;
    float s = bias[c];
    for (int z = 0; z < splits; ++z) s += partial[z * slice + idx];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? s : activate(s, act));
}
INSTANTIATE(splitk_reduce,
            (void* arena, const float* partial, const float* bias, View y, int N, int splits,
             int act),
            (, partial, bias, y, N, splits, act))
