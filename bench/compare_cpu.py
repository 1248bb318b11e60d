#!/usr/bin/env python3
"""unetc beside PyTorch eager, torch.compile and ONNX Runtime on the CPU, in one run.

    python3 bench/compare_cpu.py specs/original.unet [--batch 1] [--rounds 3] [--iterations 5]
    python3 bench/compare_cpu.py tests/golden/original_small.unet --iterations 2 --bf16 \
        --unetc /path/to/unetc --no-build

What it does (bench/README.md has the protocol and why):

1. `cargo build --release` (retried while the tree does not build; skipped by `--no-build`), then
   copies the unetc binary (`--unetc`, default target/release/unetc) into the work dir;
2. `unetc check SPEC --format json`: the layer graph (for PyTorch), the input shape and the FLOPs;
3. `unetc init-weights SPEC --seed S`, `unetc export SPEC --to onnx --weights W` (for ONNX Runtime)
   and a seeded agreement input of the benchmark's batch (.npy);
4. the machine's f32 peak: cores x 2 FMA units x SIMD lanes (from /proc/cpuinfo) x 2 x clock, the
   clock measured by a dependent-add loop on every core at once (gcc), else /proc/cpuinfo's MHz;
5. the reference: `unetc run` (f32) on the agreement input;
6. R rounds; round r runs every system once, in an order rotated by r, each in a fresh process
   (after waiting for a quiet machine): W warm-up passes, N timed passes of a batch of B, peak
   resident memory (VmHWM); in round 1 each Python system also saves its output on the agreement
   input (after its timed passes) for the max relative difference to unetc's;
7. prints one markdown table and writes bench/results/<date>-cpu-compare-<stem>-b<B>.{md,json,txt}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_UNETC = REPO / "target" / "release" / "unetc"

# Every system the script knows, in the table's order. `--systems` picks among them.
SYSTEMS = {
    "unetc": "unetc",
    "torch-eager": "PyTorch eager",
    "torch-compile": "torch.compile (inductor)",
    "ort": "ONNX Runtime",
    "unetc-bf16": "unetc bf16",
    "torch-eager-bf16": "PyTorch eager bf16",
    "torch-compile-bf16": "torch.compile bf16",
}
F32_DEFAULT = ["unetc", "torch-eager", "torch-compile", "ort"]
BF16_DEFAULT = ["unetc-bf16", "torch-eager-bf16"]
# Largest max|a - b| / max|b| against unetc's f32 output before a row is flagged HIGH.
TOLERANCE = {"f32": 1e-4, "bf16": 5e-2}


def precision_of(system: str) -> str:
    return "bf16" if system.endswith("-bf16") else "f32"


# --------------------------------------------------------------------------------------------
# The timing child of the Python systems: `compare_cpu.py --child JSON`; prints one JSON object.
# --------------------------------------------------------------------------------------------


def bench_input(shape: list[int]) -> np.ndarray:
    """The input `unetc bench` uses: element i (C order) is ((i * 2654435761) % 1000) / 1000."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    return (((i * np.uint64(2654435761)) % np.uint64(1000)).astype(np.float32) / 1000.0).reshape(
        shape
    )


