// A CPU emulator for the subset of CUDA that src/exec/cuda/kernels/igemm.cu and first_layer.cu
// use, so their device code runs as host C++ (g++ -DUNETC_EMULATE) and is tested without a GPU.
// Namespace-scope __shared__ arrays become plain globals (one block runs at a time).
//
// Every CUDA thread of a block is a fiber on one OS thread (deterministic). A fiber runs until it
// reaches __syncthreads() or a warp-collective wrapper (ldmatrix, mma); there it deposits its
// operands and yields. When every lane of a warp waits at the same collective, the result of each
// lane is computed from all 32 deposits, following the PTX ISA fragment layouts; when every live
// thread waits at the barrier, the barrier opens. Anything else that stalls is reported as a
// deadlock (e.g. a collective reached by part of a warp).
//
// cp.async is checked rather than trusted: issuing one poisons its 16 destination bytes (0xff: a
// NaN in bf16 and in f32), and the copy lands only at the cp.async.wait_group that completes its
// group, so a missing or too-weak wait shows up as NaNs in the result.
#pragma once

#ifdef _FORTIFY_SOURCE
#undef _FORTIFY_SOURCE // the fortified longjmp refuses to jump between fiber stacks
#endif
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <ucontext.h>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) float4 {
    float x, y, z, w;
};

inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
// Round-to-nearest arithmetic that the compiler may not contract into an FMA (as on the GPU).
inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}
inline float __fsub_rn(float a, float b) {
    volatile float r = a - b;
    return r;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}

namespace emu {

[[noreturn]] inline void fail(const char* what) {
    fprintf(stderr, "emulator: %s\n", what);
    abort();
}

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };
enum Op { OP_LDMATRIX_X4 = 1, OP_MMA_BF16_16816, OP_MMA_TF32_1688 };

struct Copy {
    unsigned char* dst;
    const unsigned char* src;
    int src_bytes;
    long group; // the number of commits before it was issued
};

struct Fiber {
    dim3 tid;
    State state;
    bool started;
    jmp_buf jb;
    ucontext_t uc;
    // what this lane deposited at a warp collective, and what it gets back
    int op;
    const void* addr;
    uint32_t a[4], b[2];
    float c[4];
    uint32_t r[4];
    float d[4];
    std::vector<Copy> copies;
    long commits;
};

constexpr size_t STACK = 128 * 1024;
inline std::vector<Fiber> fibers;
inline std::vector<char> stacks;
inline Fiber* cur;
inline jmp_buf sched;
inline dim3 block_idx, block_dim, grid_dim;
inline unsigned char *smem_lo, *smem_hi;
inline std::vector<std::pair<const unsigned char*, size_t>> globals;
inline std::function<void()> kernel;
inline long collectives, barriers;

// Memory the kernel may read from global memory.
inline void register_global(const void* p, size_t bytes) {
    globals.push_back({(const unsigned char*)p, bytes});
}
inline void check_global(const void* p, size_t bytes) {
    auto q = (const unsigned char*)p;
    for (auto& g : globals)
        if (q >= g.first && q + bytes <= g.first + g.second) return;
    fail("global read outside every registered buffer");
}
inline void check_smem(const void* p, size_t bytes, size_t align) {
    auto q = (const unsigned char*)p;
    if (q < smem_lo || q + bytes > smem_hi) fail("shared access outside the dynamic shared memory");
    if ((uintptr_t)q % align) fail("misaligned shared access");
}

inline void yield() {
    if (!_setjmp(cur->jb)) _longjmp(sched, 1);
}

inline void trampoline() {
    kernel();
    cur->state = DONE;
    _longjmp(sched, 1);
}

inline float bf16_value(uint32_t reg, int half) { return __uint_as_float((reg >> (16 * half)) << 16); }
// The tensor core reads the 19 tf32 bits of a .b32 operand and ignores the rest.
inline float tf32_value(uint32_t reg) { return __uint_as_float(reg & 0xffffe000u); }

