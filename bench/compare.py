#!/usr/bin/env python3
"""unetc on the GPU beside PyTorch + cuDNN (eager and torch.compile): same network, same weights.

    python3 bench/compare.py [SPEC ...] [--batch 1,8] [--precision f32,bf16] [--budget-s 400]
    python3 bench/compare.py --device cpu --specs /tmp/tiny.unet --batch 1,2 --iterations 2

For each spec, batch and precision, and each system (unetc, pytorch-eager, pytorch-compile):

1. `unetc init-weights SPEC --seed S` and one seeded input image (.npy, NHWC, [0, 1));
2. agreement first: unetc's CPU f32 output on that image is the reference (cached in the work
   dir); each system's batch-1 output on the same image gives max_rel_err = max|out - ref| /
   max|ref|;
3. timing, one system at a time, W warm-up then N timed forward passes of a batch of B (CUDA
   events around each pass, as `unetc bench` does; wall clock on the CPU): median, min, max;
   `unetc bench ... --format json` for unetc, a child process per spec and PyTorch system here;
4. one table to stdout, and `<out-dir>/<date>-<device>-compare.json` + `.txt`.

A failing configuration becomes an error row and the rest goes on; `--budget-s` stops starting
new configurations when the time is spent. bench/README.md has the protocol and the caveats.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOP = HERE.parent  # the repository root, or .gpu/ when run as .gpu/bench/compare.py
sys.path.insert(0, str(HERE))
from compare_cpu import bench_input, machine, peak_rss_self  # noqa: E402

SYSTEMS = ("unetc", "pytorch-eager", "pytorch-compile")
PRECISIONS = ("f32", "tf32", "bf16")
# Above these, max_rel_err is flagged HIGH. f32: different summation orders and cuDNN's
# algorithms (FFT, Winograd) stay well below 1e-3; a wrong layer gives O(1).
TOLERANCE = {"f32": 1e-3, "tf32": 1e-2, "bf16": 5e-2}
NOT_RUN = "not run: the --budget-s time was spent"


# --------------------------------------------------------------------------------------------
# The PyTorch child: `compare.py --torch-child JSON`. Appends one JSON row per configuration to
# args["rows_file"] as soon as it is done, so a crash loses only the configuration it was in.
# --------------------------------------------------------------------------------------------


def _set_tf32(torch, on: bool) -> dict:
    """TF32 on or off for cuDNN convolutions and cuBLAS matmuls; returns the settings read back.
    PyTorch >= 2.9 also has per-operator fp32_precision (cuDNN convs default to TF32): set both."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    for o in (getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul):
        if o is not None and hasattr(o, "fp32_precision"):
            o.fp32_precision = "tf32" if on else "ieee"
    got = {}
    for name, get in (("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                      ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
                      ("cudnn.conv.fp32_precision",
                       lambda: torch.backends.cudnn.conv.fp32_precision),
                      ("cuda.matmul.fp32_precision",
                       lambda: torch.backends.cuda.matmul.fp32_precision)):
        try:
            got[name] = get()
        except Exception:  # noqa: BLE001 - absent in this version, or legacy/new API mixed
            pass
    return got


def _perturb(weights: dict, desc: dict) -> str:
    """--perturb-torch: the first Conv2D kernel x 1.5, so the agreement check must fail."""
    for layer in desc["layers"]:
        key = f"{layer['name']}/kernel"
        if layer["class"] == "Conv2D" and key in weights:
            weights[key] = weights[key] * 1.5
            return key
    raise ValueError("--perturb-torch: no Conv2D kernel in the weights")


def env_child(device: str) -> dict:
    import torch

    info = {
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
    }
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device_name=torch.cuda.get_device_name(0),
                    capability=f"{p.major}.{p.minor}", total_memory_bytes=p.total_memory,
                    multiprocessors=p.multi_processor_count)
    else:
        info.update(device_name=machine()["cpu_model"], torch_threads=torch.get_num_threads())
    return info