def peak_rss_self() -> int:
    """VmHWM of this process in bytes (what `unetc bench` reports for itself)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def child_main(args: dict) -> int:
    """One system, one process: build, warm up, time, optionally save the agreement output."""
    t_start = time.perf_counter()
    system, threads = args["system"], int(args["threads"])
    info: dict = {}
    if system == "ort":
        import onnxruntime as ort

        rss_import = rss_now()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        sess = ort.InferenceSession(args["onnx"], so, providers=["CPUExecutionProvider"])
        info["session_s"] = time.perf_counter() - t0
        rss_built = rss_now()
        in_name = sess.get_inputs()[0].name
        info["versions"] = {"onnxruntime": ort.__version__}
        info["providers"] = sess.get_providers()
        info["threads"] = threads

        def forward(x: np.ndarray):
            return sess.run(None, {in_name: x})[0]

        def to_numpy(y) -> np.ndarray:
            return np.asarray(y, dtype=np.float32)

        def timed_passes():
            return run_passes(forward, to_input=lambda a: a)

    else:
        import torch

        sys.path.insert(0, str(HERE))
        from pytorch_unet import build_model, load_unetc_weights

        torch.set_num_threads(threads)
        rss_import = rss_now()
        dtype = torch.bfloat16 if system.endswith("-bf16") else torch.float32
        desc = json.loads(Path(args["desc"]).read_text())
        model = build_model(desc, load_unetc_weights(args["weights"]), dtype=dtype)
        if system.startswith("torch-compile"):
            # Static shapes: the batch is fixed for the run; compiled on the first call.
            model = torch.compile(model, backend="inductor", dynamic=False)
        rss_built = rss_now()
        info["versions"] = {"torch": torch.__version__}
        info["threads"] = torch.get_num_threads()
        info["interop_threads"] = torch.get_num_interop_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["mkldnn"] = bool(torch.backends.mkldnn.is_available())

        def to_numpy(y) -> np.ndarray:
            return y.float().numpy()

        def timed_passes():
            with torch.inference_mode():
                return run_passes(model, to_input=torch.from_numpy)

    def run_passes(fn, to_input):
        x = to_input(bench_input([args["batch"], *args["input_shape"]]))
        first = []
        for _ in range(args["warmup"]):
            t0 = time.perf_counter()
            fn(x)
            first.append(time.perf_counter() - t0)
        times = []
        for _ in range(args["iterations"]):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
        agree_s = None
        if args.get("agree_input"):
            t0 = time.perf_counter()
            y = fn(to_input(np.load(args["agree_input"]).astype(np.float32)))
            np.save(args["agree_output"], to_numpy(y))
            agree_s = time.perf_counter() - t0
        return first, times, agree_s

    warmup_s, times, agree_s = timed_passes()
    info.update({
        "times_ms": times,
        "median_ms": statistics.median(times) if times else None,
        "min_ms": min(times) if times else None,
        "max_ms": max(times) if times else None,
        # The first call: for torch.compile it includes the compilation (not timed).
        "first_call_s": warmup_s[0] if warmup_s else None,
        "warmup_s": warmup_s,
        "agreement_pass_s": agree_s,
        "peak_rss_bytes": peak_rss_self(),
        "rss_after_import_bytes": rss_import,
        "rss_after_build_bytes": rss_built,
        "process_s": time.perf_counter() - t_start,
    })
    if system.startswith("torch"):
        import torch

        info["parallel_info"] = torch.__config__.parallel_info()
    print(json.dumps(info))
    return 0


# --------------------------------------------------------------------------------------------
# The parent.
# --------------------------------------------------------------------------------------------

# Runs a command and prints the peak RSS (KiB) the kernel recorded for it: RUSAGE_CHILDREN of a
# process whose only child is that command.
# Also prints the CPU time (user + system, seconds) the command used.
RSS_WRAPPER = (
    "import resource, subprocess, sys; "
    "r = subprocess.run(sys.argv[1:]); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print('RSS_KIB', u.ru_maxrss, 'CPU_S', u.ru_utime + u.ru_stime, file=sys.stderr); "
    "sys.exit(r.returncode)"
)


def cpu_busy_s() -> float:
    """Core-seconds the whole machine has been busy (not idle/iowait) since boot (/proc/stat)."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_other_cores: float, timeout_s: float, log) -> float:
    """Wait until other processes use less than `max_other_cores` (sampled over 5 s).

    Returns the last sample. Other sessions share this machine; a benchmark taken while they
    compile or test is not a measurement of unetc or PyTorch.
    """
    deadline = time.time() + timeout_s
    waited = False
    while True:
        b0, t0 = cpu_busy_s(), time.time()
        time.sleep(5)
        load = (cpu_busy_s() - b0) / (time.time() - t0)
        if load <= max_other_cores:
            if waited:
                print(f"machine quiet again ({load:.2f} cores busy)", file=sys.stderr)
            return load
        if time.time() > deadline:
            log(f"# warning: other processes still use {load:.2f} cores after waiting "
                f"{timeout_s:.0f} s; timing anyway")
            return load
        if not waited:
            print(f"other processes use {load:.2f} cores; waiting for a quiet machine",
                  file=sys.stderr)
            waited = True
        time.sleep(10)


def timed_child(cmd: list, env: dict, max_other_cores: float, quiet_timeout: float, log):
    """Run `cmd` (through RSS_WRAPPER) on a quiet machine; returns (process, ru_maxrss bytes,
    its CPU seconds, wall seconds, core-seconds other processes used meanwhile, start time)."""
    wait_quiet(max_other_cores, quiet_timeout, log)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    b0, t0 = cpu_busy_s(), time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *map(str, cmd)],
                       capture_output=True, text=True, env=env)
    wall, busy = time.perf_counter() - t0, cpu_busy_s() - b0
    tail = p.stderr.split("RSS_KIB")[-1].split()
    try:
        rss, cpu = int(tail[0]) * 1024, float(tail[2])
    except (IndexError, ValueError):
        rss, cpu = None, 0.0
    return p, rss, cpu, wall, max(busy - cpu, 0.0), started


