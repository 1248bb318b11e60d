// Direct convolution for few input channels: the U-Net's first layer (3x3 on 1 or 3 channels,
// 32..64 filters). The tensor-core kernels would pad K = 9 or 27 to 32 and the layer is bound
// by writing F values per pixel, so this kernel aims at full-sector, coalesced stores.
//
// Entry points (instantiated from conv_small_c<T>, same arguments as conv2d_<T> without x1):
//   conv_small_c_f32(void* arena, View x, View y, const float* w, const float* bias, int KH,
//                    int KW, int SH, int SW, int DH, int DW, int PT, int PL, int act, int N)
//   conv_small_c_bf16(...same...)
//   y[n, oy, ox, f] = act(bias[f] + sum x[n, oy*SH + ky*DH - PT, ox*SW + kx*DW - PL, c]
//                                      * w[((ky * KW + kx) * C + c) * F + f]), outside = 0;
//   C = x.c, F = y.c; w: f32 HWIO [KH][KW][C][F]; ACT_SOFTMAX: the pre-activation is written.
//   block: 256 threads; grid: (ceil(y.w / 32), ceil(y.h / 16), N): a block owns a 32 x 16 tile
//   of output pixels of item blockIdx.z.
//   shared memory: 49152 bytes, static (launch with 0 dynamic bytes).
//   limits: C * KH * KW <= 64 and C * ((KH - 1) * DH + 1) * (31 * SW + (KW - 1) * DW + 1)
//   <= 2992 (the input patch of one output row; any 3x3 with C <= 3, SW <= 8, DW <= 8 fits);
//   outside them the kernel writes nothing. Any F (filters are done 8 (f32) or 16 (bf16) at
//   a time), any alignment; y must not overlap x.
//
// Per block: the input patch of as many output rows as fit (all 16 for 3x3 stride 1) is staged
// zero-padded in shared memory; then for each group of Q filters (Q * sizeof(T) = 32 bytes, one
// sector of a pixel) the weights are staged, every thread computes Q filters of 2 pixels
// (weights are broadcast float4 reads, inputs conflict-free reads along x), the sums go to
// shared memory, and the block writes them with consecutive threads on consecutive channels.

namespace small_c {
constexpr int TW = 32, TH = 16, THREADS = 256, KMAX = 64, QMAX = 16;
constexpr int STG = TW * TH * QMAX; // staged sums, floats
constexpr int XS_CAP = 2992;        // input patch, floats
constexpr int SMEM_BYTES = (STG + KMAX * QMAX + QMAX + XS_CAP + KMAX) * 4;
static_assert(SMEM_BYTES == 49152, "static shared memory at the 48 KiB limit");

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
} // namespace small_c

__shared__ __align__(16) unsigned char small_c_smem[small_c::SMEM_BYTES];

