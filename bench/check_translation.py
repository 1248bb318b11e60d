#!/usr/bin/env python3
"""Checks bench/pytorch_unet.py against real tf.keras: every fixture of tests/golden/ that has
weights (`<m>.unet`, `<m>.weights.safetensors`, and `<m>.io.safetensors` with Keras's own input
and output) is built in PyTorch and run on Keras's input.

    python3 bench/check_translation.py [--tolerance 1e-6]

Prints max|torch - keras| / max|keras| per fixture; exits 1 if any is above the tolerance.
Needs target/release/unetc (for `unetc check --format json`).
"""

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pytorch_unet import build_model, describe, load_unetc_weights  # noqa: E402

GOLDEN = HERE.parent / "tests" / "golden"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tolerance", type=float, default=1e-6)
    a = ap.parse_args()
    worst = 0.0
    for w in sorted(glob.glob(str(GOLDEN / "*.weights.safetensors"))):
        stem = Path(w).name.split(".")[0]
        io = load_file(str(GOLDEN / f"{stem}.io.safetensors"))
        model = build_model(describe(GOLDEN / f"{stem}.unet"), load_unetc_weights(w))
        with torch.inference_mode():
            y = model(torch.from_numpy(io["input"])).numpy()
        ref = io["output"]
        assert y.shape == ref.shape, (stem, y.shape, ref.shape)
        err = float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())
        worst = max(worst, err)
        print(f"{stem:20s} {str(ref.shape):20s} max rel {err:.2e}")
    print(f"worst {worst:.2e} (tolerance {a.tolerance:.0e})")
    return 0 if worst <= a.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
