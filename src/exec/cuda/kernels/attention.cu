// MultiHeadAttention, keras-unet-collection's patch_extract and patch_embedding. Attention
// works in f32 scratch (the arena's workspace, after its last buffer): the projected queries,
// keys and values and the heads' attended values, one item after another.

// A projection out of the arena into f32 scratch:
//   out[r, u] = (bias[u] + sum_i x[r, i] * w[i, u]) * scale   (x dense at x_off).
template <typename T>
__device__ void attention_project(T* arena, i64 x_off, const float* w, const float* bias,
                                  float* out, int rows, int n_in, int units, float scale) {
    FOR_EACH_INDEX((i64)rows * units)
    int u = (int)(idx % units);
    i64 r = idx / units;
    const T* x = arena + x_off + r * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += load_elem(x + i) * w[(i64)i * units + u];
    out[idx] = (acc + bias[u]) * scale;
}
INSTANTIATE(attention_project, (void* arena, i64 x_off, const float* w, const float* bias,
                                float* out, int rows, int n_in, int units, float scale),
            (, x_off, w, bias, out, rows, n_in, units, scale))

// The attended values o[n, t, h, j] = sum_u softmax_u(q[n, t, h, :] . k[n, u, h, :]) v[n, u, h, j]
// (q already scaled), one thread per output value; the softmax runs online (a running max and
// sum), so no row of weights is stored.
extern "C" __global__ void attention_heads(const float* q, const float* k, const float* v,
                                           float* o, int items, int tq, int tv, int heads,
                                           int key_dim, int value_dim) {
    i64 hk = (i64)heads * key_dim, hv = (i64)heads * value_dim;
    FOR_EACH_INDEX((i64)items * tq * hv)
    int j = (int)(idx % value_dim);
    int h = (int)((idx / value_dim) % heads);
    i64 nt = idx / hv; // n * tq + t
    i64 n = nt / tq;
    const float* qp = q + nt * hk + (i64)h * key_dim;
    float running_max = NEG_INF, sum = 0.0f, acc = 0.0f;
    for (int u = 0; u < tv; ++u) {
        const float* kp = k + (n * tv + u) * hk + (i64)h * key_dim;
        float s = 0.0f;
        for (int d = 0; d < key_dim; ++d) s += qp[d] * kp[d];
        float m = fmaxf(running_max, s);
        float rescale = expf(running_max - m), e = expf(s - m);
        sum = sum * rescale + e;
        acc = acc * rescale + e * v[(n * tv + u) * hv + (i64)h * value_dim + j];
        running_max = m;
    }
    o[idx] = acc / sum;
}

// The output projection from f32 scratch into the arena:
//   y[r, u] = bias[u] + sum_i o[r, i] * w[i, u]   (y dense at y_off).
template <typename T>
__device__ void attention_output(T* arena, i64 y_off, const float* o, const float* w,
                                 const float* bias, int rows, int n_in, int units) {
    FOR_EACH_INDEX((i64)rows * units)
    int u = (int)(idx % units);
    i64 r = idx / units;
    const float* x = o + r * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += x[i] * w[(i64)i * units + u];
    store_elem(arena + y_off + idx, acc + bias[u]);
}
INSTANTIATE(attention_output, (void* arena, i64 y_off, const float* o, const float* w,
                               const float* bias, int rows, int n_in, int units),
            (, y_off, o, w, bias, rows, n_in, units))

// patch_extract, dense in and out: y[n, i * rows + j, (a * p + b) * C + c] =
// x[n, i * p + a, j * p + b, c] for the rows x rows whole patches of side p of an H x W x C image.
template <typename T>
__device__ void patch_extract(T* arena, i64 x_off, i64 y_off, int H, int W, int C, int p,
                              int rows, int N) {
    i64 patch = (i64)p * p * C;
    FOR_EACH_INDEX((i64)N * rows * rows * patch)
    int c = (int)(idx % C);
    int b = (int)((idx / C) % p);
    int a = (int)((idx / ((i64)C * p)) % p);
    i64 t = (idx / patch) % ((i64)rows * rows);
    i64 n = idx / (patch * rows * rows);
    int i = (int)(t / rows), j = (int)(t % rows);
    i64 at = x_off + ((n * H + (i64)i * p + a) * W + (i64)j * p + b) * C + c;
    store_elem(arena + y_off + idx, load_elem(arena + at));
}
INSTANTIATE(patch_extract, (void* arena, i64 x_off, i64 y_off, int H, int W, int C, int p,
                            int rows, int N),
            (, x_off, y_off, H, W, C, p, rows, N))

// patch_embedding, dense: y[n, t, u] = (bias[u] + sum_i x[n, t, i] * w[i, u]) + pos[t, u].
template <typename T>
__device__ void patch_embedding(T* arena, i64 x_off, i64 y_off, const float* w, const float* bias,
                                const float* pos, int rows, int tokens, int n_in, int units) {
    FOR_EACH_INDEX((i64)rows * units)
    int u = (int)(idx % units);
    i64 r = idx / units;
    const T* x = arena + x_off + r * n_in;
    float acc = 0.0f;
    for (int i = 0; i < n_in; ++i) acc += load_elem(x + i) * w[(i64)i * units + u];
    store_elem(arena + y_off + idx, (acc + bias[u]) + pos[(r % tokens) * units + u]);
}
INSTANTIATE(patch_embedding, (void* arena, i64 x_off, i64 y_off, const float* w, const float* bias,
                              const float* pos, int rows, int tokens, int n_in, int units),
            (, x_off, y_off, w, bias, pos, rows, tokens, n_in, units))