def torch_child(a: dict) -> int:
    if a.get("mode") == "env":
        print(json.dumps(env_child(a["device"])))
        return 0
    out = open(a["rows_file"], "a")

    def emit(prec, batch, **kw):
        out.write(json.dumps({"precision": prec, "batch": batch, **kw}) + "\n")
        out.flush()

    def fail_all(configs, msg):
        for prec, batch in configs:
            emit(prec, batch, error=msg)

    try:
        import torch
        from pytorch_unet import build_model, load_unetc_weights

        desc = json.loads(Path(a["desc"]).read_text())
        x_agree = np.load(a["x"])
        ref = np.load(a["ref"]).astype(np.float64)
    except Exception as e:  # noqa: BLE001 - any failure here is every configuration's error
        fail_all(a["configs"], f"PyTorch set-up failed: {type(e).__name__}: {e}")
        return 0

    dev = torch.device(a["device"])
    cuda = dev.type == "cuda"
    compiled = a["system"] == "pytorch-compile"
    if cuda:
        torch.backends.cudnn.benchmark = True

    def sync():
        if cuda:
            torch.cuda.synchronize()

    by_prec: dict[str, list[int]] = {}
    for prec, batch in a["configs"]:
        by_prec.setdefault(prec, []).append(batch)

    for prec, batches in by_prec.items():
        if time.time() > a["deadline"]:
            fail_all([(prec, b) for b in batches], NOT_RUN)
            continue
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        settings = {"channels_last": True, "inference_mode": True, "dtype": str(dtype)}
        model = fn = None
        try:
            tf32 = _set_tf32(torch, prec == "tf32")
            if cuda:
                settings.update(cudnn_benchmark=torch.backends.cudnn.benchmark, tf32=tf32)
            weights = load_unetc_weights(a["weights"])
            if a.get("perturb"):
                settings["perturbed"] = _perturb(weights, desc)
            model = build_model(desc, weights, dtype=dtype, device=dev)
            fn = model
            if compiled:
                settings.update(compile_mode=a["compile_mode"], dynamic=False)
                fn = torch.compile(model, mode=a["compile_mode"], dynamic=False)
            # Agreement: batch 1, the seeded image (for compile, this call compiles batch 1).
            t0 = time.perf_counter()
            with torch.inference_mode():
                y = fn(torch.from_numpy(x_agree).to(dev, dtype))
                sync()
                y = y.float().cpu().numpy().astype(np.float64)
            agree_first_s = time.perf_counter() - t0
            if y.shape != ref.shape and y.size == ref.size:
                y = y.reshape(ref.shape)
            if y.shape != ref.shape:
                raise ValueError(f"output shape {y.shape}, the reference's is {ref.shape}")
            err = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))
        except Exception as e:  # noqa: BLE001
            msg = f"{'compile/' if compiled else ''}build or first run failed: " \
                  f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            traceback.print_exc()
            fail_all([(prec, b) for b in batches], msg[:2000])
            del model, fn
            _cleanup(torch, cuda, compiled)
            continue

        for batch in batches:
            if time.time() > a["deadline"]:
                emit(prec, batch, error=NOT_RUN, max_rel_err=err)
                continue
            try:
                x = torch.from_numpy(bench_input([batch, *a["input_shape"]])).to(dev, dtype)
                with torch.inference_mode():
                    # The first pass of a shape compiles (torch.compile) or autotunes (cuDNN);
                    # timed apart, and the memory peak is reset after it.
                    t0 = time.perf_counter()
                    fn(x)
                    sync()
                    first_s = time.perf_counter() - t0
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    for _ in range(max(a["warmup"] - 1, 0)):
                        fn(x)
                    sync()
                    times = []
                    if cuda:
                        ev = [(torch.cuda.Event(enable_timing=True),
                               torch.cuda.Event(enable_timing=True))
                              for _ in range(a["iterations"])]
                        for s, e in ev:
                            s.record()
                            fn(x)
                            e.record()
                            e.synchronize()  # each pass alone, as unetc bench does
                            times.append(s.elapsed_time(e))
                    else:
                        for _ in range(a["iterations"]):
                            t0 = time.perf_counter()
                            fn(x)
                            times.append((time.perf_counter() - t0) * 1e3)
                if cuda:
                    peak = torch.cuda.max_memory_allocated()
                    kind = "torch.cuda.max_memory_allocated"
                else:
                    peak, kind = peak_rss_self(), "process VmHWM (cumulative over this child)"
                med = statistics.median(times)
                emit(prec, batch, ms_per_batch=med, min_ms=min(times), max_ms=max(times),
                     times_ms=times, images_per_s=batch / (med / 1e3), peak_memory_bytes=peak,
                     peak_memory_kind=kind, max_rel_err=err, first_call_s=first_s,
                     agreement_first_call_s=agree_first_s, settings=settings,
                     torch_threads=torch.get_num_threads())
                del x
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: this row only
                traceback.print_exc()
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                emit(prec, batch, error=f"{type(e).__name__}: {first}"[:2000], max_rel_err=err)
                x = None
                if cuda:
                    torch.cuda.empty_cache()
        del model, fn
        _cleanup(torch, cuda, compiled)
    return 0


