// Training (src/train/cuda.rs): backward passes, losses and optimizer updates, f32 with f32
// master weights. The forward pass reuses the inference kernels on an f32 arena that holds
// every layer's output; gradients live in the same arena. Backward kernels add into the input
// gradients (`dx +=`), so a tensor read by several layers sums its gradients in schedule
// order. Every reduction is one thread summing in a fixed order: results do not depend on the
// launch shape, and a run repeats bit for bit.

// f'(z) of an elementwise activation (codes in common.cuh), as src/train/activations.rs.
__device__ float activation_derivative(float x, int act) {
    float s;
    switch (act) {
    case ACT_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case ACT_SIGMOID: s = 1.0f / (1.0f + expf(-x)); return s * (1.0f - s);
    case ACT_TANH: s = tanhf(x); return 1.0f - s * s;
    case ACT_ELU: return x > 0.0f ? 1.0f : expf(x);
    case ACT_SELU: return 1.050701f * (x > 0.0f ? 1.0f : 1.6732632f * expf(x));
    case ACT_SOFTPLUS: return 1.0f / (1.0f + expf(-x));
    case ACT_SOFTSIGN: s = 1.0f + fabsf(x); return 1.0f / (s * s);
    case ACT_SWISH: s = 1.0f / (1.0f + expf(-x)); return s + x * s * (1.0f - s);
    case ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
        return cdf + x * pdf;
    }
    case ACT_EXPONENTIAL: return expf(x);
    case ACT_HARD_SIGMOID: s = 0.2f * x + 0.5f; return s >= 0.0f && s <= 1.0f ? 0.2f : 0.0f;
    case ACT_RELU6: return x > 0.0f && x < 6.0f ? 1.0f : 0.0f;
    case ACT_MISH: {
        float t = tanhf(softplus_f(x));
        return t + x * (1.0f - t * t) / (1.0f + expf(-x));
    }
    case ACT_LEAKY_RELU: return x > 0.0f ? 1.0f : 0.2f;
    default: return 1.0f;
    }
}

// dz = dy * f'(z), dense.
extern "C" __global__ void train_activation_backward(float* a, i64 z_off, i64 dy_off, i64 dz_off,
                                                     i64 total, int act) {
    FOR_EACH_INDEX(total)
    a[dz_off + idx] = a[dy_off + idx] * activation_derivative(a[z_off + idx], act);
}

// Softmax over the last axis: dz = y * (dy - sum(dy * y)) per pixel of `c` values, dense.
extern "C" __global__ void train_softmax_backward(float* a, i64 y_off, i64 dy_off, i64 dz_off,
                                                  i64 pixels, int c) {
    FOR_EACH_INDEX(pixels)
    const float* y = a + y_off + idx * c;
    const float* dy = a + dy_off + idx * c;
    float dot = 0.0f;
    for (int k = 0; k < c; ++k) dot += y[k] * dy[k];
    for (int k = 0; k < c; ++k) a[dz_off + idx * c + k] = y[k] * (dy[k] - dot);
}

// dst += src * (mask or 1), dense; with `store`, dst = src * mask (dropout's forward).
extern "C" __global__ void train_scale_add(float* a, i64 src_off, i64 mask_off, i64 dst_off,
                                           i64 total, int use_mask, int store) {
    FOR_EACH_INDEX(total)
    float v = a[src_off + idx] * (use_mask ? a[mask_off + idx] : 1.0f);
    a[dst_off + idx] = store ? v : a[dst_off + idx] + v;
}

// dst[n, y, x, c] += src[n, y + top, x + left, c] where that lies inside src: the backward of
// a crop (top, left = minus the crop), of a concatenation's slice, of a copy.
extern "C" __global__ void train_window_add_f32(float* a, View src, View dst, int top, int left,
                                                int N) {
    FOR_EACH_IN_VIEW(dst, N)
    int sy = oy + top, sx = ox + left;
    if (sy < 0 || sy >= src.h || sx < 0 || sx >= src.w) return;
    a[view_at(dst, n, oy, ox, c)] += a[view_at(src, n, sy, sx, c)];
}

