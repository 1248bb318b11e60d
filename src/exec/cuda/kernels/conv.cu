// Direct convolutions, any configuration (the exact f32 reference path on the GPU, and the
// fallback for shapes the tensor-core kernels in igemm.cu do not take). Weights stay f32.

// y[n, oy, ox, f] = act(bias[f] + sum_{ky,kx,c} x[n, oy*SH + ky*DH - PT, ox*SW + kx*DW - PL, c]
//                                   * w[ky, kx, c, f])   (kernel HWIO, outside = 0), where the
// input channels are x0's followed by x1's (x1.c == 0: one input).
template <typename T>
__device__ void conv2d(T* arena, View x0, View x1, View y, const float* w, const float* bias,
                       int KH, int KW, int SH, int SW, int DH, int DW, int PT, int PL, int act,
                       int N) {
    FOR_EACH_IN_VIEW(y, N)
    int F = y.c, C = x0.c + x1.c;
    float acc = 0.0f;
    for (int ky = 0; ky < KH; ++ky) {
        int iy = oy * SH + ky * DH - PT;
        if (iy < 0 || iy >= x0.h) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int ix = ox * SW + kx * DW - PL;
            if (ix < 0 || ix >= x0.w) continue;
            const float* wp = w + ((i64)(ky * KW + kx) * C) * F + c;
            const T* xp = arena + view_at(x0, n, iy, ix, 0);
            for (int ci = 0; ci < x0.c; ++ci) acc += load_elem(xp + ci) * wp[(i64)ci * F];
            if (x1.c > 0) {
                xp = arena + view_at(x1, n, iy, ix, 0);
                wp += (i64)x0.c * F;
                for (int ci = 0; ci < x1.c; ++ci) acc += load_elem(xp + ci) * wp[(i64)ci * F];
            }
        }
    }
    acc += bias[c];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(conv2d, (void* arena, View x0, View x1, View y, const float* w, const float* bias,
                     int KH, int KW, int SH, int SW, int DH, int DW, int PT, int PL, int act, int N),
            (, x0, x1, y, w, bias, KH, KW, SH, SW, DH, DW, PT, PL, act, N))

// A grouped convolution's sum at output (n, oy, ox, o) before bias and activation: kernel
// w[ky, kx, CG, F] (Keras's layout), output channel o of group o / (F / G) reading that group's
// CG input channels, G = x.c / CG (outside = 0). A depthwise kernel [kh, kw, C, DM] is the case
// CG = 1, F = C * DM.
template <typename T>
__device__ float grouped_sum(const T* arena, View x, const float* w, int F, int CG, int n,
                             int oy, int ox, int o, int KH, int KW, int SH, int SW, int DH,
                             int DW, int PT, int PL) {
    int groups = x.c / CG;
    int first = (o / (F / groups)) * CG;
    float acc = 0.0f;
    for (int ky = 0; ky < KH; ++ky) {
        int iy = oy * SH + ky * DH - PT;
        if (iy < 0 || iy >= x.h) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int ix = ox * SW + kx * DW - PL;
            if (ix < 0 || ix >= x.w) continue;
            const T* xp = arena + view_at(x, n, iy, ix, first);
            const float* wp = w + ((i64)(ky * KW + kx) * CG) * F + o;
            for (int ci = 0; ci < CG; ++ci) acc += load_elem(xp + ci) * wp[(i64)ci * F];
        }
    }
    return acc;
}