class Log:
    """Everything printed goes to stdout and into the .txt result."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, *parts):
        s = " ".join(str(p) for p in parts)
        print(s, flush=True)
        self.lines.extend(s.split("\n"))


def quote(cmd) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def run(cmd, log=None, check=True, **kw) -> subprocess.CompletedProcess:
    if log is not None:
        log("$ " + quote(cmd))
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise SystemExit(
            f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stdout}\n{p.stderr}"
        )
    return p


def build_unetc(unetc: Path, wait_s: float, skip_build: bool) -> None:
    deadline = time.time() + wait_s
    while True:
        ok = True
        if not skip_build:
            p = subprocess.run(
                ["cargo", "build", "--release", "--quiet"], cwd=REPO, capture_output=True, text=True
            )
            ok = p.returncode == 0
            if not ok:
                why = (p.stderr.strip().splitlines() or ["?"])[0]
                print(f"cargo build --release failed ({why}); retrying", file=sys.stderr)
        if ok and unetc.exists():
            h = subprocess.run([unetc, "bench", "--help"], capture_output=True, text=True)
            if h.returncode == 0:
                return
            if skip_build:
                raise SystemExit(f"`{unetc} bench --help` failed ({h.returncode}): "
                                 f"{first_line(h.stderr)}")
            print(f"{unetc} has no `bench` yet; waiting", file=sys.stderr)
        elif skip_build and not unetc.exists():
            raise SystemExit(f"{unetc} does not exist (build it, or name another with --unetc)")
        if time.time() > deadline:
            raise SystemExit("gave up waiting for a release build of unetc with `bench`")
        time.sleep(30)


def cpuinfo() -> dict:
    """The first processor's model, flags and "cpu MHz" from /proc/cpuinfo."""
    out = {"model": "?", "flags": set(), "mhz": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "model name" and out["model"] == "?":
            out["model"] = val
        elif key == "flags" and not out["flags"]:
            out["flags"] = set(val.split())
        elif key == "cpu MHz" and out["mhz"] is None:
            out["mhz"] = float(val)
    return out


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs among the CPUs this process may run on: SMT
    siblings share a core's FMA units. None when /proc/cpuinfo does not say."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        allowed = os.sched_getaffinity(0)
    except (OSError, AttributeError):
        return None
    cores = set()
    for block in text.strip().split("\n\n"):
        f = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines())}
        if "core id" not in f or "processor" not in f:
            return None
        if int(f["processor"]) in allowed:
            cores.add((f.get("physical id", "0"), f["core id"]))
    return len(cores) or None


def machine() -> dict:
    info = cpuinfo()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "physical_cores": physical_cores(),
        "cpu_model": info["model"],
        "cpuinfo_mhz": info["mhz"],
        "simd_flags": sorted(f for f in info["flags"] if f.startswith(("avx", "fma", "amx"))),
        "mem_total_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# A chain of dependent integer adds: each needs the previous one's result, one cycle apiece on
