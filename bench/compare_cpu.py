#!/usr/bin/env python3
"""unetc beside PyTorch on the CPU: the same network, the same weights, the same run.

    python3 bench/compare_cpu.py specs/original.unet [--batch 1] [--iterations 5]

What it does (bench/README.md has the protocol and why):

1. `cargo build --release` (retried while the tree does not build), and waits until
   `target/release/unetc bench` exists;
2. `unetc check SPEC --format json`: the layer graph (for PyTorch), the input shape and the FLOPs;
3. `unetc init-weights SPEC --seed 1` and a seeded input image (.npy, the spec's input shape);
4. agreement: `unetc run` and the PyTorch translation (bench/pytorch_unet.py) on that image, max
   relative difference max|a - b| / max|b| (the measure of tests/golden.rs);
5. timing, each system in its own fresh process, one after the other:
   `unetc bench SPEC --device cpu --batch B --iterations N --warmup 1 --weights W --format json`,
   then a Python child that builds the PyTorch model with the same weights and runs the same
   protocol (1 warm-up, N timed forward passes of a batch of B, median / min / max);
   peak resident memory is each process's own high-water mark (VmHWM, read at its end; the
   kernel's ru_maxrss seen by a wrapper is kept in the JSON as a cross-check: it also counts the
   wrapper's pre-exec image, about 10 MiB);
6. prints one table and writes bench/results/<date>-cpu-<spec stem>.json (the rows, the machine,
   the command, the versions) and .txt (the command and what it printed).
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
UNETC = REPO / "target" / "release" / "unetc"

# --------------------------------------------------------------------------------------------
# The PyTorch timing child: `compare_cpu.py --torch-child JSON_ARGS`; prints one JSON object.
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


def torch_child(args: dict) -> int:
    t_start = time.perf_counter()
    import torch

    sys.path.insert(0, str(HERE))
    from pytorch_unet import build_model, load_unetc_weights

    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    rss_import = rss_now()
    desc = json.loads(Path(args["desc"]).read_text())
    model = build_model(desc, load_unetc_weights(args["weights"]))
    rss_built = rss_now()
    x = torch.from_numpy(bench_input([args["batch"], *args["input_shape"]]))
    times = []
    with torch.inference_mode():
        for _ in range(args["warmup"]):
            model(x)
        for _ in range(args["iterations"]):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "times_ms": times,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "peak_rss_bytes": peak_rss_self(),
        "ru_maxrss_bytes": ru.ru_maxrss * 1024,
        "rss_after_import_bytes": rss_import,
        "rss_after_build_bytes": rss_built,
        "torch_version": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "parallel_info": torch.__config__.parallel_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "process_s": time.perf_counter() - t_start,
    }
    print(json.dumps(out))
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


def timed_child(cmd: list, max_other_cores: float, quiet_timeout: float, log):
    """Run `cmd` (through RSS_WRAPPER) on a quiet machine; returns (process, ru_maxrss bytes,
    its CPU seconds, wall seconds, core-seconds other processes used meanwhile, start time)."""
    wait_quiet(max_other_cores, quiet_timeout, log)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    b0, t0 = cpu_busy_s(), time.perf_counter()
    p = run([sys.executable, "-c", RSS_WRAPPER, *map(str, cmd)])
    wall, busy = time.perf_counter() - t0, cpu_busy_s() - b0
    tail = p.stderr.split("RSS_KIB")[-1].split()
    rss, cpu = int(tail[0]) * 1024, float(tail[2])
    return p, rss, cpu, wall, max(busy - cpu, 0.0), started


class Log:
    """Everything printed goes to stdout and into the .txt result."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, *parts):
        s = " ".join(str(p) for p in parts)
        print(s, flush=True)
        self.lines.extend(s.split("\n"))


def run(cmd, log=None, check=True, **kw) -> subprocess.CompletedProcess:
    if log is not None:
        log("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise SystemExit(
            f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stdout}\n{p.stderr}"
        )
    return p


