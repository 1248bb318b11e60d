#!/usr/bin/env python3
"""U-Nets as the popular Keras packages build them, recorded from real tf.keras for
tests/real_models.rs: each model's ``to_json()``, what ``model.summary()`` prints, and
``model.predict`` on a seeded input with the small ones' own weights (stored with
tools/keras_to_safetensors.py) or, for large encoders, the formula weights of
tests/golden/README.md (not stored: the test regenerates them).

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 keras-unet-collection==0.1.13 \\
        keras-unet==0.1.2 segmentation-models==1.0.1 pillow matplotlib safetensors numpy
    pip install --no-deps image-classifiers==1.0.0 efficientnet==1.0.0
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
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tools"))


def models():
    from keras_unet_collection import models as kuc
    from keras_unet.models import custom_unet, satellite_unet, vanilla_unet

    # (name, builder, what to store): True: weights and outputs; "formula": outputs of the model
    # with every weight from the formula of tests/golden/README.md (tests/common regenerates
    # them, so large encoders need no stored weights); False: the summary and the import only.
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
        # A nested model called on two inputs (siamese change-detection U-Nets share one
        # encoder over two images): a Functional encoder with three outputs, and a Sequential
        # stem, each one layer with one set of weights called twice (`model[1][k]`).
        ("siamese_unet", lambda: siamese_unet((32, 32, 3), 4), True),
        ("siamese_sequential", lambda: siamese_sequential((16, 16, 2), 4), True),
        # Large (1.3 M, 31 M parameters): the summary and the import only.
        ("ku_satellite_unet", lambda: satellite_unet((32, 32, 3), num_layers=3), False),
        ("ku_vanilla_unet", lambda: vanilla_unet((572, 572, 3)), False),
    ] + more_models()


def more_models():
    """Found by tools/real_models_survey.py (its builders) to import, print and run as Keras:
    keras-unet-collection's options, keras-unet's simple upsampling, the TensorFlow pix2pix
    generator, keras.io's Xception-style U-Net, and segmentation_models with several encoders
    (formula weights: their encoders hold millions of parameters)."""
    import segmentation_models as sm
    from keras_unet_collection import models as kuc
    from keras_unet.models import custom_unet
    from real_models_survey import (keras_io_deeplabv3plus, keras_io_oxford_pets,
                                    pix2pix_generator, preprocessed_vgg16_unet,
                                    tf_functions_unet)

    f3 = [4, 8, 16]
    return [
        # Sequential blocks called as layers, LeakyReLU, Dropout, tanh head; 1/32 of the widths,
        # 64x64 (six levels); the tutorial's own 256x256 generator: the summary only.
        ("tf_pix2pix_generator_small", lambda: pix2pix_generator(64, 32, 6), True),
        ("tf_pix2pix_generator", lambda: pix2pix_generator(), False),
        # SeparableConv2D, strided 1x1 residual projections, UpSampling2D residuals.
        ("kerasio_oxford_pets_small", lambda: keras_io_oxford_pets((64, 64), 3, (8, 16, 32)),
         True),
        # keras.io's DeepLabV3+: ResNet50 on preprocess_input (channels reversed by `[..., ::-1]`,
        # tf.nn.bias_add), dilated pyramid pooling, tf.nn.relu; 64x64, 5 classes (11.9 M
        # parameters: formula weights).
        ("kerasio_deeplabv3plus_small", lambda: keras_io_deeplabv3plus(64, 5), "formula"),
        # A nested VGG16 encoder called on vgg16.preprocess_input(inputs) (8.0 M parameters).
        ("preprocessed_vgg16_unet", preprocessed_vgg16_unet, "formula"),
        ("ku_custom_unet_simple", lambda: custom_unet(
            (32, 32, 3), filters=4, num_layers=3, upsample_mode="simple",
            dropout_type="standard", use_dropout_on_upsampling=True), True),
        ("kuc_unet_2d_ave_nearest", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, batch_norm=True, pool="ave", unpool="nearest"), True),
        ("kuc_unet_2d_prelu", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, activation="PReLU", batch_norm=True), True),
        ("kuc_unet_2d_leakyrelu_bilinear", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=1, activation="LeakyReLU", unpool="bilinear",
            output_activation="Sigmoid"), True),
        ("kuc_vnet_2d_prelu", lambda: kuc.vnet_2d(
            (32, 32, 1), f3, n_labels=2, res_num_ini=1, res_num_max=3, activation="PReLU",
            batch_norm=True, pool=False, unpool=False), True),
        ("kuc_unet_plus_2d_ds", lambda: kuc.unet_plus_2d(
            (32, 32, 3), f3, n_labels=2, batch_norm=True, deep_supervision=True,
            activation="LeakyReLU"), True),
        ("kuc_r2_unet_2d_elu", lambda: kuc.r2_unet_2d(
            (32, 32, 3), f3, n_labels=2, recur_num=2, batch_norm=True, pool="ave", unpool=False,
            activation="ELU"), True),
        ("kuc_att_unet_2d_multiply", lambda: kuc.att_unet_2d(
            (32, 32, 3), f3, n_labels=2, attention="multiply", batch_norm=True), True),
        ("kuc_u2net_2d_ds", lambda: kuc.u2net_2d(
            (32, 32, 3), n_labels=2, filter_num_down=[8, 16], deep_supervision=True), True),
        ("kuc_unet_3plus_2d_ds", lambda: kuc.unet_3plus_2d(
            (32, 32, 3), n_labels=2, filter_num_down=f3, deep_supervision=True,
            batch_norm=True), True),
        # A Keras application as a nested backbone: DenseNet121, whose layers are named with a
        # slash (conv1/conv).
        ("kuc_unet_2d_densenet121", lambda: kuc.unet_2d(
            (64, 64, 3), [16, 32, 64, 128, 256], n_labels=2, backbone="DenseNet121",
            weights=None, freeze_backbone=False, freeze_batch_norm=False), "formula"),
        # keras.applications' EfficientNetB0 as the backbone: Rescaling then Normalization
        # (mean/variance weights) open it.
        ("kuc_unet_2d_efficientnetb0", lambda: kuc.unet_2d(
            (64, 64, 3), [16, 32, 64, 128, 256], n_labels=2, backbone="EfficientNetB0",
            weights=None, freeze_backbone=False, freeze_batch_norm=False), "formula"),
        # keras-unet-collection's own GELU layer class (tanh approximation) as the activation.
        ("kuc_unet_2d_gelu", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, activation="GELU", batch_norm=True), True),
        # keras-unet-collection's own Snake layer class (one scalar weight per layer).
        ("kuc_unet_2d_snake", lambda: kuc.unet_2d(
            (32, 32, 3), f3, n_labels=2, activation="Snake", batch_norm=True), True),
        # tf.image.resize, tf.concat, tf.nn.relu, tf.squeeze / tf.expand_dims / tf.reshape.
        ("github_tf_functions_unet", tf_functions_unet, True),
        # TransUNet (Chen et al. 2021) as keras-unet-collection builds it: a vision transformer
        # at the bottleneck (its patch_extract and patch_embedding classes, LayerNormalization,
        # MultiHeadAttention, Dense + GELU MLPs, residual adds) between a conv encoder and
        # decoder; 8x8 tokens of 16 features, two blocks of two heads.
        ("kuc_transunet_2d", lambda: kuc.transunet_2d(
            (32, 32, 3), f3, n_labels=2, embed_dim=16, num_mlp=32, num_heads=2,
            num_transformer=2), True),
        # Swin-UNET (Cao et al. 2021) as keras-unet-collection builds it: its patch_extract,
        # patch_embedding, SwinTransformerBlock (window attention with a relative position
        # bias; every second block's windows shifted and masked), patch_merging and
        # patch_expanding classes; 16x16 tokens of 8 features, windows of 4 then 2.
        ("kuc_swin_unet_2d", lambda: kuc.swin_unet_2d(
            (32, 32, 3), filter_num_begin=8, n_labels=2, depth=2, stack_num_down=2,
            stack_num_up=2, patch_size=(2, 2), num_heads=[2, 2], window_size=[4, 2],
            num_mlp=16), True),
        # segmentation_models (SM_FRAMEWORK=tf.keras, encoder_weights=None).
        ("sm_unet_efficientnetb0", lambda: sm.Unet(
            "efficientnetb0", input_shape=(64, 64, 3), classes=2, activation="softmax",
            encoder_weights=None, decoder_filters=(32, 16, 8, 8, 4)), "formula"),
        ("sm_linknet_resnet18", lambda: sm.Linknet(
            "resnet18", input_shape=(64, 64, 3), classes=1, encoder_weights=None), "formula"),
        ("sm_fpn_mobilenet", lambda: sm.FPN(
            "mobilenet", input_shape=(64, 64, 3), classes=3, activation="softmax",
            encoder_weights=None, pyramid_block_filters=32), "formula"),
        ("sm_pspnet_inceptionv3", lambda: sm.PSPNet(
            "inceptionv3", input_shape=(96, 96, 3), classes=2, activation="softmax",
            encoder_weights=None, psp_conv_filters=64, downsample_factor=8), "formula"),
        ("sm_unet_vgg16_transpose", lambda: sm.Unet(
            "vgg16", input_shape=(64, 64, 1), classes=1, encoder_weights=None,
            decoder_block_type="transpose", decoder_use_batchnorm=False,
            decoder_filters=(32, 16, 8, 8, 4)), "formula"),
        # Encoders with Lambda layers running classification_models' functions: expand_dims
        # in SE-ResNet's squeeze-excitation blocks, slice_tensor in ResNeXt's grouped convs.
        ("sm_unet_seresnet18", lambda: sm.Unet(
            "seresnet18", input_shape=(64, 64, 3), classes=2, activation="softmax",
            encoder_weights=None, decoder_filters=(32, 16, 8, 8, 4)), "formula"),
        ("sm_linknet_resnext50", lambda: sm.Linknet(
            "resnext50", input_shape=(64, 64, 3), classes=1, encoder_weights=None), False),
        # Kaggle's Data Science Bowl 2018 "Keras U-Net starter" (the most copied Keras U-Net
        # notebook): `Lambda(lambda x: x / 255)` first, ELU convs, Dropout, transposed convs.
        ("kaggle_dsb2018_unet", kaggle_dsb2018_unet, "formula"),
        # keras_applications' InceptionResNetV2 (segmentation_models' copy): its 40 residuals
        # are `Lambda(lambda inputs, scale: inputs[0] + inputs[1] * scale, arguments=...)`.
        ("sm_unet_inceptionresnetv2", lambda: sm.Unet(
            "inceptionresnetv2", input_shape=(96, 96, 3), classes=1, encoder_weights=None,
            decoder_filters=(32, 16, 8, 8, 4)), False),
        # The attention U-Net of the many GitHub repositories after Oktay et al. 2018: its gate
        # repeats the one-channel attention map over the skip's channels with
        # `Lambda(lambda x, repnum: K.repeat_elements(x, repnum, axis=3), arguments=...)`.
        ("github_attention_unet_repeat", github_attention_unet, True),
        # keras-unet-collection's ResUNet-a: its ASPP blocks resize their pooled branch with
        # `Lambda(lambda X: image.resize(X, shape_before[1:3], method='bilinear',
        # align_corners=True))`, tf.compat.v1's resize sized by a closure's shape list.
        ("kuc_resunet_a_2d", lambda: kuc.resunet_a_2d(
            (64, 64, 3), [8, 16, 32], dilation_num=[1, 3, 15, 31], n_labels=2,
            aspp_num_down=16, aspp_num_up=8), True),
        # UNet 3+ with deep supervision and the classification-guided module as the popular
        # Keras tutorial repositories write it: `tf.argmax`, `cls[..., tf.newaxis]`, `tf.cast`
        # and `y * cls` (TFOpLambda and SlicingOpLambda layers); Keras runs it at batch 1 only.
        ("github_unet3plus_cgm", github_unet3plus_cgm, True),
        # UNETR as the tutorial repositories write it: position embeddings computed outside
        # the model (`Embedding(n, d)(tf.range(n))`), a constant tensor in the JSON; the input
        # is the image's patches (tokens, not an image).
        ("github_unetr_2d", github_unetr_2d, True),
    ]


# Keras backend as the attention U-Net repositories import it (`from keras import backend as
# K` at the top of the module): their Lambda's function reads this global when it runs.
K = None


def github_attention_unet(shape=(64, 64, 3), filters=(8, 16, 32, 64)):
    """An attention U-Net written the way the popular Keras repositories write it: conv-BN-ReLU
    blocks, a gating signal (1x1 conv, BN, ReLU) from the coarser level, and an additive
    attention gate (strided theta on the skip, phi on the gate, transposed-conv up-sampling,
    ReLU, a one-channel sigmoid psi, UpSampling2D, repeat_elements over the skip's channels,
    multiply, 1x1 conv, BN)."""
    global K
    import tensorflow as tf
    from tensorflow.keras import backend
    from tensorflow.keras import layers as L

    K = backend

    def conv_block(x, f):
        for _ in range(2):
            x = L.Conv2D(f, (3, 3), padding="same")(x)
            x = L.BatchNormalization()(x)
            x = L.Activation("relu")(x)
        return x

    def gating_signal(x, f):
        x = L.Conv2D(f, (1, 1), padding="same")(x)
        x = L.BatchNormalization()(x)
        return L.Activation("relu")(x)

    def expend_as(tensor, rep):
        return L.Lambda(lambda x, repnum: K.repeat_elements(x, repnum, axis=3),
                        arguments={"repnum": rep})(tensor)

    def attention_block(x, gating, inter):
        shape_x, shape_g = K.int_shape(x), K.int_shape(gating)
        theta_x = L.Conv2D(inter, (2, 2), strides=(2, 2), padding="same")(x)
        shape_theta = K.int_shape(theta_x)
        phi_g = L.Conv2D(inter, (1, 1), padding="same")(gating)
        up_g = L.Conv2DTranspose(inter, (3, 3), padding="same", strides=(
            shape_theta[1] // shape_g[1], shape_theta[2] // shape_g[2]))(phi_g)
        act = L.Activation("relu")(L.add([up_g, theta_x]))
        psi = L.Activation("sigmoid")(L.Conv2D(1, (1, 1), padding="same")(act))
        shape_psi = K.int_shape(psi)
        up_psi = L.UpSampling2D(size=(shape_x[1] // shape_psi[1], shape_x[2] // shape_psi[2]))(psi)
        y = L.multiply([expend_as(up_psi, shape_x[3]), x])
        return L.BatchNormalization()(L.Conv2D(shape_x[3], (1, 1), padding="same")(y))

    inputs = L.Input(shape)
    skips, x = [], inputs
    for f in filters[:-1]:
        x = conv_block(x, f)
        skips.append(x)
        x = L.MaxPooling2D((2, 2))(x)
    x = conv_block(x, filters[-1])
    for f, skip in zip(reversed(filters[:-1]), reversed(skips)):
        gating = gating_signal(x, f)
        att = attention_block(skip, gating, f)
        up = L.UpSampling2D((2, 2))(x)
        x = conv_block(L.concatenate([up, att], axis=3), f)
    outputs = L.Activation("sigmoid")(L.Conv2D(1, (1, 1))(x))
    return tf.keras.Model(inputs, outputs, name="attention_unet")


def github_unet3plus_cgm(shape=(32, 32, 3), filters=(8, 16, 32, 64)):
    """UNet 3+ (Huang et al. 2020) with deep supervision and the classification-guided module,
    written the way the popular Keras tutorial repositories write it: conv-BN-ReLU blocks,
    full-scale skips (max-pooled finer levels, bilinearly up-sampled coarser ones, one 3x3 conv
    each, concatenated), a classifier on the deepest level (Dropout, 1x1 conv to 2 channels,
    GlobalMaxPooling2D, sigmoid) turned into a 0/1 gate by `tf.argmax(cls, axis=-1)`,
    `cls[..., tf.newaxis]` and `tf.cast(cls, dtype=tf.float32)`, and each side output
    multiplied by it (`y * cls`: a (None, 1) tensor times a (None, H, W, 1) one, which
    TensorFlow broadcasts from the last axis, so Keras runs the model at batch 1 only). The
    classifier's bias is set so that class 1 wins and the gate passes the maps."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras import layers as L

    def conv_block(x, f, n=2):
        for _ in range(n):
            x = L.Conv2D(f, 3, padding="same")(x)
            x = L.BatchNormalization()(x)
            x = L.Activation("relu")(x)
        return x

    def resample(x, factor):
        if factor > 1:
            return L.MaxPooling2D(factor)(x)
        if factor < 1:
            return L.UpSampling2D(int(round(1 / factor)), interpolation="bilinear")(x)
        return x

    inputs = L.Input(shape)
    e1 = conv_block(inputs, filters[0])
    e2 = conv_block(L.MaxPooling2D(2)(e1), filters[1])
    e3 = conv_block(L.MaxPooling2D(2)(e2), filters[2])
    e4 = conv_block(L.MaxPooling2D(2)(e3), filters[3])

    cls = L.Dropout(0.5)(e4)
    cls = L.Conv2D(2, 1, padding="same", name="cls_conv")(cls)
    cls = L.GlobalMaxPooling2D()(cls)
    cls = L.Activation("sigmoid")(cls)
    cls = tf.argmax(cls, axis=-1)
    cls = cls[..., tf.newaxis]
    cls = tf.cast(cls, dtype=tf.float32)

    # Each decoder level (scale 1/2^k of the input) from every encoder level and the coarser
    # decoder levels.
    f = filters[0]
    levels = {1: e1, 2: e2, 3: e3, 4: e4}
    for k in (3, 2, 1):
        parts = [conv_block(resample(levels[j], 2 ** (k - j) if j < k else 0.5 ** (j - k)), f, 1)
                 for j in (1, 2, 3, 4)]
        levels[k] = conv_block(L.Concatenate()(parts), 4 * f, 1)

    outputs = []
    for k in (1, 2, 3, 4):
        y = L.Conv2D(1, 3, padding="same")(levels[k])
        y = resample(y, 0.5 ** (k - 1))
        y = y * cls
        outputs.append(L.Activation("sigmoid")(y))
    model = tf.keras.Model(inputs, outputs + [cls], name="unet3plus_cgm")
    kernel, _ = model.get_layer("cls_conv").get_weights()
    model.get_layer("cls_conv").set_weights([kernel, np.array([0.0, 3.0], dtype=np.float32)])
    return model