// PTX ISA 9.0, 9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix", .m8n8.x4.b16 without
// .trans: lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i; lane l receives, in
// register i, the elements (row l / 4, columns 2 * (l % 4) and + 1) of matrix i, low half first.
inline void resolve_ldmatrix_x4(Fiber* L) {
    for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) {
            auto row = (const unsigned char*)L[8 * i + l / 4].addr;
            uint16_t e[2];
            memcpy(e, row + 4 * (l % 4), 4);
            L[l].r[i] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
        }
}

// Builds the whole A (16 x K), B (K x 8) and C (16 x 8) from the lanes' fragments with the
// layout functions `a_at`, `b_at`, `c_at` (lane, element) -> (row, col), checks that they cover
// every element exactly once, and hands every lane its D = A * B + C (exact products, the sum in
// double, rounded once to f32).
template <int K, int NA, int NB, class AAt, class BAt, class AVal, class BVal>
void resolve_mma(Fiber* L, AAt a_at, BAt b_at, AVal a_val, BVal b_val) {
    double A[16][K], B[K][8], C[16][8];
    int seen_a[16][K] = {}, seen_b[K][8] = {}, seen_c[16][8] = {};
    auto c_at = [](int l, int i, int& r, int& c) {
        // "Matrix Fragments for mma.m16n8k*": accumulators of every f32 shape used here.
        r = (l >> 2) + (i >= 2 ? 8 : 0);
        c = (l % 4) * 2 + (i & 1);
    };
    for (int l = 0; l < 32; ++l) {
        int r, c;
        for (int i = 0; i < NA; ++i) {
            a_at(l, i, r, c);
            A[r][c] = a_val(L[l], i);
            seen_a[r][c]++;
        }
        for (int i = 0; i < NB; ++i) {
            b_at(l, i, r, c);
            B[r][c] = b_val(L[l], i);
            seen_b[r][c]++;
        }
        for (int i = 0; i < 4; ++i) {
            c_at(l, i, r, c);
            C[r][c] = L[l].c[i];
            seen_c[r][c]++;
        }
    }
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < K; ++c)
            if (seen_a[r][c] != 1) fail("mma: A fragment layout does not cover A");
    for (int r = 0; r < K; ++r)
        for (int c = 0; c < 8; ++c)
            if (seen_b[r][c] != 1) fail("mma: B fragment layout does not cover B");
    for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) {
            int r, c;
            c_at(l, i, r, c);
            double s = C[r][c];
            for (int k = 0; k < K; ++k) s += A[r][k] * B[k][c];
            L[l].d[i] = (float)s;
        }
}

// PTX ISA 9.0, 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type", .bf16.
inline void resolve_mma_bf16_16816(Fiber* L) {
    auto a_at = [](int l, int i, int& r, int& c) {
        int g = l >> 2, t = l % 4;
        r = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
        c = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
    };
    auto b_at = [](int l, int i, int& r, int& c) {
        int g = l >> 2, t = l % 4;
        r = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        c = g;
    };
    // a0..a7 are the halves of 4 registers, b0..b3 of 2, low half first.
    auto a_val = [](const Fiber& f, int i) { return bf16_value(f.a[i / 2], i & 1); };
    auto b_val = [](const Fiber& f, int i) { return bf16_value(f.b[i / 2], i & 1); };
    resolve_mma<16, 8, 4>(L, a_at, b_at, a_val, b_val);
}