// Conv2D's input gradient: dx[n, iy, ix, c] += sum over (ky, kx, f) of
// dz[n, oy, ox, f] * w[ky, kx, c, f] where iy = oy*SH + ky*DH - PT (and likewise x).
extern "C" __global__ void train_conv2d_dx_f32(float* a, View dz, View dx, const float* w, int KH,
                                               int KW, int SH, int SW, int DH, int DW, int PT,
                                               int PL, int N) {
    FOR_EACH_IN_VIEW(dx, N)
    int F = dz.c, C = dx.c;
    float acc = 0.0f;
    for (int ky = 0; ky < KH; ++ky) {
        int ty = oy + PT - ky * DH;
        if (ty < 0 || ty % SH != 0 || ty / SH >= dz.h) continue;
        for (int kx = 0; kx < KW; ++kx) {
            int tx = ox + PL - kx * DW;
            if (tx < 0 || tx % SW != 0 || tx / SW >= dz.w) continue;
            const float* g = a + view_at(dz, n, ty / SH, tx / SW, 0);
            const float* wp = w + ((i64)(ky * KW + kx) * C + c) * F;
            for (int f = 0; f < F; ++f) acc += g[f] * wp[f];
        }
    }
    a[view_at(dx, n, oy, ox, c)] += acc;
}

// Conv2D's kernel gradient: one thread per weight (ky, kx, c, f), summing
// x[n, oy*SH + ky*DH - PT, ox*SW + kx*DW - PL, c] * dz[n, oy, ox, f] over (n, oy, ox). With
// `add` the sum is added to dw (a shared layer's later call), else stored.
extern "C" __global__ void train_conv2d_dw_f32(float* a, View x, View dz, float* dw, int KH,
                                               int KW, int SH, int SW, int DH, int DW, int PT,
                                               int PL, int add, int N) {
    int F = dz.c, C = x.c;
    FOR_EACH_INDEX((i64)KH * KW * C * F)
    int f = (int)(idx % F);
    i64 r = idx / F;
    int c = (int)(r % C);
    r /= C;
    int kx = (int)(r % KW), ky = (int)(r / KW);
    float acc = 0.0f;
    for (int n = 0; n < N; ++n)
        for (int oy = 0; oy < dz.h; ++oy) {
            int iy = oy * SH + ky * DH - PT;
            if (iy < 0 || iy >= x.h) continue;
            for (int ox = 0; ox < dz.w; ++ox) {
                int ix = ox * SW + kx * DW - PL;
                if (ix < 0 || ix >= x.w) continue;
                acc += a[view_at(x, n, iy, ix, c)] * a[view_at(dz, n, oy, ox, f)];
            }
        }
    dw[idx] = add ? dw[idx] + acc : acc;
}

// A bias's gradient: db[c] = sum of dz[.., c] over (n, y, x) (`add`: db[c] += it).
extern "C" __global__ void train_bias_grad_f32(float* a, View dz, float* db, int add, int N) {
    FOR_EACH_INDEX(dz.c)
    int c = (int)idx;
    float acc = 0.0f;
    for (int n = 0; n < N; ++n)
        for (int y = 0; y < dz.h; ++y)
            for (int x = 0; x < dz.w; ++x) acc += a[view_at(dz, n, y, x, c)];
    db[c] = add ? db[c] + acc : acc;
}

// Conv2DTranspose (kernel [KH, KW, F, C], output window from (Y0, X0) of the full result):
// dx[n, i, j, c] += sum over (p, q, o) of dz[n, i*SH + p - Y0, j*SW + q - X0, o] * w[p, q, o, c].
extern "C" __global__ void train_conv2d_transpose_dx_f32(float* a, View dz, View dx,
                                                         const float* w, int KH, int KW, int SH,
                                                         int SW, int Y0, int X0, int N) {
    FOR_EACH_IN_VIEW(dx, N)
    int F = dz.c, C = dx.c;
    float acc = 0.0f;
    for (int p = 0; p < KH; ++p) {
        int ty = oy * SH + p - Y0;
        if (ty < 0 || ty >= dz.h) continue;
        for (int q = 0; q < KW; ++q) {
            int tx = ox * SW + q - X0;
            if (tx < 0 || tx >= dz.w) continue;
            const float* g = a + view_at(dz, n, ty, tx, 0);
            const float* wp = w + (i64)(p * KW + q) * F * C + c;
            for (int o = 0; o < F; ++o) acc += g[o] * wp[(i64)o * C];
        }
    }
    a[view_at(dx, n, oy, ox, c)] += acc;
}

