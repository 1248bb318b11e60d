// Layers without weights (and batch normalization): pooling, resizing, copying windows,
// merging, activations. All read and write through windows (View), so crops and concat
// slices need no copies of their own.

// MaxPooling2D; windows outside the input are skipped (Keras `same` pads with -inf).
template <typename T>
__device__ void max_pool(T* arena, View x, View y, int KH, int KW, int SH, int SW, int PT, int PL,
                         int N) {
    FOR_EACH_IN_VIEW(y, N)
    float m = NEG_INF;
    for (int ky = 0; ky < KH; ++ky) {
        int iy = oy * SH + ky - PT;
        if (iy < 0 || iy >= x.h) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int ix = ox * SW + kx - PL;
            if (ix < 0 || ix >= x.w) continue;
            m = fmaxf(m, load_elem(arena + view_at(x, n, iy, ix, c)));
        }
    }
    store_elem(arena + view_at(y, n, oy, ox, c), m);
}
INSTANTIATE(max_pool, (void* arena, View x, View y, int KH, int KW, int SH, int SW, int PT, int PL,
                       int N),
            (, x, y, KH, KW, SH, SW, PT, PL, N))

// An image resize (UpSampling2D, Resizing, tf.image.resize) from x's size to y's, as
// TensorFlow's resize kernels sample (resize_scale/resize_source/resize_nearest in
// common.cu): mode 0 nearest at half-pixel centres, 1 bilinear at half-pixel centres, 2
// bilinear with aligned corners (PyTorch's align_corners=True).
template <typename T>
__device__ void resize(T* arena, View x, View y, int mode, int N) {
    FOR_EACH_IN_VIEW(y, N)
    T* out = arena + view_at(y, n, oy, ox, c);
    int H = x.h, W = x.w;
    float scale_y = resize_scale(H, y.h, mode), scale_x = resize_scale(W, y.w, mode);
    if (mode == 0) {
        int iy = resize_nearest(oy, scale_y, H), ix = resize_nearest(ox, scale_x, W);
        store_elem(out, load_elem(arena + view_at(x, n, iy, ix, c)));
        return;
    }
    float sy = resize_source(oy, scale_y, mode), sx = resize_source(ox, scale_x, mode);
    float fy = floorf(sy), fx = floorf(sx);
    int y0 = min(max((int)fy, 0), H - 1), x0 = min(max((int)fx, 0), W - 1);
    int y1 = min(max((int)ceilf(sy), 0), H - 1), x1 = min(max((int)ceilf(sx), 0), W - 1);
    float dy = sy - fy, dx = sx - fx;
    float tl = load_elem(arena + view_at(x, n, y0, x0, c));
    float tr = load_elem(arena + view_at(x, n, y0, x1, c));
    float bl = load_elem(arena + view_at(x, n, y1, x0, c));
    float br = load_elem(arena + view_at(x, n, y1, x1, c));
    float top = tl + (tr - tl) * dx, bottom = bl + (br - bl) * dx;
    store_elem(out, top + (bottom - top) * dy);
}
INSTANTIATE(resize, (void* arena, View x, View y, int mode, int N), (, x, y, mode, N))

// One axis of a padding outside x: mode 1 reflects without repeating the edge (needs n > pad),
// mode 2 repeats the edge; mode 0 leaves it outside (a zero).
__device__ int pad_source(int i, int n, int mode) {
    if (i >= 0 && i < n) return i;
    if (mode == 1) return i < 0 ? -i : 2 * (n - 1) - i;
    if (mode == 2) return i < 0 ? 0 : n - 1;
    if (mode == 3) return i < 0 ? -i - 1 : 2 * n - 1 - i;
    return i;
}

// y[oy, ox] = x[oy + T, ox + L], zero outside x: Cropping2D (T, L >= 0), ZeroPadding2D
// (T, L <= 0; `mode` as pad_source), and plain copies (T = L = 0: dropout, concat parts,
// flatten).
template <typename T>
__device__ void shift_window(T* arena, View x, View y, int top, int left, int mode, int N) {
    FOR_EACH_IN_VIEW(y, N)
    int iy = pad_source(oy + top, x.h, mode), ix = pad_source(ox + left, x.w, mode);
    float v = 0.0f;
    if (iy >= 0 && iy < x.h && ix >= 0 && ix < x.w) v = load_elem(arena + view_at(x, n, iy, ix, c));
    store_elem(arena + view_at(y, n, oy, ox, c), v);
}
INSTANTIATE(shift_window, (void* arena, View x, View y, int top, int left, int mode, int N),
            (, x, y, top, left, mode, N))

