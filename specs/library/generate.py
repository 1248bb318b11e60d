#!/usr/bin/env python3
"""The reference summaries of the spec library (specs/library/*.unet, *.yaml), from real tf.keras.

Each named U-Net variant is built by the Keras implementation its spec says it matches, at the
configuration below; what ``model.summary()`` prints is written to ``<name>.summary.txt`` and
the model's ``to_json()`` to ``<name>.json``; the same network at a small input, with every
weight given by the formula of tests/golden/README.md, ran on a seeded batch:
``<name>.io.safetensors`` (input and output). tests/spec_library.rs checks that
``unetc check --style tf-keras`` prints exactly that summary for the spec in both formats, and
that every layer of the spec has the Keras config, inputs and name of the imported JSON's, and
that unetc's CPU executor reproduces the small run within 1e-5.

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 keras-unet-collection==0.1.13
    pip install --no-deps segmentation-models==1.0.1 image-classifiers==1.0.0 \\
        efficientnet==1.0.0 keras-applications==1.0.8
    pip install scikit-image   # efficientnet imports it at load time
    python specs/library/generate.py
"""
import io
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HERE = Path(__file__).resolve().parent


def resunet(input_shape=(224, 224, 3), filters=(64, 128, 256, 512), classes=1):
    """Deep Residual U-Net (Zhang, Liu and Wang 2018, "Road Extraction by Deep Residual U-Net",
    Table 1 and Fig. 3): pre-activation residual units (BN -> ReLU -> conv, twice) with a 1x1
    convolution and BN on the shortcut, downsampling by stride 2 in each unit's first
    convolution, a bridge, and a decoder of upsample -> concatenate -> residual unit; a 1x1
    sigmoid convolution at the end. Written here in tf.keras from the paper."""
    import tensorflow as tf
    from tensorflow.keras import layers

    def bn_relu(x):
        return layers.Activation("relu")(layers.BatchNormalization()(x))

    def residual_unit(x, f, strides, first=False):
        if first:  # the paper's first unit starts with a convolution, not BN-ReLU
            y = layers.Conv2D(f, 3, padding="same", strides=strides)(x)
        else:
            y = layers.Conv2D(f, 3, padding="same", strides=strides)(bn_relu(x))
        y = layers.Conv2D(f, 3, padding="same")(bn_relu(y))
        shortcut = layers.Conv2D(f, 1, strides=strides)(x)
        shortcut = layers.BatchNormalization()(shortcut)
        return layers.Add()([shortcut, y])

    inputs = layers.Input(input_shape)
    x = residual_unit(inputs, filters[0], 1, first=True)
    skips = [x]
    for f in filters[1:]:
        x = residual_unit(x, f, 2)
        skips.append(x)
    for f, skip in zip(filters[-2::-1], skips[-2::-1]):
        x = layers.UpSampling2D(2)(x)
        x = layers.Concatenate()([x, skip])
        x = residual_unit(x, f, 1)
    outputs = layers.Conv2D(classes, 1, activation="sigmoid")(x)
    return tf.keras.Model(inputs, outputs, name="resunet")


