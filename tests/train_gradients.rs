//! Finite-difference gradient checks of training's backward pass, for every layer kind: the
//! analytic gradient of a mean-squared-error loss with respect to sampled weights and inputs
//! against central differences of the loss (each evaluation a fresh trainer with the same seed,
//! so that dropout masks and noise are the same draws). Specs below use every kind `Op` has;
//! the test fails naming a kind that none uses.

use std::collections::BTreeSet;
use std::path::Path;
use unetc::exec::Tensor;
use unetc::io::Weights;
use unetc::ir::ops::KIND_CLASSES;
use unetc::train::loss::Loss;
use unetc::train::memory::MemoryPlan;
use unetc::train::optimizer::{Optimizer, OptimizerArgs};
use unetc::train::{BatchTargets, TrainConfig, Trainer};

/// (what it checks, DSL model body after `input 6x6x4`).
const SPECS: &[(&str, &str)] = &[
    ("conv strides same tanh", "conv2d(3, 3, strides: 2, padding: same, activation: tanh)"),
    ("conv dilation groups", "conv2d(4, 3, dilation_rate: 2, groups: 2, padding: same, activation: gelu)"),
    ("conv valid softmax head", "conv2d(3, 3) -> conv2d(3, 1, activation: softmax)"),
    ("transposed same", "conv2d_transpose(3, 3, strides: 2, padding: same, activation: sigmoid)"),
    ("transposed valid", "conv2d_transpose(2, 2, strides: 2, activation: elu)"),
    ("max pool", "conv2d(3, 1) -> max_pooling2d(3, strides: 2, padding: same)"),
    ("average pool", "average_pooling2d(3, strides: 2, padding: same) -> conv2d(2, 1)"),
    ("nearest up", "up_sampling2d((2, 3)) -> conv2d(2, 3)"),
    ("bilinear up", "up_sampling2d(2, interpolation: bilinear) -> conv2d(2, 3)"),
    ("crop and pad", "cropping2d(((1, 0), (2, 1))) -> zero_padding2d(((0, 2), (1, 0))) -> conv2d(2, 3)"),
    ("concatenate", "x = conv2d(3, 1)\n  [x, input_1] -> concatenate() -> conv2d(2, 1, activation: swish)"),
    ("add subtract", "x = conv2d(4, 1)\n  y = input_1 -> conv2d(4, 3, padding: same)\n  [[x, y] -> add(), [x, y] -> subtract()] -> concatenate()"),
    ("multiply gate", "x = conv2d(4, 1)\n  g = x -> conv2d(1, 1, activation: sigmoid)\n  [[x, g] -> multiply(), [x, input_1, x] -> multiply()] -> concatenate()"),
    ("average max min", "x = conv2d(4, 1)\n  y = input_1 -> conv2d(4, 1)\n  [[x, y, input_1] -> average(), [x, y] -> maximum(), [x, y, input_1] -> minimum()] -> concatenate()"),
    ("activations", "conv2d(4, 1) -> activation(selu) -> activation(softplus) -> activation(softsign) -> activation(mish)"),
    // Keras's ReLU jumps at a non-zero threshold (from ~0 to the threshold): no derivative there
    // for differences to check, so the threshold is 0 here.
    ("relu layer", "conv2d(4, 1) -> re_lu(max_value: 0.8, negative_slope: 0.1)"),
    ("softmax axes", "conv2d(3, 1) -> softmax() -> conv2d(3, 1) -> softmax(axis: 1)"),
    ("dropouts", "conv2d(4, 1) -> dropout(0.4) -> spatial_dropout2d(0.5) -> gaussian_dropout(0.3) -> gaussian_noise(0.2)"),
    ("flatten dense", "conv2d(2, 3, strides: 2) -> flatten() -> dense(5, activation: tanh)"),
    ("dense on pixels", "dense(3, activation: relu) -> dense(2)"),
    ("global pools", "x = conv2d(3, 1)\n  [x -> global_average_pooling2d(), x -> global_max_pooling2d()] -> concatenate()"),
    ("batch norm", "conv2d(4, 3) -> batch_normalization() -> activation(relu) -> conv2d(2, 1)"),
    ("frozen batch norm", "conv2d(4, 3) -> batch_normalization(trainable: false) -> conv2d(2, 1)"),
    ("leaky elu prelu", "conv2d(4, 1) -> leaky_re_lu() -> conv2d(4, 1) -> elu(alpha: 0.5) -> conv2d(4, 1) -> p_re_lu(shared_axes: [1, 2], alpha_initializer: ones) -> p_re_lu()"),
    ("group and layer norm", "conv2d(4, 3) -> group_normalization(groups: 2) -> conv2d(4, 1) -> layer_normalization()"),
    ("depthwise separable", "depthwise_conv2d(3, depth_multiplier: 2, padding: same, activation: tanh) -> separable_conv2d(3, 3, depth_multiplier: 2)"),
    ("reshape permute", "conv2d(4, 3, strides: 2, padding: same) -> reshape((9, 4)) -> permute((2, 1)) -> dense(3) -> reshape((2, 2, 3)) -> permute((2, 1, 3))"),
    ("3d conv pool", "input 4x4x4x2\n  conv3d(3, 3, padding: same, activation: tanh) -> max_pooling3d(2) -> conv3d(2, 3, padding: same)"),
    ("3d transpose up crop pad", "input 4x4x4x2\n  conv3d_transpose(2, 2, strides: 2) -> cropping3d(((2, 2), (1, 3), (2, 2))) -> up_sampling3d(2) -> zero_padding3d(1) -> average_pooling3d(2) -> conv3d(2, 1)"),
    ("3d global pool bn", "input 4x4x4x2\n  conv3d(3, 3, padding: same) -> batch_normalization() -> activation(relu) -> global_average_pooling3d()"),
    ("shared layer", "x = conv2d(4, 3, padding: same, name: \"c\")\n  y = x -> shared(c)\n  [x, y] -> concatenate()"),
    ("tf ops", "x = conv2d(4, 1)\n  y = input_1 -> conv2d(4, 1)\n  [[x, y] -> tf_op(\"__operators__.add\"), [x, y] -> tf_op(\"math.multiply\"), [x, y] -> tf_op(\"math.maximum\"), x -> tf_op(\"math.sigmoid\"), [x, y] -> tf_op(concat, axis: -1)] -> concatenate()"),
    ("tf reductions", "x = conv2d(4, 1)\n  [x -> tf_op(\"math.reduce_mean\", axis: -1, keepdims: true), x -> tf_op(\"math.reduce_max\", axis: 3, keepdims: true)] -> tf_op(concat, axis: -1) -> conv2d(2, 3, padding: same)"),
    ("tf ops with constants", "x = conv2d(4, 1)\n  y = input_1 -> conv2d(4, 1, activation: sigmoid)\n  [x -> tf_op(\"__operators__.add\", y: 1.0), y -> tf_op(\"math.subtract\", x: 1.0), x -> tf_op(\"math.subtract\", y: 0.5), x -> tf_op(\"math.multiply\", x: -1.5), x -> tf_op(\"math.truediv\", y: 4.0), y -> tf_op(\"math.truediv\", x: 2.0), [x, y] -> tf_op(\"math.truediv\")] -> concatenate()"),
    // Appended: each spec's weights and inputs are seeded by its position.
    ("fixed dropout", "conv2d(4, 1) -> fixed_dropout(0.4, noise_shape: (none, 1, 1, 1)) -> fixed_dropout(0.3, noise_shape: (none, 6, 1, 4)) -> fixed_dropout(0.2)"),
    ("rescaling", "rescaling(0.5, offset: -1) -> conv2d(4, 1) -> rescaling(-2.5, offset: 0.75) -> conv2d(2, 1)"),
    ("bilinear up, aligned corners", "up_sampling2d((2, 3), interpolation: bilinear, align_corners: true) -> conv2d(2, 3)"),
    ("reflect and replicate padding", "conv2d(3, 1) -> zero_padding2d(((1, 2), (2, 0)), mode: reflect) -> zero_padding2d(((0, 2), (1, 1)), mode: replicate) -> conv2d(2, 3)"),
    ("normalization", "normalization(axis: 3) -> conv2d(4, 1) -> normalization() -> conv2d(2, 1)"),
    ("keras-unet-collection gelu", "conv2d(4, 3, padding: same) -> gelu() -> conv2d(4, 1) -> rescaling(3.0) -> gelu()"),
    ("tf resize and reshapes", "x = conv2d(3, 1)\n  h = input_1 -> conv2d(1, 3, padding: same)\n  [x -> tf_op(\"image.resize\", size: (12, 6), method: bilinear) -> flatten(), x -> tf_op(\"image.resize\", size: (6, 12), method: nearest) -> flatten(), h -> tf_op(\"compat.v1.squeeze\", axis: -1) -> tf_op(expand_dims, axis: 1) -> tf_op(reshape, shape: (-1, 6, 6, 1)) -> flatten()] -> concatenate()"),
    ("nested model called twice", "block enc() as functional {\n    input(shape: 6x6x4)\n    conv2d(3, 3, padding: same) -> batch_normalization() -> activation(tanh)\n  }\n  x = input_1 -> enc(name: \"e\")\n  y = input_1 -> conv2d(4, 1) -> shared(e)\n  [x, y] -> concatenate()"),
    ("inception-resnet residual", "x = conv2d(3, 3, padding: same)\n  up = input_1 -> conv2d(3, 1)\n  [x, up] -> custom_scale_layer(0.17) -> activation(relu) -> conv2d(2, 1)"),
    ("inception-resnet residual lambda", "x = conv2d(3, 3, padding: same)\n  up = input_1 -> conv2d(3, 1)\n  [[x, up] -> lambda(\"x[0] + x[1] * 0.17\"), [x, up] -> lambda(\"x[1] * -2.0 + x[0]\")] -> concatenate() -> conv2d(2, 1)"),
    ("arithmetic lambdas", "x = conv2d(3, 1)\n  [x -> lambda(\"(x - 0.5) * 2.0\"), x -> lambda(\"2 / (x + 3)\"), x -> lambda(\"-x\") -> lambda(\"1 - x / 4.0\")] -> concatenate() -> conv2d(2, 3, padding: same)"),
    ("repeat_elements lambdas", "x = conv2d(2, 1)\n  g = input_1 -> conv2d(1, 1, activation: sigmoid) -> lambda(\"K.repeat_elements(x, 2, axis=3)\")\n  [[g, x] -> multiply(), x -> lambda(\"K.repeat_elements(x, 3, axis=-1)\")] -> concatenate() -> conv2d(2, 3, padding: same)"),
    ("classification_models lambdas", "x = conv2d(6, 1)\n  g = [x -> lambda(slice_tensor, start: 0, stop: 3, axis: 3) -> conv2d(2, 3, padding: same), x -> lambda(slice_tensor, start: 3, stop: 6, axis: 3) -> conv2d(2, 3, padding: same)] -> concatenate()\n  e = x -> global_average_pooling2d() -> lambda(expand_dims, channels_axis: 3) -> conv2d(6, 1, activation: sigmoid)\n  [[x, e] -> multiply(), g, x -> lambda(slice_tensor, start: 2, stop: 5, axis: 3)] -> concatenate()"),
    ("regularizers", "conv2d(3, 3, padding: same, kernel_regularizer: {l1: 0.01, l2: 0.1}, bias_regularizer: {l2: 0.5}) -> batch_normalization(gamma_regularizer: l2, beta_regularizer: {l1: 0.02}) -> depthwise_conv2d(3, depthwise_regularizer: {l2: 0.3}, activity_regularizer: {l1: 0.05, l2: 0.2}) -> conv2d(2, 1, kernel_regularizer: l1)"),
    ("keras-unet-collection snake", "conv2d(4, 3, padding: same) -> snake(0.7, trainable: true) -> conv2d(4, 1) -> snake() -> rescaling(3.0) -> snake(-1.5, trainable: true)"),
    ("3d trilinear up and edge padding", "input 2x3x2x2\n  conv3d(3, 1) -> up_sampling3d((2, 1, 2), interpolation: trilinear) -> zero_padding3d(((1, 2), (2, 0), (1, 1)), mode: reflect) -> up_sampling3d(2, interpolation: trilinear, align_corners: true) -> zero_padding3d(((0, 2), (1, 1), (2, 0)), mode: replicate) -> conv3d(2, 1)"),
    // The up-sampling and the concatenation are freed in the forward pass and rebuilt from
    // their kept inputs for the convolutions' backward (`unetc plan --train`); the softmax keeps
    // conv2d_1's output for its own backward (a ReLU there puts a kink within the differences'
    // step: the bias check fails with or without rebuilding).
    ("rebuilt copies", "x = conv2d(3, 3, padding: same, activation: relu)\n  y = x -> up_sampling2d(2) -> conv2d(3, 2, strides: 2, padding: same, activation: softmax)\n  [x, y] -> concatenate() -> conv2d(2, 3)"),
    ("resize lambdas", "x = conv2d(2, 1)\n  small = x -> max_pooling2d(2)\n  [small -> lambda(\"image.resize(x, (6, 6), method='bilinear', align_corners=True)\"), x -> average_pooling2d((6, 6)) -> lambda(\"image.resize(x, (6, 6), method='bilinear', align_corners=True)\"), small -> lambda(\"image.resize(x, (6, 6), method='nearest')\")] -> concatenate() -> conv2d(2, 3, padding: same)"),
    ("tf subscripts, argmax and cast", "x = conv2d(4, 1)\n  cls = x -> global_max_pooling2d() -> tf_op(\"math.argmax\", axis: -1) -> tf_op(\"__operators__.getitem\", index: \"[..., None]\") -> tf_op(cast, dtype: \"float32\") -> tf_op(\"__operators__.getitem\", index: \"[:, None, None, :]\")\n  [[x, cls] -> tf_op(\"math.multiply\"), x -> tf_op(\"__operators__.getitem\", index: \"[..., 1:3]\"), x -> tf_op(\"__operators__.getitem\", index: \"[:, :, :, 2]\") -> tf_op(\"__operators__.getitem\", index: \"[..., None]\")] -> concatenate() -> conv2d(2, 3, padding: same)"),
    ("tf activations and image reductions", "x = conv2d(4, 1)\n  s = x -> tf_op(\"math.reduce_mean\", axis: (1, 2), keepdims: true) -> conv2d(4, 1, activation: sigmoid)\n  [[x, s] -> tf_op(\"math.multiply\") -> tf_op(\"nn.silu\"), x -> tf_op(\"nn.softmax\"), x -> tf_op(\"math.tanh\"), x -> tf_op(\"math.reduce_max\", axis: (1, 2), keepdims: true) -> up_sampling2d((6, 6))] -> concatenate() -> conv2d(2, 3, padding: same)"),
    ("tf subscript crops", "x = conv2d(4, 3, padding: same)\n  [x -> tf_op(\"__operators__.getitem\", index: \"[:, 1:-1, 2:, 1:4]\"), x -> tf_op(\"__operators__.getitem\", index: \"[:, 2:, :-2, 0]\") -> tf_op(\"__operators__.getitem\", index: \"[..., None]\")] -> concatenate() -> conv2d(2, 3)"),
    ("attention and patches", "x = conv2d(4, 1)\n  t = x -> patch_extract((2, 2)) -> patch_embedding(9, 6)\n  a = [t, t] -> multi_head_attention(num_heads: 2, key_dim: 3)\n  k = t -> dense(5)\n  b = [a, t, k] -> multi_head_attention(num_heads: 1, key_dim: 2, value_dim: 3, output_shape: 4, use_bias: false)\n  c = [x, x] -> multi_head_attention(num_heads: 1, key_dim: 2)\n  [a -> flatten(), b -> flatten(), c -> flatten()] -> concatenate()"),
    ("swin blocks and patches", "input 8x8x3\n  t = conv2d(4, 1) -> patch_extract((2, 2)) -> patch_embedding(16, 6)\n  t = t -> swin_transformer_block(dim: 6, num_patch: (4, 4), num_heads: 2, window_size: 2, shift_size: 0, num_mlp: 5)\n  t = t -> swin_transformer_block(dim: 6, num_patch: (4, 4), num_heads: 3, window_size: 2, shift_size: 1, num_mlp: 4, qkv_bias: false, qk_scale: 0.5)\n  m = t -> patch_merging((4, 4), embed_dim: 4)\n  e = m -> patch_expanding(num_patch: (2, 2), embed_dim: 8, upsample_rate: 2)\n  i = t -> patch_expanding(num_patch: (4, 4), embed_dim: 4, upsample_rate: 2, return_vector: false)\n  [e -> flatten(), i -> flatten()] -> concatenate()"),
    ("attention dropout", "t = conv2d(4, 1) -> reshape((36, 4))\n  q = t -> dense(3)\n  [q, t] -> multi_head_attention(num_heads: 2, key_dim: 3, dropout: 0.3)"),
    ("tf ops with constant tensors", "x = conv2d(4, 1)\n  g = x -> conv2d(1, 1, activation: sigmoid)\n  [x -> tf_op(\"__operators__.add\", y: [0.5, -1.0, 1.5, 2.0]), x -> tf_op(\"math.subtract\", x: [[0.1], [0.2], [0.3], [0.4], [0.5], [0.6]]), x -> tf_op(\"math.multiply\", y: [1.0, -2.0, 0.5, 3.0]), x -> tf_op(\"math.truediv\", y: [2.0, 4.0, -1.0, 0.5]), g -> tf_op(\"math.truediv\", x: [1.0, 2.0, 3.0, 4.0]), x -> tf_op(\"math.maximum\", y: [0.1, -0.2, 0.3, 0.0]), x -> tf_op(\"math.minimum\", x: [[[0.1, -0.2, 0.3, 0.0]]])] -> concatenate()"),
    ("tf maximum and minimum with numbers", "x = conv2d(4, 1)\n  [x -> tf_op(\"math.maximum\", y: 0.1), x -> tf_op(\"math.minimum\", x: -0.2), x -> tf_op(\"math.maximum\", x: 0.0) -> tf_op(\"math.minimum\", y: 0.3)] -> concatenate()"),
    ("picked rows, columns and pixels", "x = conv2d(4, 1)\n  [x -> tf_op(\"__operators__.getitem\", index: \"[:, 0]\") -> flatten(), x -> tf_op(\"__operators__.getitem\", index: \"[:, :, -1]\") -> flatten(), x -> tf_op(\"__operators__.getitem\", index: \"[:, 1:3, 2, 1:3]\") -> flatten()] -> concatenate()"),
    ("stepped and reversed subscripts, bias_add", "x = conv2d(4, 1)\n  [x -> tf_op(\"__operators__.getitem\", index: \"[:, ::2, 1::2]\") -> flatten(), x -> tf_op(\"__operators__.getitem\", index: \"[:, ::-1, :, ::-2]\") -> flatten(), x -> tf_op(\"__operators__.getitem\", index: \"[..., ::-1]\") -> tf_op(\"nn.bias_add\", y: [0.5, -1.0, 1.5, 2.0]) -> flatten()] -> concatenate()"),
    ("tf.pad, reflect and constant", "x = conv2d(4, 1)\n  [x -> tf_op(\"compat.v1.pad\", paddings: ((0, 0), (2, 1), (1, 2), (0, 0)), mode: \"REFLECT\") -> conv2d(2, 3) -> flatten(), x -> tf_op(\"compat.v1.pad\", paddings: ((0, 0), (1, 0), (0, 1), (0, 0))) -> flatten(), x -> tf_op(\"compat.v1.pad\", paddings: ((0, 0), (2, 0), (1, 2), (0, 0)), mode: \"SYMMETRIC\") -> conv2d(1, 3) -> flatten()] -> concatenate()"),
    ("resizing and tf.image.resize by ratios", "x = conv2d(3, 1)\n  [x -> resizing(9, 4) -> conv2d(2, 3) -> flatten(), x -> resizing(4, 10, interpolation: nearest) -> flatten(), x -> tf_op(\"image.resize\", size: (5, 7)) -> flatten(), x -> tf_op(\"image.resize\", size: (11, 3), method: nearest) -> flatten()] -> concatenate()"),
];

