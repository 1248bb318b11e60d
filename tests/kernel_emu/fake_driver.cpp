// An emulated GPU: a fake libcuda.so that implements the CUDA driver API calls unetc makes
// (through cudarc) and runs unetc's real kernels, compiled here as host C++ against emu.h.
// tests/gpu_emulated.rs builds it and runs the CUDA backend end to end with it on
// LD_LIBRARY_PATH:
//   g++ -std=c++17 -O2 -fPIC -shared -pthread -DUNETC_EMULATE -o libcuda.so fake_driver.cpp
//
// The device is one "compute capability 9.0" GPU whose memory is host memory: device pointers
// are host addresses. Every stream is executed at once, in call order (the host waits for each
// operation), which is a valid schedule of what the API promises. Stream capture records the
// captured operations, with their kernel arguments copied as the real driver does, and
// cuGraphLaunch replays them.
//
// Checks a real GPU makes, or should: kernel pointer arguments and copies must lie in live
// allocations; every allocation ends at an unmapped page (out-of-bounds accesses fault, and the
// fault names the kernel); dynamic shared memory above 48 KiB needs
// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; events made with CU_EVENT_DISABLE_TIMING
// cannot be timed; cuMemGetInfo's free memory is the total minus the live allocations.
// Beyond the real driver, windows (View / ConvParams) passed to a kernel are checked against
// the arena, and emu.h checks the tensor-core kernels' global reads, shared memory and barriers.

#include "emu.h"
#include "emu_extra.h"

#include "../../src/exec/cuda/kernels/common.cuh"
#include "../../src/exec/cuda/kernels/elem.cuh"
#include "../../src/exec/cuda/kernels/conv.cu"
#include "../../src/exec/cuda/kernels/layers.cu"
#include "../../src/exec/cuda/kernels/attention.cu"
#include "../../src/exec/cuda/kernels/swin.cu"
#include "../../src/exec/cuda/kernels/volume.cu"
#include "../../src/exec/cuda/kernels/igemm.cu"
#include "../../src/exec/cuda/kernels/train.cu"
#if __has_include("../../src/exec/cuda/kernels/first_layer.cu")
#include "../../src/exec/cuda/kernels/first_layer.cu"
#define UNETC_FAKE_HAS_FIRST_LAYER 1
#endif

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <tuple>
#include <type_traits>
#include <unistd.h>

// The dynamic shared memory of every block (the most an sm_90 block may opt in to).
constexpr unsigned MAX_SMEM_OPTIN = 232448;
alignas(128) unsigned char igemm_smem[MAX_SMEM_OPTIN];
// The opt-in limit the device reports: an sm_90's, or a smaller device's where
// UNETC_FAKE_SMEM_OPTIN says so (tests of the limit check).
static unsigned smem_optin() {
    const char* v = getenv("UNETC_FAKE_SMEM_OPTIN");
    unsigned n = v ? (unsigned)strtoul(v, nullptr, 10) : MAX_SMEM_OPTIN;
    return n < MAX_SMEM_OPTIN ? n : MAX_SMEM_OPTIN;
}

namespace fake {

// ---- the driver API's types, as plain C types (handles are pointers to the structs below)

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
struct Context;
struct Stream;
struct Event;
struct Module;
struct Function;
struct Graph;
struct GraphExec;

enum : int {
    SUCCESS = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    NOT_INITIALIZED = 3,
    NO_DEVICE = 100,
    INVALID_DEVICE = 101,
    INVALID_IMAGE = 200,
    INVALID_CONTEXT = 201,
    INVALID_HANDLE = 400,
    ILLEGAL_STATE = 401,
    NOT_FOUND = 500,
    LAUNCH_OUT_OF_RESOURCES = 701,
    NOT_SUPPORTED = 801,
    STREAM_CAPTURE_UNSUPPORTED = 900,
    STREAM_CAPTURE_INVALIDATED = 901,
    UNKNOWN = 999,
};

constexpr size_t TOTAL_MEMORY = 80ull << 30;
constexpr unsigned DEFAULT_MAX_DYNAMIC_SMEM = 48 * 1024;
constexpr unsigned EVENT_DISABLE_TIMING = 2;
constexpr int FUNC_MAX_THREADS_PER_BLOCK = 0, FUNC_SHARED_SIZE_BYTES = 1,
              FUNC_CONST_SIZE_BYTES = 2, FUNC_LOCAL_SIZE_BYTES = 3, FUNC_NUM_REGS = 4,
              FUNC_PTX_VERSION = 5, FUNC_BINARY_VERSION = 6,
              FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8, FUNC_PREFERRED_CARVEOUT = 9;

std::recursive_mutex mu; // every entry point holds it: emu.h's state is global

[[noreturn]] void die(const std::string& what) {
    fprintf(stderr, "emulated GPU: %s\n", what.c_str());
    fflush(stderr);
    abort();
}

// ---- device memory

struct Alloc {
    unsigned char* ptr;
    size_t bytes;     // as asked
    size_t accounted; // rounded up to 256 bytes, as counted against the total
    unsigned char* map;
    size_t map_len;
};
std::map<uintptr_t, Alloc> allocs; // by start address
size_t live_bytes = 0;
const size_t PAGE = (size_t)sysconf(_SC_PAGESIZE);

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

// The live allocation holding [p, p + bytes), or null.
const Alloc* find_alloc(const void* p, size_t bytes) {
    auto q = (uintptr_t)p;
    auto it = allocs.upper_bound(q);
    if (it == allocs.begin()) return nullptr;
    --it;
    const Alloc& a = it->second;
    if (q + bytes <= (uintptr_t)a.ptr + a.bytes && (bytes > 0 || q < (uintptr_t)a.ptr + a.bytes))
        return &a;
    return nullptr;
}

void check_range(const char* what, const void* p, size_t bytes) {
    if (bytes == 0) return;
    if (!find_alloc(p, bytes)) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s: [%p, +%zu bytes) is not inside one live device allocation",
                 what, p, bytes);
        die(buf);
    }
}

