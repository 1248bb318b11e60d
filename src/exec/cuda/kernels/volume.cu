// The 3-D kinds (Conv3D, Conv3DTranspose, the 3-D poolings, UpSampling3D, Cropping3D,
// ZeroPadding3D, GlobalAveragePooling3D): direct kernels, one thread per output element. A
// volume [D, H, W, C] lives in a View whose rows are the D * H (depth, row) pairs, so the
// element (n, z, y, x, c) is view_at(v, n, z * H + y, x, c) with H = v.h / D; the depth of each
// view is passed alongside it. Weights stay f32.

// The (n, z, y, x, c) of output element `idx` of a volume view of depth D.
#define FOR_EACH_IN_VOLUME(v, D, N)                                   \
    FOR_EACH_IN_VIEW(v, N)                                            \
    int H_ = (v).h / (D);                                             \
    int oz = oy / H_;                                                 \
    int orow = oy % H_;

__device__ __forceinline__ i64 volume_at(const View& v, int D, int n, int z, int y, int x, int c) {
    return view_at(v, n, z * (v.h / D) + y, x, c);
}

// Conv3D: y[n, oz, oy, ox, f] = act(bias[f] + sum x[n, oz*SD + a*DD - PD, oy*SH + b*DH - PH,
// ox*SW + e*DW - PW, c] * w[a, b, e, c, f])   (kernel DHWIO, outside = 0).
template <typename T>
__device__ void conv3d(T* arena, View x, View y, const float* w, const float* bias, int XD,
                       int YD, int KD, int KH, int KW, int SD, int SH, int SW, int DD, int DH,
                       int DW, int PD, int PH, int PW, int act, int N) {
    FOR_EACH_IN_VOLUME(y, YD, N)
    int F = y.c, C = x.c, XH = x.h / XD;
    float acc = 0.0f;
    for (int a = 0; a < KD; ++a) {
        int iz = oz * SD + a * DD - PD;
        if (iz < 0 || iz >= XD) continue;
        for (int b = 0; b < KH; ++b) {
            int iy = orow * SH + b * DH - PH;
            if (iy < 0 || iy >= XH) continue;
            for (int e = 0; e < KW; ++e) {
                int ix = ox * SW + e * DW - PW;
                if (ix < 0 || ix >= x.w) continue;
                const float* wp = w + ((i64)((a * KH + b) * KW + e) * C) * F + c;
                const T* xp = arena + volume_at(x, XD, n, iz, iy, ix, 0);
                for (int ci = 0; ci < C; ++ci) acc += load_elem(xp + ci) * wp[(i64)ci * F];
            }
        }
    }
    acc += bias[c];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(conv3d, (void* arena, View x, View y, const float* w, const float* bias, int XD,
                     int YD, int KD, int KH, int KW, int SD, int SH, int SW, int DD, int DH,
                     int DW, int PD, int PH, int PW, int act, int N),
            (, x, y, w, bias, XD, YD, KD, KH, KW, SD, SH, SW, DD, DH, DW, PD, PH, PW, act, N))

// Conv3DTranspose: output (oz, oy, ox) is position (oz + CD, oy + CH, ox + CW) of the full
// result, which sums x[iz, iy, ix] * w[a, b, e, f, c] over iz * SD + a == fz (and so on per
// axis); positions past the full result (output_padding) get the bias only.
template <typename T>
__device__ void conv3d_transpose(T* arena, View x, View y, const float* w, const float* bias,
                                 int XD, int YD, int KD, int KH, int KW, int SD, int SH, int SW,
                                 int CD, int CH, int CW, int act, int N) {
    FOR_EACH_IN_VOLUME(y, YD, N)
    int F = y.c, C = x.c, XH = x.h / XD;
    int fz = oz + CD, fy = orow + CH, fx = ox + CW;
    float acc = 0.0f;
    for (int a = 0; a < KD; ++a) {
        int tz = fz - a;
        if (tz < 0 || tz % SD != 0 || tz / SD >= XD) continue;
        for (int b = 0; b < KH; ++b) {
            int ty = fy - b;
            if (ty < 0 || ty % SH != 0 || ty / SH >= XH) continue;
            for (int e = 0; e < KW; ++e) {
                int tx = fx - e;
                if (tx < 0 || tx % SW != 0 || tx / SW >= x.w) continue;
                const float* wp = w + ((i64)((a * KH + b) * KW + e) * F + c) * C;
                const T* xp = arena + volume_at(x, XD, n, tz / SD, ty / SH, tx / SW, 0);
                for (int ci = 0; ci < C; ++ci) acc += load_elem(xp + ci) * wp[ci];
            }
        }
    }
    acc += bias[c];
    store_elem(arena + view_at(y, n, oy, ox, c), act == ACT_SOFTMAX ? acc : activate(acc, act));
}
INSTANTIATE(conv3d_transpose,
            (void* arena, View x, View y, const float* w, const float* bias, int XD, int YD,
             int KD, int KH, int KW, int SD, int SH, int SW, int CD, int CH, int CW, int act,
             int N),
            (, x, y, w, bias, XD, YD, KD, KH, KW, SD, SH, SW, CD, CH, CW, act, N))

// MaxPooling3D (average = 0) and AveragePooling3D (average = 1, the mean of the window's cells
// inside the input, as Keras's `same`); windows outside the input are skipped.
template <typename T>
__device__ void pool3d(T* arena, View x, View y, int XD, int YD, int KD, int KH, int KW, int SD,
                       int SH, int SW, int PD, int PH, int PW, int average, int N) {
    FOR_EACH_IN_VOLUME(y, YD, N)
    int XH = x.h / XD;
    float m = average ? 0.0f : NEG_INF;
    int cells = 0;
    for (int a = 0; a < KD; ++a) {
        int iz = oz * SD + a - PD;
        if (iz < 0 || iz >= XD) continue;
        for (int b = 0; b < KH; ++b) {
            int iy = orow * SH + b - PH;
            if (iy < 0 || iy >= XH) continue;
            for (int e = 0; e < KW; ++e) {
                int ix = ox * SW + e - PW;
                if (ix < 0 || ix >= x.w) continue;
                float v = load_elem(arena + volume_at(x, XD, n, iz, iy, ix, c));
                m = average ? m + v : fmaxf(m, v);
                ++cells;
            }
        }
    }
    if (average) m *= 1.0f / (float)max(cells, 1);
    store_elem(arena + view_at(y, n, oy, ox, c), m);
}
INSTANTIATE(pool3d, (void* arena, View x, View y, int XD, int YD, int KD, int KH, int KW, int SD,
                     int SH, int SW, int PD, int PH, int PW, int average, int N),
            (, x, y, XD, YD, KD, KH, KW, SD, SH, SW, PD, PH, PW, average, N))

// y[oz, oy, ox] = x[oz / RD + FZ, oy / RH + FY, ox / RW + FX]: UpSampling3D (R = size, F = 0),
// Cropping3D (R = 1, F = the front/top/left crops) and ZeroPadding3D (R = 1, F = minus the
// front/top/left padding); outside x per `mode` as layers.cu's pad_source (0: zero).
template <typename T>
__device__ void resample3d(T* arena, View x, View y, int XD, int YD, int RD, int RH, int RW,
                           int FZ, int FY, int FX, int mode, int N) {
    FOR_EACH_IN_VOLUME(y, YD, N)
    int XH = x.h / XD;
    int iz = pad_source(oz / RD + FZ, XD, mode), iy = pad_source(orow / RH + FY, XH, mode),
        ix = pad_source(ox / RW + FX, x.w, mode);
    float v = 0.0f;
    if (iz >= 0 && iz < XD && iy >= 0 && iy < XH && ix >= 0 && ix < x.w)
        v = load_elem(arena + volume_at(x, XD, n, iz, iy, ix, c));
    store_elem(arena + view_at(y, n, oy, ox, c), v);
}
INSTANTIATE(resample3d, (void* arena, View x, View y, int XD, int YD, int RD, int RH, int RW,
                         int FZ, int FY, int FX, int mode, int N),
            (, x, y, XD, YD, RD, RH, RW, FZ, FY, FX, mode, N))

// One axis of trilinear up-sampling by S from n input positions: the two positions around
// output o's source coordinate (half-pixel centres, or with `align` the corners aligned:
// o * (n-1)/(n*S-1)), clamped to the axis, and the fraction towards the second.
__device__ __forceinline__ void lerp_axis(int o, int S, int n, int align, int& lo, int& hi,
                                          float& t) {
    float s = ((float)o + 0.5f) / S - 0.5f;
    if (align) {
        int out = n * S;
        s = out > 1 ? (float)o * (float)(n - 1) / (float)(out - 1) : 0.0f;
    }
    float f = floorf(s);
    lo = min(max((int)f, 0), n - 1);
    hi = min(max((int)ceilf(s), 0), n - 1);
    t = s - f;
}

// UpSampling3D with interpolation trilinear: the eight voxels around the source point,
// blended along width, then height, then depth (as the CPU executor).
template <typename T>
__device__ void upsample3d_linear(T* arena, View x, View y, int XD, int YD, int SD, int SH,
                                  int SW, int align, int N) {
    FOR_EACH_IN_VOLUME(y, YD, N)
    int XH = x.h / XD;
    int z0, z1, y0, y1, x0, x1;
    float dz, dy, dx;
    lerp_axis(oz, SD, XD, align, z0, z1, dz);
    lerp_axis(orow, SH, XH, align, y0, y1, dy);
    lerp_axis(ox, SW, x.w, align, x0, x1, dx);
    float v[8];
    for (int k = 0; k < 8; ++k)
        v[k] = load_elem(arena + volume_at(x, XD, n, k & 4 ? z1 : z0, k & 2 ? y1 : y0,
                                           k & 1 ? x1 : x0, c));
    float f0 = v[0] + (v[1] - v[0]) * dx, f1 = v[2] + (v[3] - v[2]) * dx;
    float b0 = v[4] + (v[5] - v[4]) * dx, b1 = v[6] + (v[7] - v[6]) * dx;
    float front = f0 + (f1 - f0) * dy, back = b0 + (b1 - b0) * dy;
    store_elem(arena + view_at(y, n, oy, ox, c), front + (back - front) * dz);
}
INSTANTIATE(upsample3d_linear, (void* arena, View x, View y, int XD, int YD, int SD, int SH,
                                int SW, int align, int N),
            (, x, y, XD, YD, SD, SH, SW, align, N))
