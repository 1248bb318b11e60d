#!/usr/bin/env python3
"""Convert the weights of a tf.keras model into a safetensors file that unetc reads.

Usage (command line)::

    TF_USE_LEGACY_KERAS=1 python tools/keras_to_safetensors.py model.keras -o weights.safetensors
    TF_USE_LEGACY_KERAS=1 python tools/keras_to_safetensors.py model.h5 -o weights.safetensors --list

Usage (as a module)::

    import sys; sys.path.insert(0, "tools")
    from keras_to_safetensors import save_unetc_weights
    save_unetc_weights(model, "weights.safetensors")   # model: a built tf.keras model

The model file is loaded with ``tf.keras.models.load_model(path, compile=False)``. Set
``TF_USE_LEGACY_KERAS=1`` (this script does it for you when it is run as a program) so that
``tf.keras`` is Keras 2 (the ``tf_keras`` package), which is what unetc follows.

What is written (unetc's naming and layout):

* one tensor per variable, named ``<layer name>/<variable>``, for example ``conv2d_3/kernel``,
  ``conv2d_3/bias``, ``batch_normalization/gamma``, ``batch_normalization/beta``,
  ``batch_normalization/moving_mean``, ``batch_normalization/moving_variance``, ``dense/kernel``.
  The variable part is the variable's own short name (``v.name`` is ``conv2d_3/kernel:0``; the
  last path part without ``:0``). Layers of nested models (a Functional or Sequential model
  used as a layer) are written under their own layer names, which Keras keeps unique across
  the nesting; unetc names a nested model's weights the same way (its `block ... as
  functional` / `as sequential` layers keep their names). A shared layer (one layer called
  several times) has one set of variables, written once.
* float32, in Keras's own layouts, unchanged: Conv2D kernel ``[kh, kw, in, out]``,
  Conv2DTranspose kernel ``[kh, kw, out, in]``, Dense kernel ``[in, out]``, biases and
  BatchNormalization vectors ``[channels]``.
* non-trainable variables (BatchNormalization's moving statistics, frozen layers) are written
  too: inference needs them.

Layer kinds unetc does not know (and options it does not model, such as ``channels_first`` or
grouped convolutions) are refused with a message that names the layer, so that a weights file is
never written for a model unetc cannot run.
"""

from __future__ import annotations

import argparse
import os
import sys