// A concatenation on an axis other than the channels, dense: `outer` chunks of `len` values
// go to offset `at` of chunks of `total` values.
template <typename T>
__device__ void concat_part(T* arena, i64 x_off, i64 y_off, i64 outer, int len, int total, int at) {
    FOR_EACH_INDEX(outer * len)
    i64 o = idx / len;
    int j = (int)(idx % len);
    arena[y_off + o * total + at + j] = arena[x_off + idx];
}
INSTANTIATE(concat_part, (void* arena, i64 x_off, i64 y_off, i64 outer, int len, int total, int at),
            (, x_off, y_off, outer, len, total, at))

// Permute, dense: output element (n, i, j, k) of dims (d0, d1, d2) is the input element at
// n * per_image + i * s0 + j * s1 + k * s2 (the input strides of the axes each output axis takes).
template <typename T>
__device__ void permute(T* arena, i64 x_off, i64 y_off, i64 total, int d1, int d2, i64 s0,
                        i64 s1, i64 s2, i64 per_image) {
    FOR_EACH_INDEX(total)
    i64 n = idx / per_image;
    i64 r = idx % per_image;
    i64 k = r % d2;
    i64 j = (r / d2) % d1;
    i64 i = r / ((i64)d1 * d2);
    arena[y_off + idx] = arena[x_off + n * per_image + i * s0 + j * s1 + k * s2];
}
INSTANTIATE(permute, (void* arena, i64 x_off, i64 y_off, i64 total, int d1, int d2, i64 s0,
                      i64 s1, i64 s2, i64 per_image),
            (, x_off, y_off, total, d1, d2, s0, s1, s2, per_image))

// y = a + b (Add of more inputs runs this repeatedly, accumulating into y).
template <typename T>
__device__ void add(T* arena, View a, View b, View y, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(a, n, oy, ox, c)) + load_elem(arena + view_at(b, n, oy, ox, c));
    store_elem(arena + view_at(y, n, oy, ox, c), v);
}
INSTANTIATE(add, (void* arena, View a, View b, View y, int N), (, a, b, y, N))

// CustomScaleLayer (tf.keras's InceptionResNetV2 residual): a + b * scale, the product first.
template <typename T>
__device__ void scaled_add(T* arena, View a, View b, View y, float scale, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(a, n, oy, ox, c)) + load_elem(arena + view_at(b, n, oy, ox, c)) * scale;
    store_elem(arena + view_at(y, n, oy, ox, c), v);
}
INSTANTIATE(scaled_add, (void* arena, View a, View b, View y, float scale, int N), (, a, b, y, scale, N))

// K.repeat_elements on the channels: output channel c is input channel c / R.
template <typename T>
__device__ void repeat_channels(T* arena, View x, View y, int R, int N) {
    FOR_EACH_IN_VIEW(y, N)
    store_elem(arena + view_at(y, n, oy, ox, c), load_elem(arena + view_at(x, n, oy, ox, c / R)));
}
INSTANTIATE(repeat_channels, (void* arena, View x, View y, int R, int N), (, x, y, R, N))

// Keras BatchNormalization at inference: gamma * (x - mean) / sqrt(var + eps) + beta.
template <typename T>
__device__ void batch_norm(T* arena, View x, View y, const float* gamma, const float* beta,
                           const float* mean, const float* var, float eps, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = (load_elem(arena + view_at(x, n, oy, ox, c)) - mean[c]) / sqrtf(var[c] + eps);
    store_elem(arena + view_at(y, n, oy, ox, c), v * gamma[c] + beta[c]);
}
INSTANTIATE(batch_norm, (void* arena, View x, View y, const float* gamma, const float* beta,
                         const float* mean, const float* var, float eps, int N),
            (, x, y, gamma, beta, mean, var, eps, N))

// Keras's Normalization: (x - mean) / max(sqrt(var), 1e-7) per channel.
template <typename T>
__device__ void standardize(T* arena, View x, View y, const float* mean, const float* var, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = (load_elem(arena + view_at(x, n, oy, ox, c)) - mean[c]) / fmaxf(sqrtf(var[c]), 1e-7f);
    store_elem(arena + view_at(y, n, oy, ox, c), v);
}
INSTANTIATE(standardize, (void* arena, View x, View y, const float* mean, const float* var, int N),
            (, x, y, mean, var, N))

