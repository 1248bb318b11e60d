#!/usr/bin/env python3
"""Numeric truth for unetc's executor, produced by real tf.keras (Keras 2, ``tf_keras``).

Run from anywhere (it writes next to itself)::

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 safetensors numpy
    pip install --no-deps efficientnet==1.0.0   # edge_fixed_dropout: its FixedDropout class
    pip install keras-unet-collection==0.1.13      # edge_gelu, edge_snake, edge_patches: its classes
    pip install --no-deps image-classifiers==1.0.0  # edge_lambda: classification_models' functions
    python tests/golden/generate.py            # all models
    python tests/golden/generate.py edge_conv  # only some

Each model ``<m>`` is built in a fresh Keras session (``tf.keras.backend.clear_session()``, so
auto-names start at ``input_1``, ``conv2d``, ``model``), its weights are set by the formula below,
and ``model.predict`` is run on a seeded input. Written per model:

* ``<m>.weights.safetensors``: the weights, through ``tools/keras_to_safetensors.py``
  (``<layer>/<variable>``, float32, Keras layouts);
* ``<m>.io.safetensors``: ``input`` and ``output`` (float32, NHWC, batch first);
* ``<m>.summary.txt``: what ``model.summary()`` prints (tf_keras 2.21 layout, default width);
* ``manifest.json``: shapes, parameter counts, output statistics, and for each model the largest
  difference between Keras's float32 output and the same model run by Keras in float64, a
  measure of the float32 rounding noise a reimplementation has to be compared within.

``<m>.unet`` (written by hand, not by this script) is the unetc spec of the same model.

``original_full`` (seed 000 at full width, 31,030,658 parameters, at its smallest valid input
188x188x1, batch 1) is written as ``original_full.io.safetensors`` only: its weights (124 MB) are
not stored, the test regenerates them with the formula. Its spec is ``specs/original.unet`` with
``--input-shape 188x188x1``.

The weight formula
==================

Every weight is a function of its tensor name and its position only, computed with integer
arithmetic and IEEE float64, so that Python and Rust produce bit-identical float32 values.

For a tensor named ``N`` (``"<layer>/<variable>"``, for example ``"conv2d_3/kernel"``, UTF-8
bytes) with Keras shape ``S`` and C-order (row-major) flat index ``i`` (0 <= i < prod(S))::

    h = fnv1a_32(N)      # offset 2166136261; per byte b: h = ((h XOR b) * 16777619) mod 2**32
    k = (i * 2654435761 + h) mod 2**32          # exact integers (u64 arithmetic suffices)
    u = k / 2**32                               # float64, exact, in [0, 1)
    d = u - 0.5                                 # float64, exact

    variable          value (float64, evaluated exactly in this order, then rounded to float32)
    kernel            d * (2.0 / sqrt(fan_in))          # sqrt and / are IEEE float64
    depthwise_kernel,
    pointwise_kernel  (as kernel)
    bias, beta        d * 0.2
    gamma             1.0 + 0.5 * d
    moving_mean, mean 0.2 * d
    moving_variance,
    variance          0.5 + u
    count             0.0 (Normalization's int64 sample count; unused at inference)
    alpha (PReLU)     0.25 + 0.5 * d
    beta_factor       0.5 + u   (keras-unet-collection's Snake: its scalar beta)

    fan_in: Conv2D kernel [kh, kw, in, out] -> kh*kw*in;  Dense kernel [in, out] -> in
            (the product of all dimensions but the last);
            Conv2DTranspose kernel [kh, kw, out, in] -> kh*kw*in;
            Conv3D kernel [kd, kh, kw, in, out] -> kd*kh*kw*in (the general rule);
            Conv3DTranspose kernel [kd, kh, kw, out, in] -> kd*kh*kw*in;
            depthwise_kernel [kh, kw, in, dm] -> kh*kw (each output reads one channel);
            pointwise_kernel [1, 1, in*dm, filters] -> in*dm; grouped Conv2D kernel
            [kh, kw, in/groups, out] -> kh*kw*in/groups (the general rule).

The float64 -> float32 rounding is round-to-nearest-even (numpy ``astype(float32)``, Rust
``as f32``). ``0.2 * d`` is float64 ``0.2`` times ``d`` (multiplication is commutative, so
``d * 0.2`` is the same number).

The inputs
==========

``x = numpy.random.default_rng(seed).random((batch, H, W, C), dtype=numpy.float32)``: uniform in
[0, 1), with ``seed = fnv1a_32(model name)``; batch 2 for the small models, 1 for
``original_full``. They are stored, so the Rust side never has to reproduce them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in tools/ or tests/golden/
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

# ---------------------------------------------------------------------------------------------
# The weight formula (keep in step with the docstring above and with the Rust test)
# ---------------------------------------------------------------------------------------------

GOLDEN = 2654435761
TWO32 = 2**32


def fnv1a_32(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) % TWO32
    return h


KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def fan_in(layer_class: str, var: str, shape) -> int:
    if var == "depthwise_kernel":
        kh, kw, _in, _dm = shape
        return kh * kw
    if layer_class == "Conv2DTranspose":
        kh, kw, _out, cin = shape
        return kh * kw * cin
    if layer_class == "Conv3DTranspose":
        kd, kh, kw, _out, cin = shape
        return kd * kh * kw * cin
    return int(np.prod(shape[:-1]))


def formula_values(name: str, shape, layer_class: str) -> np.ndarray:
    """The float32 tensor the formula gives for ``name`` (``"<layer>/<variable>"``)."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    h = fnv1a_32(name.encode("utf-8"))
    i = np.arange(n, dtype=np.uint64)
    # i * GOLDEN + h < 2**64 for every tensor here (n < 6.9e9); uint64 arithmetic is exact.
    k = (i * np.uint64(GOLDEN) + np.uint64(h)) % np.uint64(TWO32)
    u = k.astype(np.float64) / float(TWO32)
    d = u - 0.5
    var = name.rsplit("/", 1)[1]
    if var in KERNELS:
        v = d * (2.0 / math.sqrt(fan_in(layer_class, var, shape)))
    elif var in ("bias", "beta", "embeddings", "attn_pos"):
        v = d * 0.2
    elif var == "gamma":
        v = 1.0 + 0.5 * d
    elif var in ("moving_mean", "mean"):
        v = 0.2 * d
    elif var in ("moving_variance", "variance"):
        v = 0.5 + u
    elif var == "count":
        v = 0.0 * u
    elif var == "alpha":
        v = 0.25 + 0.5 * d
    elif var == "beta_factor":
        v = 0.5 + u
    else:
        raise ValueError(f"no formula for variable {name!r}")
    return v.astype(np.float32).reshape(shape)


def formula_scalar(name: str, shape, layer_class: str, i: int) -> float:
    """One value of the formula with Python integers and floats only (float64), rounded to
    float32 through ``struct`` (round to nearest even): the reference the vectorized
    ``formula_values`` is checked against, and what a reimplementation mirrors step by step."""
    import struct

    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) % TWO32
    k = (i * GOLDEN + h) % TWO32
    u = k / TWO32
    d = u - 0.5
    var = name.rsplit("/", 1)[1]
    if var in KERNELS:
        if var == "depthwise_kernel":
            fi = shape[0] * shape[1]
        elif layer_class == "Conv2DTranspose":
            fi = shape[0] * shape[1] * shape[3]
        elif layer_class == "Conv3DTranspose":
            fi = shape[0] * shape[1] * shape[2] * shape[4]
        else:
            fi = 1
            for s in shape[:-1]:
                fi *= s
        v = d * (2.0 / math.sqrt(fi))
    elif var in ("bias", "beta", "embeddings", "attn_pos"):
        v = d * 0.2
    elif var == "gamma":
        v = 1.0 + 0.5 * d
    elif var in ("moving_mean", "mean"):
        v = 0.2 * d
    elif var in ("moving_variance", "variance"):
        v = 0.5 + u
    elif var == "count":
        v = 0.0 * u
    elif var == "alpha":
        v = 0.25 + 0.5 * d
    elif var == "beta_factor":
        v = 0.5 + u
    else:
        raise ValueError(name)
    return struct.unpack("<f", struct.pack("<f", v))[0]


def set_formula_weights(model) -> None:
    """Give every variable of ``model`` its formula value (names as unetc writes them)."""
    from keras_to_safetensors import _leaf_layers, _short_names

    for layer in _leaf_layers(model, []):
        if not layer.weights:
            continue
        values = []
        cls = type(layer).__name__
        for v, short in zip(layer.weights, _short_names(layer, cls)):
            name = f"{layer.name}/{short}"
            # Swin's mask and position index are constants of the layer's arguments.
            if short in ("attn_mask", "attn_pos_ind"):
                values.append(v.numpy())
                continue
            values.append(formula_values(name, v.shape, cls))
        layer.set_weights(values)


# ---------------------------------------------------------------------------------------------
# The models. Layer creation order decides Keras's auto-names; each <m>.unet creates its layers
# in the same order.
# ---------------------------------------------------------------------------------------------


def _tf():
    import tensorflow as tf

    return tf


def original_small():
    """Seed 000 at depth 3, 4 base filters: valid 3x3 convs, Conv2DTranspose(f, 2, strides=2),
    Cropping2D of the skip, Concatenate(axis=3)([crop, up]) (crop created after the transposed
    conv, listed first), linear 1x1 conv, separate Softmax layer."""
    tf = _tf()
    L = tf.keras.layers
    inputs = L.Input((108, 108, 1))
    x, skips = inputs, {}
    for f in [4, 8, 16]:
        x = L.Conv2D(f, 3, activation="relu")(x)
        x = L.Conv2D(f, 3, activation="relu")(x)
        skips[f] = x
        x = L.MaxPooling2D(pool_size=(2, 2))(x)
    x = L.Conv2D(32, 3, activation="relu")(x)
    x = L.Conv2D(32, 3, activation="relu")(x)
    for f in [16, 8, 4]:
        up = L.Conv2DTranspose(f, 2, strides=(2, 2))(x)
        c = (skips[f].shape[1] - up.shape[1]) // 2
        crop = L.Cropping2D(c)(skips[f])
        x = L.Concatenate(axis=3)([crop, up])
        x = L.Conv2D(f, 3, activation="relu")(x)
        x = L.Conv2D(f, 3, activation="relu")(x)
    x = L.Conv2D(2, 1)(x)
    x = L.Softmax(axis=-1)(x)
    return tf.keras.Model(inputs, x)


