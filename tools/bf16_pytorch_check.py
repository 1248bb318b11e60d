#!/usr/bin/env python3
"""How far bf16 inference lands from tf.keras's f32 output on every golden fixture, measured
with PyTorch (weights and activations in bfloat16, as unetc's `--precision bf16` stores them):
an independent estimate of the error the bf16 tolerance in tests/cuda.rs has to allow.

    python3 tools/bf16_pytorch_check.py      (needs torch, safetensors, target/release/unetc)
"""
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pytorch_unet import build_model, describe, load_unetc_weights  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
for w in sorted(glob.glob(str(GOLDEN / "*.weights.safetensors"))):
    stem = Path(w).name.split(".")[0]
    io = load_file(str(GOLDEN / f"{stem}.io.safetensors"))
    model = build_model(describe(GOLDEN / f"{stem}.unet"), load_unetc_weights(w), dtype=torch.bfloat16)
    with torch.inference_mode():
        y = model(torch.from_numpy(io["input"]).to(torch.bfloat16)).float().numpy()
    ref = io["output"]
    print(f"{stem:24s} max|bf16 - keras| / max|keras| = {np.abs(y - ref).max() / np.abs(ref).max():.2e}")
