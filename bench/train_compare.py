#!/usr/bin/env python3
"""Training speed and memory: `unetc train` against tf.keras on the same model, weights and
batches, in one run on this machine (CPU). PyTorch is the comparison issue 13 asks for; it is not
installable on this project's machines (no CPU wheel reachable), so tf.keras, the reference, is
the competitor here.

    python3 bench/train_compare.py [SPEC] [--steps 3] [--batch 2] [--repeats 2]

Each side runs as its own process (peak RSS from /usr/bin/time -v): tf.keras builds the model
from `unetc export --to keras`, loads the same initial weights, compiles with Adam and binary
crossentropy and times `train_on_batch` after one warm-up step; unetc times `train --steps N+1`
as a whole and subtracts a 1-step run (start-up, loading) to get the per-step time. Rows are
printed as JSON lines and appended to bench/results/train_compare.jsonl.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNETC = ROOT / "target" / "release" / "unetc"

KERAS_SIDE = r'''
import os, sys, time, json
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import numpy as np, tensorflow as tf
from safetensors.numpy import load_file
ns = {}
exec(open(sys.argv[1]).read(), ns)
model = ns["build_model"]()
w = load_file(sys.argv[2])
for layer in model.layers:
    for v in layer.weights:
        v.assign(w[layer.name + "/" + v.name.split("/")[-1].split(":")[0]])
x = np.load(sys.argv[3]); y = np.load(sys.argv[4]); steps = int(sys.argv[5]); b = int(sys.argv[6])
model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
model.train_on_batch(x[:b], y[:b])
t = time.perf_counter()
for s in range(steps):
    i = (s * b) % len(x)
    model.train_on_batch(x[i:i + b], y[i:i + b])
print(json.dumps({"seconds_per_step": (time.perf_counter() - t) / steps}))
'''


def peak_and_output(cmd):
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    rss = next(int(l.split()[-1]) for l in r.stderr.splitlines() if "Maximum resident" in l)
    return rss * 1024, r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "zhixuhao.unet"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import numpy as np

    tmp = Path(tempfile.mkdtemp())
    code = subprocess.run([UNETC, "export", "--to", "keras", args.spec], capture_output=True,
                          text=True, check=True).stdout
    (tmp / "model.py").write_text(code)
    subprocess.run([UNETC, "init-weights", args.spec, "-o", tmp / "w.safetensors", "--seed", "1"],
                   check=True, capture_output=True)
    check = json.loads(subprocess.run([UNETC, "check", args.spec, "--format", "json"],
                                      capture_output=True, text=True, check=True).stdout)
    model = check[0] if isinstance(check, list) else check
    layers = model["layers"]
    shape_in = layers[0]["output_shape"]
    shape_out = layers[-1]["output_shape"]
    shape_in = shape_in[0] if isinstance(shape_in[0], list) else shape_in
    n = args.batch * (args.steps + 1)
    rng = np.random.default_rng(0)
    x = rng.random([n] + [d for d in shape_in[1:]], dtype=np.float32)
    y = (rng.random([n] + [d for d in shape_out[1:]]) < 0.3).astype(np.float32)
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", y)
    (tmp / "keras_side.py").write_text(KERAS_SIDE)

    def unetc_run(steps):
        t = time.perf_counter()
        rss, _ = peak_and_output([str(UNETC), "train", args.spec, "--weights", str(tmp / "w.safetensors"),
                                  "--inputs", str(tmp / "x.npy"), "--targets", str(tmp / "y.npy"),
                                  "--loss", "binary_crossentropy", "--learning-rate", "1e-4",
                                  "--batch-size", str(args.batch), "--steps", str(steps),
                                  "--no-shuffle", "-o", str(tmp / "out.safetensors"), "--force"])
        return time.perf_counter() - t, rss

    rows = []
    for r in range(args.repeats):
        k_rss, out = peak_and_output([sys.executable, str(tmp / "keras_side.py"), str(tmp / "model.py"),
                                      str(tmp / "w.safetensors"), str(tmp / "x.npy"), str(tmp / "y.npy"),
                                      str(args.steps), str(args.batch)])
        k_step = json.loads(out.strip().splitlines()[-1])["seconds_per_step"]
        one, _ = unetc_run(1)
        many, u_rss = unetc_run(args.steps + 1)
        u_step = (many - one) / args.steps
        row = {"date": time.strftime("%Y-%m-%d"), "spec": os.path.relpath(args.spec, ROOT),
               "batch": args.batch, "steps": args.steps, "repeat": r, "threads": os.cpu_count(),
               "unetc_s_per_step": round(u_step, 3), "tf_keras_s_per_step": round(k_step, 3),
               "unetc_images_per_s": round(args.batch / u_step, 3),
               "tf_keras_images_per_s": round(args.batch / k_step, 3),
               "unetc_peak_rss_mib": round(u_rss / 2**20, 1),
               "tf_keras_peak_rss_mib": round(k_rss / 2**20, 1)}
        print(json.dumps(row))
        rows.append(row)
    with open(ROOT / "bench" / "results" / "train_compare.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
