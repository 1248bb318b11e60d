#!/usr/bin/env python3
"""Streaming on a large generated image: throughput, peak RSS and stitching error, in memory
vs streamed.

One image (seeded uniform noise, H x W x C, float32) runs through
tests/golden/bn_same_small.unet (seed 002's net at 4 base filters: same padding, batch norm,
three poolings; the full-size nets run at ~0.02 Mpx/s on this machine, hours for 8192x8192)
with the same tile plan (`--memory`) three ways:

- in memory ("before" streaming): the image as a `<f8` .npy, which `run` reads whole, holding
  the whole input and output;
- streamed: the `<f4` .npy memory-mapped, written to a memory-mapped .npy;
- streamed: the same input, written as a tiled float32 BigTIFF.

Peak RSS is the `peak RSS` line of `run --verbose` (VmHWM), wall time is measured here. The
error column is the largest absolute difference from the in-memory run (the same exact tiles;
tests/run_cli.rs and tests/streaming.rs check that exact tiles equal the whole-image run).
Results go to bench/results/<date>-stream-<size>.txt; `--no-save` prints only.

    cargo build --release && python3 bench/stream_bench.py --size 8192
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNETC = os.path.join(ROOT, "target", "release", "unetc")
SPEC = "tests/golden/bn_same_small.unet"


def run(cmd):
    """Runs cmd; returns (wall seconds, peak RSS bytes from --verbose, stderr)."""
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    rss = re.search(r"peak RSS (\d+) bytes", p.stderr)
    return wall, int(rss.group(1)) if rss else None, p.stderr


def read_tiff(path, h, w):
    """A float32 tiled TIFF read with tifffile when present (an independent reader)."""
    import tifffile

    a = tifffile.imread(path)
    return a.reshape(1, h, w, -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="image height and width")
    ap.add_argument("--memory", default="256MiB", help="--memory for every run")
    ap.add_argument("--work-dir", default="/tmp/unetc-stream-bench")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    n, c = args.size, 3
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    say(f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    say(f"commit: {commit}")
    say(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    say(f"command: python3 bench/stream_bench.py --size {n} --memory {args.memory}")
    say(f"image: {n}x{n} (W x H) x {c}, uniform noise, seed 0; spec {SPEC}")
    say()

    w = os.path.join(args.work_dir, "w.safetensors")
    subprocess.run([UNETC, "init-weights", SPEC, "-o", w, "--seed", "1"], cwd=ROOT, check=True,
                   capture_output=True)
    f4 = os.path.join(args.work_dir, "image_f4.npy")
    f8 = os.path.join(args.work_dir, "image_f8.npy")
    a4 = np.lib.format.open_memmap(f4, mode="w+", dtype=np.float32, shape=(n, n, c))
    a8 = np.lib.format.open_memmap(f8, mode="w+", dtype=np.float64, shape=(n, n, c))
    rng = np.random.default_rng(0)
    for y in range(0, n, 512):
        block = rng.random((min(512, n - y), n, c), dtype=np.float32)
        a4[y : y + len(block)] = block
        a8[y : y + len(block)] = block
    a4.flush()
    a8.flush()
    del a4, a8

    base = [UNETC, "run", SPEC, "--weights", w, "--memory", args.memory, "--verbose"]
    runs = [
        ("in memory (<f8 .npy read whole)", f8, "mem.npy"),
        ("streamed .npy -> .npy (mmap)", f4, "stream.npy"),
        ("streamed .npy -> tiled BigTIFF", f4, "stream.tif"),
    ]
    reference = None
    say(f"{'how':34} {'wall s':>8} {'Mpx/s':>7} {'peak RSS':>10}  max |diff|")
    for how, inp, out in runs:
        out = os.path.join(args.work_dir, out)
        cmd = base + ["--input", inp, "-o", out]
        wall, rss, err = run(cmd)
        if out.endswith(".npy"):
            got = np.load(out, mmap_mode="r")
        else:
            got = read_tiff(out, n, n)
        if reference is None:
            reference = got
            diff = "(reference)"
        else:
            diff = f"{float(np.max(np.abs(np.asarray(got) - np.asarray(reference)))):.3e}"
        rss_text = f"{rss / 2**20:.0f} MiB" if rss else "?"
        say(f"{how:34} {wall:8.1f} {n * n / wall / 1e6:7.3f} {rss_text:>10}  {diff}")
        for line in err.strip().splitlines():
            say(f"    {line}")
        say(f"    $ {' '.join(os.path.relpath(x, ROOT) if x.startswith(ROOT) else x for x in cmd)}")
    del reference
    shutil.rmtree(args.work_dir, ignore_errors=True)
    if not args.no_save:
        day = datetime.date.today().isoformat()
        path = os.path.join(ROOT, "bench", "results", f"{day}-stream-{n}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