// Activation layer (and identity copies: act = ACT_LINEAR). In place when x and y are alike.
template <typename T>
__device__ void activation(T* arena, View x, View y, int act, int N) {
    FOR_EACH_IN_VIEW(y, N)
    store_elem(arena + view_at(y, n, oy, ox, c), activate(load_elem(arena + view_at(x, n, oy, ox, c)), act));
}
INSTANTIATE(activation, (void* arena, View x, View y, int act, int N), (, x, y, act, N))

// TFOpLambda arithmetic with a constant: op 0 add, 1 subtract, 2 multiply, 3 divide, 4 maximum,
// 5 minimum; the constant is the first operand when first != 0 (`1 - g`), else the second.
template <typename T>
__device__ void scalar_op(T* arena, View x, View y, int op, float k, int first, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(x, n, oy, ox, c));
    float a = first ? k : v;
    float b = first ? v : k;
    float r = op == 0 ? a + b : op == 1 ? a - b : op == 2 ? a * b : op == 3 ? a / b
            : op == 4 ? fmaxf(a, b) : fminf(a, b);
    store_elem(arena + view_at(y, n, oy, ox, c), r);
}
INSTANTIATE(scalar_op, (void* arena, View x, View y, int op, float k, int first, int N),
            (, x, y, op, k, first, N))

// tf.reduce_mean / tf.reduce_max over the channels with keepdims, tf.argmax over them: y has
// one channel. op 0 is the mean (summed in channel order, then divided by the count), 1 the
// maximum, 2 the index of the first largest channel (as a float).
template <typename T>
__device__ void reduce_channels(T* arena, View x, View y, int op, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float acc = op == 0 ? 0.0f : NEG_INF;
    float best = load_elem(arena + view_at(x, n, oy, ox, 0));
    int best_at = 0;
    for (int k = 0; k < x.c; ++k) {
        float v = load_elem(arena + view_at(x, n, oy, ox, k));
        acc = op == 0 ? acc + v : fmaxf(acc, v);
        if (v > best) {
            best = v;
            best_at = k;
        }
    }
    float r = op == 0 ? acc / (float)x.c : op == 1 ? acc : (float)best_at;
    store_elem(arena + view_at(y, n, oy, ox, c), r);
}
INSTANTIATE(reduce_channels, (void* arena, View x, View y, int op, int N), (, x, y, op, N))

// Keras ReLU layer: max_value (if has_max), negative_slope, threshold.
template <typename T>
__device__ void relu_layer(T* arena, View x, View y, int has_max, float max_value, float slope,
                           float threshold, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(x, n, oy, ox, c));
    float r;
    if (has_max && v >= max_value) r = max_value;
    else if (v >= threshold) r = v;
    else r = slope * (v - threshold);
    store_elem(arena + view_at(y, n, oy, ox, c), r);
}
INSTANTIATE(relu_layer, (void* arena, View x, View y, int has_max, float max_value, float slope,
                         float threshold, int N),
            (, x, y, has_max, max_value, slope, threshold, N))

// Softmax over an axis of length `len` with `inner` values after it, dense, in place; one
// thread per lane.
template <typename T>
__device__ void softmax(T* arena, i64 off, i64 outer, int len, i64 inner) {
    FOR_EACH_INDEX(outer * inner)
    i64 o = idx / inner, i = idx % inner;
    T* base = arena + off + o * len * inner + i;
    float m = NEG_INF;
    for (int l = 0; l < len; ++l) m = fmaxf(m, load_elem(base + (i64)l * inner));
    float s = 0.0f;
    for (int l = 0; l < len; ++l) s += expf(load_elem(base + (i64)l * inner) - m);
    for (int l = 0; l < len; ++l)
        store_elem(base + (i64)l * inner, expf(load_elem(base + (i64)l * inner) - m) / s);
}
INSTANTIATE(softmax, (void* arena, i64 off, i64 outer, int len, i64 inner),
            (, off, outer, len, inner))

// GlobalAveragePooling2D: y[n, c] (dense) = mean over the window's pixels of x[n, :, :, c].
template <typename T>
__device__ void global_average_pool(T* arena, View x, i64 y_off, int N) {
    FOR_EACH_INDEX((i64)N * x.c)
    int c = (int)(idx % x.c);
    int n = (int)(idx / x.c);
    float s = 0.0f;
    for (int yy = 0; yy < x.h; ++yy)
        for (int xx = 0; xx < x.w; ++xx) s += load_elem(arena + view_at(x, n, yy, xx, c));
    store_elem(arena + y_off + idx, s / (float)(x.h * x.w));
}
INSTANTIATE(global_average_pool, (void* arena, View x, i64 y_off, int N), (, x, y_off, N))

