#!/usr/bin/env python3
"""The network of a unetc spec, built in PyTorch from unetc's own JSON description.

    python bench/pytorch_unet.py SPEC --weights W.safetensors --input X.npy --output Y.npy

As a module::

    from pytorch_unet import describe, build_model, load_unetc_weights
    desc = describe("specs/original.unet")          # `unetc check SPEC --format json`
    model = build_model(desc, load_unetc_weights("w.safetensors"))
    y = model(x_nhwc)                               # NHWC in, NHWC out (as Keras and unetc)

The graph is whatever `unetc check --format json` reports: its layers in Keras's order, each with
its Keras class, Keras config (defaults filled in) and input layer names. Each layer is translated
with Keras 2 semantics:

* tensors are NCHW inside (channels_last *memory format*, so the bytes are laid out NHWC as in
  Keras); NHWC <-> NCHW only at the model's inputs and outputs;
* Conv2D: Keras kernel (kh, kw, in, out) -> torch (out, in, kh, kw); `same` padding is Keras's:
  total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0), the extra pixel of an odd
  total goes bottom/right (explicit F.pad then, symmetric padding inside the conv otherwise);
* Conv2DTranspose: Keras kernel (kh, kw, out, in) -> torch ConvTranspose2d weight (in, out, kh, kw)
  (neither flips the kernel); the output size is Keras's `deconv_output_length`, and the full
  transposed convolution is cropped (or zero-extended) to it the way TF's conv2d_transpose does:
  offset 0 for `valid`, max((in - 1) * s + k_eff - out, 0) // 2 for `same`;
* MaxPooling2D (valid, or same with -inf padding bottom/right first), Cropping2D, ZeroPadding2D,
  Concatenate (Keras axis mapped to NCHW), Add, Softmax (axis), Activation / ReLU,
  BatchNormalization (inference: moving statistics, epsilon from the config), Dropout (identity at
  inference), UpSampling2D (nearest; bilinear as tf.image.resize, half-pixel centres), InputLayer,
  and for completeness Flatten (in NHWC order, as Keras), Dense, GlobalAveragePooling2D.

Weights come from a unetc safetensors file: one tensor per variable, named `<layer>/<variable>`,
in Keras's layouts (`unetc init-weights` writes one; tools/keras_to_safetensors.py converts Keras's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
UNETC = Path(os.environ.get("UNETC", REPO / "target" / "release" / "unetc"))

# NHWC axis (Keras, batch included) -> NCHW axis (torch).
NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


def describe(spec: str | os.PathLike, unetc: str | os.PathLike = UNETC) -> dict:
    """`unetc check SPEC --format json`, parsed. Raises if the spec has errors."""
    proc = subprocess.run(
        [str(unetc), "check", str(spec), "--format", "json", "--color", "never"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"unetc check {spec} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


def load_unetc_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`<layer>/<variable>` -> tensor in Keras's layout. build_model() consumes the dict."""
    try:
        from safetensors.torch import load_file
    except ImportError:  # e.g. a GPU machine with torch but no safetensors and no pip
        return _read_safetensors(path)
    return load_file(str(path))