# every x86 core of the last decade, so cycles = adds and the clock = adds / seconds. The loop
# counter is a separate chain that runs alongside.
CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
static double secs(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
int main(void) {
    const unsigned long iters = 100000000UL;  /* x 20 adds */
    double best_cpu = 1e30, best_wall = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        unsigned long x = 0;
        double w0 = secs(CLOCK_MONOTONIC), c0 = secs(CLOCK_THREAD_CPUTIME_ID);
        for (unsigned long i = 0; i < iters; i++) {
            __asm__ volatile(
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                : "+r"(x));
        }
        double c = secs(CLOCK_THREAD_CPUTIME_ID) - c0, w = secs(CLOCK_MONOTONIC) - w0;
        if (c < best_cpu) best_cpu = c;
        if (w < best_wall) best_wall = w;
        if (x != iters * 20) return 1;
    }
    /* MHz over the CPU time this thread was scheduled, and over the wall-clock time */
    printf("%.1f %.1f\n", iters * 20.0 / best_cpu / 1e6, iters * 20.0 / best_wall / 1e6);
    return 0;
}
"""


def measure_clock_mhz(work: Path, copies: int) -> tuple[list[float] | None, str]:
    """The clock of `copies` cores busy at once (MHz each), or None and why not."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None, f"the add loop is x86 assembly; this is {platform.machine()}"
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None, "no C compiler (gcc/cc) to build the add loop"
    src, exe = work / "clock.c", work / "clock"
    src.write_text(CLOCK_C)
    p = subprocess.run([cc, "-O1", "-o", exe, src], capture_output=True, text=True)
    if p.returncode != 0:
        return None, f"{cc} failed: {p.stderr.strip()[:200]}"
    procs = [subprocess.Popen([exe], stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    outs = [pr.communicate()[0] for pr in procs]
    if any(pr.returncode != 0 for pr in procs):
        return None, "the add loop failed"
    # Per core: (MHz over its own CPU time, MHz over wall-clock time).
    return [tuple(float(v) for v in o.split()) for o in outs], "measured"


def peak_gflops(m: dict, clock_mhz: float) -> dict:
    """cores x FMA units x f32 lanes x 2 x clock."""
    flags = set(m["simd_flags"])
    if "avx512f" in flags:
        lanes, isa = 16, "avx512f"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "avx2+fma"
    else:
        lanes, isa = 4, "sse (no FMA flag: counted as if it had one)"
    fma_units = 2
    cores = m.get("physical_cores") or m["nproc"]
    return {
        "cores": cores, "fma_units": fma_units, "lanes": lanes, "isa": isa,
        "clock_mhz": clock_mhz,
        "gflops": cores * fma_units * lanes * 2 * clock_mhz / 1e3,
    }


def git_info(where: Path) -> dict:
    """HEAD of the git work tree holding `where` (None outside one), and whether it is dirty."""
    def g(*a):
        p = subprocess.run(["git", "-C", str(where), *a], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    status = g("status", "--porcelain", "--untracked-files=no")
    return {"top": g("rev-parse", "--show-toplevel"), "commit": g("rev-parse", "HEAD"),
            "dirty": bool(status) if status is not None else None}


def ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MiB"


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    # Python tracebacks end with the exception; unetc's messages start with `error:`.
    for ln in lines:
        if ln.startswith("error:"):
            return ln
    return lines[-1] if lines else "?"


def rel_diff(y: np.ndarray, ref: np.ndarray) -> float:
    if y.shape != ref.shape and y.size == ref.size:
        y = y.reshape(ref.shape)
    if y.shape != ref.shape:
        raise ValueError(f"output shape {y.shape}, unetc's {ref.shape}")
    d = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    return float(d.max() / max(np.abs(ref).max(), np.finfo(np.float32).tiny))


def results_base(out_dir: Path, date: str, stem: str, batch: int) -> Path:
    """bench/results/<date>-cpu-compare-<stem>-b<B>, then -2, -3 ... for later runs that day."""
    base = f"{date}-cpu-compare-{stem}-b{batch}"
    k = 1
    while True:
        name = base if k == 1 else f"{base}-{k}"
        if not any((out_dir / f"{name}.{e}").exists() for e in ("md", "json", "txt")):
            return out_dir / name
        k += 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(json.loads(argv[1]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3,
                    help="every system runs once per round, each round in a rotated order")
    ap.add_argument("--iterations", type=int, default=5, help="timed passes per process")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes per process")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of every system (default: nproc): RAYON_NUM_THREADS for unetc, "
                         "torch.set_num_threads, ORT's intra_op_num_threads")
    ap.add_argument("--bf16", action="store_true",
                    help="also " + ", ".join(BF16_DEFAULT) + " (f32 systems stay)")
    ap.add_argument("--systems", default=None,
                    help="comma-separated, of " + ", ".join(SYSTEMS) + " (default: "
                         + ", ".join(F32_DEFAULT) + ", plus the bf16 ones with --bf16)")
    ap.add_argument("--seed", type=int, default=1, help="weights and agreement input")
    ap.add_argument("--perturb", action="store_true",
                    help="self-test: PyTorch and ONNX Runtime get the first Conv2D kernel x 1.5, "
                         "so every row but unetc's must be flagged HIGH")
    ap.add_argument("--unetc", default=str(DEFAULT_UNETC),
                    help="the unetc binary (default: this repository's target/release/unetc)")
    ap.add_argument("--work-dir", default=None,
                    help="weights, ONNX model, inputs, outputs (default /tmp/unetc-bench-<stem>)")
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--no-build", action="store_true", help="use the --unetc binary as it is")
    ap.add_argument("--wait", type=float, default=3600,
                    help="seconds to keep retrying the build / waiting for `unetc bench`")
    ap.add_argument("--no-save", action="store_true", help="print only")
    ap.add_argument("--max-other-cores", type=float, default=0.1,
                    help="wait before each process until other processes use less CPU than this")
    ap.add_argument("--quiet-timeout", type=float, default=3600,
                    help="seconds to wait for a quiet machine before timing anyway")
    a = ap.parse_args(argv)
    if a.batch < 1 or a.rounds < 1 or a.iterations < 1 or a.warmup < 0 or a.threads < 0:
        ap.error("--batch, --rounds and --iterations must be at least 1, --warmup and "
                 "--threads at least 0")
    if a.systems:
        systems = [s.strip() for s in a.systems.split(",") if s.strip()]
        unknown = [s for s in systems if s not in SYSTEMS]
        if unknown:
            ap.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
        if "unetc" not in systems:
            systems.insert(0, "unetc")  # the reference of every comparison
    else:
        systems = F32_DEFAULT + (BF16_DEFAULT if a.bf16 else [])
    systems = [s for s in SYSTEMS if s in systems]  # table order, no duplicates

    log = Log()
    now = dt.datetime.now().astimezone()
    command = "python3 bench/compare_cpu.py " + " ".join(shlex.quote(x) for x in argv)
    spec = Path(a.spec)
    stem = spec.stem
    work = Path(a.work_dir or f"/tmp/unetc-bench-{stem}")
    work.mkdir(parents=True, exist_ok=True)
    m = machine()
    threads = a.threads or m["nproc"]

    unetc_src = Path(a.unetc)
    build_unetc(unetc_src, a.wait, a.no_build)
    # The binary's commit is taken as HEAD of the work tree it sits in (it may predate HEAD:
    # the sha256 identifies it exactly); the scripts' commit is this repository's.
    git = git_info(unetc_src.resolve().parent)
    git_bench = git_info(HERE)
    # Others may rebuild the binary while this runs: every step uses one copy of it.
    unetc = work / "unetc"
    shutil.copy2(unetc_src, unetc)
    unetc_sha256 = hashlib.sha256(unetc.read_bytes()).hexdigest()
    unetc_version = run([unetc, "--version"]).stdout.strip()

    # The network as unetc sees it.
    desc_p = run([unetc, "check", spec, "--format", "json", "--color", "never"])
    desc = json.loads(desc_p.stdout)
    desc_file = work / "desc.json"
    desc_file.write_text(desc_p.stdout)
    shape_in = next(l["output_shape"] for l in desc["layers"] if l["name"] == desc["inputs"][0])
    input_shape = [int(d) for d in shape_in[1:]]
    flops = int(desc["totals"]["flops"])

    log(f"# {command}")
    log(f"# {now.isoformat(timespec='seconds')}  {m['cpu_model']}, nproc {m['nproc']}, "
        f"SIMD {' '.join(m['simd_flags']) or '-'}; {unetc_version} @ "
        f"{(git['commit'] or '?')[:12]}{' (dirty tree)' if git['dirty'] else ''} "
        f"(HEAD of {git['top'] or '?'}); bench scripts @ {(git_bench['commit'] or '?')[:12]}"
        f"{' (dirty tree)' if git_bench['dirty'] else ''}")
    log(f"# unetc binary: {unetc}, a copy of {unetc_src} (sha256 {unetc_sha256[:16]})")
    log(f"# {spec}: input {'x'.join(map(str, input_shape))}, batch {a.batch}, "
        f"{desc['totals']['params']:,} parameters, {flops / 1e9:.3f} GFLOP per image")

    # Weights, the ONNX model and the agreement input.
    weights = work / f"{stem}.seed{a.seed}.safetensors"
    run([unetc, "init-weights", spec, "-o", weights, "--seed", a.seed, "--force"], log)
    other_weights, perturbed = weights, None  # what PyTorch and ONNX Runtime get
    if a.perturb:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(weights))
        perturbed = next((f"{l['name']}/kernel" for l in desc["layers"]
                          if l["class"] == "Conv2D" and f"{l['name']}/kernel" in tensors), None)
        if perturbed is None:
            raise SystemExit("--perturb: the spec has no Conv2D kernel to perturb")
        tensors[perturbed] = tensors[perturbed] * np.float32(1.5)
        other_weights = work / f"{stem}.seed{a.seed}.perturbed.safetensors"
        save_file(tensors, str(other_weights))
        log(f"# --perturb: PyTorch and ONNX Runtime get {perturbed} x 1.5 ({other_weights}); "
            "their rows must be flagged HIGH")
    onnx_file = work / f"{stem}.seed{a.seed}{'.perturbed' if a.perturb else ''}.onnx"
    onnx_error = None
    if "ort" in systems:
        p = run([unetc, "export", spec, "--to", "onnx", "--weights", other_weights, "-o", onnx_file,
                 "--force"], log, check=False)
        if p.returncode != 0:
            onnx_error = f"unetc export --to onnx failed: {first_line(p.stderr)}"
            log(f"# {onnx_error}")
    x = np.random.default_rng(a.seed).random((a.batch, *input_shape), dtype=np.float32)
    x_file = work / "agree_input.npy"
    np.save(x_file, x)
    log(f"# agreement input {x_file}: numpy default_rng({a.seed}).random("
        f"{(a.batch, *input_shape)}, float32)")

    # The machine's f32 peak.
    wait_quiet(a.max_other_cores, a.quiet_timeout, log)
    clocks, clock_how = measure_clock_mhz(work, m["nproc"])
    if clocks:
        # Adds per second of the loop's own CPU time: other processes that take the core away
        # lengthen the wall-clock time, not this (a hypervisor's steal time is not seen).
        clock_mhz = statistics.median(c for c, _ in clocks)
        clock_src = (f"measured: a dependent-add loop on all {m['nproc']} CPUs at once, "
                     f"{', '.join(f'{c:.0f}' for c, _ in clocks)} MHz over its CPU time "
                     f"(median taken; over wall-clock time "
                     f"{', '.join(f'{w:.0f}' for _, w in clocks)}); "
                     f"/proc/cpuinfo says {m['cpuinfo_mhz']} MHz")
    else:
        clock_mhz = m["cpuinfo_mhz"] or 0.0
        clock_src = f"/proc/cpuinfo \"cpu MHz\" ({clock_how})"
    peak = peak_gflops(m, clock_mhz)
    log(f"# f32 peak {peak['gflops']:.1f} GFLOP/s = {peak['cores']} cores x {peak['fma_units']} "
        f"FMA units (assumed) x {peak['lanes']} lanes ({peak['isa']}) x 2 x "
        f"{peak['clock_mhz']:.0f} MHz; clock {clock_src}")

    # The reference: unetc's f32 output.
    ref_file = work / "out_unetc.npy"
    run([unetc, "run", spec, "--weights", weights, "--input", x_file, "--output", ref_file,
         "--batch", a.batch, "--device", "cpu", "--force"], log)
    ref = np.load(ref_file)

    # Per system: its rows of measurements, or why it has none.
    state = {s: {"runs": [], "error": None, "max_rel_diff": None, "unsupported": False}
             for s in systems}
    state["unetc"]["max_rel_diff"] = 0.0
    if onnx_error and "ort" in state:
        state["ort"]["error"] = onnx_error
    if "unetc-bf16" in state:
        out = work / "out_unetc_bf16.npy"
        p = run([unetc, "run", spec, "--weights", weights, "--input", x_file, "--output", out,
                 "--batch", a.batch, "--device", "cpu", "--precision", "bf16", "--force"], log,
                check=False)
        if p.returncode == 0:
            state["unetc-bf16"]["max_rel_diff"] = rel_diff(np.load(out), ref)
        elif p.returncode == 2 and "precision" in p.stderr:
            state["unetc-bf16"]["unsupported"] = True
            why = first_line(p.stderr).removeprefix("error: ").removeprefix(f"{x_file}: ")
            state["unetc-bf16"]["error"] = f"not supported (unetc: {why})"
        else:
            state["unetc-bf16"]["error"] = f"unetc run failed ({p.returncode}): " \
                                           f"{first_line(p.stderr)}"

    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               TORCHINDUCTOR_CACHE_DIR=str(work / "inductor-cache"))
    # torch.compile's first call in round 1 compiles from scratch (an empty cache), later rounds
    # find inductor's cache warm; both times are reported.
    shutil.rmtree(work / "inductor-cache", ignore_errors=True)

    def command_of(system: str, first_round: bool) -> list:
        if system.startswith("unetc"):
            return [unetc, "bench", spec, "--device", "cpu", "--batch", a.batch,
                    "--iterations", a.iterations, "--warmup", a.warmup, "--weights", weights,
                    "--precision", precision_of(system), "--format", "json"]
        child = {
            "system": system, "desc": str(desc_file), "weights": str(other_weights),
            "onnx": str(onnx_file), "batch": a.batch, "input_shape": input_shape,
            "warmup": a.warmup, "iterations": a.iterations, "threads": threads,
        }
        if first_round:
            child["agree_input"] = str(x_file)
            child["agree_output"] = str(work / f"out_{system}.npy")
        return [sys.executable, __file__, "--child", json.dumps(child)]

    for r in range(a.rounds):
        k = r % len(systems)
        order = systems[k:] + systems[:k]
        log(f"\n# round {r + 1}/{a.rounds}: {', '.join(order)}")
        for s in order:
            st = state[s]
            if st["error"]:
                continue
            cmd = command_of(s, r == 0)
            log("$ " + (quote(cmd) if s.startswith("unetc") else
                        f"python3 bench/compare_cpu.py --child '{cmd[3]}'"))
            p, rss_k, cpu_s, wall, other, at = timed_child(cmd, env, a.max_other_cores,
                                                           a.quiet_timeout, log)
            if p.returncode != 0:
                st["error"] = f"exit {p.returncode} in round {r + 1}: " \
                              f"{first_line(p.stderr.split('RSS_KIB')[0])}"
                log(f"# {s}: {st['error']}")
                (work / f"{s}.round{r + 1}.stderr").write_text(p.stderr)
                continue
            try:  # unetc prints one indented object; the Python child one line after any logs
                res = json.loads(p.stdout) if s.startswith("unetc") else \
                    json.loads(p.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                st["error"] = f"no JSON from the process in round {r + 1}"
                log(f"# {s}: {st['error']}")
                continue
            res.update({"round": r + 1, "started": at, "ru_maxrss_bytes": rss_k,
                        "process_wall_s": wall, "process_cpu_s": cpu_s,
                        "other_processes_cpu_s": other})
            st["runs"].append(res)
            log(f"#   {s}: median {ms(res['median_ms'])} ms, min {ms(res['min_ms'])} ms, "
                f"peak RSS {mib(res.get('peak_rss_bytes'))}, other processes "
                f"{other / wall:.2f} cores")
            if r == 0 and not s.startswith("unetc"):
                try:
                    st["max_rel_diff"] = rel_diff(np.load(work / f"out_{s}.npy"), ref)
                except (OSError, ValueError) as e:
                    st["error"] = f"agreement output: {e}"

    # Statistics. `unetc bench` reports a median/min/max per process, not every pass; when any
    # system lacks its passes, every system's median is the median of its per-process medians.
    have_all = all("times_ms" in run_ for st in state.values() for run_ in st["runs"])
    stat_kind = ("the median of all timed passes" if have_all else
                 "the median of the per-process medians (unetc bench reports no single passes)")
    rows = []
    for s in systems:
        st = state[s]
        runs = st["runs"]
        row = {"system": s, "label": SYSTEMS[s], "precision": precision_of(s), "batch": a.batch,
               "error": st["error"], "not_supported": st["unsupported"],
               "max_rel_diff": st["max_rel_diff"], "runs": runs}
        if runs:
            if have_all:
                times = [t for run_ in runs for t in run_["times_ms"]]
                med = statistics.median(times)
            else:
                med = statistics.median(run_["median_ms"] for run_ in runs)
            lo = min(run_["min_ms"] for run_ in runs)
            hi = max(run_["max_ms"] for run_ in runs)
            rss = [run_.get("peak_rss_bytes") for run_ in runs if run_.get("peak_rss_bytes")]
            g = flops * a.batch / (med / 1e3) / 1e9
            row.update({
                "threads": runs[0].get("threads"),
                "processes": len(runs),
                "timed_passes": len(runs) * a.iterations,
                "median_ms": med, "min_ms": lo, "max_ms": hi,
                "median_of_process_medians_ms": statistics.median(x["median_ms"] for x in runs),
                "images_per_s": a.batch / (med / 1e3),
                "gflops_per_s": g,
                "percent_of_peak": 100 * g / peak["gflops"] if peak["gflops"] else None,
                "peak_rss_bytes": max(rss) if rss else None,
                "peak_rss_each_bytes": rss,
                "other_processes_cores": max(x["other_processes_cpu_s"] / x["process_wall_s"]
                                             for x in runs),
            })
            if s.startswith("torch-compile"):
                row["compile_first_call_s"] = [x["first_call_s"] for x in runs]
            if s == "ort":
                row["session_create_s"] = [x.get("session_s") for x in runs]
        rows.append(row)

    by = {r_["system"]: r_ for r_ in rows}

    def vs_unetc(row):
        """unetc's speed over this row's: above 1, unetc is faster (same precision only)."""
        u = by.get("unetc" if row["precision"] == "f32" else "unetc-bf16")
        if not u or u.get("median_ms") is None or row.get("median_ms") is None:
            return None
        return row["median_ms"] / u["median_ms"]

    for row in rows:
        row["unetc_speedup"] = vs_unetc(row)

    # The table.
    head = ["system", "prec", "thr", "median ms", "min ms", "img/s", "GFLOP/s", "% of peak",
            "peak RSS", "max rel diff vs unetc", "unetc speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for row in rows:
        if row.get("median_ms") is None:
            why = row["error"] or "no measurement"
            lines.append(f"| {row['label']} | {row['precision']} | " + " | ".join(
                ["-"] * (len(head) - 3)) + f" | {why} |")
            continue
        d = row["max_rel_diff"]
        tol = TOLERANCE[row["precision"]]
        diff = "-" if d is None else f"{d:.1e}" + (" HIGH" if d > tol else "")
        sp = row["unetc_speedup"]
        pct = row["percent_of_peak"]
        lines.append("| " + " | ".join([
            row["label"], row["precision"], str(row["threads"]), ms(row["median_ms"]),
            ms(row["min_ms"]), f"{row['images_per_s']:.2f}", f"{row['gflops_per_s']:.1f}",
            "-" if pct is None else f"{pct:.1f}%", mib(row["peak_rss_bytes"]), diff,
            "-" if sp is None else f"{sp:.2f}x"]) + " |")
    table = "\n".join(lines)

    log("")
    log(f"{spec} {'x'.join(map(str, input_shape))}, batch {a.batch}, CPU, {threads} threads: "
        f"{a.rounds} rounds x ({a.warmup} warm-up + {a.iterations} timed passes) per system, "
        f"each process fresh, rounds interleaved")
    log("")
    log(table)
    log("")
    foot = [
        f"median: {stat_kind}; min: the fastest timed pass of any round.",
        f"% of peak: GFLOP/s ({flops / 1e9:.3f} GFLOP per image, `unetc check` totals.flops) over "
        f"{peak['gflops']:.1f} GFLOP/s = {peak['cores']} cores x {peak['fma_units']} FMA units "
        f"(assumed) x {peak['lanes']} f32 lanes ({peak['isa']}) x 2 x {peak['clock_mhz']:.0f} MHz "
        f"({clock_src}). The FLOPs are a direct convolution's: unetc computes 3x3 stride-1 "
        "convolutions by Winograd F(2x2,3x3), 2.25x fewer multiplies, so its row can pass 100%.",
        *([f"with {threads} threads on {peak['cores']} cores, {threads}/{peak['cores']} of the "
           "peak is within reach."] if threads < peak["cores"] else []),
        "peak RSS: the largest VmHWM of the system's processes (start-up, weights, warm-up and "
        "timed passes; torch.compile's includes compiling).",
        f"max rel diff: max|y - y_unetc| / max|y_unetc| on the agreement input (batch {a.batch}); "
        f"HIGH above {TOLERANCE['f32']:g} (f32) or {TOLERANCE['bf16']:g} (bf16, against unetc's "
        "f32 output).",
        "unetc speed-up: this row's median / unetc's at the same precision (above 1: unetc is "
        "faster).",
    ]
    for row in rows:
        if row.get("compile_first_call_s"):
            c = row["compile_first_call_s"]
            later = f", later rounds (inductor cache warm) {statistics.median(c[1:]):.1f} s" \
                if len(c) > 1 else ""
            foot.append(f"{row['label']}: first call (compile + one pass, not timed) {c[0]:.1f} s "
                        f"in round 1 (empty cache){later}.")
        if row["runs"] and "rss_after_import_bytes" in row["runs"][0]:
            r0 = row["runs"][0]
            foot.append(f"{row['label']}: RSS {mib(r0['rss_after_import_bytes'])} after its "
                        f"import, {mib(r0['rss_after_build_bytes'])} with the model built "
                        "(round 1).")
        if row.get("session_create_s"):
            foot.append(f"ONNX Runtime: session creation (graph optimisation, not timed) "
                        f"{statistics.median(row['session_create_s']):.2f} s (median).")
    notes = []
    for row in rows:
        if row.get("other_processes_cores") is not None and \
                row["other_processes_cores"] > a.max_other_cores:
            notes.append(f"other processes were busy (up to {row['other_processes_cores']:.2f} "
                         f"cores) during a {row['label']} process: its figures are not clean")
        if row["error"] and row.get("median_ms") is not None:
            notes.append(f"{row['label']}: {row['error']}; its figures are from the processes "
                         "before that")
        if row.get("threads") is not None and row["threads"] != threads:
            notes.append(f"{row['label']} ran {row['threads']} threads, not {threads}")
    if perturbed:
        foot.insert(0, f"SELF-TEST (--perturb): PyTorch and ONNX Runtime ran with {perturbed} "
                       "x 1.5; their figures are not a comparison.")
    for f in foot:
        log(f)
    for n in notes:
        log("note: " + n)

    versions = {
        "unetc": unetc_version, "unetc_git_commit": git["commit"], "unetc_git_dirty": git["dirty"],
        "unetc_git_work_tree": git["top"], "bench_git_commit": git_bench["commit"],
        "bench_git_dirty": git_bench["dirty"],
        "unetc_binary": str(unetc_src), "unetc_binary_sha256": unetc_sha256,
        "numpy": np.__version__, "python": platform.python_version(),
    }
    for row in rows:
        for run_ in row["runs"]:
            versions.update(run_.get("versions", {}))
    result = {
        "date": now.isoformat(timespec="seconds"),
        "command": command,
        "spec": str(spec),
        "input_shape": input_shape,
        "batch": a.batch,
        "rounds": a.rounds,
        "perturbed": perturbed,
        "warmup": a.warmup,
        "iterations": a.iterations,
        "threads": threads,
        "flops_per_image": flops,
        "params": desc["totals"]["params"],
        "machine": m,
        "peak": peak,
        "clock": {"mhz_each_core": clocks, "source": clock_src},
        "statistic": stat_kind,
        "versions": versions,
        "rows": rows,
        "notes": notes,
        "table_markdown": table,
    }
    if not a.no_save:
        base = results_base(Path(a.results), now.date().isoformat(), stem, a.batch)
        base.parent.mkdir(parents=True, exist_ok=True)
        md = [f"# {spec}, batch {a.batch}, CPU", "", f"`{command}`", "",
              f"{now.isoformat(timespec='seconds')}; {m['cpu_model']}, nproc {m['nproc']}; "
              f"{unetc_version} @ {(git['commit'] or '?')[:12]} (HEAD of {git['top']}); "
              f"bench scripts @ {(git_bench['commit'] or '?')[:12]}; "
              + ", ".join(f"{k} {v}" for k, v in versions.items()
                          if k in ("torch", "onnxruntime")), "", table, ""]
        md += [f"- {f}" for f in foot] + [f"- note: {n}" for n in notes]
        Path(f"{base}.md").write_text("\n".join(md) + "\n")
        Path(f"{base}.json").write_text(json.dumps(result, indent=2) + "\n")
        Path(f"{base}.txt").write_text("\n".join(log.lines) + "\n")
        print(f"\nwrote {base}.md, .json and .txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