struct Case {
    c: unetc::Compiled,
    weights: Weights,
    x: Tensor,
    targets: Tensor,
}

fn config() -> TrainConfig {
    let (optimizer, weight_decay) = Optimizer::new("sgd", &OptimizerArgs::default()).unwrap();
    TrainConfig {
        optimizer,
        learning_rate: 0.01,
        weight_decay,
        loss: Loss::MeanSquaredError,
        from_logits: false,
        seed: 7,
    }
}

fn loss_of(case: &Case, weights: &Weights, x: &Tensor) -> f64 {
    let mut t = Trainer::new(&case.c, weights, config()).unwrap();
    t.gradients(x, &BatchTargets::Dense(case.targets.clone()))
        .unwrap()
        .0
}

fn pseudo_random(seed: u64, n: usize) -> Vec<f32> {
    // A small LCG: values in [-1, 1), reproducible without a crate.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn every_kind_has_a_gradient_check() {
    let mut used = BTreeSet::new();
    for (what, body) in SPECS {
        let c = compile(what, body);
        for n in &c.graph.nodes {
            used.insert(n.op.class_name());
        }
    }
    let missing: Vec<&str> = KIND_CLASSES
        .iter()
        .map(|&(_, class)| class)
        .filter(|class| !used.contains(class))
        .collect();
    assert!(
        missing.is_empty(),
        "kinds without a gradient check: {missing:?}"
    );
}