def nest_net(rows=96, cols=96, channels=1, classes=1):
    """UNet++ (Zhou et al. 2018) as its authors' Keras code builds it: ``Nest_Net`` in
    MrGiovanni/UNetPlusPlus model_logic.py (filters 32..512, ReLU, dropout 0.5 after every conv,
    he_normal, l2(1e-4)), without deep supervision, at the size of that file's ``__main__``
    (96x96x1). Written for tf.keras 2 (``Model(inputs=, outputs=)``) in loops that create the
    layers in the same order (one diagonal of nodes X^{i,j} at a time), so the same summary.
    Nest_Net also builds output_1..output_3 for deep supervision; unused, Keras drops them.

    keras-unet-collection's unet_plus_2d is no reference: in 0.1.13 it calls UNET_right with
    concat=False, so its nodes take no skip connections at all (no Concatenate layer)."""
    import tensorflow as tf
    from tensorflow.keras import layers, regularizers

    filters = [32, 64, 128, 256, 512]

    def standard_unit(x, stage, f):
        for k in (1, 2):
            x = layers.Conv2D(f, 3, activation="relu", name=f"conv{stage}_{k}",
                              kernel_initializer="he_normal", padding="same",
                              kernel_regularizer=regularizers.l2(1e-4))(x)
            x = layers.Dropout(0.5, name=f"dp{stage}_{k}")(x)
        return x

    inputs = layers.Input((rows, cols, channels), name="main_input")
    node = {}  # (i, j): X^{i,j}, which the authors call conv{i+1}_{j+1}
    for d in range(len(filters)):
        node[d, 0] = standard_unit(inputs if d == 0 else pool, f"{d + 1}1", filters[d])
        if d < len(filters) - 1:
            pool = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"pool{d + 1}")(node[d, 0])
        for j in range(1, d + 1):
            i = d - j
            up = layers.Conv2DTranspose(filters[i], (2, 2), strides=(2, 2), padding="same",
                                        name=f"up{i + 1}{j + 1}")(node[i + 1, j - 1])
            merged = layers.concatenate([up] + [node[i, k] for k in range(j)],
                                        name=f"merge{i + 1}{j + 1}", axis=3)
            node[i, j] = standard_unit(merged, f"{i + 1}{j + 1}", filters[i])
    outputs = layers.Conv2D(classes, (1, 1), activation="sigmoid", name="output_4",
                            kernel_initializer="he_normal", padding="same",
                            kernel_regularizer=regularizers.l2(1e-4))(node[0, len(filters) - 1])
    return tf.keras.Model(inputs=inputs, outputs=outputs)