// Conv2DTranspose's kernel gradient, one thread per weight (p, q, o, c) (`add` as above).
extern "C" __global__ void train_conv2d_transpose_dw_f32(float* a, View x, View dz, float* dw,
                                                         int KH, int KW, int SH, int SW, int Y0,
                                                         int X0, int add, int N) {
    int F = dz.c, C = x.c;
    FOR_EACH_INDEX((i64)KH * KW * F * C)
    int c = (int)(idx % C);
    i64 r = idx / C;
    int o = (int)(r % F);
    r /= F;
    int q = (int)(r % KW), p = (int)(r / KW);
    float acc = 0.0f;
    for (int n = 0; n < N; ++n)
        for (int i = 0; i < x.h; ++i) {
            int ty = i * SH + p - Y0;
            if (ty < 0 || ty >= dz.h) continue;
            for (int j = 0; j < x.w; ++j) {
                int tx = j * SW + q - X0;
                if (tx < 0 || tx >= dz.w) continue;
                acc += a[view_at(x, n, i, j, c)] * a[view_at(dz, n, ty, tx, o)];
            }
        }
    dw[idx] = add ? dw[idx] + acc : acc;
}

// MaxPooling2D's input gradient: each output's gradient goes to the first largest input of
// its window (scan order ky, kx; TF's MaxPoolGrad). One thread per input element gathers from
// the windows that contain it.
extern "C" __global__ void train_max_pool_dx_f32(float* a, View x, View dy, View dx, int KH,
                                                 int KW, int SH, int SW, int PT, int PL, int N) {
    FOR_EACH_IN_VIEW(dx, N)
    float acc = 0.0f;
    for (int py = 0; py < dy.h; ++py) {
        int y0 = py * SH - PT;
        if (oy < y0 || oy >= y0 + KH) continue;
        for (int px = 0; px < dy.w; ++px) {
            int x0 = px * SW - PL;
            if (ox < x0 || ox >= x0 + KW) continue;
            int by = -1, bx = -1;
            float best = 0.0f;
            for (int ky = 0; ky < KH; ++ky) {
                int iy = y0 + ky;
                if (iy < 0 || iy >= x.h) continue;
                for (int kx = 0; kx < KW; ++kx) {
                    int ix = x0 + kx;
                    if (ix < 0 || ix >= x.w) continue;
                    float v = a[view_at(x, n, iy, ix, c)];
                    if (by < 0 || v > best) {
                        best = v;
                        by = iy;
                        bx = ix;
                    }
                }
            }
            if (by == oy && bx == ox) acc += a[view_at(dy, n, py, px, c)];
        }
    }
    a[view_at(dx, n, oy, ox, c)] += acc;
}

// AveragePooling2D's input gradient: each window's gradient shared among its cells inside the
// input (Keras `same` leaves the padding out of the count); one thread per input element.
extern "C" __global__ void train_average_pool_dx_f32(float* a, View dy, View dx, int KH, int KW,
                                                     int SH, int SW, int PT, int PL, int N) {
    FOR_EACH_IN_VIEW(dx, N)
    float acc = 0.0f;
    for (int py = 0; py < dy.h; ++py) {
        int y0 = py * SH - PT;
        if (oy < y0 || oy >= y0 + KH) continue;
        int rows = min(y0 + KH, dx.h) - max(y0, 0);
        for (int px = 0; px < dy.w; ++px) {
            int x0 = px * SW - PL;
            if (ox < x0 || ox >= x0 + KW) continue;
            int cols = min(x0 + KW, dx.w) - max(x0, 0);
            acc += a[view_at(dy, n, py, px, c)] / (float)(rows * cols);
        }
    }
    a[view_at(dx, n, oy, ox, c)] += acc;
}

// The output positions [lo, hi) along an axis of a resize that may read input position i
// (its exact bounds widened by two; to the axis's end at its edges, whose clamped sources
// read them; the whole axis where the scale is 0).
__device__ void resize_readers(int i, int n, int out, float scale, int mode, int* lo, int* hi) {
    if (scale <= 0.0f) {
        *lo = 0;
        *hi = out;
        return;
    }
    float a = mode == 2 ? (float)(i - 1) / scale : ((float)i - 0.5f) / scale - 0.5f;
    float b = mode == 2 ? (float)(i + 1) / scale : ((float)i + 1.5f) / scale - 0.5f;
    *lo = i == 0 ? 0 : max(0, (int)floorf(a) - 2);
    *hi = i == n - 1 ? out : min(out, (int)ceilf(b) + 2);
}

