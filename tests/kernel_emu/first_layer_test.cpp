// Runs conv_small_c_{f32,bf16} (first_layer.cu) under the CPU emulator (emu.h) and checks them
// against a naive double-precision convolution of the same stored inputs and f32 weights; also
// that nothing outside the output window changes. Built and run by tests/kernel_emulator.rs.
#include "emu.h"

#include "../../src/exec/cuda/kernels/common.cuh"
#include "../../src/exec/cuda/kernels/elem.cuh"
#include "../../src/exec/cuda/kernels/first_layer.cu"

#include <algorithm>
#include <chrono>
#include <string>

namespace {

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() { // splitmix64
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uni() { return (double)(next() >> 11) / 9007199254740992.0 * 2.0 - 1.0; } // [-1, 1)
};

// bf16 by truncating random f32 bits (any bf16 value is exact); stored values are what the
// kernel reads.
template <class T> struct Ty;
template <> struct Ty<unsigned short> {
    static constexpr const char* name = "bf16";
    static unsigned short make(double v) {
        return (unsigned short)(__float_as_uint((float)v) >> 16);
    }
    static double stored(unsigned short v) { return __uint_as_float((uint32_t)v << 16); }
    static constexpr double out_rel = 1.0 / 256; // output rounded to bf16
};
template <> struct Ty<float> {
    static constexpr const char* name = "f32";
    static float make(double v) { return (float)v; }
    static double stored(float v) { return v; }
    static constexpr double out_rel = 0.0;
};

struct Case {
    const char* name;
    int n, h, w, c;
    int kh, kw, sh, sw, dh, dw;
    bool same;
    int f, act;
    int x_extra_c;           // x is the first c channels of a tensor with this many more
    int y_extra_c, y_off_c;  // y is channels [y_off_c, y_off_c + f) of a wider tensor
    int skew;                // elements added to every buffer's offset
    bool noop;               // outside the kernel's limits: it must write nothing
};

double act_ref(double v, int act) {
    switch (act) {
    case ACT_LINEAR:
    case ACT_SOFTMAX: return v;
    case ACT_RELU: return v > 0 ? v : 0;
    case ACT_SIGMOID: return 1 / (1 + std::exp(-v));
    case ACT_TANH: return std::tanh(v);
    default: emu::fail("activation without a reference");
    }
}

struct Result {
    bool ok;
    std::string line;
};

using Kernel = void (*)(void*, View, View, const float*, const float*, int, int, int, int, int, int,
                        int, int, int, int);

template <class T> Result run_case(const Case& cs, Kernel kernel, const char* entry) {
    const int eh = (cs.kh - 1) * cs.dh + 1, ew = (cs.kw - 1) * cs.dw + 1;
    int oh, ow, pt = 0, pl = 0;
    if (cs.same) {
        oh = (cs.h + cs.sh - 1) / cs.sh, ow = (cs.w + cs.sw - 1) / cs.sw;
        pt = std::max((oh - 1) * cs.sh + eh - cs.h, 0) / 2;
        pl = std::max((ow - 1) * cs.sw + ew - cs.w, 0) / 2;
    } else {
        oh = (cs.h - eh) / cs.sh + 1, ow = (cs.w - ew) / cs.sw + 1;
    }
    const int C = cs.c, F = cs.f, K = cs.kh * cs.kw * C;
    const int xc = C + cs.x_extra_c, yc = F + cs.y_extra_c;
    i64 pos = 64;
    auto place = [&](i64 size) {
        i64 at = (pos + 7) / 8 * 8 + cs.skew;
        pos = at + size;
        return at;
    };
    const i64 x_at = place((i64)cs.n * cs.h * cs.w * xc);
    const i64 y_at = place((i64)cs.n * oh * ow * yc);
    const i64 total = pos + 64;
    View xv{x_at, (i64)cs.h * cs.w * xc, (i64)cs.w * xc, xc, cs.h, cs.w, C};
    View yv{y_at + cs.y_off_c, (i64)oh * ow * yc, (i64)ow * yc, yc, oh, ow, F};

    Rng rng(0xf1257000u + cs.n * 131 + cs.h * 17 + C * 7 + F);
    std::vector<T> arena(total);
    for (auto& v : arena) v = Ty<T>::make(rng.uni());
    const std::vector<T> before = arena;
    std::vector<float> w((size_t)K * F), bias(F);
    for (auto& v : w) v = (float)rng.uni();
    for (auto& b : bias) b = (float)(0.5 * rng.uni());

    std::vector<double> ref((size_t)cs.n * oh * ow * F);
    double maxref = 0;
    for (int n = 0; n < cs.n; ++n)
        for (int oy = 0; oy < oh; ++oy)
            for (int ox = 0; ox < ow; ++ox)
                for (int o = 0; o < F; ++o) {
                    double s = bias[o];
                    for (int ky = 0; ky < cs.kh; ++ky)
                        for (int kx = 0; kx < cs.kw; ++kx) {
                            int iy = oy * cs.sh + ky * cs.dh - pt;
                            int ix = ox * cs.sw + kx * cs.dw - pl;
                            if (iy < 0 || iy >= cs.h || ix < 0 || ix >= cs.w) continue;
                            for (int c = 0; c < C; ++c)
                                s += Ty<T>::stored(arena[view_at(xv, n, iy, ix, c)]) *
                                     (double)w[((size_t)(ky * cs.kw + kx) * C + c) * F + o];
                        }
                    double r = act_ref(s, cs.act);
                    ref[(((size_t)n * oh + oy) * ow + ox) * F + o] = r;
                    maxref = std::max(maxref, std::fabs(r));
                }

    dim3 grid((ow + 31) / 32, (oh + 15) / 16, cs.n), block(256);
    auto t0 = std::chrono::steady_clock::now();
    emu::launch(grid, block, small_c_smem, sizeof small_c_smem, [&] {
        kernel(arena.data(), xv, yv, w.data(), bias.data(), cs.kh, cs.kw, cs.sh, cs.sw, cs.dh,
               cs.dw, pt, pl, cs.act, cs.n);
    });
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    double worst = 0, max_err = 0;
    long bad = 0, clobbered = 0;
    std::vector<char> inside(arena.size(), 0);
    if (!cs.noop)
        for (int n = 0; n < cs.n; ++n)
            for (int oy = 0; oy < oh; ++oy)
                for (int ox = 0; ox < ow; ++ox)
                    for (int o = 0; o < F; ++o) {
                        i64 idx = view_at(yv, n, oy, ox, o);
                        inside[idx] = 1;
                        double r = ref[(((size_t)n * oh + oy) * ow + ox) * F + o];
                        double got = Ty<T>::stored(arena[idx]);
                        double err = std::fabs(got - r);
                        // f32 sums of at most 64 products, then the output rounding
                        double allowed = 1e-5 * maxref + Ty<T>::out_rel * std::fabs(r) + 1e-30;
                        if (!(err <= allowed)) ++bad;
                        if (std::isnan(got)) err = INFINITY;
                        max_err = std::max(max_err, err);
                        worst = std::max(worst, err / allowed);
                    }
    for (size_t i = 0; i < arena.size(); ++i)
        if (!inside[i] && memcmp(&arena[i], &before[i], sizeof(T))) ++clobbered;

    bool ok = bad == 0 && clobbered == 0;
    const char* clobber_note = !clobbered ? ""
                               : cs.noop  ? "  WROTE SOMETHING"
                                          : "  CLOBBERED OUTSIDE THE WINDOW";
    char line[512];
    snprintf(line, sizeof line,
             "%-4s %-50s %-17s %2dx%-2d -> %2dx%-2d F=%-3d K=%-3d  max err %.2e of max|ref| %.2f "
             "(%.0f%% of allowed)%s  %.2fs  ",
             ok ? "ok" : "FAIL", cs.name, entry, cs.h, cs.w, oh, ow, F, K, max_err, maxref,
             worst * 100, clobber_note, secs);
    if (bad) snprintf(line + strlen(line), sizeof line - strlen(line), "%ld wrong", bad);
    return {ok, line};
}

} // namespace

