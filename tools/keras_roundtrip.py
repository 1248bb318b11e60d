#!/usr/bin/env python3
"""Checks `unetc export --to keras` against real tf.keras and records what Keras says.

For every seed spec: exports it as Python, builds that model in tf.keras (a fresh session each),
compares Keras's own model.summary() with `unetc check --style tf-keras`, and saves the model's
to_json() under tests/keras_json/<spec>.json. tests/keras_interop.rs imports those JSON files
with `unetc import` and requires the very graph of the spec back.

    TF_USE_LEGACY_KERAS=1 python tools/keras_roundtrip.py target/release/unetc

`python tools/keras_roundtrip.py UNETC SPEC...` redoes only the specs named.

Needs tensorflow-cpu 2.21 and tf-keras 2.21 (pip). Prints one line per spec; exit 1 on a mismatch.
"""
import io
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

SPECS = [
    "specs/original.unet",
    "specs/original_second_post.unet",
    "specs/bn_same.unet",
    "specs/zhixuhao.unet",
    "specs/vgg16_unet.unet",
    "specs/backbones/vgg16.unet",
    "specs/backbones/resnet50.unet",
    # Issue 12's first new kinds (merges, LeakyReLU/ELU/PReLU, average and global max pooling,
    # the noise layers), from the golden fixture that tf.keras also ran.
    "tests/golden/edge_merges.unet",
    # GroupNormalization and LayerNormalization, from their golden fixture.
    "tests/golden/edge_norms.unet",
    # The depthwise family (DepthwiseConv2D, SeparableConv2D, Conv2D with groups).
    "tests/golden/edge_depthwise.unet",
    # TFOpLambda layers (x + g, tf.concat, tf.nn.relu, ...), named with dots.
    "tests/golden/edge_tfops.unet",
    # TFOpLambda arithmetic with a number on either side (x + 1.0, 1 - g, x / 4.0, ...).
    "tests/golden/edge_tfconst.unet",
    # ... and with a constant tensor (UNETR's position embeddings computed outside the model).
    "tests/golden/edge_tftensor.unet",
    # tf.reduce_mean / tf.reduce_max over the channels (CBAM's spatial attention).
    "tests/golden/edge_tfreduce.unet",
    # The 3-D kinds (issue 12 part 3) and a BraTS-style 3-D U-Net.
    "tests/golden/edge_3d.unet",
    "tests/golden/unet3d_small.unet",
    "tests/golden/unet3d_valid.unet",
    # Nested models (a Functional with five outputs, four Sequentials) and shared layers.
    "specs/tf_tutorial_unet.unet",
    "specs/shared_layers_unet.unet",
    # A nested model called twice (a siamese encoder over two images).
    "specs/siamese_unet.unet",
    # keras-unet-collection's Snake (one scalar weight; trainable=False by default).
    "tests/golden/edge_snake.unet",
    # The efficientnet package's FixedDropout (segmentation_models' EfficientNet encoders).
    "tests/golden/edge_fixed_dropout.unet",
    # Rescaling (`Rescaling(1. / 255)` on the input).
    "tests/golden/edge_rescaling.unet",
    # Normalization (keras.applications' EfficientNet input: mean/variance weights).
    "tests/golden/edge_normalization.unet",
    # tf.image.resize, tf.expand_dims, tf.squeeze, tf.reshape.
    "tests/golden/edge_tfreshape.unet",
    # keras-unet-collection's GELU layer (the exported code defines the class).
    "tests/golden/edge_gelu.unet",
    # Lambda layers running classification_models' functions (needs image-classifiers).
    "tests/golden/edge_lambda.unet",
    # tf.keras's InceptionResNetV2 residual layer.
    "tests/golden/edge_custom_scale.unet",
    "tests/golden/edge_repeat_elements.unet",
    "tests/golden/edge_lambda_resize.unet",
    # tf.argmax, tf.cast and `x[...]` subscripts (SlicingOpLambda).
    "tests/golden/edge_tfindex.unet",
    # Stepped and reversed subscripts, tf.nn.bias_add (preprocess_input of VGG16 and DenseNet).
    "tests/golden/edge_tfstep.unet",
    # tf.pad (REFLECT and CONSTANT) of an image's height and width.
    "tests/golden/edge_tfpad.unet",
    # Keras's Resizing and tf.image.resize to sizes that are not whole multiples.
    "tests/golden/edge_resizing.unet",
    # tf.nn activations and reductions over height and width.
    "tests/golden/edge_tfactivations.unet",
    # MultiHeadAttention (self, cross with a key, over an image's pixels).
    "tests/golden/edge_attention.unet",
    # keras-unet-collection's patch_extract and patch_embedding (needs keras-unet-collection).
    "tests/golden/edge_patches.unet",
    # keras-unet-collection's Swin-UNET classes (needs keras-unet-collection).
    "tests/golden/edge_swin.unet",
    "specs/library/swin_unet.unet",
]


def main(unetc: str, only: list) -> int:
    import tensorflow as tf

    root = Path(__file__).resolve().parents[1]
    out_dir = root / "tests" / "keras_json"
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for spec in SPECS:
        if only and spec not in only:
            continue
        code = subprocess.run([unetc, "export", spec, "--to", "keras"], cwd=root, check=True,
                              capture_output=True, text=True).stdout
        tf.keras.backend.clear_session()
        namespace: dict = {"__name__": "exported"}
        exec(compile(code, spec + ".py", "exec"), namespace)
        model = namespace["build_model"]()
        buf = io.StringIO()
        with redirect_stdout(buf):
            model.summary()
        keras_summary = buf.getvalue()
        ours = subprocess.run([unetc, "check", spec, "--style", "tf-keras"], cwd=root, check=True,
                              capture_output=True, text=True).stdout
        same = ours.startswith(keras_summary)
        failures += not same
        stem = Path(spec).stem
        (out_dir / f"{stem}.json").write_text(model.to_json() + "\n")
        print(f"{spec}: {model.count_params()} params, {len(model.layers)} layers; "
              f"Keras summary of the exported code {'==' if same else '!='} unetc check --style tf-keras")
    return 1 if failures else 0


if __name__ == "__main__":
    # `keras_roundtrip.py UNETC SPEC...` redoes only those specs.
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/release/unetc", sys.argv[2:]))
