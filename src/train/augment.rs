//! Seeded augmentation of an image and its mask, as in the U-Net paper and the popular U-Net
//! repositories: flips, 90° rotations, shifts, zoom, brightness/contrast and the paper's elastic
//! deformation. Geometry moves the image and the mask together; the image is resampled
//! bicubically, the mask by nearest neighbour (class values stay exact). Positions outside the
//! image read the mirror-reflected pixel, as the overlap-tile strategy pads, so no zero borders.
//!
//! Every random draw happens serially before any parallel work, so the same rng state gives the
//! same result whatever the thread count.

use crate::exec::tiling::mirror_index;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal, StandardUniform};
use rayon::prelude::*;

/// Which augmentations run.
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    /// Horizontal and vertical flips, each with probability 1/2.
    pub flip: bool,
    /// A rotation by k·90° (k uniform in 0..4); square images only.
    pub rot90: bool,
    /// Largest translation, as a fraction of the height (vertical) and width (horizontal).
    pub shift: f32,
    /// Zoom about the centre, uniform in [1 - scale, 1 + scale].
    pub scale: f32,
    /// Added to the image: uniform in [-brightness, brightness].
    pub brightness: f32,
    /// The deviation from each channel's mean is multiplied by U(1 - contrast, 1 + contrast).
    pub contrast: f32,
    pub elastic: Option<Elastic>,
}

/// The U-Net paper's elastic deformation: random displacement vectors on a coarse grid, drawn
/// from a Gaussian, interpolated bicubically to every pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Elastic {
    /// Grid points per side (3 in the paper).
    pub grid: usize,
    /// Standard deviation of each displacement component, in pixels (10 in the paper).
    pub sigma: f32,
}

const PAPER_ELASTIC: Elastic = Elastic {
    grid: 3,
    sigma: 10.0,
};
const NAMES: &str = "flip, rot90, shift, scale, intensity, elastic (or none, all)";

impl Augment {
    /// Everything off.
    pub fn none() -> Self {
        Augment {
            flip: false,
            rot90: false,
            shift: 0.0,
            scale: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            elastic: None,
        }
    }

    /// Everything on with the defaults: shift and scale 0.1, brightness and contrast 0.1,
    /// elastic on a 3x3 grid with 10 pixels standard deviation.
    pub fn standard() -> Self {
        Augment {
            flip: true,
            rot90: true,
            shift: 0.1,
            scale: 0.1,
            brightness: 0.1,
            contrast: 0.1,
            elastic: Some(PAPER_ELASTIC),
        }
    }

    /// "flip,rot90,shift,scale,intensity,elastic" (any subset, comma separated; "none"; "all"):
    /// the named ones on with defaults, others off; unknown names -> Err naming the name and the
    /// list.
    pub fn parse(list: &str) -> Result<Self, String> {
        let standard = Augment::standard();
        let mut aug = Augment::none();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "none" => {}
                "all" => aug = standard.clone(),
                "flip" => aug.flip = true,
                "rot90" => aug.rot90 = true,
                "shift" => aug.shift = standard.shift,
                "scale" => aug.scale = standard.scale,
                "intensity" => {
                    aug.brightness = standard.brightness;
                    aug.contrast = standard.contrast;
                }
                "elastic" => aug.elastic = standard.elastic,
                _ => {
                    return Err(format!(
                        "`{name}` is not an augmentation unetc knows; use {NAMES}"
                    ))
                }
            }
        }
        Ok(aug)
    }

    pub fn is_none(&self) -> bool {
        *self == Augment::none()
    }
}

/// An image or mask: `data` row-major HWC.
pub struct Plane<'a> {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: &'a mut [f32],
}

