// keras-unet-collection's Swin-UNET layers: SwinTransformerBlock (its steps in f32 scratch, the
// arena's workspace: the input, the normalised tokens, q, k, v, the attention weights, the
// attended values, the first residual and the MLP's hidden layer; the heads run on
// attention.cu's attention_scores, attention_softmax and attention_weighted), patch_merging and
// patch_expanding (one thread per output value, straight from and to the arena).

// The patch of token t of window `win`, after the cyclic shift by -shift (the block's output for
// that token goes back to the same patch). Must match SwinGeometry::source (src/ir/ops/swin.rs).
__device__ __forceinline__ i64 swin_source(int win, int t, int H, int W, int ws, int shift) {
    int per_row = W / ws;
    int row = ((win / per_row) * ws + t / ws + shift) % H;
    int col = ((win % per_row) * ws + t % ws + shift) % W;
    return (i64)row * W + col;
}

// The block's input, out of the arena into f32 scratch.
template <typename T>
__device__ void swin_load(T* arena, i64 x_off, float* out, i64 n) {
    FOR_EACH_INDEX(n)
    out[idx] = load_elem(arena + x_off + idx);
}
INSTANTIATE(swin_load, (void* arena, i64 x_off, float* out, i64 n), (, x_off, out, n))

// LayerNormalization of each row of C features, one thread per row, as TF computes it: the mean,
// the mean of squared differences, then x * s + (beta - mean * s) with s = gamma / sqrt(var + eps).
extern "C" __global__ void swin_norm(const float* x, float* out, const float* gamma,
                                     const float* beta, i64 rows, int C, float eps) {
    FOR_EACH_INDEX(rows)
    const float* xr = x + idx * C;
    float* yr = out + idx * C;
    float sum = 0.0f;
    for (int c = 0; c < C; ++c) sum += xr[c];
    float mean = sum / (float)C;
    float sq = 0.0f;
    for (int c = 0; c < C; ++c) {
        float d = xr[c] - mean;
        sq += d * d;
    }
    float inv = 1.0f / sqrtf(sq / (float)C + eps);
    for (int c = 0; c < C; ++c) {
        float s = inv * gamma[c];
        yr[c] = xr[c] * s + (beta[c] - mean * s);
    }
}

// The tokens in window order: out[(n * windows + win) * N + t, c] = x[n, source(win, t), c].
extern "C" __global__ void swin_gather(const float* x, float* out, int items, int H, int W,
                                       int ws, int shift, int C) {
    int N = ws * ws, windows = (H / ws) * (W / ws);
    FOR_EACH_INDEX((i64)items * H * W * C)
    int c = (int)(idx % C);
    i64 k = idx / C; // (n * windows + win) * N + t
    int t = (int)(k % N);
    int win = (int)((k / N) % windows);
    i64 n = k / ((i64)N * windows);
    out[idx] = x[(n * H * W + swin_source(win, t, H, W, ws, shift)) * C + c];
}

// out[r, u] = act((bias[col0 + u] + sum_i x[r, i] * w[i * w_stride + col0 + u]) * scale): a Dense
// over f32 scratch, on the columns col0.. of a wider kernel (q, k and v from the fused qkv).
extern "C" __global__ void swin_dense(const float* x, const float* w, const float* bias,
                                      float* out, i64 rows, int n_in, int units, int w_stride,
                                      int col0, float scale, int act) {
    FOR_EACH_INDEX(rows * units)
    int u = (int)(idx % units);
    const float* xr = x + (idx / units) * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += xr[i] * w[(i64)i * w_stride + col0 + u];
    out[idx] = activate((acc + bias[col0 + u]) * scale, act);
}

// The scores' bias: s[(r * heads + h) * N + i, j] += table[index[i, j], h] (+ mask[r % windows,
// i, j] where the windows are shifted); the index was checked against the layer's arguments.
extern "C" __global__ void swin_scores_bias(float* s, const float* table, const float* index,
                                            const float* mask, i64 rows, int windows, int heads,
                                            int N, int masked) {
    FOR_EACH_INDEX(rows * heads * N * N)
    int ij = (int)(idx % ((i64)N * N));
    int h = (int)((idx / ((i64)N * N)) % heads);
    i64 r = idx / ((i64)N * N * heads);
    float b = table[(i64)index[ij] * heads + h];
    if (masked) b += mask[(r % windows) * N * N + ij];
    s[idx] += b;
}