int main() {
    // name, n, h, w, c, kh, kw, sh, sw, dh, dw, same, f, act, x_extra_c, y_extra_c, y_off_c,
    // skew, noop
    const Case cases[] = {
        {"C=1 3x3 valid F=64 relu", 1, 37, 29, 1, 3, 3, 1, 1, 1, 1, false, 64, ACT_RELU, 0, 0, 0,
         0, false},
        {"C=3 3x3 same F=64 relu, batch 2", 2, 37, 29, 3, 3, 3, 1, 1, 1, 1, true, 64, ACT_RELU, 0,
         0, 0, 0, false},
        {"C=3 3x3 same F=32 linear", 1, 21, 40, 3, 3, 3, 1, 1, 1, 1, true, 32, ACT_LINEAR, 0, 0, 0,
         1, false},
        {"C=1 3x3 same F=24 sigmoid (partial filter group)", 1, 17, 33, 1, 3, 3, 1, 1, 1, 1, true,
         24, ACT_SIGMOID, 0, 0, 0, 0, false},
        {"C=3 3x3 valid F=20 tanh, x is a channel slice", 2, 19, 23, 3, 3, 3, 1, 1, 1, 1, false,
         20, ACT_TANH, 2, 0, 0, 3, false},
        {"C=3 3x3 stride 2 same F=32 relu", 1, 37, 29, 3, 3, 3, 2, 2, 1, 1, true, 32, ACT_RELU, 0,
         0, 0, 0, false},
        {"C=3 3x3 stride 2 dil 2 same F=16 (5-row patches)", 1, 37, 29, 3, 3, 3, 2, 2, 2, 2, true,
         16, ACT_LINEAR, 0, 0, 0, 0, false},
        {"C=1 3x3 dilation 2 valid F=64 relu", 2, 37, 29, 1, 3, 3, 1, 1, 2, 2, false, 64, ACT_RELU,
         0, 0, 0, 0, false},
        {"C=3 3x3 same F=24 -> y channel slice [5, 29) of 40", 2, 13, 35, 3, 3, 3, 1, 1, 1, 1,
         true, 24, ACT_RELU, 0, 16, 5, 1, false},
        {"C=2 5x3 same F=40 softmax (pre-activation)", 1, 11, 9, 2, 5, 3, 1, 1, 1, 1, true, 40,
         ACT_SOFTMAX, 0, 0, 0, 0, false},
        {"C=8 3x3 (K=72 > 64): writes nothing", 1, 9, 9, 8, 3, 3, 1, 1, 1, 1, true, 16, ACT_RELU,
         0, 0, 0, 0, true},
    };
    int failed = 0, total = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (const Case& c : cases) {
        Result rs[] = {run_case<float>(c, conv_small_c_f32, "conv_small_c_f32"),
                       run_case<unsigned short>(c, conv_small_c_bf16, "conv_small_c_bf16")};
        for (auto& r : rs) {
            printf("%s\n", r.line.c_str());
            fflush(stdout);
            failed += !r.ok;
            ++total;
        }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("%d of %d kernel runs passed (%ld barriers emulated, %.1fs)\n", total - failed, total,
           emu::barriers, secs);
    return failed ? 1 : 0;
}