CUresult mem_alloc(CUdeviceptr* out, size_t bytes) {
    if (!out || bytes == 0) return INVALID_VALUE;
    size_t accounted = round_up(bytes, 256);
    if (accounted > TOTAL_MEMORY - live_bytes) return OUT_OF_MEMORY;
    // An unmapped page on either side; the allocation ends 0..15 bytes before the upper one
    // (a 16-byte aligned start, which is all the kernels' vector accesses need; the real
    // allocator gives 256), so accessing past the end faults.
    size_t placed = round_up(bytes, 16);
    size_t body = round_up(placed, PAGE);
    size_t map_len = body + 2 * PAGE;
    void* m = mmap(nullptr, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return OUT_OF_MEMORY;
    auto map = (unsigned char*)m;
    if (mprotect(map + PAGE, body, PROT_READ | PROT_WRITE)) {
        munmap(m, map_len);
        return OUT_OF_MEMORY;
    }
    unsigned char* ptr = map + PAGE + body - placed;
    // Fresh device memory is not zero: 0xff bytes are NaN in f32 and in bf16. (Huge blocks stay
    // untouched, so that reserving most of the "device" costs no host memory.)
    if (bytes <= (256u << 20)) memset(ptr, 0xff, placed);
    allocs[(uintptr_t)ptr] = {ptr, bytes, accounted, map, map_len};
    live_bytes += accounted;
    *out = (CUdeviceptr)(uintptr_t)ptr;
    return SUCCESS;
}

CUresult mem_free(CUdeviceptr p) {
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end()) return INVALID_VALUE;
    live_bytes -= it->second.accounted;
    munmap(it->second.map, it->second.map_len);
    allocs.erase(it);
    return SUCCESS;
}

// ---- kernels: the host build of every extern "C" kernel, by name

struct Shape {
    dim3 grid, block;
    unsigned smem;
    bool blockwise;
    const char* name;
};
using Launch = std::function<void(const Shape&)>;

template <class T> constexpr size_t pointee_size() {
    if constexpr (std::is_void<T>::value) return 0;
    else return sizeof(T);
}

// What a launch's arguments must satisfy, gathered argument by argument.
struct Checks {
    const char* kernel = "";
    struct Ptr {
        const void* p;
        size_t elem; // sizeof the pointee, 0 for void
    };
    std::vector<Ptr> ptrs;
    std::vector<View> views;      // layer kernels' windows of the arena
    std::vector<ConvParams> convs;
    std::vector<View> head_views; // after a ConvParams: windows of its output buffer
    int last_int = 0;
    bool last_is_int = false;

    template <class T> void arg(T* p, size_t i) {
        const Alloc* a = find_alloc(p, 0);
        if (!a) {
            char buf[256];
            snprintf(buf, sizeof buf,
                     "kernel %s: pointer argument %zu (%p) is not inside a live device allocation",
                     kernel, i, (const void*)p);
            die(buf);
        }
        emu::register_global(a->ptr, a->bytes);
        ptrs.push_back({p, pointee_size<T>()});
        last_is_int = false;
    }
    void arg(const View& v, size_t) {
        (convs.empty() ? views : head_views).push_back(v);
        last_is_int = false;
    }
    void arg(const ConvParams& p, size_t) {
        convs.push_back(p);
        last_is_int = false;
    }
    void arg(int v, size_t) {
        last_int = v;
        last_is_int = true;
    }
    template <class T> void arg(const T&, size_t) { last_is_int = false; }

    // Every element of `v` for items 0..n-1 lies inside the allocation behind `base`.
    void window(const char* what, const View& v, int n, const Ptr& base) {
        if (v.c <= 0 || v.h <= 0 || v.w <= 0 || n <= 0) return;
        i64 lo = v.offset, hi = v.offset;
        auto span = [&](i64 stride, i64 count) {
            (stride < 0 ? lo : hi) += stride * (count - 1);
        };
        span(v.item_stride, n);
        span(v.row_stride, v.h);
        span(v.pixel_stride, v.w);
        hi += v.c - 1;
        const Alloc* a = find_alloc(base.p, 0);
        i64 room = (i64)((a->ptr + a->bytes - (const unsigned char*)base.p) / base.elem);
        if (lo < 0 || hi >= room) {
            char buf[384];
            snprintf(buf, sizeof buf,
                     "kernel %s: %s window (offset %lld, %dx%dx%d, strides %lld/%lld/%d, %d items) "
                     "reaches elements [%lld, %lld] of a buffer of %lld",
                     kernel, what, (long long)v.offset, v.h, v.w, v.c, (long long)v.item_stride,
                     (long long)v.row_stride, v.pixel_stride, n, (long long)lo, (long long)hi,
                     (long long)room);
            die(buf);
        }
    }

    // Layer kernels (INSTANTIATE in elem.cuh) take the arena first and the batch last; the
    // arena's element type is in the name.
    void windows(bool last_param_is_int) {
        std::string name = kernel;
        size_t elem = name.size() > 5 && name.compare(name.size() - 5, 5, "_bf16") == 0 ? 2
                      : name.size() > 4 && name.compare(name.size() - 4, 4, "_f32") == 0 ? 4
                                                                                         : 0;
        if (!views.empty() && last_param_is_int && elem && !ptrs.empty()) {
            Ptr arena{ptrs[0].p, elem};
            for (auto& v : views) window("a View", v, last_int, arena);
        }
        for (auto& p : convs) {
            if (ptrs.size() < 2 || !ptrs[0].elem) continue;
            window("x0", p.x0, p.n, ptrs[0]);
            window("x1", p.x1, p.n, ptrs[0]);
            window("y", p.y, p.n, {ptrs[1].p, ptrs[0].elem});
            for (auto& v : head_views) window("head y", v, p.n, {ptrs[1].p, ptrs[0].elem});
        }
    }
};

const char* running = "";
dim3 running_block;

// A GPU does not trap on integer division by zero (the result is garbage); here it does.
void on_fault(int sig, siginfo_t* si, void*) {
    char buf[384];
    dim3 t = emu::cur ? emu::cur->tid : dim3(0, 0, 0);
    int n = snprintf(buf, sizeof buf,
                     "emulated GPU: %s at %p in kernel %s, block (%u, %u, %u), thread (%u, %u, %u)\n",
                     sig == SIGFPE ? "integer division by zero" : "illegal memory access",
                     si->si_addr, running, running_block.x, running_block.y, running_block.z, t.x,
                     t.y, t.z);
    if (write(2, buf, n) < 0) _exit(134);
    signal(SIGABRT, SIG_DFL);
    abort();
}

