"""Ray Data over a directory of images (examples/ray_segment.py) gives the files `unetc run`
writes for the same directory, bit for bit. Needs `pip install 'ray[data]' pillow`; skipped
without ray unless UNETC_REQUIRE_RAY=1 (CI), which makes a missing ray a failure."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SPECS

if os.environ.get("UNETC_REQUIRE_RAY") != "1":
    pytest.importorskip("ray")
    pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def test_ray_data_equals_unetc_run(cli, weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    # Small 8-bit gray images of a few sizes: some at the model's 44 x 44, some tiled.
    for i, (h, w) in enumerate([(44, 44), (60, 80), (44, 44), (70, 50), (90, 44), (44, 44)]):
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(images / f"img{i}.png")
    spec = SPECS / "small_valid.unet"
    expected = tmp_path / "cli.npy"
    cli("run", spec, "--weights", weights["small_valid"], "--input", images, "-o", expected, "--device", "cpu")
    got = tmp_path / "ray_out"
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ray_segment.py"), str(spec), str(weights["small_valid"]),
         str(images), str(got), "--workers", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    print(p.stdout)
    names = sorted(os.listdir(expected))
    assert names == [f"img{i}.npy" for i in range(6)]
    assert sorted(os.listdir(got)) == names
    for name in names:
        a, b = np.load(got / name), np.load(expected / name)
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_array_equal(a, b, err_msg=name)