// A nearest resize's input gradient: each input pixel sums the gradients of the outputs that
// copy it.
extern "C" __global__ void train_resize_nearest_dx_f32(float* a, View dy, View dx, int N) {
    FOR_EACH_IN_VIEW(dx, N)
    float scale_y = resize_scale(dx.h, dy.h, 0), scale_x = resize_scale(dx.w, dy.w, 0);
    int y_lo, y_hi, x_lo, x_hi;
    resize_readers(oy, dx.h, dy.h, scale_y, 0, &y_lo, &y_hi);
    resize_readers(ox, dx.w, dy.w, scale_x, 0, &x_lo, &x_hi);
    float acc = 0.0f;
    for (int py = y_lo; py < y_hi; ++py) {
        if (resize_nearest(py, scale_y, dx.h) != oy) continue;
        for (int px = x_lo; px < x_hi; ++px)
            if (resize_nearest(px, scale_x, dx.w) == ox) acc += a[view_at(dy, n, py, px, c)];
    }
    a[view_at(dx, n, oy, ox, c)] += acc;
}

// The weight of input row (or column) `i` in bilinear output `o` (an axis of `len` inputs),
// mode 1 half-pixel centres, 2 aligned corners, as the resize kernel samples.
__device__ float bilinear_weight(int o, int i, float scale, int len, int mode) {
    float src = resize_source(o, scale, mode);
    float f = floorf(src);
    int lo = min(max((int)f, 0), len - 1), hi = min(max((int)ceilf(src), 0), len - 1);
    float d = src - f;
    return (lo == i ? 1.0f - d : 0.0f) + (hi == i ? d : 0.0f);
}

// A bilinear resize's input gradient: each input pixel gathers the outputs whose corners it
// is (the weights factor into rows and columns).
extern "C" __global__ void train_resize_bilinear_dx_f32(float* a, View dy, View dx, int mode,
                                                        int N) {
    FOR_EACH_IN_VIEW(dx, N)
    float scale_y = resize_scale(dx.h, dy.h, mode), scale_x = resize_scale(dx.w, dy.w, mode);
    int y_lo, y_hi, x_lo, x_hi;
    resize_readers(oy, dx.h, dy.h, scale_y, mode, &y_lo, &y_hi);
    resize_readers(ox, dx.w, dy.w, scale_x, mode, &x_lo, &x_hi);
    float acc = 0.0f;
    for (int py = y_lo; py < y_hi; ++py) {
        float wy = bilinear_weight(py, oy, scale_y, dx.h, mode);
        if (wy == 0.0f) continue;
        for (int px = x_lo; px < x_hi; ++px) {
            float wx = bilinear_weight(px, ox, scale_x, dx.w, mode);
            if (wx != 0.0f) acc += a[view_at(dy, n, py, px, c)] * (wy * wx);
        }
    }
    a[view_at(dx, n, oy, ox, c)] += acc;
}

// BatchNormalization's batch statistics per channel: mean and biased variance, summed in
// double in (n, y, x) order (as channel_moments in src/train/layers.rs).
extern "C" __global__ void train_bn_moments_f32(float* a, View x, float* mean, float* var, int N) {
    FOR_EACH_INDEX(x.c)
    int c = (int)idx;
    double count = (double)N * x.h * x.w, s = 0.0, q = 0.0;
    for (int n = 0; n < N; ++n)
        for (int y = 0; y < x.h; ++y)
            for (int i = 0; i < x.w; ++i) s += (double)a[view_at(x, n, y, i, c)];
    double m = s / (count > 0.0 ? count : 1.0);
    for (int n = 0; n < N; ++n)
        for (int y = 0; y < x.h; ++y)
            for (int i = 0; i < x.w; ++i) {
                double d = (double)a[view_at(x, n, y, i, c)] - m;
                q += d * d;
            }
    mean[c] = (float)m;
    var[c] = (float)(q / (count > 0.0 ? count : 1.0));
}

