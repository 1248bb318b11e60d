//! The CPU executor against naive loops written from Keras's documented semantics
//! (../shared/truth/README.md): convolutions with `same`/`valid` padding, strides, dilation,
//! even kernels, transposed convolutions. Real tf.keras numbers are in tests/golden.

use std::collections::HashMap;
use std::path::Path;
use unetc::exec::cpu::CpuModel;
use unetc::exec::Tensor;
use unetc::expand::Session;
use unetc::{compile_source, Options};

fn values(n: usize, seed: u32) -> Vec<f32> {
    // Deterministic values in [-1, 1).
    (0..n as u32)
        .map(|i| {
            ((i.wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503)))
                >> 8) as f32
                / (1u32 << 23) as f32
                - 1.0
        })
        .collect()
}

fn run_one(spec: &str, weights: HashMap<String, Tensor>, input: Tensor) -> Tensor {
    let c = compile_source(
        Path::new("t.unet"),
        spec.to_string(),
        &Options::default(),
        &mut Session::new(),
    );
    assert!(
        !c.has_errors(),
        "{}",
        unetc::diag::render_plain(&c.sources, &c.diags)
    );
    let model = CpuModel::new(&c.graph, &c.info, &weights).expect("weights fit");
    model.run(&input).expect("runs").remove(0)
}

/// Keras Conv2D by definition: out[y,x,o] = b[o] + sum x[y*s + ky*d - top, x*s + kx*d - left, c] * k[ky,kx,c,o].
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    [h, w, c]: [usize; 3],
    k: &[f32],
    [kh, kw]: [usize; 2],
    f: usize,
    s: usize,
    d: usize,
    same: bool,
) -> (Vec<f32>, [usize; 2]) {
    let (ekh, ekw) = ((kh - 1) * d + 1, (kw - 1) * d + 1);
    let (oh, ow) = if same {
        (h.div_ceil(s), w.div_ceil(s))
    } else {
        ((h - ekh) / s + 1, (w - ekw) / s + 1)
    };
    let top = if same {
        ((oh - 1) * s + ekh).saturating_sub(h) / 2
    } else {
        0
    };
    let left = if same {
        ((ow - 1) * s + ekw).saturating_sub(w) / 2
    } else {
        0
    };
    let mut out = vec![0.0f32; oh * ow * f];
    for y in 0..oh {
        for xx in 0..ow {
            for o in 0..f {
                let mut acc = 0.0f64;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (y * s + ky * d) as isize - top as isize;
                        let ix = (xx * s + kx * d) as isize - left as isize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            continue;
                        }
                        for ci in 0..c {
                            acc += x[(iy as usize * w + ix as usize) * c + ci] as f64
                                * k[((ky * kw + kx) * c + ci) * f + o] as f64;
                        }
                    }
                }
                out[(y * ow + xx) * f + o] = acc as f32;
            }
        }
    }
    (out, [oh, ow])
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn conv2d_matches_the_definition() {
    for (h, w, c, f, kh, kw, s, d, same) in [
        (7, 9, 3, 4, 3, 3, 1, 1, false),
        (7, 9, 3, 4, 3, 3, 1, 1, true),
        (8, 6, 2, 5, 2, 2, 1, 1, true), // even kernel: the extra pixel is padded bottom/right
        (6, 7, 2, 3, 3, 3, 2, 1, true), // stride 2, same: top 0, bottom 1
        (9, 9, 2, 3, 3, 2, 2, 1, false),
        (9, 11, 2, 2, 3, 3, 1, 2, true), // dilation
        (5, 5, 4, 6, 1, 1, 1, 1, false),
    ] {
        let x = values(h * w * c, 1);
        let k = values(kh * kw * c * f, 2);
        let spec = format!(
            "model {{ input {h}x{w}x{c}\n conv2d({f}, ({kh}, {kw}), strides: {s}, dilation_rate: {d}, padding: {}, use_bias: false) }}",
            if same { "same" } else { "valid" }
        );
        let weights = HashMap::from([(
            "conv2d/kernel".to_string(),
            Tensor::from_vec(&[kh, kw, c, f], k.clone()).unwrap(),
        )]);
        let got = run_one(
            &spec,
            weights,
            Tensor::from_vec(&[1, h, w, c], x.clone()).unwrap(),
        );
        let (want, [oh, ow]) = naive_conv(&x, [h, w, c], &k, [kh, kw], f, s, d, same);
        assert_eq!(got.shape, vec![1, oh, ow, f], "{spec}");
        assert_close(&got.data, &want, &spec);
    }
}