# Layer classes unetc knows (README "The spec language", kinds), by Keras class name.
WEIGHTLESS = {
    "InputLayer",
    "MaxPooling2D",
    "UpSampling2D",
    "Resizing",
    "Cropping2D",
    "ZeroPadding2D",
    "Concatenate",
    "Add",
    "Activation",
    "ReLU",
    "Softmax",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "Multiply",
    "Subtract",
    "Average",
    "Maximum",
    "Minimum",
    "LeakyReLU",
    "ELU",
    "AveragePooling2D",
    "GlobalMaxPooling2D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    # The efficientnet package's Dropout (segmentation_models' EfficientNet encoders).
    "FixedDropout",
    "Rescaling",
    # keras-unet-collection's GELU layer (its module is checked).
    "GELU",
    "Reshape",
    "Permute",
    # TensorFlow functions applied to tensors (`x + y`, tf.concat); unetc checks the function.
    "TFOpLambda",
    "SlicingOpLambda",
    # A Python function (no weights): `unetc import` checks that it can read it.
    "Lambda",
    # tf.keras's InceptionResNetV2 residual (a + b * scale).
    "CustomScaleLayer",
    "MaxPooling3D",
    "AveragePooling3D",
    "UpSampling3D",
    "Cropping3D",
    "ZeroPadding3D",
    "GlobalAveragePooling3D",
    # keras-unet-collection's ViT patches (its module is checked by `unetc import`).
    "patch_extract",
}
WITH_WEIGHTS = {
    "Conv2D": ("kernel", "bias"),
    "Conv2DTranspose": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "PReLU": ("alpha",),
    "GroupNormalization": ("gamma", "beta"),
    "LayerNormalization": ("gamma", "beta"),
    "DepthwiseConv2D": ("depthwise_kernel", "bias"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "Conv3D": ("kernel", "bias"),
    "Conv3DTranspose": ("kernel", "bias"),
    "Normalization": ("mean", "variance", "count"),
    # keras-unet-collection's Snake (its module is checked): one scalar weight.
    "Snake": ("beta_factor",),
    "MultiHeadAttention": (
        "query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel", "value/bias",
        "attention_output/kernel", "attention_output/bias",
    ),
    # keras-unet-collection's patch_embedding: its Dense `proj` and Embedding `pos_embed`, whose
    # variables Keras names after auto-named inner layers (dense_3/kernel), so taken in order.
    "patch_embedding": ("proj/kernel", "proj/bias", "pos_embed/embeddings"),
    # keras-unet-collection's Swin-UNET classes prefix their inner layers' and variables' names
    # with a name argument (`name0_norm1/gamma`); unetc's names are what follows it. The mask
    # (float64) and the index (int64) are constants of the arguments, kept as float32.
    "SwinTransformerBlock": ("norm1/gamma", "norm1/beta", "attn_pos", "attn_qkv/kernel",
                             "attn_qkv/bias", "attn_proj/kernel", "attn_proj/bias",
                             "norm2/gamma", "norm2/beta", "mlp_0/kernel", "mlp_0/bias",
                             "mlp_1/kernel", "mlp_1/bias", "attn_mask", "attn_pos_ind"),
    "patch_merging": ("linear_trans/kernel",),
    "patch_expanding": ("linear_trans1/kernel",),
}


def _short_names(layer, cls: str) -> list:
    """The variables' names in unetc: the last part of Keras's name (`kernel`), the last two
    for MultiHeadAttention (`query/kernel`), the roles in order for patch_embedding, what
    follows the name prefix for the Swin-UNET classes."""
    if cls == "patch_embedding":
        return list(WITH_WEIGHTS[cls])[: len(layer.weights)]
    if cls in ("SwinTransformerBlock", "patch_merging", "patch_expanding"):
        names = []
        for v in layer.weights:
            full = v.name.split(":")[0]
            match = [s for s in WITH_WEIGHTS[cls] if full.endswith("_" + s)]
            names.append(match[0] if len(match) == 1 else full)
        return names
    keep = 2 if cls == "MultiHeadAttention" else 1
    return ["/".join(v.name.split(":")[0].split("/")[-keep:]) for v in layer.weights]

# Activation names unetc accepts (src/ir/ops/activation.rs).
ACTIVATIONS = {
    "linear", "relu", "sigmoid", "softmax", "tanh", "elu", "selu", "softplus", "softsign",
    "swish", "silu", "gelu", "exponential", "hard_sigmoid", "relu6", "mish", "leaky_relu",
}


class UnsupportedModel(ValueError):
    """The model uses something unetc cannot express; the message says what and where."""


def _activation_name(value) -> str:
    if isinstance(value, str):
        return value
    name = getattr(value, "__name__", None)
    return name if name else repr(value)


def _check_config(layer, cls: str) -> None:
    cfg = layer.get_config()
    where = f"layer `{layer.name}` ({cls})"
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        raise UnsupportedModel(f"{where} uses data_format={cfg['data_format']!r}; unetc is NHWC "
                               "(channels_last) only")
    # `groups` of GroupNormalization is its own argument; of Conv2D, grouped weights (which
    # unetc runs); the depthwise kinds report groups=1.
    if cls not in ("Conv2D", "GroupNormalization") and cfg.get("groups", 1) != 1:
        raise UnsupportedModel(f"{where} has groups={cfg['groups']}; unetc groups Conv2D only")
    if "activation" in cfg:
        act = _activation_name(cfg["activation"])
        if act not in ACTIVATIONS:
            raise UnsupportedModel(f"{where} uses activation {act!r}, which unetc does not know "
                                   f"(known: {', '.join(sorted(ACTIVATIONS))})")
    if cls == "BatchNormalization":
        axis = cfg.get("axis")
        if not isinstance(axis, int):
            axis = list(axis)
            axis = axis[0] if len(axis) == 1 else axis
        rank = len(layer.input_shape)
        if axis not in (-1, rank - 1):
            raise UnsupportedModel(f"{where} normalizes axis {axis!r}; unetc only normalizes the "
                                   f"channel axis (-1 or {rank - 1})")
    if cls == "LayerNormalization":
        rank = len(layer.input_shape)
        given = cfg["axis"] if isinstance(cfg["axis"], (list, tuple)) else [cfg["axis"]]
        axes = sorted(a % rank for a in given)
        if axes != list(range(rank - len(axes), rank)):
            raise UnsupportedModel(f"{where} normalizes axes {cfg['axis']!r}; unetc normalizes a "
                                   "trailing run of axes (-1, [2, 3], [1, 2, 3])")
    if cls in ("GELU", "Snake") and type(layer).__module__ != "keras_unet_collection.activations":
        raise UnsupportedModel(f"{where} comes from {type(layer).__module__}; unetc knows "
                               f"keras-unet-collection's {cls} (keras_unet_collection.activations)")
    if cls == "Normalization":
        rank = len(layer.input_shape)
        axis = tuple(cfg.get("axis") or ())
        if axis not in ((-1,), (rank - 1,)):
            raise UnsupportedModel(f"{where} normalizes axes {cfg.get('axis')!r}; unetc only "
                                   f"normalizes the channel axis (-1 or {rank - 1})")
        if cfg.get("mean") is not None or cfg.get("invert"):
            raise UnsupportedModel(f"{where} has constant mean/variance or invert=True; unetc "
                                   "reads the statistics from the weights and does not invert")
    if cls == "Resizing" and cfg.get("crop_to_aspect_ratio"):
        raise UnsupportedModel(f"{where} crops to the aspect ratio; unetc resizes without "
                               "cropping (put a Cropping2D before it)")
    if cls in ("UpSampling2D", "Resizing") and cfg.get("interpolation", "nearest") not in (
            "nearest", "bilinear"):
        raise UnsupportedModel(f"{where} uses interpolation={cfg['interpolation']!r}; unetc has "
                               "'nearest' and 'bilinear'")


def _leaf_layers(model, out: list) -> list:
    """The layers of ``model`` in ``model.layers`` order, nested models flattened."""
    import tensorflow as tf

    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            _leaf_layers(layer, out)
        else:
            out.append(layer)
    return out


def unetc_tensors(model) -> dict:
    """``{"<layer>/<variable>": float32 numpy array}`` for every variable of ``model``.

    Raises UnsupportedModel for layer kinds or options unetc does not know.
    """
    import numpy as np

    tensors: dict = {}
    for layer in _leaf_layers(model, []):
        cls = type(layer).__name__
        if cls not in WEIGHTLESS and cls not in WITH_WEIGHTS:
            known = ", ".join(sorted(WEIGHTLESS | set(WITH_WEIGHTS)))
            raise UnsupportedModel(f"layer `{layer.name}` is a {type(layer).__name__}, which unetc "
                                   f"does not know (it knows: {known})")
        _check_config(layer, cls)
        expected = WITH_WEIGHTS.get(cls, ())
        for v, short in zip(layer.weights, _short_names(layer, cls)):
            if short not in expected:
                raise UnsupportedModel(f"layer `{layer.name}` ({cls}) has a variable `{v.name}` "
                                       f"that unetc does not expect (expected: "
                                       f"{', '.join(expected) or 'none'})")
            name = f"{layer.name}/{short}"
            if name in tensors:
                raise UnsupportedModel(f"two variables would both be written as `{name}`; layer "
                                       "names must be unique across nested models")
            # np.array keeps a scalar 0-d (ascontiguousarray would make it [1]).
            value = np.array(v.numpy(), dtype=np.float32, order="C")
            tensors[name] = value
        if cls in ("Conv2D", "Conv2DTranspose", "Conv3D", "Conv3DTranspose"):
            k = tensors.get(f"{layer.name}/kernel")
            rank = 5 if cls.startswith("Conv3D") else 4
            if k is None or k.ndim != rank:
                raise UnsupportedModel(f"layer `{layer.name}` ({cls}) has no {rank}-D kernel")
    return tensors


def save_unetc_weights(model, path, metadata: dict | None = None) -> dict:
    """Write ``model``'s variables to ``path`` (safetensors) in unetc's naming and layout.

    ``metadata`` adds string entries to the file's ``__metadata__``. Returns the tensors written (name -> float32 array).
    """
    import tensorflow as tf
    from safetensors.numpy import save_file

    tensors = unetc_tensors(model)
    # One metadata entry unless the caller adds more: safetensors writes the metadata map in no
    # fixed order, and a single entry keeps the file byte-for-byte reproducible.
    meta = {"producer": f"tools/keras_to_safetensors.py (tensorflow {tf.__version__}, "
                        f"{_keras_version()})"}
    meta.update(metadata or {})
    save_file(tensors, str(path), metadata={k: str(v) for k, v in meta.items()})
    return tensors


def _keras_version() -> str:
    try:
        import tf_keras

        return "tf_keras " + tf_keras.__version__
    except ImportError:  # pragma: no cover
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write a tf.keras model's weights as a safetensors "
                                 "file in unetc's naming and layout.")
    ap.add_argument("model", help="a tf.keras model file (.keras or .h5)")
    ap.add_argument("-o", "--output", required=True, help="the safetensors file to write")
    ap.add_argument("--list", action="store_true", help="print each tensor's name and shape")
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        model = tf.keras.models.load_model(args.model, compile=False)
    except Exception as e:  # noqa: BLE001 - report any load failure plainly
        print(f"error: cannot load {args.model}: {e}", file=sys.stderr)
        return 2
    try:
        tensors = save_unetc_weights(model, args.output)
    except UnsupportedModel as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.list:
        for name, t in tensors.items():
            print(f"{name} {list(t.shape)}")
    n = sum(t.size for t in tensors.values())
    print(f"wrote {len(tensors)} tensors ({n} values) to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
