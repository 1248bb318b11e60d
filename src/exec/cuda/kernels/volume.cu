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

// y[oz, oy, ox] = x[oz / RD + FZ, oy / RH + FY, ox / RW + FX], zero outside x: UpSampling3D
// (R = size, F = 0), Cropping3D (R = 1, F = the front/top/left crops) and ZeroPadding3D
// (R = 1, F = minus the front/top/left padding).
template <typename T>
__device__ void resample3d(T* arena, View x, View y, int XD, int YD, int RD, int RH, int RW,
                           int FZ, int FY, int FX, int N) {
    FOR_EACH_IN_VOLUME(y, YD, N)
    int XH = x.h / XD;
    int iz = oz / RD + FZ, iy = orow / RH + FY, ix = ox / RW + FX;
    float v = 0.0f;
    if (iz >= 0 && iz < XD && iy >= 0 && iy < XH && ix >= 0 && ix < x.w)
        v = load_elem(arena + volume_at(x, XD, n, iz, iy, ix, c));
    store_elem(arena + view_at(y, n, oy, ox, c), v);
}
INSTANTIATE(resample3d, (void* arena, View x, View y, int XD, int YD, int RD, int RH, int RW,
                         int FZ, int FY, int FX, int N),
            (, x, y, XD, YD, RD, RH, RW, FZ, FY, FX, N))