// The first residual: x1[n, source(win, t), c] = x[n, source(win, t), c] + a[(n * windows + win)
// * N + t, c] (the windows cover every patch once).
extern "C" __global__ void swin_scatter_add(const float* x, const float* a, float* x1, int items,
                                            int H, int W, int ws, int shift, int C) {
    int N = ws * ws, windows = (H / ws) * (W / ws);
    FOR_EACH_INDEX((i64)items * H * W * C)
    int c = (int)(idx % C);
    i64 k = idx / C;
    int t = (int)(k % N);
    int win = (int)((k / N) % windows);
    i64 n = k / ((i64)N * windows);
    i64 at = (n * H * W + swin_source(win, t, H, W, ws, shift)) * C + c;
    x1[at] = x[at] + a[idx];
}

// The MLP's second layer and the second residual into the arena:
//   y[r, u] = resid[r, u] + sum_i h[r, i] * w[i, u] + bias[u].
template <typename T>
__device__ void swin_output(T* arena, i64 y_off, const float* h, const float* w, const float* bias,
                            const float* resid, i64 rows, int n_in, int units) {
    FOR_EACH_INDEX(rows * units)
    int u = (int)(idx % units);
    const float* hr = h + (idx / units) * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += hr[i] * w[(i64)i * units + u];
    store_elem(arena + y_off + idx, resid[idx] + acc + bias[u]);
}
INSTANTIATE(swin_output, (void* arena, i64 y_off, const float* h, const float* w,
                          const float* bias, const float* resid, i64 rows, int n_in, int units),
            (, y_off, h, w, bias, resid, rows, n_in, units))

// patch_merging, dense in and out: y[n, t, u] = sum_k m[n, t, k] w[k, u] with m the 2x2
// neighbours of merged token t = (i, j) side by side, in the class's order (0, 0), (1, 0),
// (0, 1), (1, 1): m[k] = x[n, (2i + di) * W + 2j + dj, k % C] for part k / C = (di, dj).
template <typename T>
__device__ void patch_merging(T* arena, i64 x_off, i64 y_off, const float* w, int H, int W,
                              int C, int units, int N) {
    i64 tokens = (i64)(H / 2) * (W / 2);
    FOR_EACH_INDEX((i64)N * tokens * units)
    int u = (int)(idx % units);
    i64 t = (idx / units) % tokens;
    i64 n = idx / ((i64)units * tokens);
    int i = (int)(t / (W / 2)), j = (int)(t % (W / 2));
    float acc = 0.0f;
    for (int part = 0; part < 4; ++part) {
        int di = part & 1, dj = part >> 1;
        i64 at = x_off + (n * H * W + (i64)(2 * i + di) * W + 2 * j + dj) * C;
        for (int c = 0; c < C; ++c)
            acc += load_elem(arena + at + c) * w[(i64)(part * C + c) * units + u];
    }
    store_elem(arena + y_off + idx, acc);
}
INSTANTIATE(patch_merging, (void* arena, i64 x_off, i64 y_off, const float* w, int H, int W,
                            int C, int units, int N),
            (, x_off, y_off, w, H, W, C, units, N))

// patch_expanding, dense in and out: the bias-free 1x1 convolution to r * r * oc features, then
// depth_to_space: y[n, Y * r + i, X * r + j, ch] = sum_c x[n, Y, X, c] w[c, (i * r + j) * oc + ch].
template <typename T>
__device__ void patch_expanding(T* arena, i64 x_off, i64 y_off, const float* w, int H, int W,
                                int C, int r, int oc, int N) {
    int depth = r * r * oc;
    FOR_EACH_INDEX((i64)N * H * r * W * r * oc)
    int ch = (int)(idx % oc);
    i64 p = idx / oc;
    int X = (int)(p % ((i64)W * r));
    i64 q = p / ((i64)W * r);
    int Y = (int)(q % ((i64)H * r));
    i64 n = q / ((i64)H * r);
    int d = ((Y % r) * r + X % r) * oc + ch;
    i64 at = x_off + (n * H * W + (i64)(Y / r) * W + X / r) * C;
    float acc = 0.0f;
    for (int c = 0; c < C; ++c) acc += load_elem(arena + at + c) * w[(i64)c * depth + d];
    store_elem(arena + y_off + idx, acc);
}
INSTANTIATE(patch_expanding, (void* arena, i64 x_off, i64 y_off, const float* w, int H, int W,
                              int C, int r, int oc, int N),
            (, x_off, y_off, w, H, W, C, r, oc, N))