def _cleanup(torch, cuda: bool, compiled: bool) -> None:
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# The parent.
# --------------------------------------------------------------------------------------------


class Log:
    """Progress to stderr, and into the .txt (the table goes to stdout)."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, s: str = "", stdout: bool = False) -> None:
        print(s, file=sys.stdout if stdout else sys.stderr, flush=True)
        self.lines.extend(s.split("\n"))


def run_cmd(cmd, timeout=None, env=None, stdout_path=None):
    """(returncode, stdout, stderr, timed_out). Own process group, so that a timeout also ends
    what the command started (e.g. torch.compile's worker processes)."""
    cmd = [str(c) for c in cmd]
    so = open(stdout_path, "w") if stdout_path else subprocess.PIPE
    p = subprocess.Popen(cmd, stdout=so,
                         stderr=subprocess.STDOUT if stdout_path else subprocess.PIPE,
                         text=True, env=env, start_new_session=True)
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    if stdout_path:
        so.close()
        out, err = "", Path(stdout_path).read_text(errors="replace")
    return p.returncode, out or "", err or "", timed_out


def tail(text: str, n: int = 3) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:])[:1000]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_unetc() -> Path:
    for c in (TOP / "bin" / "unetc", Path(".gpu/bin/unetc"), TOP / ".gpu" / "bin" / "unetc",
              TOP / "target" / "release" / "unetc", Path("target/release/unetc")):
        if c.exists():
            return c.resolve()
    return TOP / "target" / "release" / "unetc"


def resolve_spec(s: str) -> Path:
    p = Path(s)
    if p.exists():
        return p
    for base in (TOP, TOP / ".gpu"):  # specs/x.unet given from the repo root, run in .gpu/
        if (base / s).exists():
            return base / s
    return p


def csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def nvidia_smi() -> dict:
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        name, driver, mem = [x.strip() for x in p.stdout.strip().splitlines()[0].split(",")]
        return {"name": name, "driver": driver, "memory_total": mem}
    except Exception:  # noqa: BLE001 - no nvidia-smi (CPU mode) or odd output
        return {}


def fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def fmt_mem(r) -> str:
    b = r.get("peak_memory_bytes")
    if b is None:
        return "-"
    kind = r.get("peak_memory_kind") or ""
    pre = "~" if kind.startswith("estimate") else ""
    post = " rss" if "VmHWM" in kind or kind.startswith("process") else ""
    return f"{pre}{b / 2**20:,.0f} MiB{post}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--torch-child"]:
        return torch_child(json.loads(argv[1]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="*", help="spec files (also --specs a,b)")
    ap.add_argument("--specs", default=None,
                    help="comma-separated specs (default: specs/original.unet,specs/bn_same.unet "
                         "beside this script's directory)")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--precision", default="f32,bf16", help="f32, tf32, bf16 (comma-separated)")
    ap.add_argument("--systems", default=None,
                    help="unetc,pytorch-eager,pytorch-compile (default: all three on cuda; "
                         "unetc,pytorch-eager on cpu)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--unetc", default=None, help="default: .gpu/bin/unetc, else target/release")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1, help="weights and the agreement image")
    ap.add_argument("--work-dir", default="/tmp/unetc-compare",
                    help="weights, inputs, cached references, child logs")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--budget-s", type=float, default=0,
                    help="start no new configuration after this many seconds (0: no limit)")
    ap.add_argument("--grace-s", type=float, default=60,
                    help="a configuration still running this long after the budget is killed")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode (default 'default': max-autotune takes minutes "
                         "per shape)")
    ap.add_argument("--perturb-torch", action="store_true",
                    help="self-test of the agreement check: PyTorch's first Conv2D kernel x 1.5 "
                         "(its rows must show HIGH errors; marked in the output)")
    a = ap.parse_args(argv)

    t_start = time.time()
    deadline = t_start + a.budget_s if a.budget_s > 0 else math.inf
    now = dt.datetime.now().astimezone()
    command = "python3 " + " ".join(shlex.quote(x) for x in [sys.argv[0], *argv])
    log = Log()

    specs = [resolve_spec(s) for s in [*a.spec, *csv(a.specs or "")]]
    if not specs:
        specs = [resolve_spec(str(TOP / "specs" / n)) for n in ("original.unet", "bn_same.unet")]
    batches = [int(b) for b in csv(a.batch)]
    precisions = csv(a.precision)
    systems = csv(a.systems) if a.systems else (
        list(SYSTEMS) if a.device == "cuda" else ["unetc", "pytorch-eager"])
    for p in precisions:
        if p not in PRECISIONS:
            ap.error(f"--precision {p}: one of {', '.join(PRECISIONS)}")
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"--systems {s}: one of {', '.join(SYSTEMS)}")
    systems = [s for s in SYSTEMS if s in systems]  # compile last: the budget trims it first

    unetc = Path(a.unetc).resolve() if a.unetc else default_unetc()
    if not unetc.exists():
        ap.error(f"no unetc binary at {unetc} (cargo build --release, or --unetc PATH)")
    work = Path(a.work_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    unetc_sha = sha256(unetc)
    unetc_version = run_cmd([unetc, "--version"], timeout=30)[1].strip()

    # unetc dlopens libcuda/libnvrtc: give it the CUDA toolkit's library dirs (as .gpu/run-tests
    # does). PyTorch children keep the plain environment (it brings its own CUDA libraries).
    uenv = dict(os.environ)
    cuda_libs = [d for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/lib") if Path(d).is_dir()]
    if a.device == "cuda" and cuda_libs:
        uenv["LD_LIBRARY_PATH"] = ":".join([*cuda_libs, uenv.get("LD_LIBRARY_PATH", "")])

    def left() -> float:
        return deadline - time.time()

    def cmd_timeout(cap=600.0):
        return min(cap, max(left(), 0) + a.grace_s) if deadline < math.inf else cap

    # The machine, seen from PyTorch (a child: the parent holds no CUDA context).
    rc, out, err, _ = run_cmd([sys.executable, __file__, "--torch-child",
                               json.dumps({"mode": "env", "device": a.device})],
                              timeout=cmd_timeout(120))
    try:
        env = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        env = {"error": tail(err or out)}
    smi = nvidia_smi() if a.device == "cuda" else {}
    device_name = env.get("device_name") or smi.get("name") or "?"
    if a.device == "cuda" and not env.get("cuda_available"):
        log(f"warning: PyTorch sees no CUDA device {env.get('error', '')}")
    slug = "cpu" if a.device == "cpu" else (re.sub(r"[^a-z0-9]+", "-", device_name.lower())
                                            .strip("-") or "gpu")
    date = now.isoformat(timespec="seconds")

    log(f"# {command}")
    log(f"# {date}  {device_name}; driver {smi.get('driver', '-')}, torch {env.get('torch')}, "
        f"CUDA {env.get('cuda_runtime')}, cuDNN {env.get('cudnn')}")
    log(f"# {unetc_version} ({unetc}, sha256 {unetc_sha[:16]})")

    rows: list[dict] = []
    notes: list[str] = []

    def new_row(si, batch, prec, system, **kw) -> dict:
        r = {"spec": si["spec"], "input_shape": si.get("input_shape"), "batch": batch,
             "precision": prec, "system": system, "images_per_s": None, "ms_per_batch": None,
             "min_ms": None, "max_ms": None, "peak_memory_bytes": None, "peak_memory_kind": None,
             "max_rel_err": None, "device": device_name, "date": date, "error": None}
        r.update(kw)
        rows.append(r)
        return r

    # ---- per spec: description, weights, input, reference ------------------------------------
    infos = []
    for spec in specs:
        si = {"spec": str(spec), "stem": spec.stem, "name": spec.name}
        infos.append(si)
        try:
            rc, out, err, _ = run_cmd([unetc, "check", spec, "--format", "json", "--color",
                                       "never"], timeout=cmd_timeout(120))
            if rc != 0:
                raise RuntimeError(f"unetc check failed: {tail(err)}")
            desc = json.loads(out)
            key = hashlib.sha256(spec.read_bytes() + unetc_sha.encode()
                                 + str(a.seed).encode()).hexdigest()[:12]
            si["desc"] = work / f"{spec.stem}-{key}.desc.json"
            si["desc"].write_text(out)
            shape = next(l["output_shape"] for l in desc["layers"]
                         if l["name"] == desc["inputs"][0])
            si["input_shape"] = [int(d) for d in shape[1:]]
            si["params"] = int(desc["totals"]["params"])
            si["flops_per_image"] = int(desc["totals"]["flops"])
            si["weights"] = work / f"{spec.stem}-{key}.safetensors"
            rc, _, err, _ = run_cmd([unetc, "init-weights", spec, "-o", si["weights"], "--seed",
                                     a.seed, "--force"], timeout=cmd_timeout(300))
            if rc != 0:
                raise RuntimeError(f"unetc init-weights failed: {tail(err)}")
            si["x"] = work / f"{spec.stem}-input-seed{a.seed}.npy"
            np.save(si["x"], np.random.default_rng(a.seed).random((1, *si["input_shape"]),
                                                                   dtype=np.float32))
            si["ref"] = work / f"{spec.stem}-{key}.ref-cpu-f32.npy"
            if not si["ref"].exists():
                t0 = time.time()
                tmp = work / f"{spec.stem}-{key}.ref-tmp.npy"
                rc, _, err, _ = run_cmd([unetc, "run", spec, "--weights", si["weights"],
                                         "--input", si["x"], "--output", tmp, "--device", "cpu",
                                         "--force"], timeout=cmd_timeout(900))
                if rc != 0:
                    raise RuntimeError(f"unetc run --device cpu (reference) failed: {tail(err)}")
                tmp.rename(si["ref"])
                log(f"{spec.name}: reference (unetc CPU f32) in {time.time() - t0:.1f} s")
            else:
                log(f"{spec.name}: reference (unetc CPU f32) cached: {si['ref']}")
            si["ref_max_abs"] = float(np.abs(np.load(si["ref"])).max())
        except Exception as e:  # noqa: BLE001 - this spec's rows all carry the error
            si["error"] = f"{type(e).__name__}: {e}"[:2000]
            log(f"{spec.name}: {si['error']}")

    configs = [(p, b) for p in precisions for b in batches]

    def y_err(si, y_path) -> float:
        y, ref = np.load(y_path).astype(np.float64), np.load(si["ref"]).astype(np.float64)
        if y.shape != ref.shape and y.size == ref.size:
            y = y.reshape(ref.shape)
        if y.shape != ref.shape:
            raise ValueError(f"output shape {y.shape}, the reference's is {ref.shape}")
        return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))

    def unetc_cmd(base: list, prec: str):
        """Runs base + --precision P. A binary without the flag: f32 runs without it (noted),
        other precisions are an error. Returns (rc, stdout, error or None, note or None, the
        command that ran)."""
        cmd = [*base, "--precision", prec]
        rc, out, err, to = run_cmd(cmd, timeout=cmd_timeout(), env=uenv)
        if to:
            return rc, out, "killed: past the budget", None, cmd
        if rc != 0 and "--precision" in err and ("unexpected argument" in err
                                                  or "unrecognized" in err):
            if prec != "f32":
                return rc, out, "this unetc has no --precision flag", None, cmd
            rc, out, err, to = run_cmd(base, timeout=cmd_timeout(), env=uenv)
            note = "this unetc has no --precision flag: its f32 rows ran without it"
            return rc, out, (None if rc == 0 else f"rc {rc}: {tail(err)}"), note, base
        return rc, out, (None if rc == 0 else f"rc {rc}: {tail(err)}"), None, cmd

    # ---- unetc -------------------------------------------------------------------------------
    if "unetc" in systems:
        for si in infos:
            for prec in precisions:
                if si.get("error"):
                    for b in batches:
                        new_row(si, b, prec, "unetc", error=si["error"])
                    continue
                if a.device == "cpu" and prec != "f32":
                    for b in batches:
                        new_row(si, b, prec, "unetc", error="unetc's CPU executor is f32 only")
                    continue
                err_val, agree_msg, agree_note = None, None, None
                if left() <= 0:
                    for b in batches:
                        new_row(si, b, prec, "unetc", error=NOT_RUN)
                    continue
                if a.device == "cpu":
                    err_val, agree_note = 0.0, "this run's executor is the reference"
                else:
                    y = work / f"{si['stem']}-out-unetc-{prec}.npy"
                    rc, _, msg, agree_note, _ = unetc_cmd(
                        [unetc, "run", si["spec"], "--weights", si["weights"], "--input", si["x"],
                         "--output", y, "--device", a.device, "--force"], prec)
                    if msg:
                        agree_msg = f"agreement run failed: {msg}"
                    else:
                        try:
                            err_val = y_err(si, y)
                        except Exception as e:  # noqa: BLE001
                            agree_msg = f"agreement: {e}"
                    log(f"{si['name']} unetc {prec}: max_rel_err "
                        f"{'-' if err_val is None else f'{err_val:.2e}'}"
                        f"{'  ' + agree_msg if agree_msg else ''}")
                for b in batches:
                    if left() <= 0:
                        new_row(si, b, prec, "unetc", error=NOT_RUN, max_rel_err=err_val)
                        continue
                    base = [unetc, "bench", si["spec"], "--device", a.device, "--batch", b,
                            "--warmup", a.warmup, "--iterations", a.iterations, "--weights",
                            si["weights"], "--format", "json"]
                    rc, out, msg, note, ran = unetc_cmd(base, prec)
                    r = new_row(si, b, prec, "unetc", max_rel_err=err_val,
                                command=" ".join(shlex.quote(str(c)) for c in ran))
                    r["notes"] = [n for n in (agree_note, note) if n]
                    if msg:
                        r["error"] = msg
                        log(f"{si['name']} unetc {prec} batch {b}: {msg}")
                        continue
                    try:
                        j = json.loads(out)
                    except ValueError:
                        r["error"] = f"unetc bench printed no JSON: {tail(out)}"
                        continue
                    r["unetc_bench"] = j
                    med = float(j["median_ms"])
                    # ms_per_batch: the network alone, input already on the device (as PyTorch's
                    # rows are timed); end_to_end_ms_per_batch adds the upload from pinned memory.
                    r.update(ms_per_batch=med, min_ms=j.get("min_ms"), max_ms=j.get("max_ms"),
                             images_per_s=b / (med / 1e3),
                             end_to_end_ms_per_batch=j.get("end_to_end_median_ms"),
                             kernels=j.get("kernels"), kernel_load_ms=j.get("kernel_load_ms"))
                    if j.get("precision") not in (None, prec):
                        r["error"] = f"unetc bench reports precision {j.get('precision')!r}"
                    if a.device == "cpu":
                        r.update(peak_memory_bytes=j.get("peak_rss_bytes"),
                                 peak_memory_kind="process VmHWM (unetc bench)")
                    elif j.get("peak_device_memory_bytes") is not None:
                        r.update(peak_memory_bytes=j["peak_device_memory_bytes"],
                                 peak_memory_kind="peak_device_memory_bytes (unetc bench)")
                    elif j.get("planned_arena_bytes") is not None:
                        size = 2 if prec == "bf16" else 4
                        r.update(peak_memory_bytes=j["planned_arena_bytes"] + si["params"] * size,
                                 peak_memory_kind=f"estimate: planned_arena_bytes + params x "
                                 f"{size} B (unetc bench reports no peak_device_memory_bytes)")
                    if agree_msg:
                        r["error"] = agree_msg
                    log(f"{si['name']} unetc {prec} batch {b}: {fmt_ms(med)} ms"
                        f"{'  ' + r['error'] if r['error'] else ''}")

    # ---- PyTorch, one child per spec and system ----------------------------------------------
    for system in [s for s in systems if s != "unetc"]:
        for si in infos:
            todo = []
            for prec, b in configs:
                if si.get("error"):
                    new_row(si, b, prec, system, error=si["error"])
                elif prec == "tf32" and a.device == "cpu":
                    new_row(si, b, prec, system, error="tf32 is a CUDA mode")
                else:
                    todo.append((prec, b))
            got: dict = {}
            attempt = 0
            while todo:
                if left() <= 0:
                    for c in todo:
                        got[c] = {"error": NOT_RUN}
                    break
                attempt += 1
                tag = f"{si['stem']}-{system}-{attempt}"
                rows_file, log_file = work / "logs" / f"{tag}.jsonl", work / "logs" / f"{tag}.log"
                rows_file.unlink(missing_ok=True)
                child = {"system": system, "device": a.device, "desc": str(si["desc"]),
                         "weights": str(si["weights"]), "x": str(si["x"]), "ref": str(si["ref"]),
                         "input_shape": si["input_shape"], "configs": todo, "warmup": a.warmup,
                         "iterations": a.iterations, "deadline": deadline if deadline < math.inf
                         else 1e18, "compile_mode": a.compile_mode, "perturb": a.perturb_torch,
                         "rows_file": str(rows_file)}
                t0 = time.time()
                rc, _, text, to = run_cmd([sys.executable, __file__, "--torch-child",
                                           json.dumps(child)],
                                          timeout=(max(left(), 0) + a.grace_s
                                                   if deadline < math.inf else None),
                                          stdout_path=log_file)
                done = {}
                if rows_file.exists():
                    for line in rows_file.read_text().splitlines():
                        r = json.loads(line)
                        done[(r.pop("precision"), r.pop("batch"))] = r
                for c in todo:
                    if c in done:
                        got[c] = done[c]
                rest = [c for c in todo if c not in done]
                log(f"{si['name']} {system}: child {attempt} ran {time.time() - t0:.0f} s, "
                    f"{len(done)} of {len(todo)} configurations, rc {rc}"
                    f"{' (killed)' if to else ''}")
                if not rest:
                    break
                # The child died inside rest[0] (or was killed there at the budget).
                said = tail(text)
                why = (f"killed {a.grace_s:.0f} s after the budget ran out" if to else
                       f"PyTorch child died ({f'signal {-rc}' if rc < 0 else f'rc {rc}'})"
                       f"{': ' + said if said else ''}; log {log_file.name}")
                got[rest[0]] = {"error": why}
                todo = rest[1:]
                if to or rc == 0:
                    for c in todo:
                        got[c] = {"error": NOT_RUN if to else "the child gave no row"}
                    break
            for (prec, b), r in got.items():
                row = new_row(si, b, prec, system)
                row.update(r)
                if a.perturb_torch:
                    row["perturbed"] = True
                if not r.get("error"):
                    log(f"{si['name']} {system} {prec} batch {b}: {fmt_ms(r['ms_per_batch'])} ms, "
                        f"max_rel_err {r['max_rel_err']:.2e}")
                else:
                    log(f"{si['name']} {system} {prec} batch {b}: {r['error']}")

    # ---- ratios, flags, the table ------------------------------------------------------------
    order = {s: i for i, s in enumerate(SYSTEMS)}
    rows.sort(key=lambda r: ([str(i["spec"]) for i in infos].index(r["spec"]), r["batch"],
                             precisions.index(r["precision"]), order[r["system"]]))
    for r in rows:
        tol = TOLERANCE[r["precision"]]
        r["tolerance"] = tol
        r["agreement_ok"] = None if r["max_rel_err"] is None else r["max_rel_err"] <= tol
        same = [q for q in rows if (q["spec"], q["batch"], q["precision"]) ==
                (r["spec"], r["batch"], r["precision"]) and q["images_per_s"] and not q["error"]]
        u = next((q["images_per_s"] for q in same if q["system"] == "unetc"), None)
        best = max((q["images_per_s"] for q in same if q["system"] != "unetc"), default=None)
        r["ratio"] = None
        if r["images_per_s"] and not r["error"] and u:
            r["ratio"] = (u / best if best else None) if r["system"] == "unetc" \
                else u / r["images_per_s"]
        r["flops_per_image"] = next((i.get("flops_per_image") for i in infos
                                     if i["spec"] == r["spec"]), None)

    head = ["spec", "input", "batch", "prec", "system", "ms/batch", "min–max ms", "images/s",
            "ratio", "peak mem", "max_rel_err", "error"]
    cells = []
    for r in rows:
        e = r["max_rel_err"]
        cells.append([
            Path(r["spec"]).name, "x".join(map(str, r["input_shape"] or [])) or "-",
            str(r["batch"]), r["precision"], r["system"], fmt_ms(r["ms_per_batch"]),
            "-" if r["min_ms"] is None else f"{fmt_ms(r['min_ms'])}–{fmt_ms(r['max_ms'])}",
            "-" if not r["images_per_s"] else f"{r['images_per_s']:,.1f}",
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}", fmt_mem(r),
            "-" if e is None else f"{e:.1e}" + ("" if r["agreement_ok"] else " HIGH"),
            (r["error"] or "")[:70],
        ])
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]
    right = {"batch", "ms/batch", "min–max ms", "images/s", "ratio", "peak mem", "max_rel_err"}

    def line(c):
        return "  ".join(x.rjust(w) if h in right else x.ljust(w)
                         for x, w, h in zip(c, widths, head)).rstrip()

    log("", stdout=True)
    log(f"{device_name} ({a.device}); {a.warmup} warm-up + {a.iterations} timed passes per row; "
        f"torch.compile mode {a.compile_mode!r}", stdout=True)
    if a.perturb_torch:
        log("*** --perturb-torch: PyTorch ran with its first Conv2D kernel x 1.5 (self-test of "
            "the agreement check; its timings are still valid, its errors must be HIGH) ***",
            stdout=True)
    log(line(head), stdout=True)
    log(line(["-" * w for w in widths]), stdout=True)
    for c in cells:
        log(line(c), stdout=True)
    log("", stdout=True)
    log("ratio: unetc images/s ÷ this row's (on unetc's rows: ÷ the best PyTorch row of the same "
        "spec, batch and precision); > 1: unetc faster.", stdout=True)
    if a.device == "cuda":
        log("peak mem: PyTorch torch.cuda.max_memory_allocated() after the first pass (weights, "
            "input, activations, cuDNN workspace; no CUDA context); unetc its "
            "peak_device_memory_bytes, ~ = planned arena + weights estimate.", stdout=True)
    else:
        log("peak mem (cpu): process VmHWM; the PyTorch child's accumulates over its rows.",
            stdout=True)
    log("max_rel_err: max|out − ref| / max|ref| on the seeded image at batch 1, ref = unetc CPU "
        f"f32; HIGH above {', '.join(f'{k} {v:.0e}' for k, v in TOLERANCE.items())}.",
        stdout=True)
    for n in dict.fromkeys(n for r in rows for n in r.get("notes", [])
                           if n != "this run's executor is the reference"):
        notes.append("unetc: " + n)
    bad = [r for r in rows if r["agreement_ok"] is False]
    if bad:
        notes.append(f"{len(bad)} row(s) disagree with the reference beyond tolerance")
    errs = [r for r in rows if r["error"]]
    if errs:
        notes.append(f"{len(errs)} row(s) with errors")
    for n in notes:
        log("note: " + n, stdout=True)

    result = {
        "command": command, "argv": argv, "date": date, "elapsed_s": time.time() - t_start,
        "device": {"kind": a.device, "name": device_name, "driver": smi.get("driver"),
                   "memory_total": smi.get("memory_total"), "torch": env.get("torch"),
                   "cuda_runtime": env.get("cuda_runtime"), "cudnn": env.get("cudnn"),
                   "capability": env.get("capability"), "torch_env": env},
        "machine": machine(),
        "unetc": {"version": unetc_version, "binary": str(unetc), "sha256": unetc_sha,
                  "ld_library_path": uenv.get("LD_LIBRARY_PATH")},
        "settings": {"specs": [str(s) for s in specs], "batches": batches,
                     "precisions": precisions, "systems": systems, "warmup": a.warmup,
                     "iterations": a.iterations, "seed": a.seed, "budget_s": a.budget_s,
                     "compile_mode": a.compile_mode, "perturb_torch": a.perturb_torch,
                     "tolerance": TOLERANCE},
        "specs": [{k: (str(v) if isinstance(v, Path) else v) for k, v in si.items()}
                  for si in infos],
        "rows": rows,
        "notes": notes,
    }
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{now.date().isoformat()}-{slug}-compare"
    n = 2
    while Path(f"{base}.json").exists():  # several runs a day: keep them all
        base = out_dir / f"{now.date().isoformat()}-{slug}-compare-{n}"
        n += 1
    Path(f"{base}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{base}.txt").write_text("\n".join(log.lines) + "\n")
    print(f"\nwrote {base}.json and {base}.txt ({time.time() - t_start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
