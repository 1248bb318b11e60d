#!/usr/bin/env python3
"""Which Keras layers and TensorFlow calls `unetc import` takes: one tiny tf.keras model per case
(a 32x32x4 input, one layer or call), its `to_json()` imported by unetc; prints `ok` or the first
line of unetc's refusal. A survey of the reach left, not a test (real outputs are checked by the
golden fixtures and tests/real_models).

    TF_USE_LEGACY_KERAS=1 python3 tools/keras_layer_probe.py target/release/unetc [CASE...]

Needs tensorflow-cpu 2.21 and tf-keras 2.21 (pip). Writes its JSON and specs in a temporary
folder.
"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

L = keras.layers

CASES = {
    "resizing": lambda i: L.Resizing(48,48)(i),
    "resizing_nearest": lambda i: L.Resizing(16,16,interpolation="nearest")(i),
    "centercrop": lambda i: L.CenterCrop(16,16)(i),
    "randomflip": lambda i: L.RandomFlip()(i),
    "randomrotation": lambda i: L.RandomRotation(0.1)(i),
    "gaussnoise": lambda i: L.GaussianNoise(0.1)(i),
    "gaussdrop": lambda i: L.GaussianDropout(0.1)(i),
    "alphadrop": lambda i: L.AlphaDropout(0.1)(i),
    "spatialdrop": lambda i: L.SpatialDropout2D(0.1)(i),
    "actreg": lambda i: L.ActivityRegularization(0.01)(i),
    "subtract": lambda i: L.Subtract()([i,i]),
    "multiply": lambda i: L.Multiply()([i,i]),
    "average": lambda i: L.Average()([i,i]),
    "maximum": lambda i: L.Maximum()([i,i]),
    "minimum": lambda i: L.Minimum()([i,i]),
    "gmp": lambda i: L.GlobalMaxPooling2D(keepdims=True)(i),
    "gap": lambda i: L.GlobalAveragePooling2D(keepdims=True)(i),
    "gap_flat": lambda i: L.Reshape((1,1,4))(L.GlobalAveragePooling2D()(i)),
    "thresh": lambda i: L.ThresholdedReLU(0.5)(i),
    "avgpool": lambda i: L.AveragePooling2D()(i),
    "unitnorm": lambda i: L.UnitNormalization()(i),
    "identity": lambda i: L.Identity()(i),
    "convlstm": lambda i: L.ConvLSTM2D(4,3,padding="same")(L.Reshape((1,32,32,4))(i)),
    "depth_to_space": lambda i: tf.nn.depth_to_space(i,2),
    "space_to_depth": lambda i: tf.nn.space_to_depth(i,2),
    "tf_split": lambda i: L.Concatenate()(tf.split(i,2,axis=-1)[::-1]),
    "tf_image_resize": lambda i: tf.image.resize(i,(48,48)),
    "tf_image_resize_nn": lambda i: tf.image.resize(i,(64,64),method="nearest"),
    "reduce_mean": lambda i: tf.reduce_mean(i,axis=-1,keepdims=True),
    "reduce_max": lambda i: tf.reduce_max(i,axis=-1,keepdims=True),
    "tf_concat": lambda i: tf.concat([i,i],axis=-1),
    "tf_transpose": lambda i: tf.transpose(i,[0,2,1,3]),
    "conv_dil": lambda i: L.Conv2D(4,3,dilation_rate=2,padding="same")(i),
    "dw_mult": lambda i: L.DepthwiseConv2D(3,depth_multiplier=2,padding="same")(i),
    "sep_dil": lambda i: L.SeparableConv2D(8,3,dilation_rate=2,padding="same")(i),
    "convT_outpad": lambda i: L.Conv2DTranspose(4,3,strides=2,padding="same",output_padding=1)(i),
    "up_bilinear": lambda i: L.UpSampling2D(interpolation="bilinear")(i),
    "softmax_axis": lambda i: L.Softmax(axis=-1)(i),
    "attention": lambda i: L.Reshape((32,32,4))(L.Attention()([L.Reshape((1024,4))(i),L.Reshape((1024,4))(i)])),
    "additive_att": lambda i: L.Reshape((32,32,4))(L.AdditiveAttention()([L.Reshape((1024,4))(i),L.Reshape((1024,4))(i)])),
    "sigmoid_op": lambda i: tf.sigmoid(i),
    "tf_clip": lambda i: tf.clip_by_value(i,0.,1.),
    "tf_sqrt": lambda i: tf.sqrt(tf.abs(i)),
    "tf_square": lambda i: tf.square(i),
    "tf_expand": lambda i: tf.squeeze(tf.expand_dims(i,1),1),
    "tf_tile": lambda i: tf.tile(i,[1,1,1,2]),
    "tf_reshape": lambda i: tf.reshape(i,[-1,32,32,4]),
    "tf_matmul": lambda i: tf.reshape(tf.matmul(tf.reshape(i,[-1,1024,4]),tf.reshape(i,[-1,1024,4]),transpose_b=True)[:,:, :4],[-1,32,32,4]),
    "max_pool_same_odd": lambda i: L.MaxPooling2D(3,strides=2,padding="same")(i),
    "dense_4d": lambda i: L.Dense(3)(i),
    "repeat_elements": lambda i: keras.backend.repeat_elements(i,2,axis=-1),
    "conv1x1_bias_false": lambda i: L.Conv2D(4,1,use_bias=False)(i),
    "layer_norm_axes": lambda i: L.LayerNormalization(axis=[1,2,3])(i),
    "bn_renorm": lambda i: L.BatchNormalization(renorm=False, center=False, scale=False)(i),
    "activation_hard_sigmoid": lambda i: L.Activation("hard_sigmoid")(i),
    "activation_selu": lambda i: L.Activation("selu")(i),
    "activation_softplus": lambda i: L.Activation("softplus")(i),
    "activation_exp": lambda i: L.Activation("exponential")(i),
    "relu6": lambda i: L.ReLU(6.0)(i),
    "tf_nn_relu6": lambda i: tf.nn.relu6(i),
    "tf_nn_leaky": lambda i: tf.nn.leaky_relu(i,0.1),
    "aa_down": lambda i: tf.image.resize(i,(20,20),antialias=True),
    "aa_up": lambda i: tf.image.resize(i,(48,48),antialias=True),
    "par": lambda i: tf.image.resize(i,(48,40),preserve_aspect_ratio=True),
    "bicubic": lambda i: tf.image.resize(i,(48,48),method="bicubic"),
    "resizing_bicubic": lambda i: L.Resizing(48,48,interpolation="bicubic")(i),
    "resizing_crop": lambda i: L.Resizing(48,24,crop_to_aspect_ratio=True)(i),
    "resize_v1": lambda i: tf.compat.v1.image.resize(i,(48,48)),
    "resize_nn_v1": lambda i: tf.compat.v1.image.resize_nearest_neighbor(i,(48,48)),
}


def main(unetc: str, only: list) -> None:
    out = tempfile.mkdtemp(prefix="unetc-probe-")
    for name, build in CASES.items():
        if only and name not in only:
            continue
        try:
            keras.backend.clear_session()
            i = keras.Input((32, 32, 4))
            model = keras.Model(i, build(i))
        except Exception as e:  # a form Keras itself does not build
            print(f"{name}: Keras fails: {type(e).__name__}: {str(e)[:80]}")
            continue
        path = os.path.join(out, name + ".json")
        with open(path, "w") as f:
            f.write(model.to_json())
        r = subprocess.run([unetc, "--color", "never", "import", path, "-o",
                            os.path.join(out, name + ".unet")], capture_output=True, text=True)
        first = (r.stderr.strip().splitlines() or ["(no message)"])[0]
        print(f"{name}: {'ok' if r.returncode == 0 else 'refused: ' + first[:200]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/release/unetc", sys.argv[2:])
