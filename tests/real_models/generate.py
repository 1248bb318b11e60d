#!/usr/bin/env python3
"""U-Nets as the popular Keras packages build them, recorded from real tf.keras for
tests/real_models.rs: each model's ``to_json()``, what ``model.summary()`` prints, and for the
small ones its weights (tools/keras_to_safetensors.py) and ``model.predict`` on a seeded input.

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 keras-unet-collection==0.1.13 \\
        keras-unet==0.1.2 pillow matplotlib safetensors numpy
    python tests/real_models/generate.py

unetc must import every JSON (``unetc import``), print the same summary byte for byte
(``check --style tf-keras``), and, where weights are stored, run within 1e-5 of Keras's output.
Models whose layers unetc does not know yet are listed in SKIPPED with the reason.
"""
import io
import json
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tools"))


def models():
    from keras_unet_collection import models as kuc
    from keras_unet.models import custom_unet, satellite_unet, vanilla_unet

    # (name, builder, store weights and outputs?)
    return [
        ("kuc_att_unet", lambda: kuc.att_unet_2d(
            (32, 32, 3), [8, 16, 32], n_labels=2, stack_num_down=2, stack_num_up=2,
            activation="ReLU", atten_activation="ReLU", attention="add",
            output_activation="Sigmoid", batch_norm=True, pool=False, unpool=False), True),
        ("kuc_unet", lambda: kuc.unet_2d((32, 32, 1), [8, 16, 32], n_labels=2), True),
        ("kuc_unet_plus", lambda: kuc.unet_plus_2d((32, 32, 3), [8, 16, 32], n_labels=2), True),
        ("kuc_r2_unet", lambda: kuc.r2_unet_2d((32, 32, 3), [8, 16, 32], n_labels=2), True),
        ("kuc_unet_3plus", lambda: kuc.unet_3plus_2d(
            (32, 32, 3), n_labels=2, filter_num_down=[8, 16, 32]), True),
        ("ku_custom_unet", lambda: custom_unet(
            (32, 32, 3), use_batch_norm=True, num_classes=1, filters=8, num_layers=3,
            dropout=0.2, output_activation="sigmoid"), True),
        ("ku_custom_unet_attention", lambda: custom_unet(
            (32, 32, 3), use_attention=True, filters=8, num_layers=3), True),
        # The TensorFlow image-segmentation tutorial's U-Net: a MobileNetV2 feature extractor
        # (a Functional model with five outputs) and pix2pix upsample blocks (Sequential
        # models), each used as one layer. Small: 64x64 input, alpha 0.35, up filters / 8.
        ("tf_tutorial_unet", lambda: tf_tutorial_unet((64, 64, 3), 0.35, [64, 32, 16, 8]), True),
        # The same at the tutorial's own size (2.9 M parameters at alpha 0.35, 96x96): the
        # summary and the import only.
        ("tf_tutorial_unet_full", lambda: tf_tutorial_unet((96, 96, 3), 0.35, [512, 256, 128, 64]),
         False),
        # Shared layers: layers called on several tensors (`layer[1][0]` connections).
        ("shared_layers_unet", lambda: shared_layers_unet((32, 32, 3), 8), True),
        # A nested model with two inputs, listed in another order than its layers create them.
        ("nested_two_inputs", lambda: nested_two_inputs((16, 16, 3)), True),
        # Large (1.3 M, 31 M parameters): the summary and the import only.
        ("ku_satellite_unet", lambda: satellite_unet((32, 32, 3), num_layers=3), False),
        ("ku_vanilla_unet", lambda: vanilla_unet((572, 572, 3)), False),
    ]


def tf_tutorial_unet(shape, alpha, up_filters, output_channels=3):
    """https://www.tensorflow.org/tutorials/images/segmentation, as written there (weights=None:
    random weights; the tutorial loads ImageNet's)."""
    import tensorflow as tf

    def upsample(filters, size):  # tensorflow_examples pix2pix.upsample, norm_type="batchnorm"
        initializer = tf.random_normal_initializer(0., 0.02)
        result = tf.keras.Sequential()
        result.add(tf.keras.layers.Conv2DTranspose(filters, size, strides=2, padding="same",
                                                   kernel_initializer=initializer,
                                                   use_bias=False))
        result.add(tf.keras.layers.BatchNormalization())
        result.add(tf.keras.layers.ReLU())
        return result

    base_model = tf.keras.applications.MobileNetV2(input_shape=list(shape), alpha=alpha,
                                                   include_top=False, weights=None)
    layer_names = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                   "block_13_expand_relu", "block_16_project"]
    base_model_outputs = [base_model.get_layer(name).output for name in layer_names]
    down_stack = tf.keras.Model(inputs=base_model.input, outputs=base_model_outputs)
    up_stack = [upsample(f, 3) for f in up_filters]
    inputs = tf.keras.layers.Input(shape=list(shape))
    skips = down_stack(inputs)
    x = skips[-1]
    skips = reversed(skips[:-1])
    for up, skip in zip(up_stack, skips):
        x = up(x)
        x = tf.keras.layers.Concatenate()([x, skip])
    last = tf.keras.layers.Conv2DTranspose(filters=output_channels, kernel_size=3, strides=2,
                                           padding="same")
    return tf.keras.Model(inputs=inputs, outputs=last(x))


