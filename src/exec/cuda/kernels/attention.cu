// MultiHeadAttention, keras-unet-collection's patch_extract and patch_embedding. Attention
// works in f32 scratch (the arena's workspace, after its last buffer): the projected queries,
// keys and values, the attention weights and the heads' attended values.

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

// Attention weights before the softmax, s[n, h, t, u] = q[n, t, h, :] . k[n, u, h, :] (q already
// scaled), one thread per weight: each score is computed once.
extern "C" __global__ void attention_scores(const float* q, const float* k, float* s, int items,
                                            int tq, int tv, int heads, int key_dim) {
    i64 hk = (i64)heads * key_dim;
    FOR_EACH_INDEX((i64)items * heads * tq * tv)
    int u = (int)(idx % tv);
    i64 nht = idx / tv; // (n * heads + h) * tq + t
    int t = (int)(nht % tq);
    i64 nh = nht / tq;
    int h = (int)(nh % heads);
    i64 n = nh / heads;
    const float* qp = q + (n * tq + t) * hk + (i64)h * key_dim;
    const float* kp = k + (n * tv + u) * hk + (i64)h * key_dim;
    float acc = 0.0f;
    for (int d = 0; d < key_dim; ++d) acc += qp[d] * kp[d];
    s[idx] = acc;
}

// Softmax of each row of `len` weights, in place, as Keras's: exp(x - max) over its sum.
extern "C" __global__ void attention_softmax(float* s, i64 rows, int len) {
    FOR_EACH_INDEX(rows)
    float* row = s + idx * len;
    float m = NEG_INF;
    for (int u = 0; u < len; ++u) m = fmaxf(m, row[u]);
    float sum = 0.0f;
    for (int u = 0; u < len; ++u) {
        row[u] = expf(row[u] - m);
        sum += row[u];
    }
    for (int u = 0; u < len; ++u) row[u] /= sum;
}

// The attended values o[n, t, h, j] = sum_u p[n, h, t, u] v[n, u, h, j], one thread per value.
extern "C" __global__ void attention_weighted(const float* p, const float* v, float* o, int items,
                                              int tq, int tv, int heads, int value_dim) {
    i64 hv = (i64)heads * value_dim;
    FOR_EACH_INDEX((i64)items * tq * hv)
    int j = (int)(idx % value_dim);
    int h = (int)((idx / value_dim) % heads);
    i64 nt = idx / hv; // n * tq + t
    i64 n = nt / tq;
    int t = (int)(nt % tq);
    const float* pp = p + ((n * heads + h) * tq + t) * tv;
    const float* vp = v + n * tv * hv + (i64)h * value_dim + j;
    float acc = 0.0f;
    for (int u = 0; u < tv; ++u) acc += pp[u] * vp[(i64)u * hv];
    o[idx] = acc;
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