def second_post_small():
    """Seed 001 at depth 3: as seed 000, but every transposed conv has the same filter count
    (16, as 512 there), the second conv of level 1 has 10 filters (the 258 quirk: 8 + 2), he_normal
    convs, and the softmax inside the last 1x1 Conv2D."""
    tf = _tf()
    L = tf.keras.layers
    kw = dict(activation="relu", padding="valid", kernel_initializer="he_normal")
    inputs = L.Input((108, 108, 1))
    x, skips = inputs, {}
    for f in [4, 8, 16]:
        x = L.Conv2D(f, 3, **kw)(x)
        x = L.Conv2D(f, 3, **kw)(x)
        skips[f] = x
        x = L.MaxPooling2D(pool_size=(2, 2))(x)
    x = L.Conv2D(32, 3, **kw)(x)
    x = L.Conv2D(32, 3, **kw)(x)
    for f, f2, c in [(16, 16, 4), (8, 10, 16), (4, 4, 40)]:
        up = L.Conv2DTranspose(16, 2, strides=(2, 2))(x)
        crop = L.Cropping2D(c)(skips[f])
        x = L.Concatenate(axis=3)([crop, up])
        x = L.Conv2D(f, 3, **kw)(x)
        x = L.Conv2D(f2, 3, **kw)(x)
    x = L.Conv2D(2, 1, activation="softmax")(x)
    return tf.keras.Model(inputs, x)


def bn_same_small():
    """Seed 002 at depth 3: same-padding Conv2D -> BatchNormalization -> Activation('relu') twice
    per level, MaxPool2D, Conv2DTranspose(f, 2, strides=2, padding='same'), Concatenate()([up,
    skip]), 1x1 sigmoid head, 3 input channels, model named "U-Net"."""
    tf = _tf()
    L = tf.keras.layers

    def conv_block(x, f):
        for _ in range(2):
            x = L.Conv2D(f, 3, padding="same")(x)
            x = L.BatchNormalization()(x)
            x = L.Activation("relu")(x)
        return x

    inputs = L.Input((32, 32, 3))
    x, skips = inputs, {}
    for f in [4, 8, 16]:
        skips[f] = conv_block(x, f)
        x = L.MaxPool2D((2, 2))(skips[f])
    x = conv_block(x, 32)
    for f in [16, 8, 4]:
        x = L.Conv2DTranspose(f, (2, 2), strides=2, padding="same")(x)
        x = L.Concatenate()([x, skips[f]])
        x = conv_block(x, f)
    outputs = L.Conv2D(1, 1, padding="same", activation="sigmoid")(x)
    return tf.keras.Model(inputs, outputs, name="U-Net")


def zhixuhao_small():
    """Seed 003 at depth 3: same-padding he_normal convs, Dropout(0.5) after the two deepest
    levels (the dropped level-2 tensor is the skip), UpSampling2D + 2x2 conv up path (the conv
    is constructed first, as in zhixuhao's one-liner), concatenate([skip, up], axis=3),
    Conv2D(2, 3), then a 1x1 sigmoid conv with Keras's defaults."""
    tf = _tf()
    L = tf.keras.layers
    kw = dict(activation="relu", padding="same", kernel_initializer="he_normal")
    inputs = L.Input((32, 32, 1))
    x, skips = inputs, {}
    for f in [4, 8]:
        x = L.Conv2D(f, 3, **kw)(x)
        x = L.Conv2D(f, 3, **kw)(x)
        skips[f] = x
        x = L.MaxPooling2D(pool_size=(2, 2))(x)
    x = L.Conv2D(16, 3, **kw)(x)
    x = L.Conv2D(16, 3, **kw)(x)
    skips[16] = L.Dropout(0.5)(x)
    x = L.MaxPooling2D(pool_size=(2, 2))(skips[16])
    x = L.Conv2D(32, 3, **kw)(x)
    x = L.Conv2D(32, 3, **kw)(x)
    x = L.Dropout(0.5)(x)
    for f in [16, 8, 4]:
        up = L.Conv2D(f, 2, **kw)(L.UpSampling2D(size=(2, 2))(x))
        x = L.concatenate([skips[f], up], axis=3)
        x = L.Conv2D(f, 3, **kw)(x)
        x = L.Conv2D(f, 3, **kw)(x)
    x = L.Conv2D(2, 3, **kw)(x)
    x = L.Conv2D(1, 1, activation="sigmoid")(x)
    return tf.keras.Model(inputs, x)


VGG_BLOCKS = [(1, 4, 2), (2, 8, 2), (3, 16, 3), (4, 32, 3), (5, 32, 3)]


def _vgg_small(tf):
    L = tf.keras.layers
    img = L.Input((64, 64, 3))
    x = img
    for b, f, n in VGG_BLOCKS:
        for i in range(1, n + 1):
            x = L.Conv2D(f, (3, 3), activation="relu", padding="same", name=f"block{b}_conv{i}")(x)
        x = L.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{b}_pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(64, activation="relu", name="fc1")(x)
    x = L.Dense(64, activation="relu", name="fc2")(x)
    x = L.Dense(10, activation="softmax", name="predictions")(x)
    return tf.keras.Model(img, x, name="vgg_small")


def vgg_small():
    """Seed 004's full VGG16 at 1/16 of the filters (4, 8, 16, 32, 32) and 64x64x3: Keras's
    own layer names, same-padding 3x3 relu convs, MaxPooling2D((2, 2), strides=(2, 2)), Flatten
    of a 2x2x32 map (NHWC order), Dense relu, Dense softmax."""
    return _vgg_small(_tf())


def vgg_small_unet():
    """Seed 004's U-Net on a frozen VGG encoder (vgg_small, include_top as in the notebook: the
    top layers do not lead to the output and are left out), tapped by name at block1_conv2 ..
    block5_conv2; decoder: MaxPooling2D, two 3x3 convs (64), then per tap UpSampling2D + 2x2
    conv, concatenate([tap, up], axis=3), two 3x3 convs, and an extra Conv2D(2, 3) after the last
    two levels. he_normal, same padding, relu everywhere, as in the notebook."""
    tf = _tf()
    L = tf.keras.layers
    vgg = _vgg_small(tf)
    for layer in vgg.layers:
        layer.trainable = False
    taps = [vgg.get_layer(n).output for n in
            ["block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2"]]
    kw = dict(activation="relu", padding="same", kernel_initializer="he_normal")
    x = L.MaxPooling2D(pool_size=(2, 2))(taps[4])
    x = L.Conv2D(64, 3, **kw)(x)
    x = L.Conv2D(64, 3, **kw)(x)
    for tap, f, extra in [(taps[4], 32, False), (taps[3], 16, False), (taps[2], 8, False),
                          (taps[1], 4, True), (taps[0], 4, True)]:
        up = L.Conv2D(f, 2, **kw)(L.UpSampling2D(size=(2, 2))(x))
        x = L.concatenate([tap, up], axis=3)
        x = L.Conv2D(f, 3, **kw)(x)
        x = L.Conv2D(f, 3, **kw)(x)
        if extra:
            x = L.Conv2D(2, 3, **kw)(x)
    return tf.keras.Model(inputs=vgg.input, outputs=x)


