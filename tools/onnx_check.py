#!/usr/bin/env python3
"""Run an ONNX model exported by `unetc export SPEC --to onnx` in onnxruntime.

usage: python3 tools/onnx_check.py MODEL.onnx INPUT.npy[,INPUT2.npy,...] OUTPUT.npy [--require-checker]

Reads INPUT.npy (NHWC float32, batch first, as `unetc run` takes it; for a model of several
inputs one file each, comma-separated, in the model's input order), runs the model on
onnxruntime's CPU provider and writes its first output to OUTPUT.npy (float32); further outputs
go to OUTPUT.1.npy, OUTPUT.2.npy, ... If the `onnx` package is installed, the model is first
validated with `onnx.checker.check_model(full_check=True)` (which includes ONNX shape
inference); `--require-checker` makes a missing `onnx` package an error.

Needs: pip install onnxruntime numpy   (optional: onnx)
Used by tests/onnx.rs, which compares the result with unetc's CPU executor.
Exit codes: 0 ok, 1 the model failed to load, check or run, 2 usage or missing packages.
"""

import sys


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    if len(args) != 3 or flags - {"--require-checker"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    model_path, input_path, output_path = args
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"error: {e}; pip install onnxruntime numpy", file=sys.stderr)
        return 2

    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(model_path)
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # the checker raises several exception types
            print(f"error: onnx.checker rejects {model_path}: {e}", file=sys.stderr)
            return 1
        opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        print(f"onnx.checker: ok (ir_version {model.ir_version}, opsets {opsets})")
    elif "--require-checker" in flags:
        print("error: the onnx package is not installed; pip install onnx", file=sys.stderr)
        return 2
    else:
        print("onnx.checker: skipped (pip install onnx to run it)")

    xs = [np.load(p).astype(np.float32) for p in input_path.split(",")]
    try:
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    except Exception as e:
        print(f"error: onnxruntime cannot load {model_path}: {e}", file=sys.stderr)
        return 1
    inputs = sess.get_inputs()
    if len(inputs) != len(xs):
        print(f"error: the model has {len(inputs)} inputs; {len(xs)} given", file=sys.stderr)
        return 1
    try:
        outputs = sess.run(None, {i.name: x for i, x in zip(inputs, xs)})
    except Exception as e:
        print(f"error: onnxruntime failed to run {model_path}: {e}", file=sys.stderr)
        return 1
    stem = output_path[:-4] if output_path.endswith(".npy") else output_path
    for i, (meta, y) in enumerate(zip(sess.get_outputs(), outputs)):
        path = output_path if i == 0 else f"{stem}.{i}.npy"
        np.save(path, np.ascontiguousarray(y, dtype=np.float32))
        print(f"{meta.name}: {list(y.shape)} -> {path}")
    fed = ", ".join(f"{i.name} {list(x.shape)}" for i, x in zip(inputs, xs))
    print(f"onnxruntime {ort.__version__}: ran {fed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