/// Augments `image` and `mask` (same h and w) in place with draws from `rng`.
pub fn apply(aug: &Augment, mut image: Plane, mut mask: Plane, rng: &mut StdRng) {
    assert_eq!(
        (image.h, image.w),
        (mask.h, mask.w),
        "augment: the image and its mask differ in size"
    );
    for p in [&image, &mask] {
        assert_eq!(p.data.len(), p.h * p.w * p.c, "augment: data is not h*w*c");
    }
    let (h, w) = (image.h, image.w);
    if h == 0 || w == 0 {
        return;
    }

    if aug.flip {
        if coin(rng) {
            let mirror = |y, x| (y, w - 1 - x);
            permute(&mut image, mirror);
            permute(&mut mask, mirror);
        }
        if coin(rng) {
            let upside_down = |y, x| (h - 1 - y, x);
            permute(&mut image, upside_down);
            permute(&mut mask, upside_down);
        }
    }
    if aug.rot90 && h == w {
        // 4 divides 2^32, so the remainder is uniform.
        let k: u32 = StandardUniform.sample(rng);
        let k = k % 4;
        rotate(&mut image, k);
        rotate(&mut mask, k);
    }

    let mut warp = Warp::IDENTITY;
    if aug.shift != 0.0 {
        let s = aug.shift.abs();
        warp.ty = symmetric(rng, s) * h as f32;
        warp.tx = symmetric(rng, s) * w as f32;
    }
    if aug.scale != 0.0 {
        // A zoom of 0 or less would mean nothing; keep it positive.
        warp.zoom = (1.0 + symmetric(rng, aug.scale.abs())).max(0.01);
    }
    let field = aug
        .elastic
        .filter(|e| e.grid > 0)
        .map(|e| elastic_field(h, w, e, rng));
    if warp != Warp::IDENTITY || field.is_some() {
        let coords = source_coords(h, w, &warp, field.as_ref());
        resample_bicubic(&mut image, &coords);
        resample_nearest(&mut mask, &coords);
    }

    if aug.contrast != 0.0 || aug.brightness != 0.0 {
        let factor = if aug.contrast != 0.0 {
            1.0 + symmetric(rng, aug.contrast.abs())
        } else {
            1.0
        };
        let offset = if aug.brightness != 0.0 {
            symmetric(rng, aug.brightness.abs())
        } else {
            0.0
        };
        intensity(&mut image, factor, offset);
    }
}

fn coin(rng: &mut StdRng) -> bool {
    StandardUniform.sample(rng)
}

/// Uniform in [-a, a). Not `Uniform::new`, which refuses an empty range.
fn symmetric(rng: &mut StdRng, a: f32) -> f32 {
    let u: f32 = StandardUniform.sample(rng);
    (2.0 * u - 1.0) * a
}

/// `out[y, x] = in[from(y, x)]`, for a permutation that keeps h and w.
fn permute(p: &mut Plane, from: impl Fn(usize, usize) -> (usize, usize)) {
    let (w, c) = (p.w, p.c);
    if c == 0 {
        return;
    }
    let src = p.data.to_vec();
    for (y, row) in p.data.chunks_mut(w * c).enumerate() {
        for (x, px) in row.chunks_mut(c).enumerate() {
            let (sy, sx) = from(y, x);
            px.copy_from_slice(&src[(sy * w + sx) * c..][..c]);
        }
    }
}

/// Counterclockwise by `k`·90° as numpy's `rot90` (axes 0, 1); `p` is square.
fn rotate(p: &mut Plane, k: u32) {
    let n = p.h;
    match k {
        1 => permute(p, |y, x| (x, n - 1 - y)),
        2 => permute(p, |y, x| (n - 1 - y, n - 1 - x)),
        3 => permute(p, |y, x| (n - 1 - x, y)),
        _ => {}
    }
}

/// The affine part of the warp: output pixel `p` reads the source at
/// `centre + (p - t - centre) / zoom` (plus the elastic displacement of `p`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Warp {
    zoom: f32,
    ty: f32,
    tx: f32,
}

impl Warp {
    const IDENTITY: Warp = Warp {
        zoom: 1.0,
        ty: 0.0,
        tx: 0.0,
    };
}