// PTX ISA 9.0, "Matrix Fragments for mma.m16n8k8", .tf32: a0 (g, t), a1 (g + 8, t),
// a2 (g, t + 4), a3 (g + 8, t + 4); b0 (row t, col g), b1 (row t + 4, col g).
inline void resolve_mma_tf32_1688(Fiber* L) {
    auto a_at = [](int l, int i, int& r, int& c) {
        r = (l >> 2) + ((i & 1) ? 8 : 0);
        c = (l % 4) + (i >= 2 ? 4 : 0);
    };
    auto b_at = [](int l, int i, int& r, int& c) {
        r = (l % 4) + (i ? 4 : 0);
        c = l >> 2;
    };
    auto a_val = [](const Fiber& f, int i) { return tf32_value(f.a[i]); };
    auto b_val = [](const Fiber& f, int i) { return tf32_value(f.b[i]); };
    resolve_mma<8, 4, 2>(L, a_at, b_at, a_val, b_val);
}

inline void complete_copies(Fiber& f, long upto_group) {
    std::vector<Copy> keep;
    for (auto& c : f.copies) {
        if (c.group < upto_group) {
            memcpy(c.dst, c.src, c.src_bytes);
            memset(c.dst + c.src_bytes, 0, 16 - c.src_bytes);
        } else {
            keep.push_back(c);
        }
    }
    f.copies.swap(keep);
}

// getcontext returns twice in principle: kept out of the caller's frame.
__attribute__((noinline)) inline void init_fiber(int i, dim3 block) {
    Fiber& f = fibers[i];
    f.tid = dim3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
    f.state = RUNNABLE;
    f.started = false;
    f.copies.clear();
    f.commits = 0;
    if (getcontext(&f.uc)) fail("getcontext");
    f.uc.uc_stack.ss_sp = stacks.data() + STACK * i;
    f.uc.uc_stack.ss_size = STACK;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, trampoline, 0);
}

// Switches to fiber f until it blocks or ends. The only function with a _setjmp into which the
// fibers _longjmp back, and it has no locals that live across it.
__attribute__((noinline)) inline void run_fiber(Fiber* f) {
    cur = f;
    if (!_setjmp(sched)) {
        if (f->started) _longjmp(f->jb, 1);
        f->started = true;
        setcontext(&f->uc);
    }
}

// Runs one block's fibers to completion. Each warp in turn runs as far as it can, collectives
// resolved as soon as its 32 lanes reach them, until all its lanes wait at __syncthreads() (or
// have exited): warps get as far out of step as the barriers allow, so a missing barrier reads
// data that is not there yet. The warp order alternates between blocks (`reverse`).
inline void run_block(int n, bool reverse) {
    const int warps = n / 32;
    int alive = n;
    while (alive > 0) {
        bool progress = false;
        for (int wi = 0; wi < warps; ++wi) {
            Fiber* L = &fibers[32 * (reverse ? warps - 1 - wi : wi)];
            for (;;) {
                bool ran = false;
                for (int l = 0; l < 32; ++l) {
                    if (L[l].state != RUNNABLE) continue;
                    run_fiber(&L[l]);
                    ran = true;
                    alive -= L[l].state == DONE;
                }
                int waiting = 0, done = 0;
                for (int l = 0; l < 32; ++l) {
                    waiting += L[l].state == AT_WARP;
                    done += L[l].state == DONE;
                }
                if (waiting == 32) {
                    for (int l = 1; l < 32; ++l)
                        if (L[l].op != L[0].op) fail("lanes of a warp at different collectives");
                    switch (L[0].op) {
                    case OP_LDMATRIX_X4: resolve_ldmatrix_x4(L); break;
                    case OP_MMA_BF16_16816: resolve_mma_bf16_16816(L); break;
                    case OP_MMA_TF32_1688: resolve_mma_tf32_1688(L); break;
                    default: fail("unknown collective");
                    }
                    for (int l = 0; l < 32; ++l) L[l].state = RUNNABLE;
                    ++collectives;
                    progress = true;
                    continue;
                }
                if (waiting > 0 && waiting + done == 32) fail("warp collective with exited lanes");
                progress |= ran;
                if (!ran) break;
            }
        }
        int at_barrier = 0;
        for (auto& f : fibers) at_barrier += f.state == AT_BARRIER;
        if (alive > 0 && at_barrier == alive) {
            for (auto& f : fibers)
                if (f.state == AT_BARRIER) f.state = RUNNABLE;
            ++barriers;
            progress = true;
        }
        if (alive > 0 && !progress) fail("deadlock: threads wait at different barriers or collectives");
    }
}