def unet3d(input_shape=(64, 64, 64, 4), filters=(32, 64, 128, 256), classes=3):
    """3D U-Net (Cicek et al. 2016, "3D U-Net: Learning Dense Volumetric Segmentation from Sparse
    Annotation") as the BraTS / nnU-Net literature (Isensee et al. 2021) uses it: 4 input channels
    (T1, T1ce, T2, FLAIR), 32 base filters doubling per level, two 3x3x3 same convolutions
    (without bias) each followed by BatchNormalization and ReLU per level, 2x2x2 max pooling
    down, 2x2x2 stride-2 transposed convolutions up, the skip concatenated before the up path's
    convolutions, and a 1x1x1 sigmoid head for the three BraTS regions (WT, TC, ET). Written here
    in tf.keras (no installed package builds a 3-D U-Net)."""
    import tensorflow as tf
    from tensorflow.keras import layers

    def double(x, f):
        for _ in range(2):
            x = layers.Conv3D(f, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return x

    inputs = layers.Input(input_shape)
    x = inputs
    skips = []
    for f in filters[:-1]:
        x = double(x, f)
        skips.append(x)
        x = layers.MaxPooling3D(2)(x)
    x = double(x, filters[-1])
    for f, skip in zip(filters[-2::-1], skips[::-1]):
        up = layers.Conv3DTranspose(f, 2, strides=2)(x)
        x = double(layers.Concatenate()([skip, up]), f)
    outputs = layers.Conv3D(classes, 1, activation="sigmoid")(x)
    return tf.keras.Model(inputs, outputs, name="unet3d")


# name -> (builder of the reference at an input size, the spec's size, the small size of the
# numeric check: the spec's layers at `unetc check --input-shape`, tests/common small_input)
def variants():
    from keras_unet_collection import models as kuc
    import segmentation_models as sm

    return {
        "attention_unet": (lambda n: kuc.att_unet_2d(
            (n, n, 3), [64, 128, 256, 512], n_labels=2, stack_num_down=2, stack_num_up=2,
            activation="ReLU", atten_activation="ReLU", attention="add",
            output_activation="Sigmoid", batch_norm=True, pool=False, unpool=False), 128, 16),
        "resunet": (lambda n: resunet((n, n, 3)), 224, 16),
        "unet_plus_plus": (lambda n: nest_net(n, n), 96, 16),
        "r2_unet": (lambda n: kuc.r2_unet_2d(
            (n, n, 3), [64, 128, 256, 512], n_labels=2, stack_num_down=2, stack_num_up=2,
            recur_num=2, activation="ReLU", output_activation="Softmax", batch_norm=True,
            pool="max", unpool="nearest"), 128, 16),
        "unet_3plus": (lambda n: kuc.unet_3plus_2d(
            (n, n, 3), n_labels=2, filter_num_down=[64, 128, 256, 512, 1024],
            filter_num_skip="auto", filter_num_aggregate="auto", stack_num_down=2,
            stack_num_up=1, activation="ReLU", output_activation="Sigmoid", batch_norm=True,
            pool="max", unpool=False, deep_supervision=False), 128, 16),
        "mobilenetv2_unet": (lambda n: sm.Unet(
            "mobilenetv2", input_shape=(n, n, 3), classes=2, activation="softmax",
            encoder_weights=None), 224, 32),
        "unet3d": (lambda n: unet3d((n, n, n, 4)), 64, 16),
        "vnet": (lambda n: kuc.vnet_2d(
            (n, n, 1), [16, 32, 64, 128, 256], n_labels=2, res_num_ini=1, res_num_max=3,
            activation="PReLU", output_activation="Softmax", batch_norm=True, pool=False,
            unpool=False), 128, 16),
        # The transformer's tokens are the bottleneck's pixels: one input size only, so the
        # numeric check runs at it.
        "transunet": (lambda n: kuc.transunet_2d(
            (n, n, 3), [64, 128, 256, 512], n_labels=2, stack_num_down=2, stack_num_up=2,
            embed_dim=256, num_mlp=512, num_heads=4, num_transformer=4, activation="ReLU",
            mlp_activation="GELU", output_activation="Softmax", batch_norm=True, pool=True,
            unpool="bilinear"), 128, 128),
        # The blocks' patch grids are arguments: one input size only, as TransUNet.
        "swin_unet": (lambda n: kuc.swin_unet_2d(
            (n, n, 3), filter_num_begin=64, n_labels=9, depth=4, stack_num_down=2,
            stack_num_up=2, patch_size=(4, 4), num_heads=[4, 8, 8, 8], window_size=[4, 2, 2, 2],
            num_mlp=512, output_activation="Softmax", shift_window=True, name="swin_unet"),
         128, 128),
    }


def build(builder, size):
    import tensorflow as tf

    tf.keras.backend.clear_session()
    with redirect_stdout(io.StringIO()):  # kuc prints its "auto" choices while building
        return builder(size)


def main() -> int:
    import numpy as np
    from safetensors.numpy import save_file

    sys.path.insert(0, str(HERE.parents[1] / "tests" / "golden"))
    sys.path.insert(0, str(HERE.parents[1] / "tools"))
    from generate import seeded_input, set_formula_weights

    wanted = set(sys.argv[1:])
    for name, (builder, size, small) in variants().items():
        if wanted and name not in wanted:
            continue
        model = build(builder, size)
        buf = io.StringIO()
        with redirect_stdout(buf):
            model.summary()
        (HERE / f"{name}.summary.txt").write_text(buf.getvalue())
        (HERE / f"{name}.json").write_text(model.to_json() + "\n")
        print(name, model.count_params(), len(model.layers), flush=True)
        # The numeric check: the same network at the small size, every weight from the formula
        # of tests/golden/README.md (so none is stored), on a seeded batch of two.
        model = build(builder, small)
        set_formula_weights(model)
        # Inputs in [0, 100): through 20 to 60 layers of formula weights (which shrink a signal a
        # little at each layer), the output still depends on the input, not only on the biases.
        spatial = (small,) * (len(model.input_shape) - 2)  # 2-D or 3-D (D x H x W)
        x = 100 * seeded_input(name, (*spatial, int(model.input_shape[-1])), 2)
        y = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
        save_file({"input": np.ascontiguousarray(x), "output": np.ascontiguousarray(y)},
                  str(HERE / f"{name}.io.safetensors"), metadata={"model": name})
        print(f"  at {'x'.join(map(str, spatial))}: output {y.shape} in [{y.min():.3g}, {y.max():.3g}], the two "
              f"inputs' outputs differ by up to {np.abs(y[0] - y[1]).max():.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
