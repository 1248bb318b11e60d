#!/usr/bin/env python3
"""Training truth for `unetc train` (tests/train.rs), recorded from real tf.keras (Keras 2,
``tf_keras``): for each case a small model, its initial weights, a fixed batch stream, the loss
``model.train_on_batch`` returns at each step (computed before that step's update) and every
weight after the last step (BatchNormalization's moving statistics included).

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 safetensors numpy
    pip install keras-unet-collection==0.1.13   # attention_adam_cce, swin_adam_cce: its classes
    python tests/train/generate.py [NAME ...]

Files per case ``<c>``: ``<c>.json`` (``model.to_json()``; the test imports it with
``unetc import``), ``<c>.init.safetensors``, ``<c>.x.npy``, ``<c>.y.npy``,
``<c>.final.safetensors`` and ``<c>.expected.json`` (the optimizer and loss arguments, as
``unetc train`` flags, and the per-step losses). Batches are taken in order, ``batch`` samples
each (``--no-shuffle``); the data hold exactly ``steps * batch`` samples.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tools"))


def keras():
    import tf_keras

    return tf_keras


def same_unet(k):
    """Seed-style same-padding U-Net: conv + BN, max pooling, transposed conv, concatenation."""
    L = k.layers
    x0 = L.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x0)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(8, 3, padding="same")(x)
    s = L.ReLU()(x)
    x = L.MaxPooling2D()(s)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.Conv2DTranspose(8, 2, strides=2)(x)
    x = L.Concatenate()([s, x])
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    out = L.Conv2D(3, 1, activation="softmax")(x)
    return k.Model(x0, out)


def valid_unet(k):
    """The 2015 paper's form: valid convolutions, crop and concatenate, up-sampling + conv."""
    L = k.layers
    x0 = L.Input((20, 20, 1))
    x = L.Conv2D(4, 3, activation="relu")(x0)
    s = L.Conv2D(4, 3, activation="relu")(x)          # 16
    x = L.MaxPooling2D()(s)                            # 8
    x = L.Conv2D(8, 3, activation="relu")(x)           # 6
    x = L.UpSampling2D()(x)                            # 12
    x = L.Conv2D(4, 2, padding="same")(x)              # 12
    c = L.Cropping2D(2)(s)                             # 12
    x = L.Concatenate()([c, x])
    x = L.Conv2D(4, 3, activation="relu")(x)           # 10
    x = L.Dropout(0.0)(x)
    out = L.Conv2D(1, 1, activation="sigmoid")(x)
    return k.Model(x0, out)


def frozen(k):
    """Frozen layers (trainable=False): a frozen BatchNormalization runs in inference mode."""
    L = k.layers
    x0 = L.Input((12, 12, 2))
    a = L.Conv2D(6, 3, padding="same", name="frozen_conv", trainable=False)(x0)
    a = L.BatchNormalization(name="frozen_bn", trainable=False)(a)
    a = L.Activation("relu")(a)
    b = L.Conv2D(6, 3, padding="same", activation="tanh")(a)
    b = L.BatchNormalization(momentum=0.9, epsilon=1e-3)(b)
    b = L.AveragePooling2D()(b)
    b = L.UpSampling2D(interpolation="bilinear")(b)
    x = L.Add()([a, b])
    out = L.Conv2D(4, 1, activation="softmax")(x)
    return k.Model(x0, out)