def github_unetr_2d(image=16, patch=4, channels=3, width=16, heads=2, mlp=32, depth=4):
    """UNETR (Hatamizadeh et al. 2022) the way the Keras tutorial repositories write it: the
    input is the image cut into patches, (tokens, patch * patch * channels); a Dense patch
    embedding plus position embeddings made outside the model, `Embedding(n, width)` applied
    to `tf.range(n)` (an eager tensor: Keras keeps its values in the model's JSON as the `y`
    of a tf.__operators__.add, and trains no embedding); pre-norm transformer blocks
    (LayerNormalization, MultiHeadAttention, Add, a Dense GELU MLP with Dropout, Add); the
    second and last blocks reshaped to the grid of patches and up-sampled by Conv2DTranspose
    with conv-BN-ReLU blocks; the patches reshaped to an image as the finest skip; a 1x1
    sigmoid head. Small: 16x16x3 in 4x4 patches, 4 blocks of width 16."""
    import tensorflow as tf
    from tensorflow.keras import layers as L

    grid = image // patch
    tokens = grid * grid

    def conv(x, f):
        x = L.Conv2D(f, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        return L.ReLU()(x)

    inputs = L.Input((tokens, patch * patch * channels))
    positions = L.Embedding(tokens, width)(tf.range(tokens))
    x = L.Dense(width)(inputs) + positions
    blocks = []
    for _ in range(depth):
        h = L.LayerNormalization()(x)
        h = L.MultiHeadAttention(heads, width // heads)(h, h)
        x = L.Add()([x, h])
        h = L.LayerNormalization()(x)
        h = L.Dense(mlp, activation="gelu")(h)
        h = L.Dropout(0.1)(h)
        h = L.Dense(width)(h)
        x = L.Add()([x, h])
        blocks.append(x)

    x = L.Reshape((grid, grid, width))(blocks[-1])
    x = L.Conv2DTranspose(16, 2, strides=2)(x)
    skip = L.Conv2DTranspose(16, 2, strides=2)(L.Reshape((grid, grid, width))(blocks[1]))
    x = conv(L.Concatenate()([x, conv(skip, 16)]), 16)
    x = L.Conv2DTranspose(8, 2, strides=2)(x)
    skip = conv(L.Reshape((image, image, channels))(inputs), 8)
    x = conv(L.Concatenate()([x, skip]), 8)
    outputs = L.Conv2D(1, 1, activation="sigmoid")(x)
    return tf.keras.Model(inputs, outputs, name="UNETR_2D")


# Models whose Keras output exists at batch 1 only (a TensorFlow function broadcasting a
# (None, 1) tensor from the last axis).
BATCH_ONE = {"github_unet3plus_cgm"}


def kaggle_dsb2018_unet():
    """The Data Science Bowl 2018 starter kernel's U-Net as written there (128x128x3)."""
    import tensorflow as tf
    from tensorflow.keras.layers import (Conv2D, Conv2DTranspose, Dropout, Input, Lambda,
                                         MaxPooling2D, concatenate)

    def block(x, filters, rate):
        c = Conv2D(filters, (3, 3), activation="elu", kernel_initializer="he_normal",
                   padding="same")(x)
        c = Dropout(rate)(c)
        return Conv2D(filters, (3, 3), activation="elu", kernel_initializer="he_normal",
                      padding="same")(c)

    inputs = Input((128, 128, 3))
    s = Lambda(lambda x: x / 255)(inputs)
    c1 = block(s, 16, 0.1)
    c2 = block(MaxPooling2D((2, 2))(c1), 32, 0.1)
    c3 = block(MaxPooling2D((2, 2))(c2), 64, 0.2)
    c4 = block(MaxPooling2D((2, 2))(c3), 128, 0.2)
    c5 = block(MaxPooling2D(pool_size=(2, 2))(c4), 256, 0.3)
    u6 = concatenate([Conv2DTranspose(128, (2, 2), strides=(2, 2), padding="same")(c5), c4])
    c6 = block(u6, 128, 0.2)
    u7 = concatenate([Conv2DTranspose(64, (2, 2), strides=(2, 2), padding="same")(c6), c3])
    c7 = block(u7, 64, 0.2)
    u8 = concatenate([Conv2DTranspose(32, (2, 2), strides=(2, 2), padding="same")(c7), c2])
    c8 = block(u8, 32, 0.1)
    u9 = concatenate([Conv2DTranspose(16, (2, 2), strides=(2, 2), padding="same")(c8), c1],
                     axis=3)
    c9 = block(u9, 16, 0.1)
    outputs = Conv2D(1, (1, 1), activation="sigmoid")(c9)
    return tf.keras.Model(inputs=[inputs], outputs=[outputs])


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


def siamese_unet(shape, f):
    """FC-Siam-conc (Daudt et al., "Fully convolutional siamese networks for change
    detection", 2018), small: one encoder (a Functional model with its two skips and its
    bottleneck as outputs) applied to both images; the decoder concatenates both images'
    skips at each level."""
    import tensorflow as tf
    from tensorflow.keras import layers

    def conv(x, n):
        x = layers.Conv2D(n, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        return layers.Activation("relu")(x)

    i = layers.Input(shape=shape, name="image")
    s1 = conv(i, f)
    s2 = conv(layers.MaxPooling2D()(s1), 2 * f)
    b = conv(layers.MaxPooling2D()(s2), 4 * f)
    encoder = tf.keras.Model(i, [s1, s2, b], name="encoder")
    before = layers.Input(shape=shape, name="before")
    after = layers.Input(shape=shape, name="after")
    a1, a2, ab = encoder(before)
    c1, c2, cb = encoder(after)
    x = layers.Conv2DTranspose(2 * f, 2, strides=2)(layers.Concatenate()([ab, cb]))
    x = conv(layers.Concatenate()([x, a2, c2]), 2 * f)
    x = layers.Conv2DTranspose(f, 2, strides=2)(x)
    x = conv(layers.Concatenate()([x, a1, c1]), f)
    return tf.keras.Model([before, after], layers.Conv2D(1, 1, activation="sigmoid")(x))


def siamese_sequential(shape, f):
    """A Sequential stem (conv, batch norm, ReLU) applied to two images, FC-Siam-diff style:
    the absolute difference of the two feature maps (as `Subtract` and its negation's
    `Maximum`) feeds a one-level U-Net."""
    import tensorflow as tf
    from tensorflow.keras import layers

    stem = tf.keras.Sequential([
        layers.Conv2D(f, 3, padding="same"),
        layers.BatchNormalization(),
        layers.ReLU(),
    ], name="stem")
    before = layers.Input(shape=shape, name="before")
    after = layers.Input(shape=shape, name="after")
    a, b = stem(before), stem(after)
    d = layers.Maximum()([layers.Subtract()([a, b]), layers.Subtract()([b, a])])
    x = layers.Conv2D(2 * f, 3, padding="same", activation="relu")(layers.MaxPooling2D()(d))
    x = layers.Concatenate()([layers.UpSampling2D()(x), d])
    return tf.keras.Model([before, after], layers.Conv2D(1, 1, activation="sigmoid")(x))


def leaf_layers(model):
    """Every layer, nested models' layers included."""
    import tensorflow as tf

    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


# PSPNet's output varies little with its input under formula weights (7e-5 at 100, 8e-4 at
# 1000; the test's tolerance is 1e-5 of the output's largest value, 0.53); so does the
# EfficientNetB0 U-Net's (1.2e-6 at 100, 2.5e-3 at 100000).
FORMULA_INPUT_SCALE = {"sm_pspnet_inceptionv3": 1000, "kuc_unet_2d_efficientnetb0": 100000}

SKIPPED = {}

# Layers inside nested models whose outputs are stored as `tap_<path>`, for
# `run --output-layer MODEL/LAYER` (`LAYER[k]`: in the nested model's call k).
NESTED_TAPS = {
    "tf_tutorial_unet": ["model/block_6_expand_relu", "sequential_1/re_lu_1"],
    "siamese_unet": ["encoder/activation_1", "encoder/activation_1[1]"],
    "siamese_sequential": ["stem/re_lu[1]"],
}


def nested_tap(model, path, xs):
    """Keras's value of the layer at `path` (`nested/layer` or `nested/layer[k]`): the inputs
    of the nested model's call k, computed by the outer model's layers, through a model from
    the nested model's inputs to that layer's output."""
    import numpy as np
    import tensorflow as tf

    scope, layer = path.split("/")
    call = 0
    if layer.endswith("]"):
        layer, k = layer[:-1].split("[")
        call = int(k)
    nested = model.get_layer(scope)
    # The nested model's calls in the outer model (a Functional model's node 0 is its own).
    calls = [n for i, n in enumerate(nested._inbound_nodes)
             if f"{nested.name}_ib-{i}" in model._network_nodes]
    feed = tf.keras.Model(model.inputs, calls[call].input_tensors)
    inner = tf.keras.Model(nested.inputs, nested.get_layer(layer).output)
    return np.asarray(inner(feed(xs)), dtype=np.float32)


def main() -> int:
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import save_file
    from keras_to_safetensors import save_unetc_weights

    sys.path.insert(0, str(HERE.parents[1] / "tests" / "golden"))
    import importlib.util
    spec = importlib.util.spec_from_file_location("golden_generate",
                                                  HERE.parents[1] / "tests/golden/generate.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    seeded_input, set_formula_weights = golden.seeded_input, golden.set_formula_weights

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
        # Moving statistics away from 0 and 1, so BatchNormalization does something (the
        # formula's models get theirs from the formula).
        for layer in leaf_layers(model) if store is True else []:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                gamma, beta, mean, var = layer.get_weights()
                rng = np.random.default_rng(len(layer.name))
                layer.set_weights([gamma, beta, rng.normal(0, 0.2, mean.shape).astype("float32"),
                                   rng.uniform(0.5, 1.5, var.shape).astype("float32")])
            # Swin's relative position bias table starts at zeros: give it values.
            if type(layer).__name__ == "SwinTransformerBlock":
                rng = np.random.default_rng(len(layer.name))
                for v in layer.weights:
                    if v.name.split(":")[0].endswith("_attn_pos"):
                        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
            # PReLU starts as ReLU (alpha 0): give it slopes of its own.
            if isinstance(layer, tf.keras.layers.PReLU):
                (alpha,) = layer.get_weights()
                rng = np.random.default_rng(len(layer.name))
                layer.set_weights([rng.uniform(0.05, 0.4, alpha.shape).astype("float32")])
        buf = io.StringIO()
        with redirect_stdout(buf):
            model.summary()
        (HERE / f"{name}.summary.txt").write_text(buf.getvalue())
        (HERE / f"{name}.json").write_text(model.to_json() + "\n")
        entry = {"params": int(model.count_params()),
                 "layers": sorted({type(l).__name__ for l in model.layers})}
        if store and len(model.inputs) > 1:
            # Several inputs: `input_0`, `input_1`, ... in the model's input order.
            save_unetc_weights(model, HERE / f"{name}.weights.safetensors")
            rng = np.random.default_rng(7)
            xs = [rng.random((2, *(int(d) for d in t.shape[1:])), dtype=np.float32)
                  for t in model.inputs]
            y = np.asarray(model.predict(xs, verbose=0), dtype=np.float32)
            entry["output_spread"] = float(np.abs(y[0] - y[1]).max())
            taps = {f"tap_{p}": nested_tap(model, p, xs) for p in NESTED_TAPS.get(name, [])}
            save_file({**{f"input_{k}": x for k, x in enumerate(xs)}, "output": y, **taps},
                      str(HERE / f"{name}.io.safetensors"))
        elif store:
            shape = tuple(int(d) for d in model.input_shape[1:])
            if store == "formula":
                set_formula_weights(model)
                # Inputs in [0, 100): through dozens of layers of formula weights (which shrink
                # a signal a little at each layer) the output still depends on the input.
                x = FORMULA_INPUT_SCALE.get(name, 100) * seeded_input(name, shape, 2)
            else:
                save_unetc_weights(model, HERE / f"{name}.weights.safetensors")
                batch = 1 if name in BATCH_ONE else 2
                x = np.random.default_rng(7).random((batch, *shape), dtype=np.float32)
            y = model.predict(x, verbose=0)
            others = {}
            if isinstance(y, list):  # deep supervision: the first output is `output`
                entry["outputs"] = len(y)
                # The others as `output_<layer name>`, for `run --output-layer NAME`.
                names = [t.node.layer.name for t in model.outputs]
                if len(set(names)) == len(names):
                    entry["output_layers"] = names
                    others = {f"output_{n}": np.asarray(v, dtype=np.float32)
                              for n, v in zip(names[1:], y[1:])}
                y = y[0]
            y = np.asarray(y, dtype=np.float32)
            if len(y) > 1:
                entry["output_spread"] = float(np.abs(y[0] - y[1]).max())
            others.update({f"tap_{p}": nested_tap(model, p, x) for p in NESTED_TAPS.get(name, [])})
            save_file({"input": x, "output": y, **others}, str(HERE / f"{name}.io.safetensors"))
        if name in NESTED_TAPS:
            entry["nested_taps"] = NESTED_TAPS[name]
        manifest[name] = entry
        print(name, entry["params"], entry["layers"], flush=True)
    import keras_unet
    import keras_unet_collection
    versions = {"tensorflow": tf.__version__, "tf_keras": __import__("tf_keras").__version__,
                "keras_unet": getattr(keras_unet, "__version__", "0.1.2"),
                "keras_unet_collection": "0.1.13", "segmentation_models": "1.0.1",
                "efficientnet": "1.0.0", "image_classifiers": "1.0.0"}
    manifest = {k: manifest[k] for k in [m[0] for m in models()] if k in manifest}
    (HERE / "manifest.json").write_text(json.dumps(
        {"versions": versions, "models": manifest, "skipped": SKIPPED}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