// GlobalMaxPooling2D: y[n, c] (dense) = max over the window's pixels of x[n, :, :, c].
template <typename T>
__device__ void global_max_pool(T* arena, View x, i64 y_off, int N) {
    FOR_EACH_INDEX((i64)N * x.c)
    int c = (int)(idx % x.c);
    int n = (int)(idx / x.c);
    float m = NEG_INF;
    for (int yy = 0; yy < x.h; ++yy)
        for (int xx = 0; xx < x.w; ++xx) m = fmaxf(m, load_elem(arena + view_at(x, n, yy, xx, c)));
    store_elem(arena + y_off + idx, m);
}
INSTANTIATE(global_max_pool, (void* arena, View x, i64 y_off, int N), (, x, y_off, N))

// AveragePooling2D: the mean of the window's cells inside the input (Keras `same` leaves the
// padding out of the count).
template <typename T>
__device__ void average_pool(T* arena, View x, View y, int KH, int KW, int SH, int SW, int PT,
                             int PL, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float s = 0.0f;
    int cells = 0;
    for (int ky = 0; ky < KH; ++ky) {
        int iy = oy * SH + ky - PT;
        if (iy < 0 || iy >= x.h) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int ix = ox * SW + kx - PL;
            if (ix < 0 || ix >= x.w) continue;
            s += load_elem(arena + view_at(x, n, iy, ix, c));
            ++cells;
        }
    }
    store_elem(arena + view_at(y, n, oy, ox, c), s * (1.0f / (float)max(cells, 1)));
}
INSTANTIATE(average_pool, (void* arena, View x, View y, int KH, int KW, int SH, int SW, int PT,
                           int PL, int N),
            (, x, y, KH, KW, SH, SW, PT, PL, N))

// Merge codes; must match `merge_code` in src/exec/cuda/mod.rs.
#define MERGE_ADD 0
#define MERGE_MULTIPLY 1
#define MERGE_SUBTRACT 2
#define MERGE_MAXIMUM 3
#define MERGE_MINIMUM 4
#define MERGE_DIVIDE 5

// An element of `v` for output position (n, y, x, c), where a side of size 1 broadcasts
// (Keras's merges: a one-channel attention gate scales every channel).
__device__ __forceinline__ i64 broadcast_at(const View& v, int n, int y, int x, int c) {
    return view_at(v, n, v.h == 1 ? 0 : y, v.w == 1 ? 0 : x, v.c == 1 ? 0 : c);
}

__device__ __forceinline__ float merge_apply(int op, float u, float v) {
    switch (op) {
    case MERGE_MULTIPLY: return u * v;
    case MERGE_SUBTRACT: return u - v;
    case MERGE_MAXIMUM: return fmaxf(u, v);
    case MERGE_MINIMUM: return fminf(u, v);
    case MERGE_DIVIDE: return u / v;
    default: return u + v;
    }
}

// y = op(a, b) / divisor, with broadcasting. Merges of more inputs run this repeatedly,
// accumulating into y (Average divides by the count at its last step).
template <typename T>
__device__ void merge(T* arena, View a, View b, View y, int op, float divisor, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float u = load_elem(arena + broadcast_at(a, n, oy, ox, c));
    float v = load_elem(arena + broadcast_at(b, n, oy, ox, c));
    store_elem(arena + view_at(y, n, oy, ox, c), merge_apply(op, u, v) / divisor);
}
INSTANTIATE(merge, (void* arena, View a, View b, View y, int op, float divisor, int N),
            (, a, b, y, op, divisor, N))

// y = op(x, k), or op(k, x) when `first`: a TFOpLambda's constant tensor `k`, outside the
// arena, read through its own view (no batch stride: every item meets the same values).
template <typename T>
__device__ void merge_constant(T* arena, View x, const float* k, View kv, View y, int op,
                               int first, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float u = load_elem(arena + broadcast_at(x, n, oy, ox, c));
    float v = k[broadcast_at(kv, n, oy, ox, c)];
    store_elem(arena + view_at(y, n, oy, ox, c), first ? merge_apply(op, v, u) : merge_apply(op, u, v));
}
INSTANTIATE(merge_constant,
            (void* arena, View x, const float* k, View kv, View y, int op, int first, int N),
            (, x, k, kv, y, op, first, N))