template <typename T>
__device__ void conv_small_c(T* arena, View x, View y, const float* w, const float* bias, int KH,
                             int KW, int SH, int SW, int DH, int DW, int PT, int PL, int act,
                             int N) {
    using namespace small_c;
    constexpr int Q = 32 / sizeof(T); // filters per group
    constexpr int U = Q / 4;          // float4 units per staged pixel
    float* stg = reinterpret_cast<float*>(small_c_smem); // [TW * TH][Q], units swizzled
    float* wc = stg + STG;                               // [K][Q] this group's weights
    float* bc = wc + KMAX * QMAX;                        // [Q] its bias
    float* xs = bc + QMAX;                               // [patch rows][PW][C]
    int* koff = reinterpret_cast<int*>(xs + XS_CAP);     // [K] tap -> offset in the patch

    const int C = x.c, F = y.c, K = KH * KW * C;
    const int n = blockIdx.z, ox0 = blockIdx.x * TW, oy0 = blockIdx.y * TH;
    const int PW = (TW - 1) * SW + (KW - 1) * DW + 1, EH = (KH - 1) * DH + 1;
    const int fit = XS_CAP / (C * PW); // patch rows that fit
    if (K > KMAX || fit < EH || n >= N || oy0 >= y.h) return;
    const int R = imin(TH, (fit - EH) / SH + 1); // output rows per patch
    const int tid = threadIdx.x;

    for (int k = tid; k < K; k += THREADS) {
        int tap = k / C, c = k - tap * C;
        int ky = tap / KW, kx = tap - ky * KW;
        koff[k] = (ky * DH * PW + kx * DW) * C + c;
    }
    const int rows = imin(TH, y.h - oy0);
#pragma unroll 1
    for (int r0 = 0; r0 < rows; r0 += R) {
        const int rr = imin(R, rows - r0);
        // The previous patch's readers all passed the barrier after their last read.
        const int PH = (rr - 1) * SH + EH, prow = PW * C;
        const int iy0 = (oy0 + r0) * SH - PT, ix0 = ox0 * SW - PL;
        for (int e = tid; e < PH * prow; e += THREADS) {
            int row = e / prow, rem = e - row * prow;
            int col = rem / C, c = rem - col * C;
            int iy = iy0 + row, ix = ix0 + col;
            float v = 0.0f;
            if ((unsigned)iy < (unsigned)x.h && (unsigned)ix < (unsigned)x.w)
                v = load_elem(arena + view_at(x, n, iy, ix, c));
            xs[e] = v;
        }
        // Slot j of a thread: pixel q = tid + 256 j of the patch's rows (warp-uniform row).
        // A slot past the last row reads row 0 (inside the patch) and is not stored.
        int base[2];
        bool live[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            int q = tid + j * THREADS, row = q / TW, col = q % TW;
            live[j] = row < rr;
            base[j] = ((live[j] ? row : 0) * SH * PW + col * SW) * C;
        }
#pragma unroll 1
        for (int cc = 0; cc < F; cc += Q) {
            __syncthreads(); // everyone is done with the last group's weights and sums
            for (int e = tid; e < K * Q; e += THREADS) {
                int k = e / Q, i = e % Q;
                wc[e] = cc + i < F ? w[(i64)k * F + cc + i] : 0.0f;
            }
            if (tid < Q) bc[tid] = cc + tid < F ? bias[cc + tid] : 0.0f;
            __syncthreads(); // patch, koff and weights visible
            float acc[2][Q];
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int i = 0; i < Q; ++i) acc[j][i] = 0.0f;
            // Not unrolled: 64 registers (bf16), so 4 blocks fit an SM, as their smem does.
#pragma unroll 1
            for (int k = 0; k < K; ++k) {
                const int o = koff[k];
                const float x0 = xs[base[0] + o], x1 = xs[base[1] + o];
                const float4* wk = reinterpret_cast<const float4*>(wc + k * Q);
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const float4 wv = wk[u];
                    acc[0][4 * u] += x0 * wv.x;
                    acc[0][4 * u + 1] += x0 * wv.y;
                    acc[0][4 * u + 2] += x0 * wv.z;
                    acc[0][4 * u + 3] += x0 * wv.w;
                    acc[1][4 * u] += x1 * wv.x;
                    acc[1][4 * u + 1] += x1 * wv.y;
                    acc[1][4 * u + 2] += x1 * wv.z;
                    acc[1][4 * u + 3] += x1 * wv.w;
                }
            }
            // Unit u of pixel q goes to u ^ sw(q): 8 consecutive lanes' float4 stores then hit
            // 8 different 16-byte bank groups.
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                if (!live[j]) continue;
                const int q = tid + j * THREADS, sw = (q / (8 / U)) % U;
                float4* d = reinterpret_cast<float4*>(stg + q * Q);
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    float4 v;
                    v.x = acc[j][4 * u];
                    v.y = acc[j][4 * u + 1];
                    v.z = acc[j][4 * u + 2];
                    v.w = acc[j][4 * u + 3];
                    d[u ^ sw] = v;
                }
            }
            __syncthreads();
            // Consecutive threads: consecutive filters of a pixel, then the next pixel; bias and
            // activation here (one inlined copy of the activation code).
            const int nv = rr * TW * Q;
#pragma unroll 1
            for (int e = tid; e < nv; e += THREADS) {
                const int q = e / Q, i = e % Q;
                const int c = cc + i, oy = oy0 + r0 + q / TW, ox = ox0 + q % TW;
                if (c >= F || ox >= y.w) continue;
                const int sw = (q / (8 / U)) % U;
                float v = stg[q * Q + ((i / 4) ^ sw) * 4 + (i & 3)] + bc[i];
                if (act != ACT_SOFTMAX) v = activate(v, act);
                store_elem(arena + view_at(y, n, oy, ox, c), v);
            }
        }
    }
}
INSTANTIATE(conv_small_c, (void* arena, View x, View y, const float* w, const float* bias, int KH,
                           int KW, int SH, int SW, int DH, int DW, int PT, int PL, int act, int N),
            (, x, y, w, bias, KH, KW, SH, SW, DH, DW, PT, PL, act, N))