def build_unetc(log: Log, wait_s: float, skip_build: bool) -> None:
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
        if ok and UNETC.exists():
            h = subprocess.run([UNETC, "bench", "--help"], capture_output=True, text=True)
            if h.returncode == 0:
                return
            print("target/release/unetc has no `bench` yet; waiting", file=sys.stderr)
        if time.time() > deadline:
            raise SystemExit("gave up waiting for a release build of unetc with `bench`")
        time.sleep(30)


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
        "cpu_model": model,
        "mem_total_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_info() -> dict:
    def g(*a):
        p = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    status = g("status", "--porcelain", "--untracked-files=no")
    return {"commit": g("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MiB"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--torch-child"]:
        return torch_child(json.loads(argv[1]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1, help="weights and agreement input")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads (default: PyTorch's own choice)")
    ap.add_argument("--work-dir", default=None, help="weights, input, outputs (default /tmp/...)")
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--no-build", action="store_true", help="use target/release/unetc as it is")
    ap.add_argument("--wait", type=float, default=3600,
                    help="seconds to keep retrying the build / waiting for `unetc bench`")
    ap.add_argument("--no-save", action="store_true", help="print only")
    ap.add_argument("--max-other-cores", type=float, default=0.1,
                    help="wait before each timing until other processes use less CPU than this")
    ap.add_argument("--quiet-timeout", type=float, default=3600,
                    help="seconds to wait for a quiet machine before timing anyway")
    a = ap.parse_args(argv)

    log = Log()
    now = dt.datetime.now().astimezone()
    command = "python3 bench/compare_cpu.py " + " ".join(shlex.quote(x) for x in argv)
    spec = Path(a.spec)
    stem = spec.stem
    work = Path(a.work_dir or f"/tmp/unetc-bench-{stem}")
    work.mkdir(parents=True, exist_ok=True)

    build_unetc(log, a.wait, a.no_build)
    git = git_info()
    # Others may rebuild target/release/unetc while this runs: every step uses one copy of it.
    global UNETC
    binary = work / "unetc"
    shutil.copy2(UNETC, binary)
    UNETC = binary
    unetc_sha256 = hashlib.sha256(binary.read_bytes()).hexdigest()
    unetc_version = run([UNETC, "--version"]).stdout.strip()

    # The network as unetc sees it.
    desc_p = run([UNETC, "check", spec, "--format", "json", "--color", "never"])
    desc = json.loads(desc_p.stdout)
    desc_file = work / "desc.json"
    desc_file.write_text(desc_p.stdout)
    shape_in = next(l["output_shape"] for l in desc["layers"] if l["name"] == desc["inputs"][0])
    input_shape = [int(d) for d in shape_in[1:]]
    flops = int(desc["totals"]["flops"])

    log(f"# {command}")
    log(f"# {now.isoformat(timespec='seconds')}  {machine()['cpu_model']}, "
        f"nproc {machine()['nproc']}; {unetc_version} @ {(git['commit'] or '?')[:12]}"
        f"{' (dirty tree)' if git['dirty'] else ''}")
    log(f"# unetc binary: {UNETC}, a copy of target/release/unetc (sha256 {unetc_sha256[:16]})")
    log(f"# {spec}: input {'x'.join(map(str, input_shape))}, batch {a.batch}, "
        f"{desc['totals']['params']:,} parameters, {flops / 1e9:.1f} GFLOP per image")

    # Weights and an input.
    weights = work / f"{stem}.seed{a.seed}.safetensors"
    run([UNETC, "init-weights", spec, "-o", weights, "--seed", a.seed, "--force"], log)
    x = np.random.default_rng(a.seed).random((1, *input_shape), dtype=np.float32)
    x_file = work / "input.npy"
    np.save(x_file, x)
    log(f"# input {x_file}: numpy default_rng({a.seed}).random({(1, *input_shape)}, float32)")

    # Agreement: the same image through both.
    y_unetc, y_torch = work / "out_unetc.npy", work / "out_torch.npy"
    t0 = time.perf_counter()
    run([UNETC, "run", spec, "--weights", weights, "--input", x_file, "--output", y_unetc,
         "--force"], log)
    t_run = time.perf_counter() - t0
    t0 = time.perf_counter()
    run([sys.executable, HERE / "pytorch_unet.py", spec, "--weights", weights, "--input", x_file,
         "--output", y_torch, "--unetc", UNETC], log)
    t_torch_run = time.perf_counter() - t0
    yu, yt = np.load(y_unetc), np.load(y_torch)
    if yu.shape != yt.shape and yu.size == yt.size:
        yu = yu.reshape(yt.shape)
    if yu.shape != yt.shape:
        raise SystemExit(f"output shapes differ: unetc {yu.shape}, PyTorch {yt.shape}")
    diff = np.abs(yu.astype(np.float64) - yt.astype(np.float64))
    agree = {
        "output_shape": list(yt.shape),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / max(np.abs(yt).max(), np.finfo(np.float32).tiny)),
        "mean_abs_diff": float(diff.mean()),
        "argmax_mismatches": int((yu.argmax(-1) != yt.argmax(-1)).sum()) if yt.ndim == 4 else None,
        "unetc_run_s": t_run,
        "pytorch_run_s": t_torch_run,
    }
    log(f"# agreement on {tuple(yt.shape)}: max relative difference {agree['max_rel_diff']:.2e} "
        f"(max|unetc - torch| / max|torch|), max abs {agree['max_abs_diff']:.2e}, "
        f"argmax differs at {agree['argmax_mismatches']} pixels")

    # Timing: unetc.
    cmd_u = [UNETC, "bench", spec, "--device", "cpu", "--batch", a.batch, "--iterations",
             a.iterations, "--warmup", a.warmup, "--weights", weights, "--format", "json"]
    log("$ " + " ".join(shlex.quote(str(c)) for c in cmd_u))
    p, u_rss_kernel, u_cpu, u_wall, u_other, u_at = timed_child(cmd_u, a.max_other_cores,
                                                         a.quiet_timeout, log)
    ub = json.loads(p.stdout)

    # Timing: PyTorch.
    child = {
        "desc": str(desc_file), "weights": str(weights), "batch": a.batch,
        "input_shape": input_shape, "warmup": a.warmup, "iterations": a.iterations,
        "threads": a.torch_threads,
    }
    cmd_t = [sys.executable, __file__, "--torch-child", json.dumps(child)]
    log(f"$ python3 bench/compare_cpu.py --torch-child '{json.dumps(child)}'")
    p, t_rss_kernel, t_cpu, t_wall, t_other, t_at = timed_child(cmd_t, a.max_other_cores,
                                                         a.quiet_timeout, log)
    tb = json.loads(p.stdout.strip().splitlines()[-1])

    def row(system, threads, med, lo, hi, rss, times=None, extra=None):
        r = {
            "system": system, "threads": threads, "batch": a.batch,
            "median_ms": med, "min_ms": lo, "max_ms": hi,
            "images_per_s": a.batch / (med / 1e3),
            "gflops_per_s": flops * a.batch / (med / 1e3) / 1e9,
            "peak_rss_bytes": rss,
        }
        if times is not None:
            r["times_ms"] = times
        if extra:
            r.update(extra)
        return r

    rows = [
        row("unetc", ub["threads"], ub["median_ms"], ub["min_ms"], ub["max_ms"],
            ub.get("peak_rss_bytes"),
            extra={"started": u_at, "ru_maxrss_bytes": u_rss_kernel, "process_wall_s": u_wall,
                   "process_cpu_s": u_cpu, "other_processes_cpu_s": u_other,
                   "planned_arena_bytes": ub.get("planned_arena_bytes"),
                   "unetc_bench": ub}),
        row(f"PyTorch {tb['torch_version']}", tb["threads"], tb["median_ms"], tb["min_ms"],
            tb["max_ms"], tb["peak_rss_bytes"], times=tb["times_ms"],
            extra={"started": t_at, "ru_maxrss_bytes": t_rss_kernel, "process_wall_s": t_wall,
                   "process_cpu_s": t_cpu, "other_processes_cpu_s": t_other,
                   "rss_after_import_bytes": tb["rss_after_import_bytes"],
                   "rss_after_build_bytes": tb["rss_after_build_bytes"],
                   "interop_threads": tb["interop_threads"],
                   "cpu_capability": tb["cpu_capability"]}),
    ]
    ratio = {
        "time_unetc_over_pytorch": rows[0]["median_ms"] / rows[1]["median_ms"],
        "rss_unetc_over_pytorch": rows[0]["peak_rss_bytes"] / rows[1]["peak_rss_bytes"],
    }

    head = ["system", "threads", "median ms", "min–max ms", "images/s", "GFLOP/s", "peak RSS"]
    cells = [
        [r["system"], str(r["threads"]), ms(r["median_ms"]),
         f"{ms(r['min_ms'])}–{ms(r['max_ms'])}", f"{r['images_per_s']:.3f}",
         f"{r['gflops_per_s']:.1f}", mib(r["peak_rss_bytes"])]
        for r in rows
    ]
    cells.append(["unetc / PyTorch", "", f"{ratio['time_unetc_over_pytorch']:.2f}×", "",
                  f"{1 / ratio['time_unetc_over_pytorch']:.2f}×",
                  f"{1 / ratio['time_unetc_over_pytorch']:.2f}×",
                  f"{ratio['rss_unetc_over_pytorch']:.2f}×"])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]

    def fmt(c):
        return "  ".join(
            (x.ljust(w) if i == 0 else x.rjust(w)) for i, (x, w) in enumerate(zip(c, widths))
        )

    log("")
    log(f"{spec} {'x'.join(map(str, input_shape))}, batch {a.batch}, CPU, f32: "
        f"1 warm-up, {a.iterations} timed iterations, each system in its own process")
    log(fmt(head))
    log(fmt(["-" * w for w in widths]))
    for c in cells:
        log(fmt(c))
    log("")
    log("peak RSS: VmHWM of each process (/proc/self/status at its end: start-up, weights, "
        "warm-up and timed runs);")
    log(f"  unetc's planned activation arena {mib(ub.get('planned_arena_bytes'))}; PyTorch "
        f"{mib(tb['rss_after_import_bytes'])} after `import torch`, "
        f"{mib(tb['rss_after_build_bytes'])} with the model built")
    log(f"background: other processes used {u_other / u_wall:.2f} cores on average while unetc "
        f"ran ({u_wall:.0f} s), {t_other / t_wall:.2f} while PyTorch ran ({t_wall:.0f} s), "
        f"of {machine()['nproc']}")
    notes = []
    for who, other, wall in (("unetc", u_other, u_wall), ("PyTorch", t_other, t_wall)):
        if other / wall > a.max_other_cores:
            notes.append(f"other processes were busy ({other / wall:.2f} cores) during the "
                         f"{who} timing: its figures are not clean")
    if ub["threads"] != tb["threads"]:
        notes.append(f"thread counts differ: unetc {ub['threads']}, PyTorch {tb['threads']}")
    if abs(ub["gflops_per_s"] - rows[0]["gflops_per_s"]) > 0.01 * rows[0]["gflops_per_s"]:
        notes.append(f"unetc's own GFLOP/s {ub['gflops_per_s']:.2f} differs from this table's")
    for n in notes:
        log("note: " + n)

    result = {
        "date": now.isoformat(timespec="seconds"),
        "command": command,
        "spec": str(spec),
        "input_shape": input_shape,
        "batch": a.batch,
        "warmup": a.warmup,
        "iterations": a.iterations,
        "flops_per_image": flops,
        "params": desc["totals"]["params"],
        "machine": machine(),
        "versions": {
            "unetc": unetc_version,
            "unetc_git_commit": git["commit"],
            "unetc_git_dirty": git["dirty"],
            "unetc_binary_sha256": unetc_sha256,
            "torch": tb["torch_version"],
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "torch_parallel_info": tb["parallel_info"],
        "agreement": agree,
        "rows": rows,
        "ratio": ratio,
        "notes": notes,
    }
    if not a.no_save:
        out_dir = Path(a.results)
        out_dir.mkdir(parents=True, exist_ok=True)
        base = out_dir / f"{now.date().isoformat()}-cpu-{stem}"
        Path(f"{base}.json").write_text(json.dumps(result, indent=2) + "\n")
        Path(f"{base}.txt").write_text("\n".join(log.lines) + "\n")
        print(f"\nwrote {base}.json and {base}.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