// Keras ELU layer: x if x > 0, else alpha * (exp(x) - 1).
template <typename T>
__device__ void elu_layer(T* arena, View x, View y, float alpha, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(x, n, oy, ox, c));
    store_elem(arena + view_at(y, n, oy, ox, c), v > 0.0f ? v : alpha * expm1f(v));
}
INSTANTIATE(elu_layer, (void* arena, View x, View y, float alpha, int N), (, x, y, alpha, N))

// PReLU: x if x >= 0, else alpha * x; alpha is dense [AH, AW, AC] (1 on the shared axes).
template <typename T>
__device__ void prelu(T* arena, View x, View y, const float* alpha, int AH, int AW, int AC,
                      int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(x, n, oy, ox, c));
    int ay = AH == 1 ? 0 : oy, ax = AW == 1 ? 0 : ox, ac = AC == 1 ? 0 : c;
    float a = alpha[((i64)ay * AW + ax) * AC + ac];
    store_elem(arena + view_at(y, n, oy, ox, c), v >= 0.0f ? v : a * v);
}
INSTANTIATE(prelu, (void* arena, View x, View y, const float* alpha, int AH, int AW, int AC, int N),
            (, x, y, alpha, AH, AW, AC, N))

// keras-unet-collection's Snake: x + (1 / beta) * sin(beta x)^2, beta the layer's one weight.
template <typename T>
__device__ void snake(T* arena, View x, View y, const float* beta, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float v = load_elem(arena + view_at(x, n, oy, ox, c));
    float b = beta[0];
    float s = sinf(b * v);
    store_elem(arena + view_at(y, n, oy, ox, c), v + (1.0f / b) * (s * s));
}
INSTANTIATE(snake, (void* arena, View x, View y, const float* beta, int N), (, x, y, beta, N))

// Element `e` of item n of a view, counting row-major over (h, w, c).
__device__ __forceinline__ i64 item_at(const View& v, int n, i64 e) {
    int c = (int)(e % v.c);
    i64 pixel = e / v.c;
    return view_at(v, n, (int)(pixel / v.w), (int)(pixel % v.w), c);
}

// GroupNormalization and LayerNormalization. The item, row-major over (h, w, c), is
// [outer, span, groups, group_size]; one thread per (item, outer, group) computes the mean and
// then the mean of squared differences (tf.nn.moments, in f32) over span x group_size values,
// and normalises them as TF's batch_normalization: x * inv + (beta - mean * inv) with
// inv = gamma / sqrt(var + eps). gamma and beta are indexed by g * group_size + j, plus
// p * groups * group_size where they vary along the span (per_position).
template <typename T>
__device__ void group_norm(T* arena, View x, View y, const float* gamma, const float* beta,
                           int outer, int span, int groups, int group_size, int per_position,
                           float eps, int N) {
    FOR_EACH_INDEX((i64)N * outer * groups)
    int g = (int)(idx % groups);
    int a = (int)((idx / groups) % outer);
    int n = (int)(idx / ((i64)groups * outer));
    i64 base = (i64)a * span * groups * group_size;
    float count = (float)span * (float)group_size;
    float sum = 0.0f;
    for (int p = 0; p < span; ++p)
        for (int j = 0; j < group_size; ++j)
            sum += load_elem(arena + item_at(x, n, base + ((i64)p * groups + g) * group_size + j));
    float mean = sum / count;
    float sq = 0.0f;
    for (int p = 0; p < span; ++p)
        for (int j = 0; j < group_size; ++j) {
            float d = load_elem(arena + item_at(x, n, base + ((i64)p * groups + g) * group_size + j)) - mean;
            sq += d * d;
        }
    float inv = 1.0f / sqrtf(sq / count + eps);
    for (int p = 0; p < span; ++p)
        for (int j = 0; j < group_size; ++j) {
            i64 e = ((i64)p * groups + g) * group_size + j;
            i64 k = (per_position ? (i64)p * groups * group_size : 0) + (i64)g * group_size + j;
            float scale = inv * gamma[k];
            float v = load_elem(arena + item_at(x, n, base + e));
            store_elem(arena + item_at(y, n, base + e), v * scale + (beta[k] - mean * scale));
        }
}
INSTANTIATE(group_norm, (void* arena, View x, View y, const float* gamma, const float* beta,
                         int outer, int span, int groups, int group_size, int per_position,
                         float eps, int N),
            (, x, y, gamma, beta, outer, span, groups, group_size, per_position, eps, N))