// The moving averages: moving = moving * momentum + batch * (1 - momentum), the variance
// times `bessel` (n / (n - 1) where TF's fused kernel takes the unbiased variance).
extern "C" __global__ void train_bn_moving(float* moving_mean, float* moving_var,
                                           const float* mean, const float* var, int C,
                                           float momentum, float bessel) {
    FOR_EACH_INDEX(C)
    moving_mean[idx] = moving_mean[idx] * momentum + mean[idx] * (1.0f - momentum);
    moving_var[idx] = moving_var[idx] * momentum + var[idx] * bessel * (1.0f - momentum);
}

// y = (x - mean) * inv * gamma + beta with inv = 1 / sqrt(var + eps) (batch or moving stats).
extern "C" __global__ void train_bn_forward_f32(float* a, View x, View y, const float* gamma,
                                                const float* beta, const float* mean,
                                                const float* var, float eps, int N) {
    FOR_EACH_IN_VIEW(y, N)
    float inv = 1.0f / sqrtf(var[c] + eps);
    a[view_at(y, n, oy, ox, c)] = (a[view_at(x, n, oy, ox, c)] - mean[c]) * inv * gamma[c] + beta[c];
}

// dgamma = sum dy * xhat, dbeta = sum dy per channel (xhat from the statistics used forward).
extern "C" __global__ void train_bn_param_grads_f32(float* a, View x, View dy, const float* mean,
                                                    const float* var, float eps, float* dgamma,
                                                    float* dbeta, int N) {
    FOR_EACH_INDEX(x.c)
    int c = (int)idx;
    float inv = 1.0f / sqrtf(var[c] + eps), g = 0.0f, b = 0.0f;
    for (int n = 0; n < N; ++n)
        for (int y = 0; y < x.h; ++y)
            for (int i = 0; i < x.w; ++i) {
                float d = a[view_at(dy, n, y, i, c)];
                g += d * ((a[view_at(x, n, y, i, c)] - mean[c]) * inv);
                b += d;
            }
    dgamma[c] = g;
    dbeta[c] = b;
}

// BatchNormalization's input gradient. With batch statistics:
// dx += gamma * inv / M * (M * dy - dbeta - xhat * dgamma); else dx += dy * gamma * inv.
extern "C" __global__ void train_bn_dx_f32(float* a, View x, View dy, View dx, const float* gamma,
                                           const float* mean, const float* var,
                                           const float* dgamma, const float* dbeta, float eps,
                                           int batch_stats, int N) {
    FOR_EACH_IN_VIEW(dx, N)
    float inv = 1.0f / sqrtf(var[c] + eps);
    float g = a[view_at(dy, n, oy, ox, c)];
    float v;
    if (batch_stats) {
        float count = (float)N * x.h * x.w;
        float xhat = (a[view_at(x, n, oy, ox, c)] - mean[c]) * inv;
        v = gamma[c] * inv / count * (count * g - dbeta[c] - xhat * dgamma[c]);
    } else {
        v = g * gamma[c] * inv;
    }
    a[view_at(dx, n, oy, ox, c)] += v;
}

// ---- losses (src/train/loss.rs): per-pixel values in double into `values`, the gradient
// (already divided by the number of values or pixels) into the arena `a` at g_off. Targets are dense f32
// like the output, or one int class per pixel.

#define LOSS_EPS 1e-7

