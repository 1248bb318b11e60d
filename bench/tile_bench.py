#!/usr/bin/env python3
"""Tiling on a large generated image: throughput, peak RSS and stitching error vs the whole image.

For each spec the same image (seeded uniform noise, H x W x C) is run several ways with
`unetc run`, each under /usr/bin/time -v (wall time, peak resident memory):

- specs/original.unet (valid padding): the spec's own 572 tile (default), and one tile covering
  the whole padded image (`--tile` = that size): the overlap-tile result must equal it.
- specs/bn_same.yaml (same padding): the whole image in one pass (default when it fits), exact
  tiles forced by a small `--memory`, and blended tiles (`--tile-mode blend`).

The error column is the largest absolute difference from the whole-image run of the same spec.
Results (the machine, the commit, every command and its figures) go to
bench/results/<date>-tiles-<size>.txt; `--no-save` prints only.

    cargo build --release && python3 bench/tile_bench.py --size 2048
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNETC = os.path.join(ROOT, "target", "release", "unetc")


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, peak RSS bytes, stderr)."""
    start = time.monotonic()
    p = subprocess.run(
        ["/usr/bin/time", "-v"] + cmd, cwd=ROOT, capture_output=True, text=True
    )
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, int(rss.group(1)) * 1024 if rss else None, p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="image height and width")
    ap.add_argument("--work-dir", default="/tmp/unetc-tile-bench")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    n = args.size
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
    say(f"command: python3 bench/tile_bench.py --size {n}")
    say(f"image: {n}x{n} (W x H), uniform noise, seed 0")
    say()
    say(f"{'spec':22} {'how':44} {'wall s':>8} {'Mpx/s':>7} {'peak RSS':>10} {'max |diff|':>11}")
    specs = [
        ("specs/original.unet", 1, [("spec tile 572 (default)", []), ("one tile: whole", "whole")]),
        (
            "specs/bn_same.yaml",
            3,
            [
                ("whole image (default, fits)", []),
                ("exact tiles, --memory 1GiB", ["--memory", "1GiB"]),
                ("blend, --tile 512 --tile-mode blend", ["--tile", "512", "--tile-mode", "blend"]),
            ],
        ),
    ]
    for spec, channels, ways in specs:
        stem = os.path.splitext(os.path.basename(spec))[0]
        weights = os.path.join(args.work_dir, f"{stem}.safetensors")
        subprocess.run(
            [UNETC, "init-weights", spec, "-o", weights, "--seed", "1", "--force"],
            cwd=ROOT, check=True, capture_output=True,
        )
        image = os.path.join(args.work_dir, f"image_{n}_{channels}.npy")
        rng = np.random.default_rng(0)
        np.save(image, rng.random((1, n, n, channels), dtype=np.float32))
        reference = None
        for i, (how, extra) in enumerate(ways):
            if extra == "whole":
                # The padded size of the plan: `tiles --tile` beyond it is clipped to it.
                plan = subprocess.run(
                    [UNETC, "tiles", spec, "--image", f"{n}x{n}", "--tile", "100000",
                     "--max", "16384"],
                    cwd=ROOT, capture_output=True, text=True, check=True,
                ).stdout
                side = re.search(r"tile: (\d+)x(\d+) in", plan)
                extra = ["--tile", f"{side.group(2)}x{side.group(1)}"]
                how = f"one tile: {side.group(1)}x{side.group(2)}"
            out = os.path.join(args.work_dir, f"{stem}_{i}.npy")
            cmd = [UNETC, "run", spec, "--weights", weights, "--input", image, "-o", out,
                   "--force", "--device", "cpu", "--verbose"] + extra
            wall, rss, stderr = timed(cmd)
            result = np.load(out)
            if reference is None:
                reference = result
                diff = "(reference)"
            else:
                diff = f"{float(np.abs(result - reference).max()):.3e}"
            say(f"{stem:22} {how:44} {wall:8.1f} {n * n / wall / 1e6:7.3f} "
                f"{(rss or 0) / 2**20:8.0f} MiB {diff:>11}")
            for line in stderr.splitlines():
                if "tiles of" in line or "forward pass" in line or "one pass" in line \
                        or "mirror-padded" in line:
                    say(f"    {line}")
            say(f"    $ {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}")
    if not args.no_save:
        day = datetime.date.today().isoformat()
        path = os.path.join(ROOT, "bench", "results", f"{day}-tiles-{n}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