// Runs every block of the grid in order; `smem` is the kernel's dynamic shared memory.
inline void launch(dim3 grid, dim3 block, void* smem, size_t smem_bytes, std::function<void()> fn) {
    const int n = block.x * block.y * block.z;
    if (n % 32) fail("block size must be a multiple of 32");
    kernel = std::move(fn);
    grid_dim = grid;
    block_dim = block;
    fibers.assign(n, Fiber());
    stacks.resize(STACK * n);
    smem_lo = (unsigned char*)smem;
    smem_hi = smem_lo + smem_bytes;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                block_idx = dim3(bx, by, bz);
                memset(smem, 0xff, smem_bytes); // shared memory starts as garbage
                for (int i = 0; i < n; ++i) init_fiber(i, block);
                run_block(n, (bx + by + bz) % 2 == 1);
            }
    kernel = nullptr;
}

inline void collective(int op) {
    cur->op = op;
    cur->state = AT_WARP;
    yield();
}

} // namespace emu

#define threadIdx (emu::cur->tid)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() {
    emu::cur->state = emu::AT_BARRIER;
    emu::yield();
}

// ---- the wrappers of igemm.cu, emulated

inline void cp_async_16(void* dst, const void* src, int src_bytes) {
    emu::check_smem(dst, 16, 16);
    if (src_bytes != 0 && src_bytes != 16) emu::fail("cp.async src-size other than 0 or 16");
    if (src_bytes) {
        if ((uintptr_t)src % 16) emu::fail("misaligned cp.async source");
        emu::check_global(src, src_bytes);
    }
    memset(dst, 0xff, 16);
    emu::cur->copies.push_back(
        {(unsigned char*)dst, (const unsigned char*)src, src_bytes, emu::cur->commits});
}
inline void cp_async_commit() { emu::cur->commits++; }
// Completes every group but the newest N (PTX: cp.async.wait_group N).
template <int N> inline void cp_async_wait() {
    emu::complete_copies(*emu::cur, emu::cur->commits - N);
}

inline void ldmatrix_x4(unsigned (&r)[4], const void* p) {
    emu::check_smem(p, 16, 16);
    emu::cur->addr = p;
    emu::collective(emu::OP_LDMATRIX_X4);
    for (int i = 0; i < 4; ++i) r[i] = emu::cur->r[i];
}

inline void mma_deposit(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], int op) {
    for (int i = 0; i < 4; ++i) emu::cur->a[i] = a[i], emu::cur->c[i] = d[i];
    for (int i = 0; i < 2; ++i) emu::cur->b[i] = b[i];
    emu::collective(op);
    for (int i = 0; i < 4; ++i) d[i] = emu::cur->d[i];
}
inline void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    mma_deposit(d, a, b, emu::OP_MMA_BF16_16816);
}
inline void mma_tf32_1688(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    mma_deposit(d, a, b, emu::OP_MMA_TF32_1688);
}

// cvt.rn.bf16.f32: round to nearest, ties to even; NaN stays NaN.
inline unsigned short f32_to_bf16(float v) {
    uint32_t u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    u += 0x7fffu + ((u >> 16) & 1);
    return (unsigned short)(u >> 16);
}
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits (low 13 bits 0).
inline unsigned f32_to_tf32(float v) {
    uint32_t u = __float_as_uint(v);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;
    return (u + 0x1000u) & 0xffffe000u;
}

inline unsigned short ldg(const unsigned short* p) {
    emu::check_global(p, sizeof *p);
    return *p;
}
inline float ldg(const float* p) {
    emu::check_global(p, sizeof *p);
    return *p;
}