def _read_safetensors(path) -> dict[str, torch.Tensor]:
    """A minimal safetensors reader: u64 LE header size, JSON header, little-endian data."""
    dtypes = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = bytearray(raw[8 + n:])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        dt = dtypes[t["dtype"]]
        x = (torch.frombuffer(data, dtype=dt, count=(b - a) // dt.itemsize, offset=a)
             if b > a else torch.empty(0, dtype=dt))
        out[name] = x.reshape(t["shape"]).clone()
    return out


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if rank == 4:
        return NHWC_TO_NCHW[a]
    return a


def _activation(name) -> "callable":
    if name in (None, "linear", "None"):
        return lambda x: x
    acts = {
        "relu": F.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda x: torch.softmax(x, dim=1 if x.dim() == 4 else -1),
        "elu": F.elu,
        "selu": F.selu,
        "softplus": F.softplus,
        "swish": F.silu,
        "silu": F.silu,
        "gelu": lambda x: F.gelu(x, approximate="none"),
        "exponential": torch.exp,
        "softsign": F.softsign,
        "hard_sigmoid": lambda x: torch.clamp(0.2 * x + 0.5, 0.0, 1.0),  # Keras 2's definition
        "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
        "mish": F.mish,
        "leaky_relu": lambda x: F.leaky_relu(x, 0.2),  # Keras's default alpha
    }
    if name not in acts:
        raise NotImplementedError(f"activation {name!r}")
    return acts[name]


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Keras/TF `same`: (before, after), the odd pixel after."""
    k_eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def _deconv_length(size: int, k: int, s: int, d: int, padding: str, output_padding) -> int:
    """keras.utils.conv_utils.deconv_output_length."""
    k_eff = (k - 1) * d + 1
    if output_padding is None:
        if padding == "valid":
            return size * s + max(k_eff - s, 0)
        if padding == "full":
            return size * s - (s + k_eff - 2)
        return size * s
    pad = {"same": k_eff // 2, "valid": 0, "full": k_eff - 1}[padding]
    return (size - 1) * s + k_eff - 2 * pad + output_padding


class Node:
    """One Keras layer: a callable over its input tensors (NCHW, channels_last)."""

    def __init__(self, name: str, cls: str, inputs: list[str], fn):
        self.name, self.cls, self.inputs, self.fn = name, cls, inputs, fn


class KerasGraph(torch.nn.Module):
    """The functional model. Call with NHWC tensors (one per model input); returns NHWC."""

    def __init__(self, desc: dict, weights: dict, dtype=torch.float32, device=None):
        super().__init__()
        self.inputs = list(desc["inputs"])
        self.outputs = list(desc["outputs"])
        self.params = torch.nn.ParameterDict()
        self.nodes: list[Node] = []
        self._dtype = dtype
        # Parameters are made on the device directly: the layer closures hold them, so they must
        # not be replaced later (Module.to keeps them today, but nothing else relies on that).
        self._device = torch.device(device) if device is not None else None
        used: set[str] = set()
        for layer in desc["layers"]:
            self.nodes.append(self._translate(layer, weights, used))
        unused = sorted(weights)  # what _w did not take
        if unused:
            print(f"pytorch_unet: weights not used by the graph: {unused[:8]}", file=sys.stderr)
        # Free each tensor after its last use, as an inference runtime would.
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for src in n.inputs:
                last_use[src] = i
        self._free_after = [
            [src for src in set(n.inputs) if last_use[src] == i and src not in self.outputs]
            for i, n in enumerate(self.nodes)
        ]

    # -- weights ---------------------------------------------------------------------------------
    def _w(self, weights, used, layer, var, conv=None, optional=False):
        key = f"{layer['name']}/{var}"
        if key not in weights:
            if optional:
                return None
            raise KeyError(f"weights file has no tensor {key!r}")
        used.add(key)
        # Taken out of the dict so that each file tensor is freed once converted (the peak while
        # building is then the model's weights plus one layer's, not two copies of everything).
        t = torch.as_tensor(weights.pop(key)).to(torch.float32)
        expect = {w["name"]: w["shape"] for w in layer.get("weights", [])}.get(key)
        if expect is not None and list(t.shape) != list(expect):
            raise ValueError(f"{key}: shape {list(t.shape)} in the file, the spec needs {expect}")
        if conv is not None:
            # Conv2D (kh, kw, in, out) -> (out, in, kh, kw);
            # Conv2DTranspose (kh, kw, out, in) -> (in, out, kh, kw). Same permutation for both.
            t = t.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        p = torch.nn.Parameter(t.to(device=self._device, dtype=self._dtype), requires_grad=False)
        self.params[key.replace("/", "__").replace(".", "_")] = p
        return p

    # -- layers ----------------------------------------------------------------------------------
    def _translate(self, layer, weights, used) -> Node:
        cls, cfg, name = layer["class"], layer["config"], layer["name"]
        ins = list(layer["inputs"])
        shape_out = layer.get("output_shape")

        def single(f):
            return lambda xs: f(xs[0])

        if cls == "InputLayer":
            return Node(name, cls, ins, None)

        if cls == "Conv2D":
            kh, kw = _pair(cfg["kernel_size"])
            sh, sw = _pair(cfg["strides"])
            dh, dw = _pair(cfg["dilation_rate"])
            if cfg.get("groups", 1) not in (1, None):
                raise NotImplementedError(f"{name}: groups")
            w = self._w(weights, used, layer, "kernel", conv=True)
            b = self._w(weights, used, layer, "bias") if cfg.get("use_bias", True) else None
            act = _activation(cfg.get("activation"))
            padding = cfg["padding"]

            def conv(x, w=w, b=b, act=act, padding=padding):
                if padding == "same":
                    t, bo = _same_pads(x.shape[2], kh, sh, dh)
                    l, r = _same_pads(x.shape[3], kw, sw, dw)
                    if t == bo and l == r:
                        return act(F.conv2d(x, w, b, (sh, sw), (t, l), (dh, dw)))
                    x = F.pad(x, (l, r, t, bo))
                elif padding != "valid":
                    raise NotImplementedError(f"{name}: padding {padding!r}")
                return act(F.conv2d(x, w, b, (sh, sw), 0, (dh, dw)))

            return Node(name, cls, ins, single(conv))

        if cls == "Conv2DTranspose":
            kh, kw = _pair(cfg["kernel_size"])
            sh, sw = _pair(cfg["strides"])
            dh, dw = _pair(cfg["dilation_rate"])
            op = cfg.get("output_padding")
            oph, opw = (None, None) if op is None else _pair(op)
            w = self._w(weights, used, layer, "kernel", conv=True)
            b = self._w(weights, used, layer, "bias") if cfg.get("use_bias", True) else None
            act = _activation(cfg.get("activation"))
            padding = cfg["padding"]

            def deconv(x, w=w, b=b, act=act, padding=padding):
                hin, win = x.shape[2], x.shape[3]
                ho = _deconv_length(hin, kh, sh, dh, padding, oph)
                wo = _deconv_length(win, kw, sw, dw, padding, opw)
                full_h = (hin - 1) * sh + (kh - 1) * dh + 1
                full_w = (win - 1) * sw + (kw - 1) * dw + 1
                if ho == full_h and wo == full_w:  # valid, no output padding: torch's own op
                    return act(F.conv_transpose2d(x, w, b, (sh, sw), 0, 0, 1, (dh, dw)))
                if padding == "same":
                    top = max((hin - 1) * sh + (kh - 1) * dh + 1 - ho, 0) // 2
                    left = max((win - 1) * sw + (kw - 1) * dw + 1 - wo, 0) // 2
                else:
                    top = left = 0
                y = F.conv_transpose2d(x, w, None, (sh, sw), 0, 0, 1, (dh, dw))
                # Crop (negative pad) or zero-extend the full output to Keras's size.
                y = F.pad(y, (-left, wo - (full_w - left), -top, ho - (full_h - top)))
                if b is not None:
                    y = y + b.view(1, -1, 1, 1)
                return act(y)

            return Node(name, cls, ins, single(deconv))

        if cls in ("MaxPooling2D", "AveragePooling2D"):
            ph, pw = _pair(cfg["pool_size"])
            sh, sw = _pair(cfg.get("strides") or cfg["pool_size"])
            padding = cfg["padding"]
            is_max = cls == "MaxPooling2D"

            def pool(x):
                if padding == "same":
                    t, bo = _same_pads(x.shape[2], ph, sh, 1)
                    l, r = _same_pads(x.shape[3], pw, sw, 1)
                    if t or bo or l or r:
                        if is_max:
                            x = F.pad(x, (l, r, t, bo), value=-math.inf)
                        else:  # TF averages over the valid pixels only
                            ones = torch.ones_like(x[:, :1])
                            num = F.avg_pool2d(F.pad(x, (l, r, t, bo)), (ph, pw), (sh, sw))
                            den = F.avg_pool2d(F.pad(ones, (l, r, t, bo)), (ph, pw), (sh, sw))
                            return num / den
                if is_max:
                    return F.max_pool2d(x, (ph, pw), (sh, sw))
                return F.avg_pool2d(x, (ph, pw), (sh, sw))

            return Node(name, cls, ins, single(pool))

        if cls == "Cropping2D":
            (t, bo), (l, r) = cfg["cropping"]
            return Node(name, cls, ins,
                        single(lambda x: x[:, :, t:x.shape[2] - bo, l:x.shape[3] - r]))

        if cls == "ZeroPadding2D":
            (t, bo), (l, r) = cfg["padding"]
            return Node(name, cls, ins, single(lambda x: F.pad(x, (l, r, t, bo))))

        if cls == "Concatenate":
            axis = int(cfg.get("axis", -1))
            return Node(name, cls, ins,
                        lambda xs: torch.cat(xs, dim=_axis(axis, xs[0].dim())))

        if cls == "Add":
            def add(xs):
                y = xs[0]
                for x in xs[1:]:
                    y = y + x
                return y
            return Node(name, cls, ins, add)

        if cls == "Softmax":
            axis = cfg.get("axis", -1)
            if isinstance(axis, list):
                if len(axis) != 1:
                    raise NotImplementedError(f"{name}: softmax over several axes")
                axis = axis[0]
            return Node(name, cls, ins,
                        single(lambda x: torch.softmax(x, dim=_axis(int(axis), x.dim()))))

        if cls == "Activation":
            return Node(name, cls, ins, single(_activation(cfg["activation"])))

        if cls == "ReLU":
            max_value = cfg.get("max_value")
            slope = float(cfg.get("negative_slope", 0.0) or 0.0)
            thr = float(cfg.get("threshold", 0.0) or 0.0)

            def relu(x):
                if slope == 0.0 and thr == 0.0:
                    y = F.relu(x)
                else:
                    y = torch.where(x >= thr, x, slope * (x - thr))
                if max_value is not None:
                    y = torch.clamp(y, max=float(max_value))
                return y
            return Node(name, cls, ins, single(relu))

        if cls == "BatchNormalization":
            axis = cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) else axis
            if axis not in (3, -1):
                raise NotImplementedError(f"{name}: batch normalization over axis {axis}")
            eps = float(cfg.get("epsilon", 1e-3))
            gamma = self._w(weights, used, layer, "gamma") if cfg.get("scale", True) else None
            beta = self._w(weights, used, layer, "beta") if cfg.get("center", True) else None
            mean = self._w(weights, used, layer, "moving_mean")
            var = self._w(weights, used, layer, "moving_variance")
            return Node(name, cls, ins, single(
                lambda x: F.batch_norm(x, mean, var, gamma, beta, False, 0.0, eps)))

        if cls in ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout"):
            return Node(name, cls, ins, single(lambda x: x))

        if cls == "UpSampling2D":
            sh, sw = _pair(cfg["size"])
            mode = cfg.get("interpolation", "nearest")
            if mode == "nearest":
                return Node(name, cls, ins, single(
                    lambda x: F.interpolate(x, scale_factor=(sh, sw), mode="nearest")))
            if mode == "bilinear":
                return Node(name, cls, ins, single(
                    lambda x: F.interpolate(x, scale_factor=(sh, sw), mode="bilinear",
                                            align_corners=False)))
            raise NotImplementedError(f"{name}: interpolation {mode!r}")

        if cls == "Flatten":
            # Keras flattens NHWC: channels fastest.
            return Node(name, cls, ins, single(
                lambda x: (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).reshape(x.shape[0], -1)))

        if cls == "GlobalAveragePooling2D":
            return Node(name, cls, ins, single(lambda x: x.mean(dim=(2, 3))))

        if cls == "Dense":
            w = self._w(weights, used, layer, "kernel")  # (in, out)
            b = self._w(weights, used, layer, "bias") if cfg.get("use_bias", True) else None
            act = _activation(cfg.get("activation"))

            def dense(x, w=w, b=b):
                if x.dim() == 4:  # Dense on NHWC applies to the last (channel) axis
                    y = torch.matmul(x.permute(0, 2, 3, 1), w)
                    if b is not None:
                        y = y + b
                    return act(y.permute(0, 3, 1, 2))
                y = x @ w
                return act(y + b if b is not None else y)
            return Node(name, cls, ins, single(dense))

        raise NotImplementedError(f"layer {name}: class {cls} is not translated")

    # -- running ---------------------------------------------------------------------------------
    def forward(self, *xs_nhwc: torch.Tensor):
        if len(xs_nhwc) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} input(s), got {len(xs_nhwc)}")
        env: dict[str, torch.Tensor] = {}
        for name, x in zip(self.inputs, xs_nhwc):
            # NHWC -> NCHW view; its strides are exactly channels_last.
            env[name] = x.to(self._dtype).permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last)
        for node, free in zip(self.nodes, self._free_after):
            if node.fn is not None:
                env[node.name] = node.fn([env[i] for i in node.inputs])
            for f in free:
                env.pop(f, None)
        outs = []
        for o in self.outputs:
            y = env[o]
            outs.append(y.permute(0, 2, 3, 1).contiguous() if y.dim() == 4 else y)
        return outs[0] if len(outs) == 1 else tuple(outs)


def build_model(desc: dict, weights: dict, dtype=torch.float32, device=None) -> KerasGraph:
    """The model of `desc` with `weights` (taken out of the dict as they are converted), its
    parameters in `dtype` on `device` (default: float32 on the CPU)."""
    bad = [d for d in desc.get("diagnostics", []) if d.get("severity") == "error"]
    if bad:
        raise ValueError(f"the spec has errors: {bad[0].get('message')}")
    return KerasGraph(desc, weights, dtype=dtype, device=device).eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input", required=True, help=".npy, NHWC or HWC, float32")
    ap.add_argument("--output", required=True, help=".npy, NHWC")
    ap.add_argument("--unetc", default=str(UNETC))
    a = ap.parse_args(argv)
    model = build_model(describe(a.spec, a.unetc), load_unetc_weights(a.weights))
    x = np.load(a.input).astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    with torch.inference_mode():
        y = model(torch.from_numpy(x))
    np.save(a.output, y.numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main())
