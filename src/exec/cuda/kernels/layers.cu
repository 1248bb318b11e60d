// Layers without weights (and batch normalization): pooling, resizing, merging, activations.

// MaxPooling2D; windows outside the input are skipped (Keras `same` pads with -inf).
extern "C" __global__ void max_pool_f32(float* arena, i64 x_off, i64 y_off, int N, int H, int W,
                                        int C, int OH, int OW, int KH, int KW, int SH, int SW,
                                        int PT, int PL) {
    FOR_EACH_INDEX((i64)N * OH * OW * C)
    int c = (int)(idx % C);
    i64 p = idx / C;
    int ox = (int)(p % OW);
    p /= OW;
    int oy = (int)(p % OH);
    int n = (int)(p / OH);
    const float* x = arena + x_off;
    float m = NEG_INF;
    for (int ky = 0; ky < KH; ++ky) {
        int iy = oy * SH + ky - PT;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int ix = ox * SW + kx - PL;
            if (ix < 0 || ix >= W) continue;
            m = fmaxf(m, x[(((i64)n * H + iy) * W + ix) * C + c]);
        }
    }
    arena[y_off + idx] = m;
}

// UpSampling2D: nearest repeats pixels; bilinear follows TF's half-pixel centres.
extern "C" __global__ void upsample_f32(float* arena, i64 x_off, i64 y_off, int N, int H, int W,
                                        int C, int OH, int OW, int SY, int SX, int bilinear) {
    FOR_EACH_INDEX((i64)N * OH * OW * C)
    int c = (int)(idx % C);
    i64 p = idx / C;
    int ox = (int)(p % OW);
    p /= OW;
    int oy = (int)(p % OH);
    int n = (int)(p / OH);
    const float* x = arena + x_off + (i64)n * H * W * C;
    if (!bilinear) {
        arena[y_off + idx] = x[((i64)(oy / SY) * W + ox / SX) * C + c];
        return;
    }
    float sy = ((float)oy + 0.5f) / SY - 0.5f, sx = ((float)ox + 0.5f) / SX - 0.5f;
    float fy = floorf(sy), fx = floorf(sx);
    int y0 = max((int)fy, 0), x0 = max((int)fx, 0);
    int y1 = min(max((int)ceilf(sy), 0), H - 1), x1 = min(max((int)ceilf(sx), 0), W - 1);
    y0 = min(y0, H - 1);
    x0 = min(x0, W - 1);
    float dy = sy - fy, dx = sx - fx;
    float tl = x[((i64)y0 * W + x0) * C + c], tr = x[((i64)y0 * W + x1) * C + c];
    float bl = x[((i64)y1 * W + x0) * C + c], br = x[((i64)y1 * W + x1) * C + c];
    float top = tl + (tr - tl) * dx, bottom = bl + (br - bl) * dx;
    arena[y_off + idx] = top + (bottom - top) * dy;
}

// Cropping2D (T, L >= 0) and ZeroPadding2D (T, L <= 0): y[oy, ox] = x[oy + T, ox + L] or 0.
extern "C" __global__ void shift_window_f32(float* arena, i64 x_off, i64 y_off, int N, int H,
                                            int W, int C, int OH, int OW, int T, int L) {
    FOR_EACH_INDEX((i64)N * OH * OW * C)
    int c = (int)(idx % C);
    i64 p = idx / C;
    int ox = (int)(p % OW);
    p /= OW;
    int oy = (int)(p % OH);
    int n = (int)(p / OH);
    int iy = oy + T, ix = ox + L;
    float v = 0.0f;
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = arena[x_off + (((i64)n * H + iy) * W + ix) * C + c];
    arena[y_off + idx] = v;
}

// One input of a concatenation: `outer` chunks of `len` values go to offset `at` of chunks of
// `total` values.
extern "C" __global__ void concat_part_f32(float* arena, i64 x_off, i64 y_off, i64 outer, int len,
                                           int total, int at) {
    FOR_EACH_INDEX(outer * len)
    i64 o = idx / len;
    int j = (int)(idx % len);
    arena[y_off + o * total + at + j] = arena[x_off + idx];
}

// y = a + b (Add of more inputs runs this repeatedly, accumulating into y).
extern "C" __global__ void add_f32(float* arena, i64 a_off, i64 b_off, i64 y_off, i64 n) {
    FOR_EACH_INDEX(n)
    arena[y_off + idx] = arena[a_off + idx] + arena[b_off + idx];
}

// Keras BatchNormalization at inference: gamma * (x - mean) / sqrt(var + eps) + beta.
extern "C" __global__ void batch_norm_f32(float* arena, i64 x_off, i64 y_off, const float* gamma,
                                          const float* beta, const float* mean, const float* var,
                                          float eps, i64 n, int C) {
    FOR_EACH_INDEX(n)
    int c = (int)(idx % C);
    float v = (arena[x_off + idx] - mean[c]) / sqrtf(var[c] + eps);
    if (gamma) v *= gamma[c];
    if (beta) v += beta[c];
    arena[y_off + idx] = v;
}

// Activation layer (and identity copies: act = ACT_LINEAR). In place when x_off == y_off.
extern "C" __global__ void activation_f32(float* arena, i64 x_off, i64 y_off, i64 n, int act) {
    FOR_EACH_INDEX(n)
    arena[y_off + idx] = activate(arena[x_off + idx], act);
}

// Keras ReLU layer: max_value (if has_max), negative_slope, threshold.
extern "C" __global__ void relu_layer_f32(float* arena, i64 x_off, i64 y_off, i64 n, int has_max,
                                          float max_value, float slope, float threshold) {
    FOR_EACH_INDEX(n)
    float v = arena[x_off + idx];
    float r;
    if (has_max && v >= max_value) r = max_value;
    else if (v >= threshold) r = v;
    else r = slope * (v - threshold);
    arena[y_off + idx] = r;
}

// Softmax over an axis of length `len` with `inner` values after it; one thread per lane.
// In place when x_off == y_off.
extern "C" __global__ void softmax_f32(float* arena, i64 x_off, i64 y_off, i64 outer, int len,
                                       i64 inner) {
    FOR_EACH_INDEX(outer * inner)
    i64 o = idx / inner, i = idx % inner;
    i64 base = o * len * inner + i;
    float m = NEG_INF;
    for (int l = 0; l < len; ++l) m = fmaxf(m, arena[x_off + base + (i64)l * inner]);
    float s = 0.0f;
    for (int l = 0; l < len; ++l) s += expf(arena[x_off + base + (i64)l * inner] - m);
    for (int l = 0; l < len; ++l)
        arena[y_off + base + (i64)l * inner] = expf(arena[x_off + base + (i64)l * inner] - m) / s;
}

// GlobalAveragePooling2D: y[n, c] = mean over H*W of x[n, :, :, c].
extern "C" __global__ void global_average_pool_f32(float* arena, i64 x_off, i64 y_off, int N,
                                                   int HW, int C) {
    FOR_EACH_INDEX((i64)N * C)
    int c = (int)(idx % C);
    i64 n = idx / C;
    float s = 0.0f;
    for (int p = 0; p < HW; ++p) s += arena[x_off + (n * HW + p) * C + c];
    arena[y_off + idx] = s / (float)HW;
}