// Categorical crossentropy per pixel of `c` values: from logits (softmax output), or from the
// output normalised to sum 1 and clipped to [eps, 1 - eps] as Keras does. Targets are `dense`,
// or `classes` where `sparse` is set.
extern "C" __global__ void train_loss_categorical(float* a, i64 p_off, int logits,
                                                  const float* dense, const int* classes,
                                                  int sparse, double* values, i64 g_off,
                                                  i64 pixels, int c) {
    FOR_EACH_INDEX(pixels)
    const float* z = a + p_off + idx * c;
    float* grad = a + g_off + idx * c;
#define TARGET(k) (sparse ? (classes[idx] == (k) ? 1.0 : 0.0) : (double)dense[idx * c + (k)])
    double total = 0.0;
    if (logits) {
        float mx = NEG_INF;
        for (int k = 0; k < c; ++k) mx = fmaxf(mx, z[k]);
        double max = mx, sum = 0.0, weight = 0.0;
        for (int k = 0; k < c; ++k) sum += exp((double)z[k] - max);
        double log_sum = log(sum) + max;
        for (int k = 0; k < c; ++k) {
            total += TARGET(k) * (log_sum - (double)z[k]);
            weight += TARGET(k);
        }
        for (int k = 0; k < c; ++k) {
            double soft = exp((double)z[k] - max) / sum;
            grad[k] = (float)((soft * weight - TARGET(k)) / (double)pixels);
        }
    } else {
        double s = 0.0, dot = 0.0;
        for (int k = 0; k < c; ++k) s += (double)z[k];
        for (int k = 0; k < c; ++k) {
            double q = (double)z[k] / s;
            double clipped = fmin(fmax(q, LOSS_EPS), 1.0 - LOSS_EPS);
            total -= TARGET(k) * log(clipped);
            double dq = q > LOSS_EPS && q < 1.0 - LOSS_EPS ? -TARGET(k) / clipped : 0.0;
            dot += dq * (double)z[k];
        }
        dot /= s;
        for (int k = 0; k < c; ++k) {
            double q = (double)z[k] / s;
            double clipped = fmin(fmax(q, LOSS_EPS), 1.0 - LOSS_EPS);
            double dq = q > LOSS_EPS && q < 1.0 - LOSS_EPS ? -TARGET(k) / clipped : 0.0;
            grad[k] = (float)((dq - dot) / s / (double)pixels);
        }
    }
#undef TARGET
    values[idx] = total;
}

// Binary crossentropy per value (focal: Keras's binary_focal_crossentropy, gamma 2), from the
// logits at p_off (sigmoid output or from_logits) or the clipped output; `out_off` is the
// output (probabilities) for focal's factor. kind 0 bce, 1 focal.
extern "C" __global__ void train_loss_binary(float* a, i64 p_off, i64 out_off, int logits,
                                             const float* y, double* values, i64 g_off,
                                             i64 total, int kind) {
    FOR_EACH_INDEX(total)
    double v = a[p_off + idx], t = y[idx], n = (double)total, bce, dbce;
    if (logits) {
        bce = fmax(v, 0.0) - v * t + log1p(exp(-fabs(v)));
        dbce = (double)(float)((1.0 / (1.0 + exp(-v)) - t) / n) * n;
    } else {
        double q = fmin(fmax(v, LOSS_EPS), 1.0 - LOSS_EPS);
        bce = -(t * log(q + LOSS_EPS) + (1.0 - t) * log(1.0 - q + LOSS_EPS));
        double d = v > LOSS_EPS && v < 1.0 - LOSS_EPS
                       ? -t / (q + LOSS_EPS) + (1.0 - t) / (1.0 - q + LOSS_EPS)
                       : 0.0;
        dbce = (double)(float)(d / n) * n;
    }
    if (kind == 0) {
        values[idx] = bce;
        a[g_off + idx] = (float)(dbce / n);
        return;
    }
    double p = a[out_off + idx];
    double pt = t * p + (1.0 - t) * (1.0 - p);
    double factor = (1.0 - pt) * (1.0 - pt);
    double dfactor = -2.0 * (1.0 - pt) * (2.0 * t - 1.0);
    if (logits) dfactor *= p * (1.0 - p);
    values[idx] = factor * bce;
    a[g_off + idx] = (float)((dfactor * bce + factor * dbce) / n);
}

// Mean squared error per value.
extern "C" __global__ void train_loss_mse(float* a, i64 p_off, const float* y, double* values,
                                          i64 g_off, i64 total) {
    FOR_EACH_INDEX(total)
    double d = (double)a[p_off + idx] - (double)y[idx];
    values[idx] = d * d;
    a[g_off + idx] = (float)(2.0 * d / (double)total);
}