fn compile(what: &str, body: &str) -> unetc::Compiled {
    let text = if body.starts_with("input") {
        format!("model {{\n  {body}\n}}\n")
    } else {
        format!("model {{\n  input 6x6x4\n  {body}\n}}\n")
    };
    let c = unetc::compile_source(
        Path::new("grad.unet"),
        text,
        &unetc::Options::default(),
        &mut unetc::expand::Session::new(),
    );
    assert!(!c.has_errors(), "{what}: {:?}", c.diags);
    c
}

#[test]
fn gradients_match_finite_differences() {
    let mut failures = Vec::new();
    for (k, (what, body)) in SPECS.iter().enumerate() {
        let c = compile(what, body);
        let mut weights = unetc::runner::init_weights(&c, 11 + k as u64).unwrap();
        // Moving statistics away from 0 and 1, so that a frozen BatchNormalization is tested
        // with statistics of its own.
        let names: Vec<String> = weights.names().map(str::to_string).collect();
        for name in &names {
            if name.ends_with("moving_variance")
                || name.ends_with("moving_mean")
                || name.ends_with("/variance")
                || name.ends_with("/mean")
                || name.ends_with("gamma")
            {
                let t = weights.get(name).unwrap().clone();
                let data = pseudo_random(k as u64 + 99, t.data.len())
                    .iter()
                    .map(|v| {
                        if name.ends_with("mean") {
                            *v * 0.3
                        } else {
                            1.0 + 0.4 * v
                        }
                    })
                    .collect();
                weights.insert(
                    name.clone(),
                    Tensor {
                        shape: t.shape,
                        data,
                    },
                );
            }
        }
        let mut in_shape: Vec<usize> = vec![2];
        in_shape.extend(
            c.info.layers[c.graph.inputs[0].index()]
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|&d| d as usize),
        );
        let n_in: usize = in_shape.iter().product();
        let x = Tensor::from_vec(&in_shape, pseudo_random(k as u64, n_in)).unwrap();
        let out = c.graph.outputs[0];
        let mut out_shape = vec![2usize];
        out_shape.extend(
            c.info.layers[out.index()]
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|&d| d as usize),
        );
        let n_out: usize = out_shape.iter().product();
        let targets = Tensor::from_vec(&out_shape, pseudo_random(k as u64 + 1000, n_out)).unwrap();
        let case = Case {
            c,
            weights,
            x,
            targets,
        };

        let mut trainer = Trainer::new(&case.c, &case.weights, config()).unwrap();
        let (_, grads) = trainer
            .gradients(&case.x, &BatchTargets::Dense(case.targets.clone()))
            .unwrap();
        // The memory plan (`unetc plan --train`) predicts what the step held: which values were
        // kept, freed, rebuilt, and what each layer saved.
        let plan = MemoryPlan::new(&case.c, 2, config().optimizer.slots()).unwrap();
        if plan.peak_elements != trainer.peak_held_elements() {
            failures.push(format!(
                "{what}: the memory plan's peak is {} values, the step held {}",
                plan.peak_elements,
                trainer.peak_held_elements()
            ));
        }
        let h = 2e-3f32;
        let mut check = |label: String, analytic: &[f32], perturb: &dyn Fn(usize, f32) -> f64| {
            let scale = analytic.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            let len = analytic.len();
            for &i in &[0, len / 3, len / 2, 2 * len / 3, len - 1] {
                let numeric = (perturb(i, h) - perturb(i, -h)) / (2.0 * h as f64);
                let a = analytic[i] as f64;
                // 5e-5: the f32 loss's rounding (~1e-7) over the step 2h.
                if (numeric - a).abs() > 0.02 * a.abs() + 0.01 * scale + 5e-5 {
                    failures.push(format!(
                        "{what}: {label}[{i}]: analytic {a:e}, numeric {numeric:e}"
                    ));
                }
            }
        };
        // Every trainable weight.
        for node in case.c.graph.nodes.iter().filter(|n| n.shares.is_none()) {
            for spec in &case.c.info.layers[case
                .c
                .graph
                .nodes
                .iter()
                .position(|n| n.name == node.name)
                .unwrap()]
            .weights
            {
                let Some(g) = trainer.weight_gradient(&grads, &node.name, spec.name) else {
                    assert!(
                        !(node.trainable && spec.trainable),
                        "{what}: no gradient for trainable {}/{}",
                        node.name,
                        spec.name
                    );
                    continue;
                };
                let key = format!("{}/{}", node.name, spec.name);
                check(key.clone(), g, &|i, d| {
                    let mut w = case.weights.clone();
                    let mut t = w.get(&key).unwrap().clone();
                    t.data[i] += d;
                    w.insert(key.clone(), t);
                    loss_of(&case, &w, &case.x)
                });
            }
        }
        // The input.
        let dx = grads.input.clone().expect("the input gets a gradient");
        check("input".into(), &dx, &|i, d| {
            let mut x = case.x.clone();
            x.data[i] += d;
            loss_of(&case, &case.weights, &x)
        });
    }
    assert!(
        failures.is_empty(),
        "gradient mismatches:\n{}",
        failures.join("\n")
    );
}
