#!/usr/bin/env python3
"""One-off: the full original U-Net (seed 000, specs/original.unet, 572x572x1, 31,030,658
parameters) in real tf.keras with the formula weights of generate.py, run on one seeded image.

    python tests/golden/full_size_check.py /tmp/original_572.io.safetensors

Writes ``input`` (1x572x572x1) and ``output`` (1x388x388x2), float32, to the given path (about
2.5 MB; not committed). The input is ``numpy.random.default_rng(fnv1a_32(b"original_572"))
.random((1, 572, 572, 1), dtype=float32)``. To compare with unetc, run specs/original.unet with
the formula weights (generate.py's docstring; ``original_full`` in generate.py is the same graph)
on that input and compare with ``output``. On a 2-core CPU it takes about 15 s (predict
about 6 s).
"""

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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