// Conv2D with groups, and DepthwiseConv2D (CG = 1): y = act(bias + grouped_sum).
template <typename T>
__device__ void grouped_conv2d(T* arena, View x, View y, const float* w, const float* bias,
                               int KH, int KW, int SH, int SW, int DH, int DW, int PT, int PL,
                               int CG, int act, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float acc = grouped_sum(arena, x, w, y.c, CG, n, oy, ox, c, KH, KW, SH, SW, DH, DW, PT, PL);
    acc += bias[c];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(grouped_conv2d,
            (void* arena, View x, View y, const float* w, const float* bias, int KH, int KW,
             int SH, int SW, int DH, int DW, int PT, int PL, int CG, int act, int N),
            (, x, y, w, bias, KH, KW, SH, SW, DH, DW, PT, PL, CG, act, N))

// SeparableConv2D: y[f] = act(bias[f] + sum_m pw[m, f] * depthwise_m), the depthwise stage
// (kernel dw [kh, kw, C, DM], M = C * DM values per pixel) computed in f32 for each output
// channel: one thread per output and no intermediate tensor.
template <typename T>
__device__ void separable_conv2d(T* arena, View x, View y, const float* dw, const float* pw,
                                 const float* bias, int KH, int KW, int SH, int SW, int DH,
                                 int DW, int PT, int PL, int M, int act, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float acc = 0.0f;
    for (int m = 0; m < M; ++m) {
        float depthwise = grouped_sum(arena, x, dw, M, 1, n, oy, ox, m, KH, KW, SH, SW, DH, DW,
                                      PT, PL);
        acc += depthwise * pw[(i64)m * y.c + c];
    }
    acc += bias[c];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(separable_conv2d,
            (void* arena, View x, View y, const float* dw, const float* pw, const float* bias,
             int KH, int KW, int SH, int SW, int DH, int DW, int PT, int PL, int M, int act,
             int N),
            (, x, y, dw, pw, bias, KH, KW, SH, SW, DH, DW, PT, PL, M, act, N))

// Keras Conv2DTranspose: full[i*SH + a, j*SW + b, o] += x[i, j, c] * w[a, b, o, c]; the output is
// the window of the full result starting at (Y0, X0) (zeros beyond it).
template <typename T>
__device__ void conv2d_transpose(T* arena, View x, View y, const float* w, const float* bias,
                                 int KH, int KW, int SH, int SW, int Y0, int X0, int act, int N) {
    FOR_EACH_IN_VIEW(y, N)
    int F = y.c, C = x.c;
    int fy = oy + Y0, fx = ox + X0;
    float acc = 0.0f;
    for (int a = 0; a < KH; ++a) {
        int ty = fy - a;
        if (ty < 0 || ty % SH != 0) continue;
        int i = ty / SH;
        if (i >= x.h) continue;
        for (int b = 0; b < KW; ++b) {
            int tx = fx - b;
            if (tx < 0 || tx % SW != 0) continue;
            int j = tx / SW;
            if (j >= x.w) continue;
            const T* xp = arena + view_at(x, n, i, j, 0);
            const float* wp = w + ((i64)(a * KW + b) * F + c) * C;
            for (int ci = 0; ci < C; ++ci) acc += load_elem(xp + ci) * wp[ci];
        }
    }
    acc += bias[c];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(conv2d_transpose, (void* arena, View x, View y, const float* w, const float* bias,
                               int KH, int KW, int SH, int SW, int Y0, int X0, int act, int N),
            (, x, y, w, bias, KH, KW, SH, SW, Y0, X0, act, N))

// Dense on dense rows: y[r, u] = act(bias[u] + sum_i x[r, i] * w[i, u]).
template <typename T>
__device__ void dense(T* arena, i64 x_off, i64 y_off, const float* w, const float* bias, int rows,
                      int n_in, int units, int act) {
    FOR_EACH_INDEX((i64)rows * units)
    int u = (int)(idx % units);
    i64 r = idx / units;
    const T* x = arena + x_off + r * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += load_elem(x + i) * w[(i64)i * units + u];
    acc += bias[u];
    store_elem(arena + y_off + idx, act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(dense, (void* arena, i64 x_off, i64 y_off, const float* w, const float* bias, int rows,
                    int n_in, int units, int act),
            (, x_off, y_off, w, bias, rows, n_in, units, act))
