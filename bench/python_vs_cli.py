"""Model.predict (unetc's Python package) beside the unetc CLI on a batch of small images:
how much of a per-image CLI call is start-up (process, compile, weights) that a loaded
`unetc.Model` pays once.

    cargo build --release && pip install ./python
    python3 bench/python_vs_cli.py [SPEC] [--images 64] [--repeats 3]

Times, for N images at the spec's input size (random, seeded):
  cli-per-image   N processes of `unetc run SPEC --input img_i.npy -o out_i.npy`
  cli-directory   one `unetc run SPEC --input DIR -o OUT.npy/` (start-up once, files per image)
  python-load     unetc.Model(SPEC, WEIGHTS) (compile + bind weights)
  python-loop     model.predict(x_i) for each image, in memory
  python-batch    model.predict(all N) (forward passes of 1, as the CLI's default --batch 1)
checks that every Python output equals the CLI's file bit for bit, and writes the raw numbers with
date, machine, commit and command to bench/results/<date>-python-vs-cli-<spec stem>.txt.
"""

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import unetc

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLI = ROOT / "target" / "release" / "unetc"


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", default=str(ROOT / "python" / "tests" / "specs" / "small_same.unet"))
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    spec = pathlib.Path(args.spec)
    work = pathlib.Path(tempfile.mkdtemp(prefix="unetc-pybench-"))
    weights = work / "w.safetensors"
    subprocess.run([CLI, "init-weights", spec, "-o", weights, "--seed", "1"], check=True, capture_output=True)
    shape = tuple(unetc.check(spec).layers[0]["output_shape"][1:])
    rng = np.random.default_rng(1)
    xs = [rng.random(shape, dtype=np.float32) for _ in range(args.images)]
    inputs = work / "in"
    inputs.mkdir()
    for i, x in enumerate(xs):
        np.save(inputs / f"img{i:04d}.npy", x[None])

    rows = {k: [] for k in ("cli-per-image", "cli-directory", "python-load", "python-loop", "python-batch")}
    for r in range(args.repeats):
        outs = work / f"per{r}"
        outs.mkdir()

        def per_image():
            for i in range(args.images):
                subprocess.run([CLI, "run", spec, "--weights", weights, "--input", inputs / f"img{i:04d}.npy",
                                "-o", outs / f"img{i:04d}.npy", "--device", "cpu"], check=True)

        rows["cli-per-image"].append(timed(per_image))
        d = work / f"dir{r}.npy"
        rows["cli-directory"].append(timed(lambda: subprocess.run(
            [CLI, "run", spec, "--weights", weights, "--input", inputs, "-o", d, "--device", "cpu"], check=True)))
        holder = {}
        rows["python-load"].append(timed(lambda: holder.setdefault("m", unetc.Model(spec, weights))))
        model = holder["m"]
        loop = []
        rows["python-loop"].append(timed(lambda: loop.extend(model.predict(x) for x in xs)))
        batch = {}
        rows["python-batch"].append(timed(lambda: batch.setdefault("y", model.predict(np.stack(xs)))))
        for i in range(args.images):
            cli_out = np.load(d / f"img{i:04d}.npy")[0]
            assert np.array_equal(cli_out, loop[i]) and np.array_equal(cli_out, batch["y"][i]), i
            assert np.array_equal(cli_out, np.load(outs / f"img{i:04d}.npy")[0]), i

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = [
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f} at the start of writing",
        f"commit: {commit}{' (uncommitted changes)' if dirty else ''}",
        f"command: python3 bench/python_vs_cli.py {' '.join(sys.argv[1:])}",
        f"spec: {spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec}, input {shape}, {args.images} images, {args.repeats} repeats; every output equal to the CLI's bit for bit",
        "",
        f"{'what':<16}{'median s':>10}{'ms/image':>10}   every repeat (s)",
    ]
    for k, v in rows.items():
        per = "" if k == "python-load" else f"{1e3 * statistics.median(v) / args.images:>10.2f}"
        lines.append(f"{k:<16}{statistics.median(v):>10.3f}{per:>10}   " + " ".join(f"{t:.3f}" for t in v))
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        out = ROOT / "bench" / "results" / f"{datetime.date.today().isoformat()}-python-vs-cli-{spec.stem}.txt"
        out.write_text(text)
        print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