def resnet_small():
    """Seed 004's ResNet50, small: Keras's resnet.py structure and names at 64x64x3 with two
    stages of two bottleneck blocks (4 and 8 filters, x4 at the block outputs):
    ZeroPadding2D(3) -> Conv2D(8, 7, strides=2) -> BN -> relu -> ZeroPadding2D(1) ->
    MaxPooling2D(3, strides=2); blocks with a strided 1x1 projection shortcut (first block of a
    stage) or the identity, Add()([shortcut, x]); every BatchNormalization has axis=3 and
    epsilon=1.001e-5; GlobalAveragePooling2D, Dense(10, softmax)."""
    tf = _tf()
    L = tf.keras.layers

    def bn(name):
        return L.BatchNormalization(axis=3, epsilon=1.001e-5, name=name)

    def block1(x, filters, stride=1, conv_shortcut=True, name=None):
        if conv_shortcut:
            shortcut = L.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
            shortcut = bn(name + "_0_bn")(shortcut)
        else:
            shortcut = x
        x = L.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
        x = bn(name + "_1_bn")(x)
        x = L.Activation("relu", name=name + "_1_relu")(x)
        x = L.Conv2D(filters, 3, padding="SAME", name=name + "_2_conv")(x)
        x = bn(name + "_2_bn")(x)
        x = L.Activation("relu", name=name + "_2_relu")(x)
        x = L.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
        x = bn(name + "_3_bn")(x)
        x = L.Add(name=name + "_add")([shortcut, x])
        x = L.Activation("relu", name=name + "_out")(x)
        return x

    def stack1(x, filters, blocks, stride1=2, name=None):
        x = block1(x, filters, stride=stride1, name=name + "_block1")
        for i in range(2, blocks + 1):
            x = block1(x, filters, conv_shortcut=False, name=name + "_block" + str(i))
        return x

    img = L.Input((64, 64, 3))
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img)
    x = L.Conv2D(8, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    x = bn("conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = stack1(x, 4, 2, stride1=1, name="conv2")
    x = stack1(x, 8, 2, name="conv3")
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(10, activation="softmax", name="predictions")(x)
    return tf.keras.Model(img, x, name="resnet_small")


def edge_conv():
    """Conv2D and MaxPooling2D edge semantics on an odd, non-square 11x13 map of signed values:
    'same' with even kernels and stride 2 (the extra pixel at the bottom/right), odd kernels
    with stride 2 and 3 under 'same' (asymmetric padding), dilation_rate 2 (valid and same, and
    (2, 1) with an even kernel), non-square kernels and strides, use_bias=False, conv
    activations relu/tanh/sigmoid, MaxPooling2D 'same' (pads with -inf), floor pooling of odd
    sizes, non-square pools with explicit strides. Each branch is flattened (NHWC order) and
    the flat vectors are concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((11, 13, 3))
    x = L.Conv2D(4, 1)(inp)
    branches = [
        L.Conv2D(4, 2, strides=2, padding="same")(x),
        L.Conv2D(4, 4, strides=2, padding="same", use_bias=False)(x),
        L.Conv2D(4, 3, strides=2, padding="same")(x),
        L.Conv2D(4, 2, padding="same", activation="relu")(x),
        L.Conv2D(4, 3, dilation_rate=2)(x),
        L.Conv2D(4, 3, dilation_rate=2, padding="same", activation="tanh")(x),
        L.Conv2D(4, (3, 2), strides=(2, 3))(x),
        L.Conv2D(4, 5, strides=3, padding="same", activation="sigmoid")(x),
        L.Conv2D(4, (2, 4), dilation_rate=(2, 1), padding="same")(x),
        L.MaxPooling2D(3, strides=2, padding="same")(x),
        L.MaxPooling2D(2)(x),
        L.MaxPooling2D((2, 3), strides=(1, 2))(x),
        L.MaxPooling2D(2, padding="same")(x),
    ]
    flat = [L.Flatten()(b) for b in branches]
    y = L.Concatenate()(flat)
    return tf.keras.Model(inp, y)


def edge_transpose():
    """Conv2DTranspose edge semantics on a 5x6 map of signed values: k=3 s=2 same and valid,
    k=4 s=2 same (even kernel: which rows are cropped), k=1 s=2 valid (k < s: zero rows
    appended), k=3 s=1 same with relu, non-square kernel and strides with tanh, output_padding
    (same and valid), k=5 s=3 same, use_bias=False. Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((5, 6, 3))
    x = L.Conv2D(4, 1)(inp)
    branches = [
        L.Conv2DTranspose(3, 3, strides=2, padding="same")(x),
        L.Conv2DTranspose(3, 3, strides=2, padding="valid")(x),
        L.Conv2DTranspose(3, 4, strides=2, padding="same", use_bias=False)(x),
        L.Conv2DTranspose(3, 1, strides=2)(x),
        L.Conv2DTranspose(3, 3, padding="same", activation="relu")(x),
        L.Conv2DTranspose(3, (2, 3), strides=(3, 2), activation="tanh")(x),
        L.Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=1)(x),
        L.Conv2DTranspose(3, 3, strides=2, output_padding=1)(x),
        L.Conv2DTranspose(3, 5, strides=3, padding="same")(x),
        L.Conv2DTranspose(3, 2, strides=2)(x),
    ]
    flat = [L.Flatten()(b) for b in branches]
    y = L.Concatenate()(flat)
    return tf.keras.Model(inp, y)


def edge_resize():
    """UpSampling2D (nearest and bilinear, square and non-square factors), Cropping2D and
    ZeroPadding2D in their three argument forms (int, (h, w), ((t, b), (l, r))) with asymmetric
    amounts, Concatenate along height (axis=1), width (axis=2) and channels with three inputs
    (one of them twice), GlobalAveragePooling2D (plain and keepdims=True), on a 5x4 map of signed
    values. Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((5, 4, 2))
    x = L.Conv2D(3, 1)(inp)
    z1 = L.ZeroPadding2D(((2, 0), (1, 3)))(x)
    z2 = L.ZeroPadding2D((1, 2))(x)
    branches = [
        L.UpSampling2D(2, interpolation="bilinear")(x),
        L.UpSampling2D((2, 3))(x),
        L.UpSampling2D((3, 2), interpolation="bilinear")(x),
        L.UpSampling2D(2)(x),
        L.Cropping2D(((1, 2), (0, 1)))(x),
        L.Cropping2D((1, 0))(x),
        L.Cropping2D(1)(x),
        z1,
        z2,
        L.ZeroPadding2D()(x),
        L.Concatenate(axis=1)([z1, z2]),
        L.Concatenate(axis=2)([z2, z1]),
        L.Concatenate()([x, inp, x]),
        L.GlobalAveragePooling2D()(x),
        L.GlobalAveragePooling2D(keepdims=True)(x),
    ]
    flat = [L.Flatten()(b) for b in branches]
    y = L.Concatenate()(flat)
    return tf.keras.Model(inp, y)


ACTIVATION_NAMES = ["relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus",
                    "softsign", "swish", "silu", "gelu", "exponential", "hard_sigmoid", "relu6",
                    "mish", "leaky_relu"]


def edge_activations():
    """Every activation unetc accepts, as Activation layers, on 16 signed channels (8 from a 1x1
    conv, 8 at six times that range via Add of the same tensor six times, so relu6 and
    hard_sigmoid saturate), 6x5 map; ReLU layers
    (plain, max_value, negative_slope, all three with a threshold), Softmax layers over channels
    and over the height (axis=1), BatchNormalization (default epsilon 1e-3, center=False with
    epsilon 0.1, scale=False with epsilon 1.001e-5), Dropout, Add of three tensors, Dense on a
    rank-4 tensor (last axis, with and without bias), conv activations softmax/elu. All branches
    keep the 6x5 size and are concatenated along channels."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    big = L.Add()([x, x, x, x, x, x])
    v = L.Concatenate()([x, big])
    branches = [L.Activation(a)(v) for a in ACTIVATION_NAMES]
    branches += [
        L.ReLU()(v),
        L.ReLU(max_value=1.5)(v),
        L.ReLU(negative_slope=0.1)(v),
        L.ReLU(max_value=2.0, negative_slope=0.2, threshold=0.25)(v),
        L.Softmax()(v),
        L.Softmax(axis=1)(v),
        L.BatchNormalization()(v),
        L.BatchNormalization(epsilon=0.1, center=False)(v),
        L.BatchNormalization(scale=False, epsilon=1.001e-5)(v),
        L.Dropout(0.3)(v),
        L.Add()([x, L.Activation("tanh")(x), L.ReLU()(x)]),
        L.Dense(5)(v),
        L.Dense(4, activation="tanh", use_bias=False)(v),
        L.Conv2D(4, 1, activation="softmax")(v),
        L.Conv2D(4, 3, padding="same", activation="elu")(v),
    ]
    y = L.Concatenate()(branches)
    return tf.keras.Model(inp, y)


def edge_merges():
    """Issue 12's first new kinds, on signed 6x5 maps: the merges Multiply, Subtract, Average,
    Maximum, Minimum (two and three inputs, and Multiply broadcasting a one-channel gate over 8
    channels, as attention gates do); LeakyReLU (tf.keras 2 default alpha 0.3, and 0.1); PReLU
    (one alpha per element by default, and shared_axes=[1, 2]: one per channel); ELU layers
    (alpha 1 and 0.5); AveragePooling2D (valid 2x2, same 3x3 stride 2 on an odd map: the average
    over the valid cells only, and (2, 1) with strides (1, 2)); GlobalMaxPooling2D (plain and
    keepdims); SpatialDropout2D, GaussianNoise and GaussianDropout (identity at inference); an
    additive attention gate (Oktay et al. 2018) built from them. Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    g = L.Conv2D(8, 1)(inp)
    gate = L.Conv2D(1, 1, activation="sigmoid")(x)
    attention = L.Conv2D(1, 1, activation="sigmoid")(
        L.Activation("relu")(L.Add()([L.Conv2D(4, 1)(x), L.Conv2D(4, 1)(g)])))
    branches = [
        L.Multiply()([x, g]),
        L.Multiply()([x, g, x]),
        L.Multiply()([x, gate]),
        L.Subtract()([x, g]),
        L.Average()([x, g]),
        L.Average()([x, g, x]),
        L.Maximum()([x, g]),
        L.Minimum()([x, g, x]),
        L.LeakyReLU()(x),
        L.LeakyReLU(alpha=0.1)(x),
        L.PReLU()(x),
        L.PReLU(shared_axes=[1, 2])(x),
        L.ELU()(x),
        L.ELU(alpha=0.5)(x),
        L.AveragePooling2D()(x),
        L.AveragePooling2D(3, strides=2, padding="same")(x),
        L.AveragePooling2D((2, 1), strides=(1, 2))(x),
        L.GlobalMaxPooling2D()(x),
        L.GlobalMaxPooling2D(keepdims=True)(x),
        L.SpatialDropout2D(0.3)(x),
        L.GaussianNoise(0.5)(x),
        L.GaussianDropout(0.2)(x),
        L.Multiply()([x, attention]),
    ]
    flat = [L.Flatten()(b) for b in branches]
    y = L.Concatenate()(flat)
    return tf.keras.Model(inp, y)


def edge_norms():
    """The normalizations nnU-Net/MONAI-style U-Nets use, on a signed 6x5 map with a non-zero
    mean (a linear 1x1 conv of the [0, 1) input) and on the input itself (mean 0.5):
    GroupNormalization with 1 group, 2 groups, as many groups as channels (InstanceNorm), the
    default 32 groups (on 32 channels), without center and scale and with epsilon 0.1, without
    center; LayerNormalization over the channels (default -1), over [1, 2, 3] (the whole item),
    over [2, 3] without scale and with epsilon 1e-5, with epsilon 0.5 without center; a
    conv-norm-relu block (as nnU-Net's). Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 4))
    x = L.Conv2D(8, 1)(inp)
    wide = L.Conv2D(32, 1)(inp)
    branches = [
        L.GroupNormalization(groups=1)(x),
        L.GroupNormalization(groups=2)(x),
        L.GroupNormalization(groups=8)(x),
        L.GroupNormalization()(wide),
        L.GroupNormalization(groups=4, center=False, scale=False, epsilon=0.1)(x),
        L.GroupNormalization(groups=2, center=False)(inp),
        L.LayerNormalization()(x),
        L.LayerNormalization(axis=[1, 2, 3])(x),
        L.LayerNormalization(axis=[2, 3], scale=False, epsilon=1e-5)(x),
        L.LayerNormalization(epsilon=0.5, center=False)(inp),
        L.Activation("relu")(L.GroupNormalization(groups=4)(L.Conv2D(8, 3, padding="same")(x))),
    ]
    flat = [L.Flatten()(b) for b in branches]
    y = L.Concatenate()(flat)
    return tf.keras.Model(inp, y)


def edge_depthwise():
    """Issue 12's depthwise family on a signed 9x7 map of 8 channels (a linear 1x1 conv of the
    input): DepthwiseConv2D (valid; same; strides 2 on the odd sizes; (3, 2) kernel with strides
    strides 2 and depth_multiplier 2 (tf.nn.depthwise_conv2d takes equal strides only); dilation 2 without bias, relu), SeparableConv2D (valid; strides
    2 same with depth_multiplier 2, relu; dilation (2, 1) without bias, sigmoid), Conv2D with
    groups 2 (same), 4 (strides 2, relu) and 4 (1x1 without bias, then BatchNormalization), and a
    MobileNetV2 inverted residual block (1x1 expand, BN, ReLU6, depthwise 3x3, BN, ReLU6, 1x1
    project, BN, add). Each branch is flattened and the flat vectors are concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((9, 7, 3))
    x = L.Conv2D(8, 1)(inp)
    branches = [
        L.DepthwiseConv2D(3)(x),
        L.DepthwiseConv2D(3, padding="same")(x),
        L.DepthwiseConv2D(3, strides=2, padding="same")(x),
        L.DepthwiseConv2D((3, 2), strides=2, depth_multiplier=2)(x),
        L.DepthwiseConv2D(3, padding="same", dilation_rate=2, use_bias=False,
                          activation="relu")(x),
        L.SeparableConv2D(6, 3)(x),
        L.SeparableConv2D(6, 3, strides=2, padding="same", depth_multiplier=2,
                          activation="relu")(x),
        L.SeparableConv2D(5, 3, padding="same", dilation_rate=(2, 1), use_bias=False,
                          activation="sigmoid")(x),
        L.Conv2D(8, 3, padding="same", groups=2)(x),
        L.Conv2D(4, 3, strides=2, groups=4, activation="relu")(x),
        L.BatchNormalization()(L.Conv2D(8, 1, groups=4, use_bias=False)(x)),
    ]
    y = L.Conv2D(16, 1, use_bias=False)(x)
    y = L.ReLU(6.0)(L.BatchNormalization()(y))
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
    y = L.ReLU(6.0)(L.BatchNormalization()(y))
    y = L.BatchNormalization()(L.Conv2D(8, 1, use_bias=False)(y))
    branches.append(L.Add()([x, y]))
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfops():
    """Issue 12's TFOpLambda layers, which Keras creates for TensorFlow functions applied to
    tensors, on signed 6x5 maps (linear 1x1 convs of the input): `x + g`
    (tf.__operators__.add), `x * gate` (tf.math.multiply, a one-channel gate broadcast over 8
    channels), `x - g` (tf.math.subtract), tf.math.add, tf.math.maximum, tf.math.minimum,
    tf.concat on the channels (two and three inputs), tf.nn.relu, tf.math.sigmoid and a
    residual `x + conv(relu(x))` (tf.__operators__.add_1). Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    g = L.Conv2D(8, 1)(inp)
    gate = L.Conv2D(1, 1, activation="sigmoid")(x)
    relu = tf.nn.relu(x)
    branches = [
        x + g,
        x * gate,
        x - g,
        tf.math.add(x, g),
        tf.math.maximum(x, g),
        tf.math.minimum(x, g),
        tf.concat([x, g], -1),
        tf.concat([x, g, x], axis=3),
        relu,
        tf.math.sigmoid(x),
        x + L.Conv2D(8, 3, padding="same")(relu),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfconst():
    """TFOpLambda arithmetic with a Python number, on signed 6x5 maps (linear 1x1 convs of the
    input): `x + 1.0` (tf.__operators__.add, the number as `y`), `1 - gate` and `2.5 - x`
    (tf.math.subtract, the number first: Keras records it as `_CONSTANT_VALUE`), `x - 3.0`,
    `x * 0.5` and `-1.5 * x` (tf.math.multiply, either side), `x / 4.0` and `2.0 / gate`
    (tf.math.truediv, either side), `x / gate` (truediv of two tensors, the one-channel gate
    broadcast), a CBAM-like `x * (1 - gate) + 0.25` chain, and `tf.maximum(x, 0.25)` and
    `tf.minimum(-0.5, x)` (tf.math.maximum / minimum with a number, either side). Flattened and
    concatenated. No float64 noise figure: built in float64, tf.minimum converts its leading
    -0.5 to float32 and refuses the float64 tensor."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    gate = L.Conv2D(1, 1, activation="sigmoid")(x)
    branches = [
        x + 1.0,
        1 - gate,
        2.5 - x,
        x - 3.0,
        x * 0.5,
        -1.5 * x,
        x / 4.0,
        2.0 / gate,
        x / gate,
        x * (1 - gate) + 0.25,
        tf.maximum(x, 0.25),
        tf.minimum(-0.5, x),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


# A constant of 30 tokens x 8 features for edge_tftensor: (k % 7 - 3) / 4, k = 0..239 (exact in
# float32 and short in the spec).
TOKEN_POSITIONS = [[((8 * t + f) % 7 - 3) / 4 for f in range(8)] for t in range(30)]


def edge_tftensor():
    """TFOpLambda arithmetic with a constant tensor (computed outside the model; Keras keeps its
    values in the model's JSON, as UNETR's `Embedding(...)(tf.range(n))` position embeddings), on
    signed 6x5 maps (linear 1x1 convs of the input) and a sigmoid gate: `x + c` with c per
    channel (tf.__operators__.add), `c - x` (tf.math.subtract, the constant first:
    `_CONSTANT_VALUE`), `x * c` with c per column (5, 1), `x / c` (tf.math.truediv),
    `c / gate` (the constant first; the gate's shape), `gate + c` with a batch axis in c
    (1, 6, 1, 1), tf.maximum(x, c), tf.minimum(c, x), `gate * c` (the one-channel gate
    broadcast to c's 8 channels), and tokens (Reshape to 30x8) plus a (30, 8) table. Flattened
    and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    gate = L.Conv2D(1, 1, activation="sigmoid")(x)
    per_channel = tf.constant([0.5, -1.0, 1.5, -2.0, 2.5, -3.0, 0.25, 4.0])
    per_column = tf.constant([[0.1], [0.2], [-0.3], [0.4], [-0.5]])
    per_row = tf.constant([[[[1.0]], [[-1.0]], [[2.0]], [[-2.0]], [[0.5]], [[3.0]]]])
    divisors = tf.constant([1.0, 2.0, 4.0, 0.5, -2.0, 8.0, 0.25, -1.0])
    tokens = L.Reshape((30, 8))(x)
    positions = tf.constant(TOKEN_POSITIONS)
    branches = [
        x + per_channel,
        per_channel - x,
        x * per_column,
        x / divisors,
        per_column / gate,
        gate + per_row,
        tf.maximum(x, per_channel),
        tf.minimum(per_column, x),
        gate * per_channel,
        tokens + positions,
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfreduce():
    """CBAM's spatial attention (Woo et al. 2018) from TensorFlow functions, on signed 6x5 maps
    (a linear 1x1 conv of the input): `tf.reduce_mean(x, axis=-1, keepdims=True)` and
    `tf.reduce_max(x, axis=-1, keepdims=True)` (recorded as tf.math.reduce_mean /
    tf.math.reduce_max), tf.concat of the two, a 7x7 same conv with sigmoid, `x * attention`;
    besides, reduce_mean with `axis=3` and reduce_max with `axis=[-1]`. Flattened and
    concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    avg = tf.reduce_mean(x, axis=-1, keepdims=True)
    mx = tf.reduce_max(x, axis=-1, keepdims=True)
    att = L.Conv2D(1, 7, padding="same", activation="sigmoid")(tf.concat([avg, mx], axis=-1))
    branches = [
        x * att,
        avg,
        mx,
        tf.math.reduce_mean(x, axis=3, keepdims=True),
        tf.math.reduce_max(x, axis=[-1], keepdims=True),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfindex():
    """TensorFlow's argmax, cast and subscripts, on signed 6x5 maps (linear 1x1 convs of the
    input): UNet 3+'s classification-guided module (Huang et al. 2020, as the popular Keras
    tutorials write it: GlobalMaxPooling2D of a 2-channel 1x1 conv (of -x here), sigmoid, `tf.argmax(cls,
    axis=-1)`, `cls[..., tf.newaxis]`, `tf.cast(cls, tf.float32)`, the result scaling the
    decoder's map), here `cls[:, None, None, :]` so that it broadcasts at batch 2 as well; the
    per-pixel argmax of a 4-channel map (a label map); channel subscripts `x[..., 1:3]`,
    `x[:, :, :, 2]`, `x[..., -1:]`, `x[..., :2][:, :, :, 1][..., None]` (a channel picked, then
    a new axis), `x[0:, :, :, -2]`, crops `x[:, 1:-1, 1:4, 1:3]`, `x[:, 2:, :-1, 0]`, and a row,
    a column and a pixel picked: `x[:, 0]`, `x[:, :, -1]`, `x[:, 2, 3]`, `x[:, 1:4, 2, 1:3]`.
    Each result is cast where it is integer, flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(4, 1)(inp)
    # Of -x: class 1 wins for these weights, so the gate passes the map (0 would zero it).
    cls = L.Conv2D(2, 1)(L.Rescaling(-1.0)(x))
    cls = L.GlobalMaxPooling2D()(cls)
    cls = L.Activation("sigmoid")(cls)
    cls = tf.argmax(cls, axis=-1)
    cls = cls[..., tf.newaxis]
    # Keras's float type: float32, as the tutorials' tf.float32 (float64 when measuring noise).
    floatx = tf.keras.backend.floatx()
    cls = tf.cast(cls, dtype=floatx)
    gated = x * cls[:, None, None, :]
    labels = tf.cast(tf.argmax(x, axis=-1), floatx)
    branches = [
        gated,
        cls,
        labels,
        x[..., 1:3],
        x[:, :, :, 2],
        x[..., -1:],
        x[..., :2][:, :, :, 1][..., None],
        x[0:, :, :, -2],
        x[:, 1:-1, 1:4, 1:3],
        x[:, 2:, :-1, 0],
        x[:, 0],
        x[:, :, -1],
        x[:, 2, 3],
        x[:, 1:4, 2, 1:3],
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfstep():
    """Stepped and reversed subscripts and tf.nn.bias_add, on 6x6 maps: Keras applications'
    `preprocess_input` of VGG16 ("caffe": RGB to BGR as `x[..., ::-1]`, then tf.nn.bias_add of
    the ImageNet means) and of DenseNet ("torch": / 255, tf.nn.bias_add, / std) on the input
    scaled to [0, 255], each feeding a 1x1 conv; a space-to-depth of the signed map `x` written
    with steps (`x[:, ::2, ::2]`, `x[:, 1::2, ::2]`, `x[:, ::2, 1::2]`, `x[:, 1::2, 1::2]`
    concatenated, as YOLOv5's Focus layer and lightweight U-Nets write it), rows reversed
    `x[:, ::-1]`, columns `x[:, :, -2::-2]`, channels `x[..., 1::2]` and `x[..., ::-3]`, and
    `x[:, 4:0:-3, ::3, 2]`. Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 6, 3))
    pixels = inp * 255.0
    caffe = L.Conv2D(4, 1)(tf.keras.applications.vgg16.preprocess_input(pixels))
    torch = L.Conv2D(4, 1)(tf.keras.applications.densenet.preprocess_input(pixels))
    x = L.Conv2D(4, 1)(inp)
    focus = L.Concatenate()([x[:, ::2, ::2], x[:, 1::2, ::2], x[:, ::2, 1::2], x[:, 1::2, 1::2]])
    branches = [
        caffe,
        torch,
        focus,
        x[:, ::-1],
        x[:, :, -2::-2],
        x[..., 1::2],
        x[..., ::-3],
        x[:, 4:0:-3, ::3, 2],
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfpad():
    """tf.pad of an image's height and width (Keras records tf.compat.v1.pad), as U-Nets for
    image restoration pad before valid convolutions: REFLECT by one pixel around, lower-case
    "reflect" by (2, 0) rows and (1, 3) columns, CONSTANT (TensorFlow's default mode, zeros)
    by (0, 1) and (2, 2), SYMMETRIC (the edge repeated in the mirror) by (3, 6) rows, the
    height itself, and (1, 0) columns; each followed by a valid 3x3 conv on signed 6x5 maps.
    Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(4, 1)(inp)
    a = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    b = tf.pad(x, [[0, 0], [2, 0], [1, 3], [0, 0]], mode="reflect")
    c = tf.pad(x, [[0, 0], [0, 1], [2, 2], [0, 0]])
    d = tf.pad(x, [[0, 0], [3, 6], [1, 0], [0, 0]], mode="SYMMETRIC")
    branches = [L.Conv2D(2, 3)(a), L.Conv2D(2, 3)(b), L.Conv2D(2, 3)(c), L.Conv2D(2, 3)(d)]
    flat = [L.Flatten()(t) for t in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_resizing():
    """Keras's Resizing (tf.image.resize: half-pixel centres, no antialias) to sizes that are
    not whole multiples of its input, as models that resize their input to the net's size do:
    first on the raw input (9x7 bilinear, up by 1.5 and 1.4), then on signed 6x5 maps: bilinear
    down to 4x3 and to 2x9 (down one axis, up the other), nearest up to 11x8 and down to 4x3,
    and tf.image.resize to 7x13 (bilinear) and 13x4 (nearest). Each followed by a 3x3 conv
    (valid) so that the resize's gradient and placement matter; flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    first = L.Resizing(9, 7)(inp)
    x = L.Conv2D(4, 1)(inp)
    branches = [
        first,
        L.Resizing(4, 3)(x),
        L.Resizing(2, 9, interpolation="bilinear")(x),
        L.Resizing(11, 8, interpolation="nearest")(x),
        L.Resizing(4, 3, interpolation="nearest")(x),
        tf.image.resize(x, (7, 13)),
        tf.image.resize(x, (13, 4), method="nearest"),
    ]
    convs = [L.Conv2D(2, (2, 3) if b.shape[1] == 2 else 3)(b) for b in branches]
    flat = [L.Flatten()(t) for t in convs]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfactivations():
    """TensorFlow's activation functions and reductions over height and width as Keras code
    calls them on tensors (TFOpLambda layers), on signed 6x5 maps (linear 1x1 convs of the input,
    one scaled up so that the saturating functions saturate): tf.tanh, tf.nn.softmax (and with
    `axis=-1`), tf.nn.leaky_relu (slope 0.2), tf.nn.relu6, tf.nn.elu, tf.nn.selu, tf.nn.swish
    (recorded as nn.silu), tf.nn.gelu (exact), tf.nn.softplus (recorded as math.softplus),
    tf.nn.softsign, tf.exp; a squeeze-excitation block written with TensorFlow functions
    (`tf.reduce_mean(x, axis=[1, 2], keepdims=True)`, two 1x1 convs, `x * s`), and
    `tf.reduce_max(x, axis=(1, 2))`. Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(4, 1)(inp)
    big = L.Rescaling(4.0)(L.Conv2D(4, 1)(inp))
    squeeze = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    excite = L.Conv2D(4, 1, activation="sigmoid")(L.Conv2D(2, 1, activation="relu")(squeeze))
    branches = [
        tf.tanh(big),
        tf.nn.softmax(big),
        tf.nn.softmax(x, axis=-1),
        tf.nn.leaky_relu(x),
        tf.nn.relu6(big),
        tf.nn.elu(x),
        tf.nn.selu(x),
        tf.nn.swish(x),
        tf.nn.gelu(x),
        tf.nn.softplus(x),
        tf.nn.softsign(big),
        tf.exp(x),
        x * excite,
        tf.reduce_max(x, axis=(1, 2)),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_fixed_dropout():
    """segmentation_models' EfficientNet encoders drop with the efficientnet package's
    FixedDropout (a Dropout whose noise_shape may leave the batch None; the identity at
    inference): noise_shape (None, 1, 1, 1) as in its drop-connect before the residual Add,
    (None, 1, 1, 8) and none, on signed 6x5 maps (a linear 1x1 conv of the input). Flattened and
    concatenated."""
    tf = _tf()
    L = tf.keras.layers
    from efficientnet.model import get_dropout

    FixedDropout = get_dropout(backend=tf.keras.backend, layers=L, models=tf.keras.models,
                               utils=tf.keras.utils)
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    a = FixedDropout(0.2, noise_shape=(None, 1, 1, 1), name="block1b_drop")(x)
    b = FixedDropout(0.5, noise_shape=(None, 1, 1, 8))(x)
    c = FixedDropout(0.1)(x)
    branches = [L.Add()([a, x]), L.Conv2D(2, 1)(b), c]
    flat = [L.Flatten()(t) for t in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_rescaling():
    """Rescaling as U-Nets put it on their input: `Rescaling(1. / 255)` before the first conv,
    `Rescaling(1. / 127.5, offset=-1)` (to [-1, 1]), and `Rescaling(-2.5, offset=0.75)` on a
    signed map (a linear 1x1 conv of the input). Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(L.Rescaling(1.0 / 255)(inp))
    b = L.Rescaling(1.0 / 127.5, offset=-1)(inp)
    c = L.Rescaling(-2.5, offset=0.75)(L.Conv2D(8, 1)(inp))
    flat = [L.Flatten()(t) for t in (a, b, c)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_normalization():
    """Normalization as keras.applications' EfficientNets open: `Rescaling(1. / 255)` then
    `Normalization(axis=3)` (weights mean/variance/count, non-trainable) before a same 3x3 conv;
    `Normalization()` (axis -1) of a signed map (a linear 1x1 conv of the input). Flattened and
    concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(
        L.Normalization(axis=3)(L.Rescaling(1.0 / 255)(inp)))
    b = L.Normalization()(L.Conv2D(8, 1)(inp))
    flat = [L.Flatten()(t) for t in (a, b)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_tfreshape():
    """TensorFlow functions that reshape and resize, on signed 6x5 maps (linear 1x1 convs of
    the input): tf.image.resize to whole multiples (bilinear 12x10, nearest 18x5; half-pixel
    centres, no antialias), tf.squeeze of the channel then tf.expand_dims and tf.reshape back
    (a hand-written U-Net's head), and keras-unet-collection's ResUNet-a ASPP pooling branch
    (GlobalAveragePooling2D then tf.expand_dims twice: (C,) to (1, 1, C)). Flattened and
    concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(4, 1)(inp)
    head = L.Conv2D(1, 1)(inp)
    pooled = L.GlobalAveragePooling2D()(x)
    branches = [
        tf.image.resize(x, (12, 10), method="bilinear"),
        tf.image.resize(x, (18, 5), method="nearest"),
        tf.reshape(tf.expand_dims(tf.squeeze(head, axis=-1), axis=-1), (-1, 6, 5, 1)),
        tf.expand_dims(tf.expand_dims(pooled, axis=1), axis=1),
        tf.expand_dims(tf.squeeze(head, axis=3), axis=1),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_gelu():
    """keras-unet-collection's GELU layer (the tanh approximation, its own class; needs the
    keras-unet-collection package) on signed maps (linear 1x1 convs of the input, one scaled
    up so that tanh saturates), and after a same 3x3 conv as its U-Nets use it. Flattened and
    concatenated."""
    tf = _tf()
    from keras_unet_collection.activations import GELU

    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    a = GELU()(L.Conv2D(8, 1)(inp))
    b = GELU()(L.Rescaling(4.0)(L.Conv2D(4, 1)(inp)))
    c = GELU()(L.Conv2D(4, 3, padding="same")(inp))
    flat = [L.Flatten()(t) for t in (a, b, c)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_snake():
    """keras-unet-collection's Snake layer (x + sin(beta x)^2 / beta, beta a scalar weight;
    needs the keras-unet-collection package), as its class defaults (trainable=False) and
    trainable, with the formula's beta_factor, on signed maps (linear 1x1 convs of the input,
    one scaled up so that sin wraps several times) and after a same 3x3 conv. Flattened and
    concatenated."""
    tf = _tf()
    from keras_unet_collection.activations import Snake

    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    a = Snake()(L.Conv2D(8, 1)(inp))
    b = Snake(beta=2.0, trainable=True)(L.Rescaling(4.0)(L.Conv2D(4, 1)(inp)))
    c = Snake(beta=0.25)(L.Conv2D(4, 3, padding="same")(inp))
    flat = [L.Flatten()(t) for t in (a, b, c)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_attention():
    """tf.keras's MultiHeadAttention (Vaswani et al. 2017) as vision transformers and attention
    U-Nets call it, on tokens from a linear 1x1 conv of the input reshaped to (16, 8),
    layer-normalised and scaled by 3 so that the softmax is far from uniform: self-attention
    `mha(t, t)` (2 heads, key_dim 4) with a residual Add; cross-attention with a separate key
    `mha(q, v, k)` (3 heads, key_dim 2, value_dim 5, output_shape 6, no biases); attention over
    an image's pixels `mha(x, x)` on (4, 4, 8) (1 head, key_dim 4). Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((4, 4, 3))
    x = L.Conv2D(8, 1)(inp)
    t = L.Reshape((16, 8))(x)
    big = L.Rescaling(3.0)(L.LayerNormalization()(t))
    a = L.MultiHeadAttention(num_heads=2, key_dim=4)(big, big)
    a = L.Add()([a, t])
    b = L.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=5, output_shape=6,
                             use_bias=False)(a, big, t)
    c = L.MultiHeadAttention(num_heads=1, key_dim=4)(x, x)
    flat = [L.Flatten()(v) for v in (a, b, c)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_patches():
    """keras-unet-collection's vision-transformer patches (needs the keras-unet-collection
    package): patch_extract((2, 2)) of a 6x6x4 map (3x3 patches of 16 values) and of a 7x7x4
    map (the last row and column are in no patch), patch_extract((1, 1)) (TransUNet's: one token
    per pixel), each followed by patch_embedding (a Dense projection plus a learned position
    embedding per patch). Flattened and concatenated."""
    tf = _tf()
    from keras_unet_collection.transformer_layers import patch_embedding, patch_extract

    L = tf.keras.layers
    inp = L.Input((7, 7, 3))
    x7 = L.Conv2D(4, 1)(inp)
    x6 = L.Cropping2D(((0, 1), (1, 0)))(x7)
    a = patch_embedding(9, 8)(patch_extract((2, 2))(x6))
    b = patch_embedding(9, 5)(patch_extract((2, 2))(x7))
    c = patch_embedding(36, 6)(patch_extract((1, 1))(x6))
    flat = [L.Flatten()(v) for v in (a, b, c)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_swin():
    """keras-unet-collection's Swin-UNET layers (its transformer_layers module) on the tokens of
    a linear 1x1 conv of a 16x16x3 input: patch_extract((2, 2)) + patch_embedding to 8x8 tokens
    of 8 features; SwinTransformerBlock with 4x4 windows, unshifted (2 heads), then shifted by
    2 with its mask (4 heads, qk_scale 0.25, no qkv bias); patch_merging to 4x4 tokens of 12; a
    block of 2x2 windows shifted by 1 (3 heads); patch_expanding back to 8x8 tokens (return_vector), concatenated with the shifted block's
    tokens; a block of 2x2 windows shifted by 1 over 14 features; patch_expanding by 4 to a
    32x32x2 image (return_vector=False). A second branch: the conv's map cropped to 16x8,
    reshaped to 128 tokens of 4 (a non-square 16x8 grid), a shifted block with one head, and
    patch_merging of that grid. Flattened and concatenated."""
    tf = _tf()
    from keras_unet_collection.transformer_layers import (SwinTransformerBlock, patch_embedding,
                                                          patch_expanding, patch_extract,
                                                          patch_merging)

    L = tf.keras.layers
    inp = L.Input((16, 16, 3))
    x = L.Conv2D(4, 1)(inp)
    t = patch_embedding(64, 8)(patch_extract((2, 2))(x))
    t = SwinTransformerBlock(dim=8, num_patch=(8, 8), num_heads=2, window_size=4, shift_size=0,
                             num_mlp=12, name="a")(t)
    t = SwinTransformerBlock(dim=8, num_patch=(8, 8), num_heads=4, window_size=4, shift_size=2,
                             num_mlp=6, qkv_bias=False, qk_scale=0.25, name="b")(t)
    m = patch_merging((8, 8), embed_dim=6)(t)
    m = SwinTransformerBlock(dim=12, num_patch=(4, 4), num_heads=3, window_size=2, shift_size=1,
                             num_mlp=8, name="c")(m)
    e = patch_expanding(num_patch=(4, 4), embed_dim=12, upsample_rate=2)(m)
    s = L.Concatenate()([e, t])
    s = SwinTransformerBlock(dim=14, num_patch=(8, 8), num_heads=2, window_size=2, shift_size=1,
                             num_mlp=10, name="d")(s)
    img = patch_expanding(num_patch=(8, 8), embed_dim=8, upsample_rate=4, return_vector=False)(s)
    r = L.Reshape((128, 4))(L.Cropping2D(((0, 0), (0, 8)))(x))
    r = SwinTransformerBlock(dim=4, num_patch=(16, 8), num_heads=1, window_size=4, shift_size=1,
                             num_mlp=5, name="e")(r)
    r = patch_merging((16, 8), embed_dim=3)(r)
    flat = [L.Flatten()(v) for v in (img, r)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_reshape():
    """Reshape and Permute on signed 6x5 maps (linear 1x1 convs of the input): a
    squeeze-excitation block (GlobalAveragePooling2D -> Reshape((1, 1, 8)) -> Dense(2, relu) ->
    Dense(8, sigmoid) -> Multiply, Hu et al. 2018); Reshape with a -1 ((-1, 8): rows of pixels),
    to a vector and back to an image ((5, 6, 8): the same values in another grid); Permute of an
    image ((2, 1, 3): height and width swapped; (3, 1, 2): channels first) and of a matrix
    ((2, 1)). Flattened and concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    squeeze = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(x))
    excite = L.Dense(8, activation="sigmoid")(L.Dense(2, activation="relu")(squeeze))
    rows = L.Reshape((-1, 8))(x)
    branches = [
        L.Multiply()([x, excite]),
        rows,
        L.Reshape((240,))(x),
        L.Conv2D(4, 1)(L.Reshape((5, 6, 8))(x)),
        L.Permute((2, 1, 3))(x),
        L.Conv2D(4, 1)(L.Permute((3, 1, 2))(x)),
        L.Permute((2, 1))(rows),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_lambda():
    """Lambda layers: classification_models' functions (segmentation_models' SE-ResNet and
    ResNeXt encoders; needs the image-classifiers package) on signed 6x5 maps (a linear 1x1 conv
    of the input): a ResNeXt grouped 3x3 convolution as that package builds it (slice_tensor of
    the channel groups 0:4 and 4:8, a conv each, Concatenate), slices 3:7 and 7:8, and its
    squeeze-excitation block (GlobalAveragePooling2D -> expand_dims -> Conv2D 1x1 relu -> Conv2D
    1x1 sigmoid -> Multiply); and lambdas of scalar arithmetic as Kaggle-style U-Nets write them:
    `x / 255` of the input (then a 1x1 conv), `(x - 0.5) * 2.0`, `1 - x / 4.0`, `-x`,
    `2 / (x + 3)` on the signed map; and keras_applications' InceptionResNetV2 residual,
    `Lambda(lambda inputs, scale: inputs[0] + inputs[1] * scale, arguments={"scale": 0.17})`
    of two maps. Flattened and concatenated."""
    tf = _tf()
    from classification_models.models._common_blocks import expand_dims, slice_tensor

    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(8, 1)(inp)
    parts = []
    for g in range(2):
        group = L.Lambda(slice_tensor, arguments={"start": 4 * g, "stop": 4 * g + 4, "axis": 3})(x)
        parts.append(L.Conv2D(2, 3, padding="same")(group))
    grouped = L.Concatenate()(parts)
    middle = L.Lambda(slice_tensor, arguments={"start": 3, "stop": 7, "axis": 3})(x)
    last = L.Lambda(slice_tensor, arguments={"start": 7, "stop": 8, "axis": 3})(x)
    se = L.GlobalAveragePooling2D()(x)
    se = L.Lambda(expand_dims, arguments={"channels_axis": 3})(se)
    se = L.Conv2D(2, 1, activation="relu")(se)
    se = L.Conv2D(8, 1, activation="sigmoid")(se)
    gated = L.Multiply()([x, se])
    scaled = L.Conv2D(2, 1)(L.Lambda(lambda v: v / 255)(inp))
    arithmetic = [L.Lambda(f)(x) for f in (lambda v: (v - 0.5) * 2.0, lambda v: 1 - v / 4.0,
                                           lambda v: -v, lambda v: 2 / (v + 3))]
    residual = L.Lambda(lambda inputs, scale: inputs[0] + inputs[1] * scale,
                        arguments={"scale": 0.17})([x, gated])
    flat = [L.Flatten()(t) for t in (grouped, middle, last, gated, scaled, *arithmetic, residual)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


# Keras backend as Keras code imports it (`from keras import backend as K` at the top of a
# module): edge_repeat_elements's lambdas read this global when they run.
K = None


def edge_repeat_elements():
    """Keras backend's repeat_elements in Lambda layers, as attention U-Nets repeat their
    one-channel gate over a skip's channels: `Lambda(lambda x, repnum: K.repeat_elements(x,
    repnum, axis=3), arguments={"repnum": 4})` of a sigmoid 1x1 conv (the attention map, then
    Multiply with a 4-channel signed map), and `lambda x: K.repeat_elements(x, 3, axis=-1)` of a
    3-channel signed map (each channel three times in a row). 6x5 maps, flattened and
    concatenated."""
    global K
    tf = _tf()
    K = tf.keras.backend
    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(4, 1)(inp)
    gate = L.Conv2D(1, 1, activation="sigmoid")(inp)
    repeated = L.Lambda(lambda t, repnum: K.repeat_elements(t, repnum, axis=3),
                        arguments={"repnum": 4})(gate)
    attended = L.Multiply()([repeated, x])
    tripled = L.Lambda(lambda t: K.repeat_elements(t, 3, axis=-1))(L.Conv2D(3, 1)(inp))
    flat = [L.Flatten()(t) for t in (attended, tripled)]
    return tf.keras.Model(inp, L.Concatenate()(flat))


# TensorFlow 1's image module as keras-unet-collection imports it (`from tensorflow.compat.v1
# import image`): edge_lambda_resize's lambdas read this global when they run.
image = None


def edge_lambda_resize():
    """TensorFlow 1's resize in Lambda layers, as keras-unet-collection's ResUNet-a calls it
    (`Lambda(lambda X: image.resize(X, shape_before[1:3], method='bilinear',
    align_corners=True))`, `image` being tf.compat.v1.image): bilinear with aligned corners from
    a 3x2 map to 9x8 (factors 3 and 4), from a pooled 1x1 map to the 6x4 of a shape list taken
    before the pooling (a closure, as there), and nearest from 3x2 to 6x4. Flattened and
    concatenated."""
    global image
    tf = _tf()
    image = tf.compat.v1.image
    L = tf.keras.layers
    inp = L.Input((6, 4, 3))
    x = L.Conv2D(2, 1)(inp)
    small = L.MaxPooling2D(2)(x)
    shape_before = tf.keras.backend.int_shape(x)
    a = L.Flatten()(L.Lambda(lambda t: image.resize(t, (9, 8), method="bilinear",
                                                    align_corners=True))(small))
    pooled = L.AveragePooling2D((6, 4))(x)
    b = L.Flatten()(L.Lambda(lambda t: image.resize(t, shape_before[1:3], method="bilinear",
                                                    align_corners=True))(pooled))
    c = L.Flatten()(L.Lambda(lambda t: image.resize(t, (6, 4), method="nearest"))(small))
    return tf.keras.Model(inp, L.Concatenate()([a, b, c]))


def edge_custom_scale():
    """tf.keras's InceptionResNetV2 residual layer, CustomScaleLayer (`inputs[0] + inputs[1] *
    scale`; the real class from tf_keras.src.applications.inception_resnet_v2), with the scales
    its blocks use (0.17, 0.1, 0.2) and 1.0, on signed 6x5 maps (linear 1x1 convs of the input),
    each followed by relu as in those blocks. Flattened and concatenated."""
    tf = _tf()
    from tf_keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    L = tf.keras.layers
    inp = L.Input((6, 5, 3))
    x = L.Conv2D(4, 1)(inp)
    branches = []
    for scale in (0.17, 0.1, 0.2, 1.0):
        up = L.Conv2D(4, 1)(inp)
        branches.append(L.Activation("relu")(CustomScaleLayer(scale)([x, up])))
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def edge_3d():
    """Issue 12's 3-D kinds on a signed 6x5x4 volume of 3 channels (a linear 1x1x1 Conv3D of the
    input): Conv3D (same with relu; valid (2, 3, 1) kernel with strides (2, 1, 1); same with
    strides 2 (the odd voxel padded after); dilation (2, 2, 1) without bias), Conv3DTranspose
    (k 2 s 2 valid; k 3 s 2 same; (3, 2, 2) kernel, strides (1, 2, 2), sigmoid;
    output_padding 1), MaxPooling3D (2: floors the odd height; same; (3, 2, 2) window with
    strides 1), AveragePooling3D (same: the mean inside the input; (2, 2, 2) with strides 1),
    UpSampling3D (2; (1, 2, 3)), Cropping3D in its three forms, ZeroPadding3D (default and
    nested), GlobalAveragePooling3D (plain and keepdims), and over 5-D tensors
    BatchNormalization, Activation, Dropout, Concatenate (channels and depth), Add, Multiply and
    Maximum. Each branch is flattened and the flat vectors are concatenated."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((6, 5, 4, 3))
    x = L.Conv3D(4, 1)(inp)
    g = L.Conv3D(4, 1, activation="sigmoid")(inp)
    branches = [
        L.Conv3D(3, 3, padding="same", activation="relu")(x),
        L.Conv3D(2, (2, 3, 1), strides=(2, 1, 1))(x),
        L.Conv3D(2, 3, strides=2, padding="same")(x),
        L.Conv3D(2, 2, dilation_rate=(2, 2, 1), use_bias=False)(x),
        L.Conv3DTranspose(3, 2, strides=2)(x),
        L.Conv3DTranspose(2, 3, strides=2, padding="same")(x),
        L.Conv3DTranspose(2, (3, 2, 2), strides=(1, 2, 2), activation="sigmoid")(x),
        L.Conv3DTranspose(2, 3, strides=2, output_padding=1)(x),
        L.MaxPooling3D()(x),
        L.MaxPooling3D(2, padding="same")(x),
        L.MaxPooling3D((3, 2, 2), strides=1)(x),
        L.AveragePooling3D(2, padding="same")(x),
        L.AveragePooling3D((2, 2, 2), strides=1)(x),
        L.UpSampling3D()(x),
        L.UpSampling3D((1, 2, 3))(x),
        L.Cropping3D()(x),
        L.Cropping3D((2, 1, 0))(x),
        L.Cropping3D(((1, 0), (2, 1), (0, 1)))(x),
        L.ZeroPadding3D()(x),
        L.ZeroPadding3D(((1, 0), (0, 2), (1, 1)))(x),
        L.GlobalAveragePooling3D()(x),
        L.GlobalAveragePooling3D(keepdims=True)(x),
        L.Dropout(0.5)(L.Activation("tanh")(L.BatchNormalization()(x))),
        L.Concatenate()([x, g, x]),
        L.Concatenate(axis=1)([x, g]),
        L.Add()([x, g]),
        L.Multiply()([x, g]),
        L.Maximum()([x, g]),
    ]
    flat = [L.Flatten()(b) for b in branches]
    return tf.keras.Model(inp, L.Concatenate()(flat))


def unet3d_small():
    """A 3-D U-Net as in the BraTS / nnU-Net literature (Cicek et al. 2016; Isensee et al. 2021):
    4 input channels (T1, T1ce, T2, FLAIR), 32 base filters doubling per level, two 3x3x3
    same convolutions with BatchNormalization and ReLU per level, MaxPooling3D 2,
    Conv3DTranspose 2 stride 2 up, skip concatenation, and a 1x1x1 sigmoid head for the three
    BraTS regions; at 32x32x32 with three levels (32, 64, 128 filters)."""
    tf = _tf()
    L = tf.keras.layers

    def block(x, f):
        for _ in range(2):
            x = L.Conv3D(f, 3, padding="same", use_bias=False)(x)
            x = L.BatchNormalization()(x)
            x = L.Activation("relu")(x)
        return x

    inp = L.Input((32, 32, 32, 4))
    skips = []
    x = inp
    for f in (32, 64):
        x = block(x, f)
        skips.append(x)
        x = L.MaxPooling3D(2)(x)
    x = block(x, 128)
    for f in (64, 32):
        x = L.Conv3DTranspose(f, 2, strides=2)(x)
        x = L.Concatenate()([skips.pop(), x])
        x = block(x, f)
    x = L.Conv3D(3, 1, activation="sigmoid")(x)
    return tf.keras.Model(inp, x)


def unet3d_valid():
    """A 3-D U-Net with valid convolutions, as the original U-Net but over volumes (Cicek et al.
    2016 crop their skips likewise): two valid 3x3x3 ReLU convs per level, 4 base filters, depth
    2, Cropping3D of each skip (centred, the odd voxel after) before the concatenation with the
    Conv3DTranspose up path, a linear 1x1x1 conv and a Softmax layer; 44x44x44x1 -> 4x4x4x2."""
    tf = _tf()
    L = tf.keras.layers
    inp = L.Input((44, 44, 44, 1))
    x = inp
    skips = []
    for f in (4, 8):
        x = L.Conv3D(f, 3, activation="relu")(x)
        x = L.Conv3D(f, 3, activation="relu")(x)
        skips.append(x)
        x = L.MaxPooling3D((2, 2, 2))(x)
    x = L.Conv3D(16, 3, activation="relu")(x)
    x = L.Conv3D(16, 3, activation="relu")(x)
    for f in (8, 4):
        up = L.Conv3DTranspose(f, 2, strides=2)(x)
        skip = skips.pop()
        crop = [((s - u) // 2, (s - u) - (s - u) // 2)
                for s, u in zip(skip.shape[1:4], up.shape[1:4])]
        x = L.Concatenate(axis=-1)([L.Cropping3D(crop)(skip), up])
        x = L.Conv3D(f, 3, activation="relu")(x)
        x = L.Conv3D(f, 3, activation="relu")(x)
    x = L.Conv3D(2, 1)(x)
    return tf.keras.Model(inp, L.Softmax()(x))


def original_full():
    """Seed 000 at full width (31,030,658 parameters), as in specs/original.unet, at its smallest
    valid input 188x188x1 (crops 4/16/40/88 as at 572), output 4x4x2."""
    return original_full_at(188)


def original_full_at(size: int):
    tf = _tf()
    L = tf.keras.layers
    inputs = L.Input((size, size, 1))
    x, skips = inputs, {}
    for f in [64, 128, 256, 512]:
        x = L.Conv2D(f, 3, activation="relu")(x)
        x = L.Conv2D(f, 3, activation="relu")(x)
        skips[f] = x
        x = L.MaxPooling2D(pool_size=(2, 2))(x)
    x = L.Conv2D(1024, 3, activation="relu")(x)
    x = L.Conv2D(1024, 3, activation="relu")(x)
    for f, c in [(512, 4), (256, 16), (128, 40), (64, 88)]:
        up = L.Conv2DTranspose(f, 2, strides=(2, 2))(x)
        crop = L.Cropping2D(c)(skips[f])
        x = L.Concatenate(axis=3)([crop, up])
        x = L.Conv2D(f, 3, activation="relu")(x)
        x = L.Conv2D(f, 3, activation="relu")(x)
    x = L.Conv2D(2, 1)(x)
    x = L.Softmax(axis=-1)(x)
    return tf.keras.Model(inputs, x)


SMALL = [original_small, second_post_small, bn_same_small, zhixuhao_small, vgg_small,
         vgg_small_unet, resnet_small, edge_conv, edge_transpose, edge_resize, edge_activations,
         edge_merges, edge_norms, edge_depthwise, edge_tfops, edge_tfconst, edge_tftensor, edge_tfreduce, edge_reshape, edge_3d,
         edge_fixed_dropout, edge_rescaling, edge_normalization,
         edge_tfreshape, edge_gelu, edge_snake, edge_lambda,
         edge_custom_scale, edge_repeat_elements, edge_lambda_resize, edge_tfindex, edge_tfstep, edge_tfpad,
         edge_resizing,
         edge_tfactivations, edge_attention, edge_patches, edge_swin]
FULL = [original_full, unet3d_small, unet3d_valid]

# ---------------------------------------------------------------------------------------------
# Running and writing
# ---------------------------------------------------------------------------------------------


def build(builder, floatx="float32"):
    tf = _tf()
    tf.keras.backend.clear_session()
    tf.keras.backend.set_floatx(floatx)
    try:
        model = builder()
    finally:
        tf.keras.backend.set_floatx("float32")
    set_formula_weights(model)
    return model


def build_f64_except_pool3d(builder):
    """``build(builder, "float64")`` with the 3-D poolings computing in float32 (their input
    cast down, their output cast back up by Keras's autocasting of the next layer)."""
    tf = _tf()
    L = tf.keras.layers
    originals = {name: getattr(L, name) for name in ("MaxPooling3D", "AveragePooling3D")}

    def float32_kind(base):
        class Float32(base):
            def __init__(self, *args, **kwargs):
                kwargs["dtype"] = "float32"
                super().__init__(*args, **kwargs)

        Float32.__name__ = base.__name__
        return Float32

    for name, base in originals.items():
        setattr(L, name, float32_kind(base))
    try:
        return build(builder, "float64")
    finally:
        for name, base in originals.items():
            setattr(L, name, base)


def seeded_input(name: str, shape, batch: int) -> np.ndarray:
    rng = np.random.default_rng(fnv1a_32(name.encode("utf-8")))
    return rng.random((batch, *shape), dtype=np.float32)


def summary_text(model) -> str:
    lines = []
    model.summary(print_fn=lambda s, *a, **k: lines.append(s))
    return "\n".join(lines) + "\n"


def run_model(builder, batch: int, store_weights: bool, out_dir: Path = HERE) -> dict:
    from safetensors.numpy import save_file
    from keras_to_safetensors import save_unetc_weights

    name = builder.__name__
    t0 = time.time()
    model = build(builder)
    in_shape = tuple(int(d) for d in model.input_shape[1:])
    x = seeded_input(name, in_shape, batch)
    y = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
    summary = summary_text(model)
    params = int(model.count_params())
    if store_weights:
        tensors = save_unetc_weights(model, out_dir / f"{name}.weights.safetensors")
        n_tensors = len(tensors)
    else:
        from keras_to_safetensors import unetc_tensors

        n_tensors = len(unetc_tensors(model))
    save_file({"input": np.ascontiguousarray(x), "output": np.ascontiguousarray(y)},
              str(out_dir / f"{name}.io.safetensors"),
              metadata={"model": name})  # one entry: the file stays byte-reproducible
    (out_dir / f"{name}.summary.txt").write_text(summary)
    for suffix in ("weights.safetensors", "io.safetensors"):
        p = out_dir / f"{name}.{suffix}"
        if p.exists():
            p.chmod(0o644)
    check_weights(model, out_dir / f"{name}.weights.safetensors" if store_weights else None)
    t_f32 = time.time() - t0

    # The same model in float64 (same float32 weights and input, widened): a measure of the
    # float32 rounding noise in Keras's own output. TensorFlow's 3-D poolings have no float64
    # CPU kernel: those models are measured with their MaxPooling3D and AveragePooling3D layers
    # still float32, the rest of the model float64.
    try:
        m64 = build(builder, "float64")
        y64 = np.asarray(m64.predict(x.astype(np.float64), verbose=0), dtype=np.float64)
    except Exception:  # noqa: BLE001 (TypeError at build, InvalidArgumentError at predict)
        try:
            m64 = build_f64_except_pool3d(builder)
            y64 = np.asarray(m64.predict(x.astype(np.float64), verbose=0), dtype=np.float64)
        except Exception:  # noqa: BLE001
            # keras-unet-collection's SwinTransformerBlock casts its mask to float32 and fails
            # in float64: no rounding-noise measure for that model (NaN in the manifest).
            y64 = np.full(y.shape, np.nan)
    diff = np.abs(y.astype(np.float64) - y64)
    rel = diff / np.maximum(np.abs(y64), 1e-30)
    info = {
        "input_shape": [batch, *in_shape],
        "output_shape": list(y.shape),
        "params": params,
        "weight_tensors": n_tensors,
        "weights_stored": store_weights,
        "seed": fnv1a_32(name.encode()),
        "output_min": float(y.min()),
        "output_max": float(y.max()),
        "output_mean": float(y.mean()),
        "output_std": float(y.std()),
        "max_abs_diff_between_batch_items": float(np.abs(y[0] - y[-1]).max()),
        "max_abs_diff_f32_vs_f64": float(diff.max()),
        "max_rel_diff_f32_vs_f64_where_abs_gt_1e-3": float(rel[np.abs(y64) > 1e-3].max())
        if np.any(np.abs(y64) > 1e-3) else 0.0,
    }
    if np.isnan(y64).all():
        info["max_abs_diff_f32_vs_f64"] = None
        info["max_rel_diff_f32_vs_f64_where_abs_gt_1e-3"] = None
    print(f"{name}: in {info['input_shape']} out {info['output_shape']} params {params} "
          f"max|f32-f64| {info['max_abs_diff_f32_vs_f64']} ({t_f32:.1f}s)", flush=True)
    return info


def check_weights(model, path) -> None:
    """The model's variables (and the stored file) hold exactly the formula's values: every
    element against the vectorized formula, a sample against the scalar one."""
    from keras_to_safetensors import unetc_tensors

    classes = {}
    from keras_to_safetensors import _leaf_layers

    for layer in _leaf_layers(model, []):
        classes[layer.name] = type(layer).__name__
    tensors = unetc_tensors(model)
    stored = None
    if path is not None:
        from safetensors.numpy import load_file

        stored = load_file(str(path))
        assert set(stored) == set(tensors), (sorted(stored), sorted(tensors))
    for name, t in tensors.items():
        cls = classes[name.split("/", 1)[0]]
        if name.rsplit("/", 1)[1] in ("attn_mask", "attn_pos_ind"):
            continue  # Swin's constants, kept as the layer computed them
        want = formula_values(name, t.shape, cls)
        assert t.dtype == np.float32 and np.array_equal(t.view(np.uint32), want.view(np.uint32)), name
        if stored is not None:
            assert stored[name].dtype == np.float32 and stored[name].shape == t.shape, name
            assert np.array_equal(stored[name].view(np.uint32), want.view(np.uint32)), name
        flat = want.reshape(-1)
        for i in sorted({0, min(1, flat.size - 1), flat.size // 2, flat.size - 1}):
            assert formula_scalar(name, t.shape, cls, i) == float(flat[i]), (name, i)


def versions() -> dict:
    tf = _tf()
    import safetensors
    import tf_keras

    return {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "numpy": np.__version__, "safetensors": safetensors.__version__,
            "python": sys.version.split()[0]}


def main(argv) -> int:
    wanted = set(argv)
    all_models = [(b, 2, True) for b in SMALL] + [(b, 1, False) for b in FULL]
    names = {b.__name__ for b, _, _ in all_models}
    unknown = wanted - names
    if unknown:
        print(f"unknown model(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}",
              file=sys.stderr)
        return 2
    manifest_path = HERE / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    models = manifest.get("models", {})
    for builder, batch, store in all_models:
        if wanted and builder.__name__ not in wanted:
            continue
        models[builder.__name__] = run_model(builder, batch, store)
    manifest = {"versions": versions(), "batch_note": "input and output are NHWC, batch first",
                "models": {k: models[k] for k in sorted(models)}}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