/// Per-pixel displacement `(dy, dx)`, row-major.
struct Field {
    dy: Vec<f32>,
    dx: Vec<f32>,
}

/// Keys' cubic convolution weights (a = -0.5, as PIL's bicubic) for the taps at -1, 0, 1, 2
/// around a point `f` in [0, 1) past tap 0. At f = 0 they are exactly [0, 1, 0, 0], so a zero
/// displacement copies pixels unchanged.
fn keys(f: f32) -> [f32; 4] {
    let near = |t: f32| (1.5 * t - 2.5) * t * t + 1.0;
    let far = |t: f32| ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0;
    [far(1.0 + f), near(f), near(1.0 - f), far(2.0 - f)]
}

/// The weight of each of `g` grid nodes at pixel `i` of `n`; nodes span the axis end to end,
/// taps past the grid's ends take the end node.
fn grid_weights(i: usize, n: usize, g: usize) -> Vec<f32> {
    let mut out = vec![0.0; g];
    let pos = if n > 1 && g > 1 {
        i as f32 * (g - 1) as f32 / (n - 1) as f32
    } else {
        0.0
    };
    let base = pos.floor();
    for (k, wt) in keys(pos - base).into_iter().enumerate() {
        let node = (base as isize + k as isize - 1).clamp(0, g as isize - 1) as usize;
        out[node] += wt;
    }
    out
}

/// The paper's deformation: a `grid`x`grid` array of displacement vectors from N(0, sigma²),
/// interpolated bicubically to every pixel. Draws dy then dx for each node, row-major.
fn elastic_field(h: usize, w: usize, e: Elastic, rng: &mut StdRng) -> Field {
    let g = e.grid;
    let mut nodes = vec![[0.0f32; 2]; g * g];
    for v in nodes.iter_mut().flatten() {
        let z: f32 = StandardNormal.sample(rng);
        *v = z * e.sigma;
    }
    let wx: Vec<Vec<f32>> = (0..w).map(|x| grid_weights(x, w, g)).collect();
    let mut field = Field {
        dy: vec![0.0; h * w],
        dx: vec![0.0; h * w],
    };
    // Separable: mix the grid rows for this pixel row, then the columns per pixel.
    field
        .dy
        .par_chunks_mut(w)
        .zip(field.dx.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (dy, dx))| {
            let wy = grid_weights(y, h, g);
            let mut row = vec![[0.0f32; 2]; g];
            for (i, &a) in wy.iter().enumerate() {
                for (r, n) in row.iter_mut().zip(&nodes[i * g..][..g]) {
                    r[0] += a * n[0];
                    r[1] += a * n[1];
                }
            }
            for x in 0..w {
                let (mut sy, mut sx) = (0.0, 0.0);
                for (&b, r) in wx[x].iter().zip(&row) {
                    sy += b * r[0];
                    sx += b * r[1];
                }
                dy[x] = sy;
                dx[x] = sx;
            }
        });
    field
}

/// Where each output pixel reads the source, `(y, x)` row-major.
fn source_coords(h: usize, w: usize, warp: &Warp, field: Option<&Field>) -> Vec<[f32; 2]> {
    let (cy, cx) = ((h - 1) as f32 / 2.0, (w - 1) as f32 / 2.0);
    let mut coords = vec![[0.0f32; 2]; h * w];
    coords.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, q) in row.iter_mut().enumerate() {
            let (dy, dx) = field.map_or((0.0, 0.0), |f| (f.dy[y * w + x], f.dx[y * w + x]));
            *q = [
                cy + (y as f32 + dy - warp.ty - cy) / warp.zoom,
                cx + (x as f32 + dx - warp.tx - cx) / warp.zoom,
            ];
        }
    });
    coords
}