def regularized(k):
    """Weight regularizers as hand-written Keras U-Nets use them (the penalties enter the loss
    and the gradients): L2 on conv kernels, L1 on a bias, L1L2 on BatchNormalization's gamma and
    L2 on its beta, L1 on a depthwise kernel, Keras's name "l2" (factor 0.01) on a transposed
    conv, a frozen regularized conv (its penalty counts in the loss; its weights stay), and
    activity regularizers (on the outputs, divided by the batch size) on two layers."""
    L = k.layers
    R = k.regularizers
    x0 = L.Input((12, 12, 3))
    a = L.Conv2D(6, 3, padding="same", kernel_regularizer=R.L2(1e-2), name="frozen_conv",
                 trainable=False)(x0)
    x = L.Conv2D(8, 3, padding="same", activation="relu", kernel_regularizer=R.L2(1e-2),
                 bias_regularizer=R.L1(1e-2), bias_initializer="ones",
                 activity_regularizer=R.L1(1e-3))(a)
    x = L.BatchNormalization(gamma_regularizer=R.L1L2(l1=1e-3, l2=1e-2),
                             beta_regularizer=R.L2(1e-2))(x)
    s = x
    x = L.MaxPooling2D()(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu",
                          depthwise_regularizer=R.L1(1e-3), activity_regularizer=R.L2(1e-2))(x)
    x = L.Conv2DTranspose(8, 2, strides=2, kernel_regularizer="l2")(x)
    x = L.Concatenate()([s, x])
    out = L.Conv2D(3, 1, activation="softmax", kernel_regularizer=R.L1L2(l1=1e-4, l2=1e-4))(x)
    return k.Model(x0, out)


def layer_mix(k):
    """The other kinds U-Nets use, each on the gradient path."""
    L = k.layers
    x0 = L.Input((12, 12, 4))
    x = L.ZeroPadding2D(((1, 0), (0, 1)))(x0)                       # 13x13
    x = L.Conv2D(8, 3, strides=2, activation="elu")(x)               # 6x6
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="swish")(x)  # 12x12
    g = L.Conv2D(8, 3, padding="same", dilation_rate=2, groups=2)(x)
    g = L.LeakyReLU()(g)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=1, activation="gelu")(x)
    d = L.PReLU(shared_axes=[1, 2])(d)
    s = L.SeparableConv2D(8, 3, padding="same", activation="softplus")(x)
    s = L.ELU(alpha=0.5)(s)
    m = L.Multiply()([g, d])
    t = L.Subtract()([s, g])
    a = L.Average()([m, t, d])
    x = L.Maximum()([a, s])
    y = L.Minimum()([a, g])
    x = L.Concatenate()([x, y])
    x = L.GroupNormalization(groups=4)(x)
    x = L.Activation("sigmoid")(x)
    x = L.LayerNormalization()(x)
    x = L.Dense(6, activation="selu")(x)
    x = L.Activation("hard_sigmoid")(x)
    x = L.Conv2D(5, 3, padding="same", activation="softsign")(x)
    p = L.MaxPooling2D(3, strides=2, padding="same")(x)
    p = L.UpSampling2D()(p)
    x = L.Concatenate()([x, p])
    out = L.Conv2D(2, 1)(x)
    return k.Model(x0, out)