def shared_layers_unet(shape, f):
    """A U-Net whose layers are called more than once (Keras records each call as a node of
    the shared layer): one pooling layer for both levels (two output shapes: Keras prints
    "multiple"), a refinement convolution applied twice in a row, and one side convolution
    (shared weights) applied to the skip and to the up path."""
    import tensorflow as tf
    from tensorflow.keras import layers

    inputs = layers.Input(shape=shape)
    pool = layers.MaxPooling2D(2)
    skip = layers.Conv2D(f, 3, padding="same", activation="relu")(inputs)
    deep = layers.Conv2D(2 * f, 3, padding="same", activation="relu")(pool(skip))
    refine = layers.Conv2D(2 * f, 3, padding="same", activation="relu")
    x = refine(refine(pool(deep)))
    x = layers.Concatenate()([layers.UpSampling2D(2)(x), deep])
    x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(f, 2, strides=2)(x)
    side = layers.Conv2D(f, 3, padding="same", activation="relu")
    x = layers.Add()([side(skip), side(x)])
    return tf.keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def nested_two_inputs(shape):
    """A Functional model of two inputs used as a layer; its `inputs` are [b, a] while `a` is
    created first, so binding the call's tensors by creation order would swap them."""
    import tensorflow as tf
    from tensorflow.keras import layers

    a = layers.Input(shape=(shape[0], shape[1], 4), name="inner_a")
    b = layers.Input(shape=(shape[0], shape[1], 2), name="inner_b")
    merged = layers.Concatenate()([a, layers.Conv2D(4, 1)(b)])
    inner = tf.keras.Model([b, a], layers.Conv2D(3, 3, padding="same")(merged), name="merge")
    x = layers.Input(shape=shape)
    y = inner([layers.Conv2D(2, 1)(x), layers.Conv2D(4, 3, padding="same")(x)])
    return tf.keras.Model(x, layers.Conv2D(1, 1, activation="sigmoid")(y))


def leaf_layers(model):
    """Every layer, nested models' layers included."""
    import tensorflow as tf

    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


SKIPPED = {
    "kuc_resunet_a": "its ASPP pool branch resizes with two Lambda layers (tf.image.resize in Python bytecode, which unetc cannot run; `unetc import` refuses them) after TFOpLambda tf.expand_dims on (None, C) tensors, which unetc does not model",
}


def main() -> int:
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import save_file
    from keras_to_safetensors import save_unetc_weights

    # `generate.py NAME ...` regenerates only those models (the others' files stay as they are).
    only = set(sys.argv[1:])
    old = json.loads((HERE / "manifest.json").read_text()) if only else {"models": {}}
    manifest = old["models"]
    for name, build, store in models():
        if only and name not in only:
            continue
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(1234)
        model = build()
        # Moving statistics away from 0 and 1, so BatchNormalization does something.
        for layer in leaf_layers(model):
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                gamma, beta, mean, var = layer.get_weights()
                rng = np.random.default_rng(len(layer.name))
                layer.set_weights([gamma, beta, rng.normal(0, 0.2, mean.shape).astype("float32"),
                                   rng.uniform(0.5, 1.5, var.shape).astype("float32")])
        buf = io.StringIO()
        with redirect_stdout(buf):
            model.summary()
        (HERE / f"{name}.summary.txt").write_text(buf.getvalue())
        (HERE / f"{name}.json").write_text(model.to_json() + "\n")
        entry = {"params": int(model.count_params()),
                 "layers": sorted({type(l).__name__ for l in model.layers})}
        if store:
            save_unetc_weights(model, HERE / f"{name}.weights.safetensors")
            shape = tuple(int(d) for d in model.input_shape[1:])
            x = np.random.default_rng(7).random((2, *shape), dtype=np.float32)
            y = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
            save_file({"input": x, "output": y}, str(HERE / f"{name}.io.safetensors"))
        manifest[name] = entry
        print(name, entry["params"], entry["layers"], flush=True)
    import keras_unet
    import keras_unet_collection
    versions = {"tensorflow": tf.__version__, "tf_keras": __import__("tf_keras").__version__,
                "keras_unet": getattr(keras_unet, "__version__", "0.1.2"),
                "keras_unet_collection": "0.1.13"}
    manifest = {k: manifest[k] for k in [m[0] for m in models()] if k in manifest}
    (HERE / "manifest.json").write_text(json.dumps(
        {"versions": versions, "models": manifest, "skipped": SKIPPED}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
