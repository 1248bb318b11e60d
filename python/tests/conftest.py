"""Shared fixtures: the `unetc` binary the Python results are compared with, and weights."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPECS = pathlib.Path(__file__).resolve().parent / "specs"


def _find_cli() -> pathlib.Path:
    env = os.environ.get("UNETC_BIN")
    if env:
        return pathlib.Path(env)
    for profile in ("release", "debug"):
        candidate = ROOT / "target" / profile / "unetc"
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        "no unetc binary: run `cargo build --release` first or set UNETC_BIN"
    )


@pytest.fixture(scope="session")
def cli():
    """Runs the unetc CLI; returns the CompletedProcess (text), failing on a non-zero exit
    unless `ok=False`."""
    binary = _find_cli()

    def run(*args, ok=True):
        p = subprocess.run(
            [str(binary), *map(str, args)], capture_output=True, text=True, cwd=ROOT
        )
        if ok and p.returncode != 0:
            raise AssertionError(f"unetc {' '.join(map(str, args))} failed:\n{p.stderr}")
        return p

    return run


@pytest.fixture(scope="session")
def weights(cli, tmp_path_factory):
    """`unetc init-weights` for each test spec: {spec name: weights path}."""
    out = {}
    d = tmp_path_factory.mktemp("weights")
    for name in ("small_valid", "small_same"):
        w = d / f"{name}.safetensors"
        cli("init-weights", SPECS / f"{name}.unet", "-o", w, "--seed", "7")
        out[name] = w
    return out