/// `i` reflected into `0..n` (numpy's `reflect`, as the overlap-tile padding); cheap inside.
fn reflect(i: isize, n: usize) -> usize {
    if (0..n as isize).contains(&i) {
        i as usize
    } else {
        mirror_index(i, n)
    }
}

/// Bicubic resampling of `p` at `coords`, clamped to each channel's range in the source so the
/// kernel's overshoot cannot push, say, a [0, 1] image out of [0, 1]. (`max` then `min`, not
/// `clamp`, which panics on the empty range of an all-NaN channel.)
fn resample_bicubic(p: &mut Plane, coords: &[[f32; 2]]) {
    let (h, w, c) = (p.h, p.w, p.c);
    if c == 0 {
        return;
    }
    let src = p.data.to_vec();
    let mut lo = vec![f32::INFINITY; c];
    let mut hi = vec![f32::NEG_INFINITY; c];
    for px in src.chunks(c) {
        for ch in 0..c {
            lo[ch] = lo[ch].min(px[ch]);
            hi[ch] = hi[ch].max(px[ch]);
        }
    }
    // The usual channel counts get their own copy with the count known at compile time.
    match c {
        1 => bicubic_rows::<1>(&src, p.data, coords, (h, w, c), (&lo, &hi)),
        3 => bicubic_rows::<3>(&src, p.data, coords, (h, w, c), (&lo, &hi)),
        _ => bicubic_rows::<0>(&src, p.data, coords, (h, w, c), (&lo, &hi)),
    }
}

/// [`resample_bicubic`]'s loop; `C` is the channel count, or 0 for `c` (slower).
fn bicubic_rows<const C: usize>(
    src: &[f32],
    dst: &mut [f32],
    coords: &[[f32; 2]],
    (h, w, c): (usize, usize, usize),
    (lo, hi): (&[f32], &[f32]),
) {
    dst.par_chunks_mut(w * c)
        .zip(coords.par_chunks(w))
        .for_each(|(row, qs)| {
            for (out, &[qy, qx]) in row.chunks_exact_mut(c).zip(qs) {
                let (rows, wy) = taps(qy, h);
                let (cols, wx) = taps(qx, w);
                let at = |k: usize, l: usize| (rows[k] * w + cols[l]) * c;
                if C > 0 {
                    // Rows first, then across them; fixed-size arrays keep it in registers.
                    let mut acc = [0.0f32; C];
                    for (k, &a) in wy.iter().enumerate() {
                        let mut across = [0.0f32; C];
                        for (l, &b) in wx.iter().enumerate() {
                            let s: &[f32; C] = src[at(k, l)..][..C].try_into().unwrap();
                            for ch in 0..C {
                                across[ch] += b * s[ch];
                            }
                        }
                        for ch in 0..C {
                            acc[ch] += a * across[ch];
                        }
                    }
                    for ch in 0..C {
                        out[ch] = acc[ch].max(lo[ch]).min(hi[ch]);
                    }
                } else {
                    for ch in 0..c {
                        let mut v = 0.0;
                        for (k, &a) in wy.iter().enumerate() {
                            for (l, &b) in wx.iter().enumerate() {
                                v += a * b * src[at(k, l) + ch];
                            }
                        }
                        out[ch] = v.max(lo[ch]).min(hi[ch]);
                    }
                }
            }
        });
}

/// The four source indices (reflected into `0..n`) and Keys weights around position `q`.
fn taps(q: f32, n: usize) -> ([usize; 4], [f32; 4]) {
    let base = floor(q);
    let idx = std::array::from_fn(|k| reflect(base + k as isize - 1, n));
    (idx, keys(q - base as f32))
}

/// `q.floor()` as an integer without the libm call (baseline x86-64 has no rounding
/// instruction, and this runs per pixel).
fn floor(q: f32) -> isize {
    let i = q as isize;
    if (i as f32) > q {
        i - 1
    } else {
        i
    }
}