def heads(k):
    """Activation and Softmax layers as heads, BatchNormalization without center/scale,
    convolutions without bias, a 5x5 kernel, a Dense layer over pixels."""
    L = k.layers
    x0 = L.Input((10, 10, 3))
    x = L.Conv2D(6, 5, padding="same", use_bias=False)(x0)
    x = L.BatchNormalization(center=False)(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(6, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(scale=False, momentum=0.8)(x)
    x = L.Dense(4)(x)
    return k.Model(x0, L.Softmax()(x))


def sigmoid_head(k):
    """An Activation('sigmoid') layer as the head (Keras takes its logits for the crossentropy)."""
    L = k.layers
    x0 = L.Input((10, 10, 2))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(x0)
    x = L.Conv2D(2, 1)(x)
    return k.Model(x0, L.Activation("sigmoid")(x))


def unet3d(k):
    """A small 3-D U-Net: Conv3D + BatchNormalization over 5-D tensors, pooling, transposed
    convolution, concatenation, a softmax head."""
    L = k.layers
    x0 = L.Input((8, 8, 8, 2))
    s = L.Conv3D(4, 3, padding="same", activation="relu")(x0)
    s = L.BatchNormalization()(s)
    x = L.MaxPooling3D()(s)
    x = L.Conv3D(8, 3, padding="same", activation="relu")(x)
    x = L.Conv3DTranspose(4, 2, strides=2)(x)
    x = L.Concatenate()([s, x])
    return k.Model(x0, L.Conv3D(3, 1, activation="softmax")(x))


def shared(k):
    """One convolution applied to two tensors (a shared layer: one kernel, two calls)."""
    L = k.layers
    x0 = L.Input((10, 10, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(x0)
    conv = L.Conv2D(4, 3, padding="same", activation="tanh")
    b = conv(a)
    c = conv(L.AveragePooling2D(1)(a))
    x = L.Concatenate()([b, c])
    return k.Model(x0, L.Conv2D(1, 1, activation="sigmoid")(x))


def argmax_gate(k):
    """UNet 3+'s classification-guided module: a classification branch whose argmax gates the
    segmentation (tf.argmax, `[..., tf.newaxis]`, tf.cast, `y * gate`). TensorFlow has no
    gradient for argmax, so the branch's weights get none and Keras leaves them as they are
    (AdamW's decay included)."""
    import tensorflow as tf

    L = k.layers
    x0 = L.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(x0)
    cls = L.GlobalMaxPooling2D()(L.Conv2D(2, 1)(x))
    cls = tf.cast(tf.argmax(cls, axis=-1)[..., tf.newaxis], tf.float32)
    gate = cls[:, tf.newaxis, tf.newaxis, :] + 0.5
    return k.Model(x0, L.Conv2D(2, 1)(x) * gate)


def attention(k):
    """A TransUNet-style bottleneck (keras-unet-collection's patch_extract and patch_embedding,
    LayerNormalization, MultiHeadAttention with a residual, a Dense MLP) between convolutions."""
    import tensorflow as tf
    from keras_unet_collection.transformer_layers import patch_embedding, patch_extract

    L = k.layers
    x0 = L.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(x0)
    t = patch_embedding(16, 6)(patch_extract((2, 2))(x))
    a = L.LayerNormalization()(t)
    a = L.MultiHeadAttention(num_heads=2, key_dim=3)(a, a)
    t = L.Add()([a, t])
    t = L.Dense(8, activation="gelu")(L.LayerNormalization()(t))
    x = tf.reshape(t, (-1, 4, 4, 8))
    x = L.UpSampling2D()(x)
    return k.Model(x0, L.Conv2D(2, 1, activation="softmax")(x))


def swin(k):
    """keras-unet-collection's Swin-UNET (SwinTransformerBlock with shifted windows,
    patch_merging, patch_expanding), small: 8x8 tokens of 8 features, windows of 4 then 2."""
    from keras_unet_collection.models import swin_unet_2d

    return swin_unet_2d((16, 16, 3), filter_num_begin=8, n_labels=2, depth=2, stack_num_down=2,
                        stack_num_up=2, patch_size=(2, 2), num_heads=[2, 2], window_size=[4, 2],
                        num_mlp=12)


def unetr_tokens(k):
    """A UNETR-style encoder as the tutorial repositories write it: the image's patches as
    tokens, a Dense patch embedding plus position embeddings made outside the model
    (`Embedding(16, 8)(tf.range(16))`: a constant tensor, which Keras does not train),
    LayerNormalization, MultiHeadAttention with a residual; the tokens reshaped to a 4x4 grid,
    scaled per channel and shifted by constant tensors (`x * c`, `c - x`), a 3x3 conv head."""
    import tensorflow as tf

    L = k.layers
    x0 = L.Input((16, 12))
    positions = L.Embedding(16, 8)(tf.range(16))
    t = L.Dense(8)(x0) + positions
    a = L.LayerNormalization()(t)
    a = L.MultiHeadAttention(num_heads=2, key_dim=4)(a, a)
    t = L.Add()([a, t])
    x = L.Reshape((4, 4, 8))(t)
    x = x * tf.constant([0.5, 1.0, 1.5, 2.0, -0.5, -1.0, 0.25, 3.0])
    x = tf.constant([[[0.1]], [[0.2]], [[-0.3]], [[0.4]]]) - x
    return k.Model(x0, L.Conv2D(2, 3, padding="same")(x))


def dice_loss(y, p):
    import tensorflow as tf

    inter = tf.reduce_sum(y * p)
    return 1.0 - (2.0 * inter + 1.0) / (tf.reduce_sum(y) + tf.reduce_sum(p) + 1.0)


def bce_dice_loss(y, p):
    import tensorflow as tf

    return tf.reduce_mean(keras().losses.binary_crossentropy(y, p)) + dice_loss(y, p)


def one_hot(rng, shape, classes):
    labels = rng.integers(0, classes, size=shape)
    return np.eye(classes, dtype=np.float32)[labels], labels


def cases():
    k = keras()
    opt = k.optimizers
    # name, builder, optimizer, flags, loss, flags, targets ("onehot", "sparse", "binary", "real")
    return [
        ("same_unet_adam_cce", same_unet, lambda: opt.Adam(1e-3),
         ["--optimizer", "adam", "--learning-rate", "0.001"],
         "categorical_crossentropy", ["--loss", "categorical_crossentropy"], "onehot", 2, 4),
        ("valid_unet_sgd_nesterov_bce", valid_unet,
         lambda: opt.SGD(0.05, momentum=0.9, nesterov=True),
         ["--optimizer", "sgd", "--learning-rate", "0.05", "--momentum", "0.9", "--nesterov"],
         "binary_crossentropy", ["--loss", "binary_crossentropy"], "binary", 2, 4),
        ("frozen_rmsprop_sparse", frozen, lambda: opt.RMSprop(1e-3, rho=0.8, momentum=0.5),
         ["--optimizer", "rmsprop", "--learning-rate", "0.001", "--rho", "0.8",
          "--momentum", "0.5"],
         "sparse_categorical_crossentropy", ["--loss", "sparse_categorical_crossentropy"],
         "sparse", 3, 3),
        ("layer_mix_adamw_mse", layer_mix, lambda: opt.AdamW(2e-3, weight_decay=0.05, beta_1=0.8,
                                                            beta_2=0.99, epsilon=1e-6),
         ["--optimizer", "adamw", "--learning-rate", "0.002", "--weight-decay", "0.05",
          "--beta-1", "0.8", "--beta-2", "0.99", "--epsilon", "1e-6"],
         "mse", ["--loss", "mse"], "real", 2, 3),
        ("logits_sgd_cce", same_unet_logits, lambda: opt.SGD(0.1),
         ["--optimizer", "sgd", "--learning-rate", "0.1"],
         k.losses.CategoricalCrossentropy(from_logits=True),
         ["--loss", "categorical_crossentropy", "--from-logits"], "onehot", 2, 3),
        ("valid_unet_adam_dice", valid_unet, lambda: opt.Adam(1e-2),
         ["--optimizer", "adam", "--learning-rate", "0.01"],
         dice_loss, ["--loss", "dice"], "binary", 2, 3),
        ("valid_unet_adam_bce_dice", valid_unet, lambda: opt.Adam(1e-2),
         ["--optimizer", "adam", "--learning-rate", "0.01"],
         bce_dice_loss, ["--loss", "bce_dice"], "binary", 2, 3),
        ("valid_unet_rmsprop_focal", valid_unet, lambda: opt.RMSprop(1e-3),
         ["--optimizer", "rmsprop", "--learning-rate", "0.001"],
         "binary_focal_crossentropy", ["--loss", "focal"], "binary", 2, 3),
        ("heads_adam_decay_sparse", heads, lambda: opt.Adam(3e-3, weight_decay=0.1),
         ["--optimizer", "adam", "--learning-rate", "0.003", "--weight-decay", "0.1"],
         "sparse_categorical_crossentropy", ["--loss", "sparse_categorical_crossentropy"],
         "sparse", 2, 4),
        ("sigmoid_head_sgd_decay_bce", sigmoid_head, lambda: opt.SGD(0.1, momentum=0.5,
                                                                      weight_decay=0.01),
         ["--optimizer", "sgd", "--learning-rate", "0.1", "--momentum", "0.5",
          "--weight-decay", "0.01"],
         "binary_crossentropy", ["--loss", "binary_crossentropy"], "binary", 3, 3),
        ("unet3d_adam_cce", unet3d, lambda: opt.Adam(1e-3),
         ["--optimizer", "adam", "--learning-rate", "0.001"],
         "categorical_crossentropy", ["--loss", "categorical_crossentropy"], "onehot", 2, 3),
        ("shared_layer_sgd_bce", shared, lambda: opt.SGD(0.1),
         ["--optimizer", "sgd", "--learning-rate", "0.1"],
         "binary_crossentropy", ["--loss", "binary_crossentropy"], "binary", 2, 3),
        ("regularized_adam_cce", regularized, lambda: opt.Adam(1e-2),
         ["--optimizer", "adam", "--learning-rate", "0.01"],
         "categorical_crossentropy", ["--loss", "categorical_crossentropy"], "onehot", 2, 3),
        ("argmax_gate_adamw_mse", argmax_gate, lambda: opt.AdamW(1e-2, weight_decay=0.1),
         ["--optimizer", "adamw", "--learning-rate", "0.01", "--weight-decay", "0.1"],
         "mse", ["--loss", "mse"], "real", 2, 3),
        ("attention_adam_cce", attention, lambda: opt.Adam(1e-2),
         ["--optimizer", "adam", "--learning-rate", "0.01"],
         "categorical_crossentropy", ["--loss", "categorical_crossentropy"], "onehot", 2, 3),
        ("swin_adam_cce", swin, lambda: opt.Adam(1e-2),
         ["--optimizer", "adam", "--learning-rate", "0.01"],
         "categorical_crossentropy", ["--loss", "categorical_crossentropy"], "onehot", 2, 3),
        # SGD: the attention's key bias has a gradient of exactly zero (softmax ignores a shift
        # shared by every key), so both sides compute rounding noise there, which Adam would
        # scale up to steps of the learning rate's size.
        ("unetr_tokens_sgd_mse", unetr_tokens, lambda: opt.SGD(0.05, momentum=0.9),
         ["--optimizer", "sgd", "--learning-rate", "0.05", "--momentum", "0.9"],
         "mse", ["--loss", "mse"], "real", 2, 3),
    ]


def same_unet_logits(k):
    """same_unet with a linear head (the loss takes logits)."""
    m = same_unet(k)
    m.layers[-1].activation = k.activations.linear
    return k.models.model_from_json(m.to_json())


def main() -> int:
    import tensorflow as tf
    from keras_to_safetensors import save_unetc_weights

    k = keras()
    only = set(sys.argv[1:])  # `generate.py NAME ...`: only those cases (seeds stay by position)
    for i, (name, build, make_opt, opt_flags, loss, loss_flags, target, batch, steps) in \
            enumerate(cases()):
        if only and name not in only:
            continue
        k.backend.clear_session()
        tf.keras.utils.set_random_seed(1000 + i)
        model = build(k)
        rng = np.random.default_rng(2000 + i)
        n = batch * steps
        in_shape = (n,) + tuple(model.input_shape[1:])
        out_shape = (n,) + tuple(model.output_shape[1:])
        x = rng.standard_normal(in_shape).astype(np.float32)
        if target == "onehot":
            y, _ = one_hot(rng, out_shape[:-1], out_shape[-1])
        elif target == "sparse":
            _, labels = one_hot(rng, out_shape[:-1], out_shape[-1])
            y = labels.astype(np.int32)
        elif target == "binary":
            y = (rng.random(out_shape) < 0.4).astype(np.float32)
        else:
            y = rng.standard_normal(out_shape).astype(np.float32)
        (HERE / f"{name}.json").write_text(model.to_json())
        save_unetc_weights(model, HERE / f"{name}.init.safetensors")
        np.save(HERE / f"{name}.x.npy", x)
        np.save(HERE / f"{name}.y.npy", y)
        model.compile(optimizer=make_opt(), loss=loss)
        losses = []
        for s in range(steps):
            sl = slice(s * batch, (s + 1) * batch)
            losses.append(float(model.train_on_batch(x[sl], y[sl])))
        save_unetc_weights(model, HERE / f"{name}.final.safetensors")
        flags = opt_flags + loss_flags + ["--batch-size", str(batch), "--steps", str(steps)]
        (HERE / f"{name}.expected.json").write_text(json.dumps(
            {"flags": flags, "steps": [{"step": s + 1, "loss": l} for s, l in enumerate(losses)],
             "producer": f"tests/train/generate.py (tensorflow {tf.__version__})"},
            indent=1) + "\n")
        print(name, losses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
