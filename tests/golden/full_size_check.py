#!/usr/bin/env python3
"""One-off: the full original U-Net (seed 000, specs/original.unet, 572x572x1, 31,030,658
parameters) in real tf.keras with the formula weights of generate.py, run on one seeded image.

    python tests/golden/full_size_check.py /tmp/original_572.io.safetensors
    UNETC=target/release/unetc python tests/golden/full_size_check.py /tmp/original_572.io.safetensors

Writes ``input`` (1x572x572x1) and ``output`` (1x388x388x2), float32, to the given path (about
2.5 MB; not committed). The input is ``numpy.random.default_rng(fnv1a_32(b"original_572"))
.random((1, 572, 572, 1), dtype=float32)``. To compare with unetc, run specs/original.unet with
the formula weights (generate.py's docstring; ``original_full`` in generate.py is the same graph)
on that input and compare with ``output``. On a 2-core CPU it takes about 15 s (predict
about 6 s).
"""

import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate as g  # noqa: E402  (sets TF_USE_LEGACY_KERAS etc. before TensorFlow loads)


def main(argv) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import save_file

    t0 = time.time()
    tf.keras.backend.clear_session()
    model = g.original_full_at(572)
    g.set_formula_weights(model)
    t1 = time.time()
    x = g.seeded_input("original_572", (572, 572, 1), 1)
    y = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
    t2 = time.time()
    assert model.count_params() == 31030658, model.count_params()
    assert y.shape == (1, 388, 388, 2), y.shape
    save_file({"input": np.ascontiguousarray(x), "output": np.ascontiguousarray(y)}, str(out),
              metadata={"model": "original_572"})
    print(f"built + formula weights {t1 - t0:.1f}s, predict {t2 - t1:.1f}s; output {y.shape} "
          f"min {y.min():.6g} max {y.max():.6g} mean {y.mean():.6g} std {y.std():.3g}; "
          f"wrote {out}")
    unetc = os.environ.get("UNETC")
    if unetc:
        # Run the same weights and input through `unetc run` and compare.
        import subprocess
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
        from keras_to_safetensors import save_unetc_weights
        work = out.parent
        weights, x_npy, y_npy = work / "original_572.safetensors", work / "original_572.x.npy", work / "original_572.y.npy"
        save_unetc_weights(model, str(weights))
        np.save(x_npy, x)
        spec = Path(__file__).resolve().parents[2] / "specs" / "original.unet"
        t3 = time.time()
        subprocess.run([unetc, "run", str(spec), "--weights", str(weights), "--input", str(x_npy),
                        "--output", str(y_npy), "--force"], check=True)
        t4 = time.time()
        u = np.load(y_npy)
        err = np.abs(u - y).max()
        print(f"unetc run {t4 - t3:.1f}s; output {u.shape}; max |unetc - keras| {err:.3g}, "
              f"relative to max |keras| {err / np.abs(y).max():.3g}; "
              f"argmax agreement {(u.argmax(-1) == y.argmax(-1)).mean() * 100:.4f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