emu::Fiber direct_thread;

// Kernels without barriers or warp collectives: every thread runs to its end in turn, without
// fibers (a hundred times faster). Reaching a barrier here is a bug in the kernel table.
__attribute__((noinline)) void run_direct(const Shape& s, const std::function<void()>& body) {
    emu::cur = &direct_thread;
    if (_setjmp(emu::sched)) {
        die(std::string("kernel ") + s.name +
            " reached __syncthreads or a warp collective: list it as BLOCKWISE in fake_driver.cpp");
    }
    for (unsigned bz = 0; bz < s.grid.z; ++bz)
        for (unsigned by = 0; by < s.grid.y; ++by)
            for (unsigned bx = 0; bx < s.grid.x; ++bx) {
                emu::block_idx = running_block = dim3(bx, by, bz);
                for (unsigned tz = 0; tz < s.block.z; ++tz)
                    for (unsigned ty = 0; ty < s.block.y; ++ty)
                        for (unsigned tx = 0; tx < s.block.x; ++tx) {
                            direct_thread.tid = dim3(tx, ty, tz);
                            direct_thread.state = emu::RUNNABLE;
                            body();
                        }
            }
    emu::cur = nullptr;
}

void run_grid(const Shape& s, const std::function<void()>& body) {
    struct sigaction act = {}, old_segv, old_bus, old_fpe;
    act.sa_sigaction = on_fault;
    act.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &act, &old_segv);
    sigaction(SIGBUS, &act, &old_bus);
    sigaction(SIGFPE, &act, &old_fpe);
    running = s.name;
    running_block = dim3(0, 0, 0);
    emu::grid_dim = s.grid;
    emu::block_dim = s.block;
    if (s.blockwise) {
        emu::launch(s.grid, s.block, igemm_smem, s.smem, body);
    } else {
        emu::smem_lo = emu::smem_hi = igemm_smem;
        run_direct(s, body);
    }
    running = "";
    sigaction(SIGSEGV, &old_segv, nullptr);
    sigaction(SIGBUS, &old_bus, nullptr);
    sigaction(SIGFPE, &old_fpe, nullptr);
}

// Copies the kernel's arguments out of `params` (typed by the kernel's own signature) and
// returns the launch: check the arguments, then run the grid.
template <class... A, size_t... I>
Launch bind_args(void (*f)(A...), void** params, std::index_sequence<I...>) {
    std::tuple<std::decay_t<A>...> args{*static_cast<std::decay_t<A>*>(params[I])...};
    return [f, args](const Shape& s) {
        emu::globals.clear();
        Checks ck;
        ck.kernel = s.name;
        (ck.arg(std::get<I>(args), I), ...);
        ck.windows(ck.last_is_int);
        run_grid(s, [&] { std::apply(f, args); });
    };
}
template <class... A> Launch bind_args(void (*f)(A...), void** params) {
    return fake::bind_args(f, params, std::index_sequence_for<A...>{});
}
template <auto F> Launch binder(void** params) { return fake::bind_args(F, params); }

struct Kernel {
    const char* name;
    Launch (*bind)(void**);
    bool blockwise;       // uses barriers or warp collectives: one fiber per thread
    unsigned max_threads; // __launch_bounds__
    unsigned static_smem; // bytes of __shared__ arrays
};

#define DIRECT(k) {#k, &binder<k>, false, 1024, 0}
#define BLOCKWISE(k, max_threads, static_smem) {#k, &binder<k>, true, max_threads, static_smem}
#define BOTH(k) DIRECT(k##_f32), DIRECT(k##_bf16)

