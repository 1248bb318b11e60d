#!/usr/bin/env python3
"""Training speed and memory: `unetc train` against tf.keras and PyTorch on the same model, weights
and batches, in one run on this machine (CPU).

    python3 bench/train_compare.py [SPEC] [--steps 3] [--batch 2] [--repeats 2] [--torch-path DIR]

PyTorch's side is seed 003's U-Net (specs/zhixuhao.unet) written in PyTorch below; it is used only
for that spec, after its eval-mode output on the first batch is checked against `unetc run` (same
weights, transposed HWIO -> OIHW). It trains with torch.optim.Adam(1e-4) and binary crossentropy,
dropout on, NCHW, torch.set_num_threads(all cores). `--torch-path` is put on PYTHONPATH for it
(where torch was installed with `pip install --target`).

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


TORCH_SIDE = r'''
import os, sys, time, json
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from safetensors.numpy import load_file
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)


class Zhixuhao(nn.Module):
    """specs/zhixuhao.unet: Keras 'same' 3x3 convs (1 each side), 2x2 up-convs padded bottom/right."""
    def __init__(self):
        super().__init__()
        c = []
        for i, o in [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                     (256, 512), (512, 512), (512, 1024), (1024, 1024)]:
            c.append(nn.Conv2d(i, o, 3, padding=1))
        prev = 1024
        for f in [512, 256, 128, 64]:
            c += [nn.Conv2d(prev, f, 2), nn.Conv2d(2 * f, f, 3, padding=1), nn.Conv2d(f, f, 3, padding=1)]
            prev = f
        c += [nn.Conv2d(64, 2, 3, padding=1), nn.Conv2d(2, 1, 1)]
        self.convs = nn.ModuleList(c)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        cv = iter(self.convs)
        def double(x):
            first, second = next(cv), next(cv)
            return F.relu(second(F.relu(first(x))))
        skips = []
        for level in range(3):
            x = double(x); skips.append(x); x = F.max_pool2d(x, 2)
        x = self.drop(double(x)); skips.append(x); x = F.max_pool2d(x, 2)
        x = self.drop(double(x))
        for skip in reversed(skips):
            up = F.interpolate(x, scale_factor=2, mode="nearest")
            up = F.relu(next(cv)(F.pad(up, (0, 1, 0, 1))))
            x = double(torch.cat([skip, up], 1))
        x = F.relu(next(cv)(x))
        return torch.sigmoid(next(cv)(x))


model = Zhixuhao()
w = load_file(sys.argv[1])
names = ["conv2d"] + [f"conv2d_{i}" for i in range(1, len(model.convs))]
with torch.no_grad():
    for conv, n in zip(model.convs, names):
        conv.weight.copy_(torch.from_numpy(w[n + "/kernel"]).permute(3, 2, 0, 1))
        conv.bias.copy_(torch.from_numpy(w[n + "/bias"]))
x = torch.from_numpy(np.load(sys.argv[2])).permute(0, 3, 1, 2).contiguous()
y = torch.from_numpy(np.load(sys.argv[3])).permute(0, 3, 1, 2).contiguous()
steps, b = int(sys.argv[4]), int(sys.argv[5])
want = np.load(sys.argv[6])
model.eval()
with torch.no_grad():
    got = model(x[:1]).permute(0, 2, 3, 1).numpy()
err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
model.train()
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
def step(i):
    opt.zero_grad()
    loss = F.binary_cross_entropy(model(x[i:i + b]), y[i:i + b])
    loss.backward()
    opt.step()
step(0)
t = time.perf_counter()
for s in range(steps):
    step((s * b) % len(x))
print(json.dumps({"seconds_per_step": (time.perf_counter() - t) / steps, "max_rel_err_vs_unetc": err,
                  "torch": torch.__version__}))
'''


def peak_and_output(cmd, env=None):
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
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
    ap.add_argument("--torch-path", help="a directory to put on PYTHONPATH for PyTorch's side")
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
    with_torch = Path(args.spec).resolve() == (ROOT / "specs" / "zhixuhao.unet").resolve()
    torch_env = dict(os.environ)
    if args.torch_path:
        torch_env["PYTHONPATH"] = args.torch_path + os.pathsep + torch_env.get("PYTHONPATH", "")
    if with_torch:
        (tmp / "torch_side.py").write_text(TORCH_SIDE)
        np.save(tmp / "x0.npy", x[:1])
        subprocess.run([UNETC, "run", args.spec, "--weights", tmp / "w.safetensors", "--input",
                        tmp / "x0.npy", "-o", tmp / "y0.npy", "--device", "cpu", "--force"],
                       check=True, capture_output=True)

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
        torch_row = {}
        if with_torch:
            t_rss, out = peak_and_output([sys.executable, str(tmp / "torch_side.py"),
                                          str(tmp / "w.safetensors"), str(tmp / "x.npy"),
                                          str(tmp / "y.npy"), str(args.steps), str(args.batch),
                                          str(tmp / "y0.npy")], env=torch_env)
            t = json.loads(out.strip().splitlines()[-1])
            if t["max_rel_err_vs_unetc"] > 1e-4:
                sys.exit(f"PyTorch's model differs from unetc's: {t}")
            torch_row = {"pytorch_version": t["torch"],
                         "pytorch_s_per_step": round(t["seconds_per_step"], 3),
                         "pytorch_images_per_s": round(args.batch / t["seconds_per_step"], 3),
                         "pytorch_peak_rss_mib": round(t_rss / 2**20, 1),
                         "pytorch_eval_output_max_rel_err_vs_unetc": t["max_rel_err_vs_unetc"]}
        row = {"date": time.strftime("%Y-%m-%d"), "spec": os.path.relpath(args.spec, ROOT),
               "batch": args.batch, "steps": args.steps, "repeat": r, "threads": os.cpu_count(),
               "unetc_s_per_step": round(u_step, 3), "tf_keras_s_per_step": round(k_step, 3),
               "unetc_images_per_s": round(args.batch / u_step, 3),
               "tf_keras_images_per_s": round(args.batch / k_step, 3),
               "unetc_peak_rss_mib": round(u_rss / 2**20, 1),
               "tf_keras_peak_rss_mib": round(k_rss / 2**20, 1), **torch_row}
        print(json.dumps(row))
        rows.append(row)
    with open(ROOT / "bench" / "results" / "train_compare.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