/// Nearest-neighbour resampling of `p` at `coords`: values are copied, never mixed.
fn resample_nearest(p: &mut Plane, coords: &[[f32; 2]]) {
    let (h, w, c) = (p.h, p.w, p.c);
    if c == 0 {
        return;
    }
    let src = p.data.to_vec();
    p.data
        .par_chunks_mut(w * c)
        .zip(coords.par_chunks(w))
        .for_each(|(row, qs)| {
            for (out, &[qy, qx]) in row.chunks_mut(c).zip(qs) {
                let sy = reflect(floor(qy + 0.5), h);
                let sx = reflect(floor(qx + 0.5), w);
                out.copy_from_slice(&src[(sy * w + sx) * c..][..c]);
            }
        });
}

/// `(x - mean) * factor + mean + offset`, with each channel's own mean.
fn intensity(p: &mut Plane, factor: f32, offset: f32) {
    let c = p.c;
    if c == 0 {
        return;
    }
    let mut mean = vec![0.0f64; c];
    for px in p.data.chunks(c) {
        for (m, &v) in mean.iter_mut().zip(px) {
            *m += v as f64;
        }
    }
    let n = (p.data.len() / c) as f64;
    let mean: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
    p.data.par_chunks_mut(c).for_each(|px| {
        for (v, &m) in px.iter_mut().zip(&mean) {
            *v = (*v - m) * factor + m + offset;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Runs `apply` on copies; returns the augmented image and mask.
    fn run(
        aug: &Augment,
        (h, w): (usize, usize),
        image: &[f32],
        ic: usize,
        mask: &[f32],
        mc: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>) {
        let (mut img, mut msk) = (image.to_vec(), mask.to_vec());
        apply(
            aug,
            Plane {
                h,
                w,
                c: ic,
                data: &mut img,
            },
            Plane {
                h,
                w,
                c: mc,
                data: &mut msk,
            },
            &mut rng(seed),
        );
        (img, msk)
    }

    /// A smooth-ish image and a mask of classes 0..3 in blocks.
    fn sample(h: usize, w: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
        let image = (0..h * w * c)
            .map(|i| ((i * 37 % 101) as f32 / 100.0 + (i / c % w) as f32 / w as f32) / 2.0)
            .collect();
        let mask = (0..h * w)
            .map(|i| ((i / w / 5 + i % w / 5) % 3) as f32)
            .collect();
        (image, mask)
    }

    #[test]
    fn same_rng_state_same_result() {
        let (h, w) = (24, 32);
        let (image, mask) = sample(h, w, 3);
        let aug = Augment::standard();
        let a = run(&aug, (h, w), &image, 3, &mask, 1, 7);
        let b = run(&aug, (h, w), &image, 3, &mask, 1, 7);
        assert_eq!(a, b);
        let other = run(&aug, (h, w), &image, 3, &mask, 1, 8);
        assert_ne!(a.0, other.0, "another seed should give another image");
        assert_ne!(a.0, image, "standard() should change the image");
    }

    #[test]
    fn none_is_the_identity() {
        let (h, w) = (9, 13);
        let (image, mask) = sample(h, w, 2);
        for seed in 0..5 {
            let (img, msk) = run(&Augment::none(), (h, w), &image, 2, &mask, 1, seed);
            assert_eq!(img, image);
            assert_eq!(msk, mask);
        }
        assert!(Augment::none().is_none());
        assert!(!Augment::standard().is_none());
    }

    #[test]
    fn flips_and_rotations_are_exact_permutations() {
        // 2x3, two channels: pixel (y, x) holds [10y + x, -(10y + x)].
        let image: Vec<f32> = (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [(10 * y + x) as f32, -(10 * y + x) as f32]))
            .collect();
        let mask = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let mut img = image.clone();
        let mut p = Plane {
            h: 2,
            w: 3,
            c: 2,
            data: &mut img,
        };
        permute(&mut p, |y, x| (y, 2 - x));
        assert_eq!(
            img,
            [2., -2., 1., -1., 0., 0., 12., -12., 11., -11., 10., -10.]
        );

        // Flips alone: each seed gives one of the four flips, the mask the same one, and all
        // four occur.
        let expected: [[f32; 6]; 4] = [
            [0., 1., 2., 3., 4., 5.],
            [2., 1., 0., 5., 4., 3.],
            [3., 4., 5., 0., 1., 2.],
            [5., 4., 3., 2., 1., 0.],
        ];
        let flip = Augment {
            flip: true,
            ..Augment::none()
        };
        let mut seen = [false; 4];
        for seed in 0..40 {
            let (img, msk) = run(&flip, (2, 3), &image, 2, &mask, 1, seed);
            let v = expected
                .iter()
                .position(|e| e[..] == msk[..])
                .expect("a flip");
            seen[v] = true;
            // The image's channel 0 holds 10y + x: the same permutation as the mask's.
            let moved: Vec<f32> = img.chunks(2).map(|p| p[0]).collect();
            let label = |t: f32| ((t as usize / 10) * 3 + t as usize % 10) as f32;
            assert_eq!(moved.iter().map(|&t| label(t)).collect::<Vec<_>>(), msk);
            assert!(
                img.chunks(2).all(|p| p[1] == -p[0]),
                "channels stay together"
            );
        }
        assert_eq!(seen, [true; 4]);

        // 90° rotations of a 3x3: numpy's rot90 of [[0,1,2],[3,4,5],[6,7,8]].
        let square: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let rotations: [[f32; 9]; 4] = [
            [0., 1., 2., 3., 4., 5., 6., 7., 8.],
            [2., 5., 8., 1., 4., 7., 0., 3., 6.],
            [8., 7., 6., 5., 4., 3., 2., 1., 0.],
            [6., 3., 0., 7., 4., 1., 8., 5., 2.],
        ];
        for (k, r) in rotations.iter().enumerate() {
            let mut d = square.clone();
            rotate(
                &mut Plane {
                    h: 3,
                    w: 3,
                    c: 1,
                    data: &mut d,
                },
                k as u32,
            );
            assert_eq!(d, r, "k = {k}");
        }
        let rot = Augment {
            rot90: true,
            ..Augment::none()
        };
        let mut seen = [false; 4];
        for seed in 0..40 {
            let image: Vec<f32> = square.iter().map(|v| v * 2.0).collect();
            let (img, msk) = run(&rot, (3, 3), &image, 1, &square, 1, seed);
            let k = rotations
                .iter()
                .position(|r| r[..] == msk[..])
                .expect("a rotation");
            seen[k] = true;
            assert_eq!(img, msk.iter().map(|v| v * 2.0).collect::<Vec<_>>());
        }
        assert_eq!(seen, [true; 4]);
        // Not square: no rotation.
        let (img, msk) = run(&rot, (2, 3), &image, 2, &mask, 1, 3);
        assert_eq!((img, msk), (image, mask));
    }

    #[test]
    fn mask_keeps_its_classes_under_warps() {
        let (h, w) = (40, 48);
        let (image, mask) = sample(h, w, 1);
        let warps = [
            Augment {
                shift: 0.2,
                ..Augment::none()
            },
            Augment {
                scale: 0.3,
                ..Augment::none()
            },
            Augment {
                elastic: Some(PAPER_ELASTIC),
                ..Augment::none()
            },
            Augment::standard(),
        ];
        for aug in &warps {
            let mut changed = false;
            for seed in 0..4 {
                let (_, msk) = run(aug, (h, w), &image, 1, &mask, 1, seed);
                assert!(
                    msk.iter().all(|&v| v == 0.0 || v == 1.0 || v == 2.0),
                    "{aug:?}"
                );
                changed |= msk != mask;
            }
            assert!(changed, "{aug:?} never moved the mask");
        }
    }

    #[test]
    fn image_and_mask_warp_together() {
        // The image is the mask (16-pixel blocks of classes 0..3): where the bicubic taps see
        // one class both agree exactly, and nearly everywhere they round to the same class.
        let (h, w) = (64, 64);
        let mask: Vec<f32> = (0..h * w)
            .map(|i| ((i / w / 16 + i % w / 16) % 3) as f32)
            .collect();
        let aug = Augment {
            flip: true,
            shift: 0.2,
            scale: 0.2,
            elastic: Some(PAPER_ELASTIC),
            ..Augment::none()
        };
        for seed in 0..4 {
            let (img, msk) = run(&aug, (h, w), &mask, 1, &mask, 1, seed);
            let within = |tol: f32| {
                img.iter()
                    .zip(&msk)
                    .filter(|(a, b)| (*a - *b).abs() < tol)
                    .count()
            };
            eprintln!(
                "seed {seed}: {} exact, {} within 0.5 of {}",
                within(1e-4),
                within(0.5),
                h * w
            );
            assert!(within(1e-4) * 4 > h * w * 3, "seed {seed}");
            assert!(within(0.5) * 20 > h * w * 19, "seed {seed}");
        }
    }

    #[test]
    fn intensity_leaves_the_mask_alone() {
        let (h, w) = (8, 10);
        let (image, mask) = sample(h, w, 3);
        let aug = Augment::parse("intensity").unwrap();
        let (img, msk) = run(&aug, (h, w), &image, 3, &mask, 1, 11);
        assert_eq!(msk, mask);
        assert_ne!(img, image);
        // Contrast alone keeps each channel's mean.
        let contrast = Augment {
            contrast: 0.5,
            ..Augment::none()
        };
        let (img, _) = run(&contrast, (h, w), &image, 3, &mask, 1, 11);
        let mean =
            |d: &[f32], ch: usize| d.iter().skip(ch).step_by(3).sum::<f32>() / (h * w) as f32;
        for ch in 0..3 {
            assert!((mean(&img, ch) - mean(&image, ch)).abs() < 1e-5);
        }
        // Brightness alone adds one constant.
        let bright = Augment {
            brightness: 0.5,
            ..Augment::none()
        };
        let (img, _) = run(&bright, (h, w), &image, 3, &mask, 1, 11);
        let d0 = img[0] - image[0];
        assert!(d0 != 0.0 && d0.abs() <= 0.5);
        assert!(img
            .iter()
            .zip(&image)
            .all(|(a, b)| (a - b - d0).abs() < 1e-6));
    }

    #[test]
    fn elastic_with_sigma_zero_is_the_identity() {
        let (h, w) = (17, 23);
        let aug = Augment {
            elastic: Some(Elastic {
                grid: 3,
                sigma: 0.0,
            }),
            ..Augment::none()
        };
        // 1 and 3 channels take the fixed-count loop, the others the general one.
        for c in [1, 2, 3, 5] {
            let (image, mask) = sample(h, w, c);
            let (img, msk) = run(&aug, (h, w), &image, c, &mask, 1, 5);
            assert!(img.iter().zip(&image).all(|(a, b)| (a - b).abs() <= 1e-6));
            assert_eq!(msk, mask);
        }
    }

    #[test]
    fn fixed_and_general_channel_loops_agree() {
        let (h, w) = (19, 21);
        let (image, _) = sample(h, w, 3);
        let field = elastic_field(h, w, PAPER_ELASTIC, &mut rng(4));
        let warp = Warp {
            zoom: 1.1,
            ty: 1.5,
            tx: -2.25,
        };
        let coords = source_coords(h, w, &warp, Some(&field));
        let (lo, hi) = ([0.0; 3], [1.0; 3]);
        let (mut fixed, mut general) = (image.clone(), image.clone());
        bicubic_rows::<3>(&image, &mut fixed, &coords, (h, w, 3), (&lo, &hi));
        bicubic_rows::<0>(&image, &mut general, &coords, (h, w, 3), (&lo, &hi));
        assert!(fixed
            .iter()
            .zip(&general)
            .all(|(a, b)| (a - b).abs() < 1e-5));
        assert_ne!(fixed, image);
    }

    #[test]
    fn the_field_passes_through_the_grid_nodes() {
        // With a 3x3 grid on a 21x31 image the nodes sit on pixels 0, 10, 20 and 0, 15, 30.
        let e = Elastic {
            grid: 3,
            sigma: 10.0,
        };
        let field = elastic_field(21, 31, e, &mut rng(2));
        let mut r = rng(2);
        let nodes: Vec<f32> = (0..18)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut r);
                z * 10.0
            })
            .collect();
        for (i, y) in [0, 10, 20].into_iter().enumerate() {
            for (j, x) in [0, 15, 30].into_iter().enumerate() {
                let n = (i * 3 + j) * 2;
                assert!((field.dy[y * 31 + x] - nodes[n]).abs() < 1e-4);
                assert!((field.dx[y * 31 + x] - nodes[n + 1]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn outside_reads_the_mirror_image() {
        // A 1x5 row moved right by 2 pixels: numpy's reflect fills the left, no zeros.
        let row = [0.0, 1.0, 2.0, 3.0, 4.0];
        let warp = Warp {
            tx: 2.0,
            ..Warp::IDENTITY
        };
        let coords = source_coords(1, 5, &warp, None);
        assert_eq!(coords[0], [0.0, -2.0]);
        let (mut a, mut b) = (row.to_vec(), row.to_vec());
        resample_bicubic(
            &mut Plane {
                h: 1,
                w: 5,
                c: 1,
                data: &mut a,
            },
            &coords,
        );
        resample_nearest(
            &mut Plane {
                h: 1,
                w: 5,
                c: 1,
                data: &mut b,
            },
            &coords,
        );
        assert_eq!(b, [2.0, 1.0, 0.0, 1.0, 2.0]);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6), "{a:?}");
        // Far outside, and on the other side.
        assert_eq!(reflect(-1, 4), 1);
        assert_eq!(reflect(4, 4), 2);
        assert_eq!(reflect(-7, 4), 1);
        assert_eq!(reflect(9, 1), 0);
    }

    #[test]
    fn tiny_images_do_not_panic() {
        for (h, w) in [(1, 1), (1, 7), (7, 1), (2, 2), (0, 5)] {
            let (image, mask) = sample(h, w, 3);
            for seed in 0..8 {
                let (img, msk) = run(&Augment::standard(), (h, w), &image, 3, &mask, 1, seed);
                assert_eq!((img.len(), msk.len()), (image.len(), mask.len()));
                assert!(img.iter().all(|v| v.is_finite()));
                assert!(msk.iter().all(|v| mask.contains(v)));
            }
        }
    }

    #[test]
    fn nan_pixels_do_not_panic() {
        let (h, w) = (6, 6);
        let image = vec![f32::NAN; h * w];
        let mask = vec![1.0; h * w];
        let (_, msk) = run(&Augment::standard(), (h, w), &image, 1, &mask, 1, 0);
        assert_eq!(msk, mask);
    }

    #[test]
    fn parse_names() {
        assert_eq!(Augment::parse("none").unwrap(), Augment::none());
        assert_eq!(Augment::parse("all").unwrap(), Augment::standard());
        assert_eq!(
            Augment::parse("flip,rot90,shift,scale,intensity,elastic").unwrap(),
            Augment::standard()
        );
        let a = Augment::parse(" flip , elastic").unwrap();
        assert_eq!(
            a,
            Augment {
                flip: true,
                elastic: Some(PAPER_ELASTIC),
                ..Augment::none()
            }
        );
        let e = Augment::parse("flip,zoom").unwrap_err();
        assert!(
            e.contains("`zoom`") && e.contains("rot90") && e.contains("elastic"),
            "{e}"
        );
    }
}