// Sums `width` interleaved series of `total` values each in chunks: thread t adds values
// [t * chunk, (t + 1) * chunk) of each series into partial[t * width + s]. With `dice` the
// series are p * y, y and p (p from the arena at p_off, y the targets) instead of `values`.
extern "C" __global__ void train_sum_chunks(const double* values, const float* a, i64 p_off,
                                            const float* y, int dice, i64 total, i64 chunk,
                                            double* partial) {
    i64 chunks = (total + chunk - 1) / chunk;
    FOR_EACH_INDEX(chunks)
    i64 lo = idx * chunk, hi = lo + chunk < total ? lo + chunk : total;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    for (i64 i = lo; i < hi; ++i) {
        if (dice) {
            double p = a[p_off + i], t = y[i];
            s0 += p * t;
            s1 += t;
            s2 += p;
        } else {
            s0 += values[i];
        }
    }
    partial[idx * 3] = s0;
    partial[idx * 3 + 1] = s1;
    partial[idx * 3 + 2] = s2;
}

// One thread: out[s] = the sum over chunks of partial[chunk * 3 + s], in chunk order.
extern "C" __global__ void train_sum_partials(const double* partial, i64 chunks, double* out) {
    FOR_EACH_INDEX(1)
    double s[3] = {0.0, 0.0, 0.0};
    for (i64 k = 0; k < chunks; ++k)
        for (int j = 0; j < 3; ++j) s[j] += partial[k * 3 + j];
    for (int j = 0; j < 3; ++j) out[j] = s[j];
}

// Dice's gradient with respect to the output from the sums (Σ p y, Σ y, Σ p): mode 0 stores
// it, 1 adds it, 2 adds it through the sigmoid (p (1 - p), for bce_dice on logits).
extern "C" __global__ void train_dice_grad(float* a, i64 out_off, const float* y,
                                           const double* sums, i64 g_off, i64 total, int mode) {
    FOR_EACH_INDEX(total)
    double num = 2.0 * sums[0] + 1.0, den = sums[1] + sums[2] + 1.0;
    float d = (float)(-(2.0 * (double)y[idx] * den - num) / (den * den));
    if (mode == 0) {
        a[g_off + idx] = d;
    } else if (mode == 1) {
        a[g_off + idx] += d;
    } else {
        float s = a[out_off + idx];
        a[g_off + idx] += d * s * (1.0f - s);
    }
}

// ---- optimizers (src/train/optimizer.rs, tf_keras 2.x), one thread per weight. `wd` > 0:
// Keras's decoupled decay w -= w * wd * lr first.

extern "C" __global__ void train_adam(float* w, const float* g, float* m, float* v, i64 total,
                                      float lr, float beta_1, float beta_2, float epsilon,
                                      float alpha, float wd) {
    FOR_EACH_INDEX(total)
    float x = w[idx];
    if (wd > 0.0f) x -= x * wd * lr;
    float gi = g[idx];
    float mi = m[idx] + (gi - m[idx]) * (1.0f - beta_1);
    float vi = v[idx] + (gi * gi - v[idx]) * (1.0f - beta_2);
    m[idx] = mi;
    v[idx] = vi;
    w[idx] = x - mi * alpha / (sqrtf(vi) + epsilon);
}

// SGD; `m` is read only with `use_m` (momentum > 0).
extern "C" __global__ void train_sgd(float* w, const float* g, float* m, int use_m, i64 total,
                                     float lr, float momentum, int nesterov, float wd) {
    FOR_EACH_INDEX(total)
    float x = w[idx];
    if (wd > 0.0f) x -= x * wd * lr;
    float gi = g[idx];
    if (use_m) {
        float mi = -gi * lr + m[idx] * momentum;
        m[idx] = mi;
        x += nesterov ? -gi * lr + mi * momentum : mi;
    } else {
        x += -gi * lr;
    }
    w[idx] = x;
}

// RMSprop; `mom` is read only with `use_mom` (momentum > 0).
extern "C" __global__ void train_rmsprop(float* w, const float* g, float* velocity, float* mom,
                                         int use_mom, i64 total, float lr, float rho,
                                         float momentum, float epsilon, float wd) {
    FOR_EACH_INDEX(total)
    float x = w[idx];
    if (wd > 0.0f) x -= x * wd * lr;
    float gi = g[idx];
    float vel = rho * velocity[idx] + (1.0f - rho) * gi * gi;
    velocity[idx] = vel;
    float increment = lr * gi / sqrtf(vel + epsilon);
    if (use_mom) {
        float mi = momentum * mom[idx] + increment;
        mom[idx] = mi;
        x -= mi;
    } else {
        x -= increment;
    }
    w[idx] = x;
}