const Kernel kernels[] = {
    BOTH(conv2d),
    BOTH(conv2d_transpose),
    BOTH(dense),
    BOTH(max_pool),
    BOTH(resize),
    BOTH(shift_window),
    BOTH(concat_part),
    BOTH(permute),
    BOTH(add),
    BOTH(scaled_add),
    BOTH(repeat_channels),
    BOTH(batch_norm),
    BOTH(standardize),
    BOTH(activation),
    BOTH(relu_layer),
    BOTH(scalar_op),
    BOTH(reduce_channels),
    BOTH(softmax),
    BOTH(global_average_pool),
    BOTH(global_max_pool),
    BOTH(average_pool),
    BOTH(merge),
    BOTH(merge_constant),
    BOTH(elu_layer),
    BOTH(prelu),
    BOTH(snake),
    BOTH(group_norm),
    BOTH(grouped_conv2d),
    BOTH(separable_conv2d),
    BOTH(conv3d),
    BOTH(conv3d_transpose),
    BOTH(pool3d),
    BOTH(resample3d),
    BOTH(upsample3d_linear),
    BOTH(attention_project),
    DIRECT(attention_scores),
    DIRECT(attention_softmax),
    DIRECT(attention_weighted),
    BOTH(attention_output),
    BOTH(patch_extract),
    BOTH(patch_embedding),
    BOTH(swin_load),
    DIRECT(swin_norm),
    DIRECT(swin_gather),
    DIRECT(swin_dense),
    DIRECT(swin_scores_bias),
    DIRECT(swin_scatter_add),
    BOTH(swin_output),
    BOTH(patch_merging),
    BOTH(patch_expanding),
    BLOCKWISE(conv_igemm_bf16, 256, 0),
    BLOCKWISE(conv_igemm_bf16_small, 256, 0),
    BLOCKWISE(conv_igemm_tf32, 256, 0),
    BLOCKWISE(conv_igemm_tf32_small, 256, 0),
    BLOCKWISE(conv_igemm_bf16_head, 256, 0),
    BLOCKWISE(conv_igemm_bf16_small_head, 256, 0),
    BLOCKWISE(conv_igemm_tf32_head, 256, 0),
    BLOCKWISE(conv_igemm_tf32_small_head, 256, 0),
    BLOCKWISE(conv_igemm_f32x3, 256, 0),
    BLOCKWISE(conv_igemm_f32x3_small, 256, 0),
    BLOCKWISE(conv_igemm_f32x3_head, 256, 0),
    BLOCKWISE(conv_igemm_f32x3_small_head, 256, 0),
    BLOCKWISE(conv_igemm_bf16_splitk, 256, 0),
    BLOCKWISE(conv_igemm_tf32_splitk, 256, 0),
    BLOCKWISE(conv_igemm_f32x3_splitk, 256, 0),
    BLOCKWISE(conv_igemm_bf16_n64, 128, 0),
    BLOCKWISE(conv_igemm_bf16_small_n64, 128, 0),
    BLOCKWISE(conv_igemm_bf16_head_n64, 128, 0),
    BLOCKWISE(conv_igemm_bf16_small_head_n64, 128, 0),
    BLOCKWISE(conv_igemm_bf16_splitk_n64, 128, 0),
    BLOCKWISE(conv_igemm_tf32_n64, 128, 0),
    BLOCKWISE(conv_igemm_tf32_small_n64, 128, 0),
    BLOCKWISE(conv_igemm_tf32_head_n64, 128, 0),
    BLOCKWISE(conv_igemm_tf32_small_head_n64, 128, 0),
    BLOCKWISE(conv_igemm_tf32_splitk_n64, 128, 0),
    BLOCKWISE(conv_igemm_f32x3_n64, 128, 0),
    BLOCKWISE(conv_igemm_f32x3_small_n64, 128, 0),
    BLOCKWISE(conv_igemm_f32x3_head_n64, 128, 0),
    BLOCKWISE(conv_igemm_f32x3_small_head_n64, 128, 0),
    BLOCKWISE(conv_igemm_f32x3_splitk_n64, 128, 0),
    BOTH(splitk_reduce),
    // Training (train.cu).
    DIRECT(train_activation_backward),
    DIRECT(train_softmax_backward),
    DIRECT(train_scale_add),
    DIRECT(train_window_add_f32),
    DIRECT(train_conv2d_dx_f32),
    DIRECT(train_conv2d_dw_f32),
    DIRECT(train_bias_grad_f32),
    DIRECT(train_conv2d_transpose_dx_f32),
    DIRECT(train_conv2d_transpose_dw_f32),
    DIRECT(train_max_pool_dx_f32),
    DIRECT(train_average_pool_dx_f32),
    DIRECT(train_resize_nearest_dx_f32),
    DIRECT(train_resize_bilinear_dx_f32),
    DIRECT(train_bn_moments_f32),
    DIRECT(train_bn_moving),
    DIRECT(train_bn_forward_f32),
    DIRECT(train_bn_param_grads_f32),
    DIRECT(train_bn_dx_f32),
    DIRECT(train_loss_categorical),
    DIRECT(train_loss_binary),
    DIRECT(train_loss_mse),
    DIRECT(train_sum_chunks),
    DIRECT(train_sum_partials),
    DIRECT(train_dice_grad),
    DIRECT(train_adam),
    DIRECT(train_sgd),
    DIRECT(train_rmsprop),
#ifdef UNETC_FAKE_HAS_FIRST_LAYER
    BLOCKWISE(conv_small_c_f32, 1024, small_c::SMEM_BYTES),
    BLOCKWISE(conv_small_c_bf16, 1024, small_c::SMEM_BYTES),
#endif
};

// ---- handles

struct Context {
    int retained = 0;
};
Context primary;
thread_local std::vector<Context*> ctx_stack; // back(): the current context

using Op = std::function<CUresult()>;

struct Graph {
    std::vector<Op> ops;
};
struct GraphExec {
    std::vector<Op> ops;
};

struct Stream {
    Graph* capture = nullptr; // recording into this graph
    bool invalidated = false;
};

struct Event {
    unsigned flags = 0;
    bool recorded = false;
    std::chrono::steady_clock::time_point at;
};

// Static and dynamic shared memory share the block's budget: by default 48 KiB in all, up to
// the opt-in maximum with CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
struct Function {
    const Kernel* kernel;
    unsigned max_dynamic_smem;
};

struct Module {
    std::set<std::string> entries; // .entry names in the PTX
    std::map<std::string, std::unique_ptr<Function>> functions;
};

std::set<Stream*> streams;
std::set<Event*> events;
std::set<Module*> modules;
std::set<Graph*> graphs;
std::set<GraphExec*> execs;
std::set<Function*> functions;
bool initialized = false;
thread_local int capturing_here = 0; // streams this thread is capturing

// The legacy, per-thread and null streams are not objects.
bool builtin_stream(Stream* s) { return (uintptr_t)s <= 2; }

// Runs `op` now, or records it when `s` is being captured.
CUresult on_stream(Stream* s, Op op) {
    if (!builtin_stream(s)) {
        if (!streams.count(s)) return INVALID_HANDLE;
        if (s->capture) {
            s->capture->ops.push_back(std::move(op));
            return SUCCESS;
        }
    }
    return op();
}

// A call the real driver refuses while this thread captures (it would synchronize).
bool refused_in_capture() {
    if (!capturing_here) return false;
    for (Stream* s : streams)
        if (s->capture) s->invalidated = true;
    return true;
}

CUresult memcpy_op(void* dst, const void* src, size_t n, bool dst_dev, bool src_dev) {
    if (dst_dev) check_range("copy destination", dst, n);
    if (src_dev) check_range("copy source", src, n);
    memmove(dst, src, n);
    return SUCCESS;
}

const char* error_name(CUresult e) {
    switch (e) {
    case SUCCESS: return "CUDA_SUCCESS";
    case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
    case INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case ILLEGAL_STATE: return "CUDA_ERROR_ILLEGAL_STATE";
    case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
    case NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    case STREAM_CAPTURE_UNSUPPORTED: return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
    case STREAM_CAPTURE_INVALIDATED: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
    case UNKNOWN: return "CUDA_ERROR_UNKNOWN";
    default: return nullptr;
    }
}

