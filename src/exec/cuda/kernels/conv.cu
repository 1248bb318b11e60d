// Conv2D and Conv2DTranspose, direct f32 (correct first; tensor-core paths come later).

// y[n, oy, ox, f] = act(bias[f] + sum_{ky,kx,c} x[n, oy*SH + ky*DH - PT, ox*SW + kx*DW - PL, c]
//                                   * w[ky, kx, c, f])   (kernel HWIO, outside = 0)
extern "C" __global__ void conv2d_f32(float* arena, i64 x_off, i64 y_off, const float* w,
                                      const float* bias, int N, int H, int W, int C, int OH,
                                      int OW, int F, int KH, int KW, int SH, int SW, int DH,
                                      int DW, int PT, int PL, int act) {
    FOR_EACH_INDEX((i64)N * OH * OW * F)
    int f = (int)(idx % F);
    i64 p = idx / F;
    int ox = (int)(p % OW);
    p /= OW;
    int oy = (int)(p % OH);
    int n = (int)(p / OH);
    const float* x = arena + x_off;
    float acc = 0.0f;
    for (int ky = 0; ky < KH; ++ky) {
        int iy = oy * SH + ky * DH - PT;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int ix = ox * SW + kx * DW - PL;
            if (ix < 0 || ix >= W) continue;
            const float* xp = x + (((i64)n * H + iy) * W + ix) * C;
            const float* wp = w + ((i64)(ky * KW + kx) * C) * F + f;
            for (int c = 0; c < C; ++c) acc += xp[c] * wp[(i64)c * F];
        }
    }
    if (bias) acc += bias[f];
    arena[y_off + idx] = act == ACT_SOFTMAX ? acc : activate(acc, act);
}

// Keras Conv2DTranspose: full[i*SH + a, j*SW + b, o] += x[i, j, c] * w[a, b, o, c]; the output is
// the window of the full result starting at (Y0, X0) (zeros beyond it).
extern "C" __global__ void conv2d_transpose_f32(float* arena, i64 x_off, i64 y_off,
                                                const float* w, const float* bias, int N, int H,
                                                int W, int C, int OH, int OW, int F, int KH,
                                                int KW, int SH, int SW, int Y0, int X0, int act) {
    FOR_EACH_INDEX((i64)N * OH * OW * F)
    int o = (int)(idx % F);
    i64 p = idx / F;
    int ox = (int)(p % OW);
    p /= OW;
    int oy = (int)(p % OH);
    int n = (int)(p / OH);
    const float* x = arena + x_off;
    int fy = oy + Y0, fx = ox + X0;
    float acc = 0.0f;
    for (int a = 0; a < KH; ++a) {
        int ty = fy - a;
        if (ty < 0 || ty % SH != 0) continue;
        int i = ty / SH;
        if (i >= H) continue;
        for (int b = 0; b < KW; ++b) {
            int tx = fx - b;
            if (tx < 0 || tx % SW != 0) continue;
            int j = tx / SW;
            if (j >= W) continue;
            const float* xp = x + (((i64)n * H + i) * W + j) * C;
            const float* wp = w + ((i64)(a * KW + b) * F + o) * C;
            for (int c = 0; c < C; ++c) acc += xp[c] * wp[c];
        }
    }
    if (bias) acc += bias[o];
    arena[y_off + idx] = act == ACT_SOFTMAX ? acc : activate(acc, act);
}

// Dense: y[r, u] = act(bias[u] + sum_i x[r, i] * w[i, u]).
extern "C" __global__ void dense_f32(float* arena, i64 x_off, i64 y_off, const float* w,
                                     const float* bias, int rows, int n_in, int units, int act) {
    FOR_EACH_INDEX((i64)rows * units)
    int u = (int)(idx % units);
    i64 r = idx / units;
    const float* x = arena + x_off + r * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += x[i] * w[(i64)i * units + u];
    if (bias) acc += bias[u];
    arena[y_off + idx] = act == ACT_SOFTMAX ? acc : activate(acc, act);
}
