#!/usr/bin/env python3
"""Try real Keras U-Nets on unetc, as a new user would, and record which import and which not.

Each model is built in tf.keras (Keras 2, the ``tf_keras`` package) by the package or code that
people use (segmentation_models, keras-unet-collection, keras-unet, the TensorFlow tutorials,
keras.io, well-known GitHub U-Nets), at a small input size. For each, in OUT (default
/tmp/unetc_survey):

* ``<m>.json`` (``model.to_json()``) and ``<m>.summary.txt`` (``model.summary()``);
* ``<m>.weights.safetensors``: every weight from the formula of tests/golden/README.md, written
  with tools/keras_to_safetensors.py (refused there for layer kinds unetc does not know);
* ``<m>.x.npy`` / ``<m>.y.npy``: a seeded batch of two and ``model.predict`` of it.

Then the unetc binary (``--unetc``, default target/release/unetc) runs ``import``,
``check --style tf-keras`` (its summary must start with Keras's, byte for byte) and ``run`` on the
CPU (within 1e-5 of ``model.predict``, relative to the largest output). ``results.json`` and the
printed table say, per model: works, or the first step that failed with unetc's message.

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 keras-unet-collection==0.1.13 \\
        keras-unet==0.1.2 segmentation-models==1.0.1 safetensors numpy
    pip install --no-deps image-classifiers==1.0.0 efficientnet==1.0.0
    python tools/real_models_survey.py [--out DIR] [--unetc BIN] [NAME ...]

The models that work are recorded as fixtures by tests/real_models/generate.py.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import traceback
from contextlib import redirect_stdout
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "golden"))


def sm_models():
    import segmentation_models as sm

    out = []
    backbones = ["vgg16", "resnet18", "resnet34", "resnet50", "seresnet18", "resnext50",
                 "mobilenet", "mobilenetv2", "efficientnetb0", "densenet121", "inceptionv3",
                 "inceptionresnetv2"]
    for b in backbones:
        n = 96 if b.startswith("inception") else 64  # the Inceptions take 75x75 at least
        out.append((f"sm_unet_{b}", lambda b=b, n=n: sm.Unet(
            b, input_shape=(n, n, 3), classes=2, activation="softmax", encoder_weights=None,
            decoder_filters=(32, 16, 8, 8, 4))))
        out.append((f"sm_linknet_{b}", lambda b=b, n=n: sm.Linknet(
            b, input_shape=(n, n, 3), classes=1, encoder_weights=None)))
        out.append((f"sm_fpn_{b}", lambda b=b, n=n: sm.FPN(
            b, input_shape=(n, n, 3), classes=3, activation="softmax", encoder_weights=None,
            pyramid_block_filters=32)))
        out.append((f"sm_pspnet_{b}", lambda b=b: sm.PSPNet(
            b, input_shape=(96, 96, 3), classes=2, activation="softmax", encoder_weights=None,
            psp_conv_filters=64, downsample_factor=8)))
    out.append(("sm_unet_resnet18_transpose", lambda: sm.Unet(
        "resnet18", input_shape=(64, 64, 3), classes=1, encoder_weights=None,
        decoder_block_type="transpose", decoder_filters=(32, 16, 8, 8, 4))))
    out.append(("sm_unet_vgg16_nobn", lambda: sm.Unet(
        "vgg16", input_shape=(64, 64, 1), classes=1, encoder_weights=None,
        decoder_use_batchnorm=False, decoder_filters=(32, 16, 8, 8, 4))))
    return out


def kuc_models():
    from keras_unet_collection import models as kuc

    f3 = [8, 16, 32]
    out = [
        ("kuc_unet_2d_bn_ave_nearest", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, batch_norm=True, pool="ave", unpool="nearest")),
        ("kuc_unet_2d_strided_transpose", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, batch_norm=True, pool=False, unpool=False,
            output_activation="Sigmoid")),
        ("kuc_unet_2d_bilinear", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=1, unpool="bilinear", output_activation=None)),
    ]
    for act in ["GELU", "Snake", "PReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softsign"]:
        out.append((f"kuc_unet_2d_{act.lower()}", lambda act=act: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, activation=act, batch_norm=True)))
    for bb in ["VGG16", "VGG19", "ResNet50", "ResNet50V2", "DenseNet121", "EfficientNetB0"]:
        out.append((f"kuc_unet_2d_{bb.lower()}", lambda bb=bb: kuc.unet_2d(
            (64, 64, 3), [16, 32, 64, 128, 256], n_labels=2, backbone=bb, weights=None,
            freeze_backbone=False, freeze_batch_norm=False)))
    out += [
        ("kuc_vnet_2d", lambda: kuc.vnet_2d(
            (32, 32, 1), [8, 16, 32], n_labels=2, res_num_ini=1, res_num_max=3,
            activation="PReLU", batch_norm=True, pool=False, unpool=False)),
        ("kuc_vnet_2d_pool", lambda: kuc.vnet_2d(
            (32, 32, 1), [8, 16, 32], n_labels=2, activation="ReLU", pool="ave",
            unpool="bilinear")),
        ("kuc_unet_plus_2d_ds", lambda: kuc.unet_plus_2d(
            (32, 32, 3), f3, n_labels=2, batch_norm=True, deep_supervision=True,
            activation="LeakyReLU")),
        ("kuc_unet_plus_2d_vgg16", lambda: kuc.unet_plus_2d(
            (64, 64, 3), [16, 32, 64, 128], n_labels=2, backbone="VGG16", weights=None,
            freeze_backbone=False)),
        ("kuc_r2_unet_2d_bn", lambda: kuc.r2_unet_2d(
            (32, 32, 3), f3, n_labels=2, recur_num=2, batch_norm=True, pool="ave",
            unpool=False, activation="ELU")),
        ("kuc_att_unet_2d_multiply", lambda: kuc.att_unet_2d(
            (32, 32, 3), f3, n_labels=2, attention="multiply", atten_activation="ReLU",
            batch_norm=True)),
        ("kuc_att_unet_2d_resnet50", lambda: kuc.att_unet_2d(
            (64, 64, 3), [16, 32, 64, 128, 256], n_labels=2, backbone="ResNet50", weights=None,
            freeze_backbone=False)),
        ("kuc_resunet_a_2d", lambda: kuc.resunet_a_2d(
            (64, 64, 3), [8, 16, 32], dilation_num=[1, 3, 15, 31], n_labels=2,
            aspp_num_down=16, aspp_num_up=8)),
        ("kuc_u2net_2d", lambda: kuc.u2net_2d(
            (64, 64, 3), n_labels=2, filter_num_down=[8, 16, 32], batch_norm=True)),
        ("kuc_u2net_2d_ds", lambda: kuc.u2net_2d(
            (64, 64, 3), n_labels=2, filter_num_down=[8, 16, 32], deep_supervision=True)),
        ("kuc_unet_3plus_2d_ds", lambda: kuc.unet_3plus_2d(
            (32, 32, 3), n_labels=2, filter_num_down=f3, deep_supervision=True,
            batch_norm=True)),
        ("kuc_unet_3plus_2d_densenet121", lambda: kuc.unet_3plus_2d(
            (64, 64, 3), n_labels=2, filter_num_down=[16, 32, 64, 128, 256],
            backbone="DenseNet121", weights=None, freeze_backbone=False)),
        ("kuc_transunet_2d", lambda: kuc.transunet_2d(
            (32, 32, 3), f3, n_labels=2, embed_dim=16, num_mlp=32, num_heads=2,
            num_transformer=2)),
        ("kuc_swin_unet_2d", lambda: kuc.swin_unet_2d(
            (32, 32, 3), filter_num_begin=8, n_labels=2, depth=2, stack_num_down=2,
            stack_num_up=2, patch_size=(2, 2), num_heads=[2, 2], window_size=[4, 2],
            num_mlp=16)),
    ]
    return out


def ku_models():
    from keras_unet.models import custom_unet

    return [
        ("ku_custom_unet_simple", lambda: custom_unet(
            (32, 32, 3), filters=8, num_layers=3, upsample_mode="simple",
            dropout_type="standard", use_dropout_on_upsampling=True)),
        ("ku_custom_unet_attention_simple", lambda: custom_unet(
            (32, 32, 3), filters=8, num_layers=3, use_attention=True, upsample_mode="simple",
            use_batch_norm=False)),
    ]


def pix2pix_generator(size=256, divide=1, levels=8, output_channels=3):
    """The TensorFlow pix2pix tutorial's generator
    (https://www.tensorflow.org/tutorials/generative/pix2pix): Sequential downsample/upsample
    blocks called as layers. ``divide`` and ``levels`` shrink it for the numeric check."""
    import tensorflow as tf

    def downsample(filters, size, apply_batchnorm=True):
        initializer = tf.random_normal_initializer(0., 0.02)
        result = tf.keras.Sequential()
        result.add(tf.keras.layers.Conv2D(filters, size, strides=2, padding="same",
                                          kernel_initializer=initializer, use_bias=False))
        if apply_batchnorm:
            result.add(tf.keras.layers.BatchNormalization())
        result.add(tf.keras.layers.LeakyReLU())
        return result

    def upsample(filters, size, apply_dropout=False):
        initializer = tf.random_normal_initializer(0., 0.02)
        result = tf.keras.Sequential()
        result.add(tf.keras.layers.Conv2DTranspose(filters, size, strides=2, padding="same",
                                                   kernel_initializer=initializer,
                                                   use_bias=False))
        result.add(tf.keras.layers.BatchNormalization())
        if apply_dropout:
            result.add(tf.keras.layers.Dropout(0.5))
        result.add(tf.keras.layers.ReLU())
        return result

    inputs = tf.keras.layers.Input(shape=[size, size, 3])
    down_f = [64, 128, 256, 512, 512, 512, 512, 512][:levels]
    up_f = [512, 512, 512, 512, 256, 128, 64][-(levels - 1):]
    down_stack = [downsample(f // divide, 4, apply_batchnorm=i > 0)
                  for i, f in enumerate(down_f)]
    up_stack = [upsample(f // divide, 4, apply_dropout=i < 3) for i, f in enumerate(up_f)]
    initializer = tf.random_normal_initializer(0., 0.02)
    last = tf.keras.layers.Conv2DTranspose(output_channels, 4, strides=2, padding="same",
                                           kernel_initializer=initializer, activation="tanh")
    x = inputs
    skips = []
    for down in down_stack:
        x = down(x)
        skips.append(x)
    skips = reversed(skips[:-1])
    for up, skip in zip(up_stack, skips):
        x = up(x)
        x = tf.keras.layers.Concatenate()([x, skip])
    x = last(x)
    return tf.keras.Model(inputs=inputs, outputs=x)


def keras_io_oxford_pets(img_size=(160, 160), num_classes=3, widths=(32, 64, 128, 256)):
    """keras.io "Image segmentation with a U-Net-like architecture" (Keras 2 version):
    Xception-style SeparableConv2D blocks with strided 1x1 residual projections, then
    Conv2DTranspose blocks with UpSampling2D residuals."""
    from tensorflow import keras
    from tensorflow.keras import layers

    inputs = keras.Input(shape=img_size + (3,))
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous_block_activation = x
    for filters in widths[1:]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(
            previous_block_activation)
        x = layers.add([x, residual])
        previous_block_activation = x
    for filters in widths[::-1]:
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.UpSampling2D(2)(x)
        residual = layers.UpSampling2D(2)(previous_block_activation)
        residual = layers.Conv2D(filters, 1, padding="same")(residual)
        x = layers.add([x, residual])
        previous_block_activation = x
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs)


def lambda_attention_unet(shape=(32, 32, 3), f=8):
    """The attention gate as many GitHub attention U-Nets write it (e.g. the focal-Tversky
    attention U-Net): the gate is repeated over the channels with a Python Lambda,
    ``Lambda(lambda x, repnum: K.repeat_elements(x, repnum, axis=3))``, here with ``K`` a
    variable of this function (the lambda's closure). unetc reads it from the bytecode."""
    import tensorflow as tf
    from tensorflow.keras import backend as K
    from tensorflow.keras import layers

    def expend_as(tensor, rep):
        return layers.Lambda(lambda x, repnum: K.repeat_elements(x, repnum, axis=3),
                             arguments={"repnum": rep})(tensor)

    inputs = layers.Input(shape)
    skip = layers.Conv2D(f, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(skip)
    g = layers.Conv2D(2 * f, 3, padding="same", activation="relu")(x)
    theta = layers.Conv2D(f, 2, strides=2, padding="same")(skip)
    phi = layers.Conv2D(f, 1, padding="same")(g)
    psi = layers.Conv2D(1, 1, padding="same", activation="sigmoid")(
        layers.Activation("relu")(layers.add([theta, phi])))
    psi = layers.UpSampling2D(2)(psi)
    att = layers.multiply([expend_as(psi, f), skip])
    x = layers.concatenate([layers.UpSampling2D(2)(g), att])
    return tf.keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def tf_functions_unet(shape=(32, 32, 3), f=8):
    """TensorFlow functions on Keras tensors, as hand-written U-Nets use them: ``tf.image.resize``
    of the decoder to the skip's size, ``tf.concat``, ``tf.nn.relu``, ``tf.expand_dims`` /
    ``tf.squeeze`` around a channel, ``tf.reshape``."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inputs = layers.Input(shape)
    skip = layers.Conv2D(f, 3, padding="same")(inputs)
    skip = tf.nn.relu(skip)
    x = layers.MaxPooling2D()(skip)
    x = layers.Conv2D(2 * f, 3, padding="same", activation="relu")(x)
    x = tf.image.resize(x, (shape[0], shape[1]), method="bilinear")
    x = tf.concat([x, skip], axis=-1)
    x = layers.Conv2D(1, 1)(x)
    x = tf.squeeze(x, axis=-1)
    x = tf.expand_dims(x, axis=-1)
    x = tf.reshape(x, (-1, shape[0], shape[1], 1))
    return tf.keras.Model(inputs, tf.sigmoid(x))


def rescaled_unet(shape=(32, 32, 3), f=8):
    """A U-Net as keras.io's examples start one: ``Rescaling(1. / 255)`` on the raw pixels."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inputs = layers.Input(shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    skip = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * f, 3, padding="same", activation="relu")(layers.MaxPooling2D()(skip))
    x = layers.Conv2DTranspose(f, 2, strides=2)(x)
    x = layers.concatenate([x, skip])
    return tf.keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def keras_io_deeplabv3plus(image_size=512, num_classes=20):
    """keras.io's "Multiclass semantic segmentation using DeepLabV3+": ResNet50 built on
    ``keras.applications.resnet50.preprocess_input(model_input)`` (channels reversed,
    tf.nn.bias_add), dilated spatial pyramid pooling with ``tf.nn.relu``, bilinear up-sampling,
    the decoder on conv2_block3's features. Written as the example writes it."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    def convolution_block(block_input, num_filters=256, kernel_size=3, dilation_rate=1,
                          use_bias=False):
        x = layers.Conv2D(num_filters, kernel_size=kernel_size, dilation_rate=dilation_rate,
                          padding="same", use_bias=use_bias,
                          kernel_initializer=keras.initializers.HeNormal())(block_input)
        x = layers.BatchNormalization()(x)
        return tf.nn.relu(x)

    def dilated_spatial_pyramid_pooling(dspp_input):
        dims = dspp_input.shape
        x = layers.AveragePooling2D(pool_size=(dims[-3], dims[-2]))(dspp_input)
        x = convolution_block(x, kernel_size=1, use_bias=True)
        out_pool = layers.UpSampling2D(size=(dims[-3] // x.shape[1], dims[-2] // x.shape[2]),
                                       interpolation="bilinear")(x)
        out_1 = convolution_block(dspp_input, kernel_size=1, dilation_rate=1)
        out_6 = convolution_block(dspp_input, kernel_size=3, dilation_rate=6)
        out_12 = convolution_block(dspp_input, kernel_size=3, dilation_rate=12)
        out_18 = convolution_block(dspp_input, kernel_size=3, dilation_rate=18)
        x = layers.Concatenate(axis=-1)([out_pool, out_1, out_6, out_12, out_18])
        return convolution_block(x, kernel_size=1)

    model_input = keras.Input(shape=(image_size, image_size, 3))
    preprocessed = keras.applications.resnet50.preprocess_input(model_input)
    resnet50 = keras.applications.ResNet50(weights=None, include_top=False,
                                           input_tensor=preprocessed)
    x = resnet50.get_layer("conv4_block6_2_relu").output
    x = dilated_spatial_pyramid_pooling(x)
    input_a = layers.UpSampling2D(
        size=(image_size // 4 // x.shape[1], image_size // 4 // x.shape[2]),
        interpolation="bilinear")(x)
    input_b = resnet50.get_layer("conv2_block3_2_relu").output
    input_b = convolution_block(input_b, num_filters=48, kernel_size=1)
    x = layers.Concatenate(axis=-1)([input_a, input_b])
    x = convolution_block(x)
    x = convolution_block(x)
    x = layers.UpSampling2D(size=(image_size // x.shape[1], image_size // x.shape[2]),
                            interpolation="bilinear")(x)
    model_output = layers.Conv2D(num_classes, kernel_size=(1, 1), padding="same")(x)
    return keras.Model(inputs=model_input, outputs=model_output)


def preprocessed_vgg16_unet(size=64, widths=(64, 32, 16)):
    """A U-Net on a nested VGG16 encoder (a Functional model of its four skip taps) called on
    ``keras.applications.vgg16.preprocess_input(inputs)``, as transfer-learning tutorials
    write it: raw 0-255 pixels in, the ImageNet preprocessing inside the model."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    inputs = keras.Input((size, size, 3))
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    taps = ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3"]
    encoder = keras.Model(base.input, [base.get_layer(t).output for t in taps], name="encoder")
    s1, s2, s3, x = encoder(keras.applications.vgg16.preprocess_input(inputs))
    for skip, f in zip([s3, s2, s1], widths):
        x = layers.Conv2DTranspose(f, 2, strides=2)(x)
        x = layers.Concatenate()([x, skip])
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    return tf.keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def other_models():
    return [
        ("tf_pix2pix_generator", lambda: pix2pix_generator()),
        ("tf_pix2pix_generator_small", lambda: pix2pix_generator(64, 16, 6)),
        ("kerasio_oxford_pets", lambda: keras_io_oxford_pets()),
        ("kerasio_oxford_pets_small", lambda: keras_io_oxford_pets((64, 64), 3, (8, 16, 32))),
        ("github_lambda_attention_unet", lambda_attention_unet),
        ("github_tf_functions_unet", tf_functions_unet),
        ("rescaled_unet", rescaled_unet),
        ("kerasio_deeplabv3plus", lambda: keras_io_deeplabv3plus()),
        ("kerasio_deeplabv3plus_small", lambda: keras_io_deeplabv3plus(64, 5)),
        ("preprocessed_vgg16_unet", preprocessed_vgg16_unet),
    ]


def all_models():
    out = []
    for group in (other_models, ku_models, kuc_models, sm_models):
        try:
            out += group()
        except Exception as e:  # a package missing: say so, try the others
            print(f"{group.__name__}: {e}", file=sys.stderr)
    return out


def build_and_record(name, build, out: Path) -> dict:
    import numpy as np
    import tensorflow as tf
    from generate import seeded_input, set_formula_weights
    from keras_to_safetensors import save_unetc_weights

    tf.keras.backend.clear_session()
    with redirect_stdout(io.StringIO()):  # kuc prints its "auto" choices while building
        model = build()
    buf = io.StringIO()
    with redirect_stdout(buf):
        model.summary()
    (out / f"{name}.summary.txt").write_text(buf.getvalue())
    (out / f"{name}.json").write_text(model.to_json() + "\n")
    entry = {"params": int(model.count_params()),
             "layers": sorted({type(l).__name__ for l in model.layers})}
    try:
        set_formula_weights(model)
        save_unetc_weights(model, out / f"{name}.weights.safetensors")
    except Exception as e:
        entry["weights"] = f"{type(e).__name__}: {e}"
        return entry
    shape = tuple(int(d) for d in model.input_shape[1:])
    x = 100 * seeded_input(name, shape, 2)
    y = model.predict(x, verbose=0)
    if isinstance(y, list):  # deep supervision: unetc runs the first output
        entry["outputs"] = len(y)
        y = y[0]
    np.save(out / f"{name}.x.npy", x)
    np.save(out / f"{name}.y.npy", np.asarray(y, dtype=np.float32))
    return entry


def unetc_steps(name, unetc: str, out: Path, entry: dict) -> None:
    import numpy as np

    def step(args):
        return subprocess.run([unetc, "--color", "never", *args], capture_output=True,
                              text=True, timeout=1800)

    r = step(["import", str(out / f"{name}.json"), "-o", str(out / f"{name}.unet"), "--force"])
    if r.returncode != 0:
        entry["outcome"] = "import refused"
        entry["why"] = r.stderr.strip()
        return
    r = step(["check", "--style", "tf-keras", str(out / f"{name}.unet")])
    keras = (out / f"{name}.summary.txt").read_text()
    if r.returncode != 0:
        entry["outcome"] = "check failed"
        entry["why"] = (r.stderr + r.stdout).strip()[-3000:]
        return
    if not r.stdout.startswith(keras):
        got, want = r.stdout.splitlines(), keras.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(got))
        entry["outcome"] = "summary differs"
        entry["why"] = (f"line {line + 1}:\n  unetc: {got[line] if line < len(got) else '<end>'}"
                        f"\n  keras: {want[line] if line < len(want) else '<end>'}")
        return
    if "weights" in entry:
        entry["outcome"] = "summary identical; weights not written"
        entry["why"] = entry["weights"]
        return
    got_file = out / f"{name}.got.npy"
    r = step(["run", str(out / f"{name}.unet"), "--weights",
              str(out / f"{name}.weights.safetensors"), "--input", str(out / f"{name}.x.npy"),
              "-o", str(got_file), "--device", "cpu", "--batch", "2", "--force"])
    if r.returncode != 0:
        entry["outcome"] = "run failed"
        entry["why"] = (r.stderr + r.stdout).strip()[-3000:]
        return
    got, want = np.load(got_file), np.load(out / f"{name}.y.npy")
    if got.shape != want.shape:
        entry["outcome"] = "run: wrong shape"
        entry["why"] = f"unetc {got.shape}, keras {want.shape}"
        return
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    entry["rel_err"] = err
    entry["outcome"] = "works" if err <= 1e-5 else "numerics differ"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/unetc_survey"))
    p.add_argument("--unetc", default=str(ROOT / "target" / "release" / "unetc"))
    p.add_argument("--keras-only", action="store_true", help="build and record, run no unetc")
    p.add_argument("--markdown", type=Path, help="also write the outcomes as a Markdown table")
    p.add_argument("names", nargs="*")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    results_file = a.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name, build in all_models():
        if a.names and name not in a.names:
            continue
        try:
            entry = build_and_record(name, build, a.out)
        except Exception as e:
            entry = {"outcome": "keras build failed",
                     "why": "".join(traceback.format_exception_only(type(e), e)).strip()}
        if "outcome" not in entry and not a.keras_only:
            unetc_steps(name, a.unetc, a.out, entry)
        results[name] = entry
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        why = entry.get("why", "").splitlines()
        print(f"{name:36} {entry.get('outcome', 'recorded'):28} "
              f"{entry.get('rel_err', '') if 'rel_err' in entry else (why[0] if why else '')}",
              flush=True)
    if a.markdown:
        write_markdown(a.markdown, results, a.unetc, a.out)
    return 0


def write_markdown(path: Path, results: dict, unetc: str, out: Path) -> None:
    import datetime

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    lines = [
        "# Real Keras U-Nets tried on unetc",
        "",
        f"Written by `python tools/real_models_survey.py --markdown ...` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, unetc {commit} "
        f"(`{Path(unetc).relative_to(ROOT) if Path(unetc).is_relative_to(ROOT) else unetc}`), "
        "tf 2.21 / tf_keras 2.21 on the CPU. Works: `unetc import` of `to_json()`, "
        "`check --style tf-keras` identical to `model.summary()`, `unetc run` within 1e-5 "
        "(relative to the largest output) of `model.predict` with the formula's weights.",
        "",
        "| model | params | outcome | max rel. error / why |",
        "| --- | ---: | --- | --- |",
    ]
    for name, e in results.items():
        why = e.get("why", "").splitlines()
        detail = f"{e['rel_err']:.2e}" if "rel_err" in e else (why[0] if why else "")
        detail = detail.replace("|", "\\|").replace(f"{out}/", "")
        if len(detail) > 400:
            detail = detail[:400] + " ..."
        params = f"{e['params']:,}" if e.get("params") else ""
        lines.append(f"| {name} | {params} | {e.get('outcome', '')} | {detail} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