const char* error_string(CUresult e) {
    switch (e) {
    case SUCCESS: return "no error";
    case INVALID_VALUE: return "invalid argument";
    case OUT_OF_MEMORY: return "out of memory";
    case NOT_INITIALIZED: return "initialization error";
    case NO_DEVICE: return "no CUDA-capable device is detected";
    case INVALID_DEVICE: return "invalid device ordinal";
    case INVALID_IMAGE: return "device kernel image is invalid";
    case INVALID_CONTEXT: return "invalid device context";
    case INVALID_HANDLE: return "invalid resource handle";
    case ILLEGAL_STATE: return "the operation cannot be performed in the present state";
    case NOT_FOUND: return "named symbol not found";
    case LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
    case NOT_SUPPORTED: return "operation not supported";
    case STREAM_CAPTURE_UNSUPPORTED: return "operation not permitted when stream is capturing";
    case STREAM_CAPTURE_INVALIDATED:
        return "operation failed due to a previous error during capture";
    case UNKNOWN: return "unknown error";
    default: return nullptr;
    }
}

// With UNETC_FAKE_CUDA_TRACE=1, the entry points called (cudarc resolves each at its first
// call) and the kernels run are listed on stderr at exit.
std::set<std::string>* called;
std::map<std::string, long>* runs;
void note_call(const char* name) {
    if (called) called->insert(name);
}
void note_run(const char* kernel) {
    if (runs) (*runs)[kernel]++;
}
__attribute__((constructor)) void start_trace() {
    const char* v = getenv("UNETC_FAKE_CUDA_TRACE");
    if (v && !strcmp(v, "1")) {
        called = new std::set<std::string>;
        runs = new std::map<std::string, long>;
    }
}
__attribute__((destructor)) void print_trace() {
    if (!called || called->empty()) return;
    std::string all, kernels;
    for (auto& n : *called) all += " " + n;
    for (auto& r : *runs) kernels += " " + r.first + " x" + std::to_string(r.second);
    fprintf(stderr, "emulated GPU: driver entry points called:%s\nemulated GPU: kernels run:%s\n",
            all.c_str(), kernels.c_str());
}

} // namespace fake

using namespace fake;

#define API extern "C" __attribute__((visibility("default")))
#define LOCK                                                                                       \
    std::lock_guard<std::recursive_mutex> lock_(fake::mu);                                         \
    fake::note_call(__func__)
#define NEED_INIT                                                                                  \
    if (!initialized) return NOT_INITIALIZED

// ---- initialization, device, context

API CUresult cuInit(unsigned flags) {
    LOCK;
    if (flags != 0) return INVALID_VALUE;
    initialized = true;
    return SUCCESS;
}

API CUresult cuDriverGetVersion(int* v) {
    LOCK;
    if (!v) return INVALID_VALUE;
    *v = 13000;
    return SUCCESS;
}

API CUresult cuDeviceGetCount(int* n) {
    LOCK;
    NEED_INIT;
    if (!n) return INVALID_VALUE;
    *n = 1;
    return SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    LOCK;
    NEED_INIT;
    if (!d) return INVALID_VALUE;
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    LOCK;
    NEED_INIT;
    if (d != 0) return INVALID_DEVICE;
    if (!name || len <= 0) return INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", "unetc emulated GPU (CPU)");
    return SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    LOCK;
    NEED_INIT;
    if (d != 0) return INVALID_DEVICE;
    if (!bytes) return INVALID_VALUE;
    *bytes = TOTAL_MEMORY;
    return SUCCESS;
}

// An H100-like device (the values the real one reports).
API CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    LOCK;
    NEED_INIT;
    if (d != 0) return INVALID_DEVICE;
    if (!v) return INVALID_VALUE;
    switch (attr) {
    case 1: *v = 1024; break;       // MAX_THREADS_PER_BLOCK
    case 2: *v = 1024; break;       // MAX_BLOCK_DIM_X
    case 3: *v = 1024; break;       // MAX_BLOCK_DIM_Y
    case 4: *v = 64; break;         // MAX_BLOCK_DIM_Z
    case 5: *v = 2147483647; break; // MAX_GRID_DIM_X
    case 6: *v = 65535; break;      // MAX_GRID_DIM_Y
    case 7: *v = 65535; break;      // MAX_GRID_DIM_Z
    case 8: *v = 49152; break;      // MAX_SHARED_MEMORY_PER_BLOCK
    case 9: *v = 65536; break;      // TOTAL_CONSTANT_MEMORY
    case 10: *v = 32; break;        // WARP_SIZE
    case 12: *v = 65536; break;     // MAX_REGISTERS_PER_BLOCK
    case 13: *v = 1980000; break;   // CLOCK_RATE (kHz)
    case 15: *v = 1; break;         // GPU_OVERLAP
    case 16: *v = 132; break;       // MULTIPROCESSOR_COUNT
    case 17: *v = 0; break;         // KERNEL_EXEC_TIMEOUT
    case 18: *v = 0; break;         // INTEGRATED
    case 31: *v = 1; break;         // CONCURRENT_KERNELS
    case 36: *v = 2619000; break;   // MEMORY_CLOCK_RATE (kHz)
    case 37: *v = 5120; break;      // GLOBAL_MEMORY_BUS_WIDTH
    case 38: *v = 52428800; break;  // L2_CACHE_SIZE
    case 39: *v = 2048; break;      // MAX_THREADS_PER_MULTIPROCESSOR
    case 41: *v = 1; break;         // UNIFIED_ADDRESSING
    case 75: *v = 9; break;         // COMPUTE_CAPABILITY_MAJOR
    case 76: *v = 0; break;         // COMPUTE_CAPABILITY_MINOR
    case 81: *v = 233472; break;    // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    case 82: *v = 65536; break;     // MAX_REGISTERS_PER_MULTIPROCESSOR
    case 97: *v = (int)smem_optin(); break; // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    case 115: *v = 1; break;        // MEMORY_POOLS_SUPPORTED (cudarc then allocates async)
    default:
        fprintf(stderr, "emulated GPU: device attribute %d is not emulated\n", attr);
        return INVALID_VALUE;
    }
    return SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(Context** ctx, CUdevice d) {
    LOCK;
    NEED_INIT;
    if (d != 0) return INVALID_DEVICE;
    if (!ctx) return INVALID_VALUE;
    primary.retained++;
    *ctx = &primary;
    return SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    LOCK;
    NEED_INIT;
    if (d != 0) return INVALID_DEVICE;
    if (primary.retained <= 0) return INVALID_CONTEXT;
    primary.retained--;
    return SUCCESS;
}