/// Keras Conv2DTranspose (truth README): full[i*s + a, j*s + b, o] += x[i, j, c] * k[a, b, o, c];
/// valid keeps the first n*s + max(k-s, 0) rows; same keeps n*s rows from floor(max(k-s,0)/2).
#[test]
fn conv2d_transpose_matches_the_definition() {
    for (h, w, c, f, k, s, same) in [
        (3, 4, 2, 3, 2, 2, false),
        (3, 4, 2, 3, 3, 2, true),
        (3, 3, 2, 2, 3, 2, false),
        (2, 3, 1, 2, 1, 3, false),
        (4, 3, 2, 2, 4, 2, true),
    ] {
        let x = values(h * w * c, 3);
        let kern = values(k * k * f * c, 4);
        let (fh, fw) = ((h - 1) * s + k, (w - 1) * s + k);
        let mut full = vec![0.0f64; fh * fw * f];
        for i in 0..h {
            for j in 0..w {
                for a in 0..k {
                    for b in 0..k {
                        for o in 0..f {
                            for ci in 0..c {
                                full[((i * s + a) * fw + j * s + b) * f + o] +=
                                    x[(i * w + j) * c + ci] as f64
                                        * kern[((a * k + b) * f + o) * c + ci] as f64;
                            }
                        }
                    }
                }
            }
        }
        let (oh, ow, start) = if same {
            (h * s, w * s, k.saturating_sub(s) / 2)
        } else {
            (h * s + k.saturating_sub(s), w * s + k.saturating_sub(s), 0)
        };
        let mut want = vec![0.0f32; oh * ow * f];
        for y in 0..oh {
            for xx in 0..ow {
                for o in 0..f {
                    let (fy, fx) = (y + start, xx + start);
                    if fy < fh && fx < fw {
                        want[(y * ow + xx) * f + o] = full[(fy * fw + fx) * f + o] as f32;
                    }
                }
            }
        }
        let spec = format!(
            "model {{ input {h}x{w}x{c}\n conv2d_transpose({f}, {k}, strides: {s}, padding: {}, use_bias: false) }}",
            if same { "same" } else { "valid" }
        );
        let weights = HashMap::from([(
            "conv2d_transpose/kernel".to_string(),
            Tensor::from_vec(&[k, k, f, c], kern.clone()).unwrap(),
        )]);
        let got = run_one(
            &spec,
            weights,
            Tensor::from_vec(&[1, h, w, c], x.clone()).unwrap(),
        );
        assert_eq!(got.shape, vec![1, oh, ow, f], "{spec}");
        assert_close(&got.data, &want, &spec);
    }
}

#[test]
fn max_pool_floors_odd_sizes_like_keras() {
    // A 5x5 arange pools to [[6, 8], [16, 18]] (truth README).
    let x: Vec<f32> = (0..25).map(|v| v as f32).collect();
    let got = run_one(
        "model { input 5x5x1\n max_pooling2d(2) }",
        HashMap::new(),
        Tensor::from_vec(&[1, 5, 5, 1], x).unwrap(),
    );
    assert_eq!(got.data, vec![6.0, 8.0, 16.0, 18.0]);
}

#[test]
fn bilinear_upsampling_uses_half_pixel_centres() {
    // [0, 1, 2, 3] -> [0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3] (truth README).
    let got = run_one(
        "model { input 1x4x1\n up_sampling2d((1, 2), interpolation: bilinear) }",
        HashMap::new(),
        Tensor::from_vec(&[1, 1, 4, 1], vec![0.0, 1.0, 2.0, 3.0]).unwrap(),
    );
    assert_eq!(got.data, vec![0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]);
}