API CUresult cuCtxGetCurrent(Context** ctx) {
    LOCK;
    NEED_INIT;
    if (!ctx) return INVALID_VALUE;
    *ctx = ctx_stack.empty() ? nullptr : ctx_stack.back();
    return SUCCESS;
}

API CUresult cuCtxSetCurrent(Context* ctx) {
    LOCK;
    NEED_INIT;
    if (ctx && ctx != &primary) return INVALID_CONTEXT;
    if (ctx_stack.empty()) {
        if (ctx) ctx_stack.push_back(ctx);
    } else if (ctx) {
        ctx_stack.back() = ctx;
    } else {
        ctx_stack.pop_back();
    }
    return SUCCESS;
}

API CUresult cuCtxPushCurrent_v2(Context* ctx) {
    LOCK;
    NEED_INIT;
    if (ctx != &primary) return INVALID_CONTEXT;
    ctx_stack.push_back(ctx);
    return SUCCESS;
}

API CUresult cuCtxPopCurrent_v2(Context** ctx) {
    LOCK;
    NEED_INIT;
    if (ctx_stack.empty()) return INVALID_CONTEXT;
    if (ctx) *ctx = ctx_stack.back();
    ctx_stack.pop_back();
    return SUCCESS;
}

API CUresult cuCtxSynchronize() {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return SUCCESS;
}

API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    LOCK;
    NEED_INIT;
    if (!free_bytes || !total) return INVALID_VALUE;
    *free_bytes = TOTAL_MEMORY - live_bytes;
    *total = TOTAL_MEMORY;
    return SUCCESS;
}

// ---- streams

API CUresult cuStreamCreate(Stream** s, unsigned) {
    LOCK;
    NEED_INIT;
    if (!s) return INVALID_VALUE;
    *s = new Stream;
    streams.insert(*s);
    return SUCCESS;
}

API CUresult cuStreamDestroy_v2(Stream* s) {
    LOCK;
    NEED_INIT;
    if (!streams.count(s)) return INVALID_HANDLE;
    if (s->capture) {
        capturing_here--;
        delete s->capture;
    }
    streams.erase(s);
    delete s;
    return SUCCESS;
}

API CUresult cuStreamSynchronize(Stream* s) {
    LOCK;
    NEED_INIT;
    if (!builtin_stream(s) && !streams.count(s)) return INVALID_HANDLE;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return SUCCESS;
}

API CUresult cuStreamQuery(Stream* s) {
    LOCK;
    NEED_INIT;
    if (!builtin_stream(s) && !streams.count(s)) return INVALID_HANDLE;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return SUCCESS;
}

API CUresult cuStreamWaitEvent(Stream* s, Event* e, unsigned) {
    LOCK;
    NEED_INIT;
    if (!builtin_stream(s) && !streams.count(s)) return INVALID_HANDLE;
    if (!events.count(e)) return INVALID_HANDLE;
    return SUCCESS; // everything before it has run already
}

API CUresult cuStreamBeginCapture_v2(Stream* s, int mode) {
    LOCK;
    NEED_INIT;
    if (builtin_stream(s)) return STREAM_CAPTURE_UNSUPPORTED; // as the real driver
    if (!streams.count(s)) return INVALID_HANDLE;
    if (mode < 0 || mode > 2) return INVALID_VALUE;
    if (s->capture) return ILLEGAL_STATE;
    s->capture = new Graph;
    s->invalidated = false;
    capturing_here++;
    return SUCCESS;
}

API CUresult cuStreamEndCapture(Stream* s, Graph** g) {
    LOCK;
    NEED_INIT;
    if (!g) return INVALID_VALUE;
    if (builtin_stream(s) || !streams.count(s)) return INVALID_HANDLE;
    if (!s->capture) return ILLEGAL_STATE;
    Graph* graph = s->capture;
    s->capture = nullptr;
    capturing_here--;
    if (s->invalidated) {
        delete graph;
        *g = nullptr;
        return STREAM_CAPTURE_INVALIDATED;
    }
    graphs.insert(graph);
    *g = graph;
    return SUCCESS;
}

API CUresult cuStreamIsCapturing(Stream* s, int* status) {
    LOCK;
    NEED_INIT;
    if (!status) return INVALID_VALUE;
    if (builtin_stream(s)) {
        *status = 0;
        return SUCCESS;
    }
    if (!streams.count(s)) return INVALID_HANDLE;
    *status = !s->capture ? 0 : s->invalidated ? 2 : 1;
    return SUCCESS;
}

// ---- memory

API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return mem_alloc(p, bytes);
}

API CUresult cuMemFree_v2(CUdeviceptr p) {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return mem_free(p);
}

// Allocation and free nodes in a captured graph are not emulated: refused during capture.
// Page-locked host memory: ordinary host memory here.
API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
    LOCK;
    NEED_INIT;
    (void)flags;
    if (!p) return INVALID_VALUE;
    *p = malloc(bytes ? bytes : 1);
    return *p ? SUCCESS : OUT_OF_MEMORY;
}

API CUresult cuMemFreeHost(void* p) {
    LOCK;
    NEED_INIT;
    free(p);
    return SUCCESS;
}

API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, Stream* s) {
    LOCK;
    NEED_INIT;
    if (!builtin_stream(s) && !streams.count(s)) return INVALID_HANDLE;
    if (!builtin_stream(s) && s->capture) {
        fprintf(stderr, "emulated GPU: cuMemAllocAsync during stream capture is not emulated\n");
        s->invalidated = true;
        return STREAM_CAPTURE_UNSUPPORTED;
    }
    return mem_alloc(p, bytes);
}

API CUresult cuMemFreeAsync(CUdeviceptr p, Stream* s) {
    LOCK;
    NEED_INIT;
    if (!builtin_stream(s) && !streams.count(s)) return INVALID_HANDLE;
    if (!builtin_stream(s) && s->capture) {
        fprintf(stderr, "emulated GPU: cuMemFreeAsync during stream capture is not emulated\n");
        s->invalidated = true;
        return STREAM_CAPTURE_UNSUPPORTED;
    }
    return mem_free(p);
}

API CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    check_range("memset", (void*)d, n);
    memset((void*)d, v, n);
    return SUCCESS;
}

API CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, Stream* s) {
    LOCK;
    NEED_INIT;
    return on_stream(s, [d, v, n] {
        check_range("memset", (void*)d, n);
        memset((void*)d, v, n);
        return SUCCESS;
    });
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return memcpy_op((void*)dst, src, n, true, false);
}

API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return memcpy_op(dst, (const void*)src, n, false, true);
}

API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    LOCK;
    NEED_INIT;
    if (refused_in_capture()) return STREAM_CAPTURE_UNSUPPORTED;
    return memcpy_op((void*)dst, (const void*)src, n, true, true);
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, Stream* s) {
    LOCK;
    NEED_INIT;
    return on_stream(s, [=] { return memcpy_op((void*)dst, src, n, true, false); });
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, Stream* s) {
    LOCK;
    NEED_INIT;
    return on_stream(s, [=] { return memcpy_op(dst, (const void*)src, n, false, true); });
}

API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, Stream* s) {
    LOCK;
    NEED_INIT;
    return on_stream(s, [=] { return memcpy_op((void*)dst, (const void*)src, n, true, true); });
}

// ---- modules and functions

// The names of the global functions in a cubin (ELF64): the symbol table's STT_FUNC entries.
// Returns false for an image that is not a well-formed ELF64 of this shape.
static bool cubin_entries(const unsigned char* elf, std::set<std::string>& out) {
    auto u16 = [&](size_t o) { uint16_t v; memcpy(&v, elf + o, 2); return (size_t)v; };
    auto u32 = [&](size_t o) { uint32_t v; memcpy(&v, elf + o, 4); return (size_t)v; };
    auto u64 = [&](size_t o) { uint64_t v; memcpy(&v, elf + o, 8); return (size_t)v; };
    if (elf[4] != 2) return false; // ELFCLASS64
    size_t shoff = u64(0x28), shentsize = u16(0x3A), shnum = u16(0x3C);
    if (shentsize < 64 || shnum == 0 || shnum > 65535) return false;
    for (size_t i = 0; i < shnum; ++i) {
        size_t sh = shoff + i * shentsize;
        if (u32(sh + 4) != 2) continue; // SHT_SYMTAB
        size_t symoff = u64(sh + 0x18), symsize = u64(sh + 0x20), link = u32(sh + 0x28);
        size_t entsize = u64(sh + 0x38);
        if (entsize < 24 || link >= shnum) return false;
        size_t strsh = shoff + link * shentsize;
        size_t stroff = u64(strsh + 0x18);
        for (size_t s = 0; s + entsize <= symsize; s += entsize) {
            size_t sym = symoff + s;
            unsigned char info = elf[sym + 4];
            if ((info & 0xf) == 2 && (info >> 4) == 1) // STT_FUNC, STB_GLOBAL
                out.insert(std::string((const char*)elf + stroff + u32(sym)));
        }
        return true;
    }
    return false;
}

// The image is NVRTC's PTX or cubin for the same sources; its .entry names (PTX) or global
// function symbols (cubin) say which kernels exist.
API CUresult cuModuleLoadData(Module** m, const void* image) {
    LOCK;
    NEED_INIT;
    if (!m || !image) return INVALID_VALUE;
    const unsigned char* bytes = (const unsigned char*)image;
    auto mod = std::make_unique<Module>();
    if (!memcmp(bytes, "\x7f" "ELF", 4)) {
        if (!cubin_entries(bytes, mod->entries) || mod->entries.empty()) return INVALID_IMAGE;
    } else {
        const char* ptx = (const char*)image;
        if (!strstr(ptx, ".version") || !strstr(ptx, ".target")) return INVALID_IMAGE;
        for (const char* p = strstr(ptx, ".entry "); p; p = strstr(p + 1, ".entry ")) {
            const char* b = p + 7;
            const char* e = b;
            while (*e && *e != '(' && *e != ' ' && *e != '\n') ++e;
            mod->entries.insert(std::string(b, e));
        }
    }
    modules.insert(mod.get());
    *m = mod.release();
    return SUCCESS;
}

API CUresult cuModuleUnload(Module* m) {
    LOCK;
    NEED_INIT;
    if (!modules.count(m)) return INVALID_HANDLE;
    for (auto& f : m->functions) functions.erase(f.second.get());
    modules.erase(m);
    delete m;
    return SUCCESS;
}

API CUresult cuModuleGetFunction(Function** f, Module* m, const char* name) {
    LOCK;
    NEED_INIT;
    if (!f || !name) return INVALID_VALUE;
    if (!modules.count(m)) return INVALID_HANDLE;
    if (!m->entries.count(name)) return NOT_FOUND;
    auto it = m->functions.find(name);
    if (it == m->functions.end()) {
        const Kernel* k = nullptr;
        for (auto& c : kernels)
            if (!strcmp(c.name, name)) k = &c;
        if (!k) {
            fprintf(stderr,
                    "emulated GPU: kernel %s is in the PTX but has no host build in "
                    "tests/kernel_emu/fake_driver.cpp (add it to `kernels`)\n",
                    name);
            return NOT_FOUND;
        }
        auto fn = std::make_unique<Function>();
        fn->kernel = k;
        fn->max_dynamic_smem = DEFAULT_MAX_DYNAMIC_SMEM - std::min(k->static_smem, DEFAULT_MAX_DYNAMIC_SMEM);
        functions.insert(fn.get());
        it = m->functions.emplace(name, std::move(fn)).first;
    }
    *f = it->second.get();
    return SUCCESS;
}

API CUresult cuFuncSetAttribute(Function* f, int attr, int value) {
    LOCK;
    NEED_INIT;
    if (!functions.count(f)) return INVALID_HANDLE;
    switch (attr) {
    case FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES:
        if (value < 0 || (unsigned)value + f->kernel->static_smem > smem_optin())
            return INVALID_VALUE;
        f->max_dynamic_smem = (unsigned)value;
        return SUCCESS;
    case FUNC_PREFERRED_CARVEOUT:
        return value < -1 || value > 100 ? INVALID_VALUE : SUCCESS;
    default: return INVALID_VALUE;
    }
}

API CUresult cuFuncGetAttribute(int* v, int attr, Function* f) {
    LOCK;
    NEED_INIT;
    if (!v) return INVALID_VALUE;
    if (!functions.count(f)) return INVALID_HANDLE;
    switch (attr) {
    case FUNC_MAX_THREADS_PER_BLOCK: *v = (int)f->kernel->max_threads; break;
    case FUNC_SHARED_SIZE_BYTES: *v = (int)f->kernel->static_smem; break;
    case FUNC_CONST_SIZE_BYTES:
    case FUNC_LOCAL_SIZE_BYTES: *v = 0; break;
    case FUNC_NUM_REGS: *v = f->kernel->blockwise ? 128 : 32; break;
    case FUNC_PTX_VERSION:
    case FUNC_BINARY_VERSION: *v = 90; break;
    case FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = (int)f->max_dynamic_smem; break;
    default: return INVALID_VALUE;
    }
    return SUCCESS;
}

API CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned smem, Stream* s, void** params,
                            void** extra) {
    LOCK;
    NEED_INIT;
    if (!functions.count(f)) return INVALID_HANDLE;
    if (extra) {
        fprintf(stderr, "emulated GPU: cuLaunchKernel's `extra` is not emulated\n");
        return NOT_SUPPORTED;
    }
    const Kernel* k = f->kernel;
    if (!gx || !gy || !gz || !bx || !by || !bz || gy > 65535 || gz > 65535 || gx > 2147483647u ||
        bx > 1024 || by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > 1024)
        return INVALID_VALUE;
    if ((unsigned long long)bx * by * bz > k->max_threads) return LAUNCH_OUT_OF_RESOURCES;
    if (smem > f->max_dynamic_smem) return INVALID_VALUE; // as the real driver does
    if (!params) return INVALID_VALUE;
    if (k->blockwise && (bx * by * bz) % 32) {
        fprintf(stderr, "emulated GPU: %s: the emulator runs blocks of whole warps only\n",
                k->name);
        return NOT_SUPPORTED;
    }
    Launch launch = k->bind(params); // copies the arguments now, as the real driver does
    Shape shape{dim3(gx, gy, gz), dim3(bx, by, bz), smem, k->blockwise, k->name};
    return on_stream(s, [launch, shape] {
        note_run(shape.name);
        launch(shape);
        return SUCCESS;
    });
}

// ---- events

API CUresult cuEventCreate(Event** e, unsigned flags) {
    LOCK;
    NEED_INIT;
    if (!e || flags > 7) return INVALID_VALUE;
    *e = new Event;
    (*e)->flags = flags;
    events.insert(*e);
    return SUCCESS;
}

API CUresult cuEventDestroy_v2(Event* e) {
    LOCK;
    NEED_INIT;
    if (!events.count(e)) return INVALID_HANDLE;
    events.erase(e);
    delete e;
    return SUCCESS;
}

API CUresult cuEventRecord(Event* e, Stream* s) {
    LOCK;
    NEED_INIT;
    if (!events.count(e)) return INVALID_HANDLE;
    return on_stream(s, [e] {
        if (!events.count(e)) return (CUresult)INVALID_HANDLE;
        e->recorded = true;
        e->at = std::chrono::steady_clock::now();
        return (CUresult)SUCCESS;
    });
}

API CUresult cuEventSynchronize(Event* e) {
    LOCK;
    NEED_INIT;
    return events.count(e) ? SUCCESS : INVALID_HANDLE;
}

API CUresult cuEventQuery(Event* e) {
    LOCK;
    NEED_INIT;
    return events.count(e) ? SUCCESS : INVALID_HANDLE;
}

// The real driver: an event made with CU_EVENT_DISABLE_TIMING, or never recorded, cannot be
// timed (CUDA_ERROR_INVALID_HANDLE).
API CUresult cuEventElapsedTime_v2(float* ms, Event* start, Event* end) {
    LOCK;
    NEED_INIT;
    if (!ms) return INVALID_VALUE;
    if (!events.count(start) || !events.count(end)) return INVALID_HANDLE;
    if ((start->flags | end->flags) & EVENT_DISABLE_TIMING) return INVALID_HANDLE;
    if (!start->recorded || !end->recorded) return INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
    return SUCCESS;
}

API CUresult cuEventElapsedTime(float* ms, Event* start, Event* end) {
    LOCK;
    return cuEventElapsedTime_v2(ms, start, end);
}

// ---- graphs (captured streams)

API CUresult cuGraphInstantiateWithFlags(GraphExec** x, Graph* g, unsigned long long) {
    LOCK;
    NEED_INIT;
    if (!x) return INVALID_VALUE;
    if (!graphs.count(g)) return INVALID_HANDLE;
    *x = new GraphExec{g->ops};
    execs.insert(*x);
    return SUCCESS;
}

API CUresult cuGraphLaunch(GraphExec* x, Stream* s) {
    LOCK;
    NEED_INIT;
    if (!execs.count(x)) return INVALID_HANDLE;
    auto ops = x->ops;
    return on_stream(s, [ops] {
        for (auto& op : ops)
            if (CUresult r = op()) return r;
        return (CUresult)SUCCESS;
    });
}

API CUresult cuGraphUpload(GraphExec* x, Stream* s) {
    LOCK;
    NEED_INIT;
    if (!execs.count(x)) return INVALID_HANDLE;
    if (!builtin_stream(s) && !streams.count(s)) return INVALID_HANDLE;
    return SUCCESS;
}

API CUresult cuGraphExecDestroy(GraphExec* x) {
    LOCK;
    NEED_INIT;
    if (!execs.count(x)) return INVALID_HANDLE;
    execs.erase(x);
    delete x;
    return SUCCESS;
}

API CUresult cuGraphDestroy(Graph* g) {
    LOCK;
    NEED_INIT;
    if (!graphs.count(g)) return INVALID_HANDLE;
    graphs.erase(g);
    delete g;
    return SUCCESS;
}

// ---- errors

API CUresult cuGetErrorName(CUresult e, const char** s) {
    LOCK;
    if (!s) return INVALID_VALUE;
    *s = error_name(e);
    return *s ? SUCCESS : INVALID_VALUE;
}

API CUresult cuGetErrorString(CUresult e, const char** s) {
    LOCK;
    if (!s) return INVALID_VALUE;
    *s = error_string(e);
    return *s ? SUCCESS : INVALID_VALUE;
}
