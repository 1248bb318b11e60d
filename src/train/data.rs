//! Training data as U-Net users have it: a folder of images and a folder of masks paired by file
//! name (PNG or TIFF, 8- or 16-bit; masks as class indices or 0/255), read and checked before
//! the first step. Each sample is cut to the network's geometry the way the U-Net paper's
//! overlap-tile does: a window of the output's size in the mask, and the input window around
//! it (larger by the valid net's margin), mirror-reflected past the image's border.

use super::augment::{self, Augment, Plane};
use super::loss::Loss;
use super::BatchTargets;
use crate::exec::tiling::mirror_index;
use crate::exec::Tensor;
use crate::io::{read_image_with_layout, read_mask};
use crate::runner::RunError;
use crate::Compiled;
use rand::RngExt;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Names of the image and mask folders, as the popular repositories lay them out.
const IMAGE_DIRS: &[&str] = &["images", "image", "imgs", "img", "x", "inputs"];
const MASK_DIRS: &[&str] = &["masks", "mask", "labels", "label", "y", "gt", "targets"];
/// Suffixes a mask's name may add to its image's (`cell_01.png` / `cell_01_mask.png`).
const MASK_SUFFIXES: &[&str] = &["", "_mask", "_label", "-mask", "_seg", "_gt"];

/// One image and its mask, decoded.
pub struct Sample {
    pub image_path: PathBuf,
    pub h: usize,
    pub w: usize,
    pub channels: usize,
    /// HWC in [0, 1].
    pub image: Vec<f32>,
    /// One class index per pixel.
    pub classes: Vec<u16>,
}

/// What the network takes and gives: input and output sizes (H, W), channels.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub input: [usize; 2],
    pub input_channels: usize,
    pub output: [usize; 2],
    pub classes: usize,
}

impl Geometry {
    pub fn of(c: &Compiled) -> Result<Geometry, RunError> {
        let dims = |id| super::item_shape(c, id);
        match (&dims(c.graph.inputs[0])[..], &dims(c.graph.outputs[0])[..]) {
            (&[ih, iw, ic], &[oh, ow, oc]) if ih >= oh && iw >= ow => Ok(Geometry {
                input: [ih, iw],
                input_channels: ic,
                output: [oh, ow],
                classes: oc,
            }),
            (i, o) => Err(RunError::Usage(format!(
                "training from image folders needs an image-to-mask network (input (H, W, C), \
                 output no larger); this one maps {i:?} to {o:?}: give arrays with --inputs and \
                 --targets instead"
            ))),
        }
    }

    /// The valid net's margin on each side (0 for same padding).
    fn margin(&self) -> [usize; 2] {
        [
            (self.input[0] - self.output[0]) / 2,
            (self.input[1] - self.output[1]) / 2,
        ]
    }
}

/// Image/mask pairs of a data folder: `DIR/images` + `DIR/masks` (or image/label, x/y, ...).
pub fn find_pairs(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, RunError> {
    let usage = |m: String| RunError::Usage(m);
    let sub = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_dir());
    let (Some(images), Some(masks)) = (sub(IMAGE_DIRS), sub(MASK_DIRS)) else {
        return Err(usage(format!(
            "{}: a training folder holds a folder of images ({}) and one of masks ({}), paired \
             by file name",
            dir.display(),
            IMAGE_DIRS.join(", "),
            MASK_DIRS.join(", ")
        )));
    };
    let list = |d: &Path| -> Result<Vec<PathBuf>, RunError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|e| usage(format!("{}: cannot read the folder: {e}", d.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(e.to_ascii_lowercase().as_str(), "png" | "tif" | "tiff")
                    })
            })
            .collect();
        files.sort();
        Ok(files)
    };
    let (image_files, mask_files) = (list(&images)?, list(&masks)?);
    let stem = |p: &Path| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string()
    };
    let mut pairs = Vec::new();
    let mut unpaired = Vec::new();
    let mut used = vec![false; mask_files.len()];
    for img in &image_files {
        let s = stem(img);
        let found = mask_files.iter().enumerate().find(|(i, m)| {
            !used[*i]
                && MASK_SUFFIXES
                    .iter()
                    .any(|suffix| stem(m) == format!("{s}{suffix}"))
        });
        match found {
            Some((i, m)) => {
                used[i] = true;
                pairs.push((img.clone(), m.clone()));
            }
            None => unpaired.push(img.display().to_string()),
        }
    }
    let orphans: Vec<String> = mask_files
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(m, _)| m.display().to_string())
        .collect();
    if !unpaired.is_empty() || !orphans.is_empty() {
        let mut text = String::new();
        if !unpaired.is_empty() {
            text += &format!(
                "{} image(s) without a mask: {}",
                unpaired.len(),
                first_few(&unpaired)
            );
        }
        if !orphans.is_empty() {
            if !text.is_empty() {
                text += "; ";
            }
            text += &format!(
                "{} mask(s) without an image: {}",
                orphans.len(),
                first_few(&orphans)
            );
        }
        return Err(usage(format!(
            "{text}. Masks are paired with images by file name (the same name, or with _mask, \
             _label, -mask, _seg or _gt before the extension)"
        )));
    }
    if pairs.is_empty() {
        return Err(usage(format!(
            "{}: no PNG or TIFF images in {}",
            dir.display(),
            images.display()
        )));
    }
    Ok(pairs)
}

fn first_few(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    let more = if names.len() > 3 {
        format!(" and {} more", names.len() - 3)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Reads every pair, checking each against the network: channels, image and mask sizes, and
/// mask values (0/255 masks become 0/1 for a one-channel output; class indices must be below the
/// output's channels, or 0/1 for one channel). The first problem names its file.
pub fn load_samples(pairs: &[(PathBuf, PathBuf)], g: &Geometry) -> Result<Vec<Sample>, RunError> {
    let usage = |p: &Path, m: String| RunError::Usage(format!("{}: {m}", p.display()));
    let classes = g.classes.max(2);
    let mut samples = Vec::with_capacity(pairs.len());
    for (image_path, mask_path) in pairs {
        let (t, layout) = read_image_with_layout(image_path).map_err(RunError::Io)?;
        let (h, w, channels) = (t.shape[1], t.shape[2], t.shape[3]);
        if channels != g.input_channels {
            return Err(usage(
                image_path,
                format!(
                    "is {} ({channels} channel(s)) but the network takes {} channel(s)",
                    layout.name(),
                    g.input_channels
                ),
            ));
        }
        let (mh, mw, raw) = read_mask(mask_path).map_err(RunError::Io)?;
        if (mh, mw) != (h, w) {
            return Err(usage(
                mask_path,
                format!(
                    "is {mw}x{mh} (W x H) but its image {} is {w}x{h}",
                    image_path.display()
                ),
            ));
        }
        if h < g.output[0] || w < g.output[1] {
            return Err(usage(
                image_path,
                format!(
                    "is {w}x{h} (W x H), smaller than the network's output {}x{}",
                    g.output[1], g.output[0]
                ),
            ));
        }
        // 0/255 masks (one class on a black background) are 0/1.
        let binary_255 = raw.iter().all(|&v| v == 0 || v == 255) && raw.contains(&255);
        let mut classes_of = raw;
        if binary_255 {
            classes_of
                .iter_mut()
                .for_each(|v| *v = u16::from(*v == 255));
        }
        if let Some((i, &v)) = classes_of
            .iter()
            .enumerate()
            .find(|(_, &v)| usize::from(v) >= classes)
        {
            return Err(usage(
                mask_path,
                format!(
                    "has value {v} at pixel ({}, {}) (x, y), but the network's output has {} \
                     class(es) (0 to {}); masks hold class indices, or 0/255 for one class",
                    i % w,
                    i / w,
                    classes,
                    classes - 1
                ),
            ));
        }
        samples.push(Sample {
            image_path: image_path.clone(),
            h,
            w,
            channels,
            image: t.data,
            classes: classes_of,
        });
    }
    Ok(samples)
}

/// How a batch is cut from the samples.
#[derive(Clone, Copy)]
pub enum Cut {
    /// A random window of the output's size in each image, augmented (training).
    Random { seed: u64, epoch: u64 },
    /// The centre window, as it is (validation).
    Centre,
}

/// The batch of `indices`: inputs `[n, IH, IW, C]`, targets for `loss`.
pub fn batch(
    samples: &[Sample],
    indices: &[usize],
    g: &Geometry,
    loss: Loss,
    cut: Cut,
    augmentation: &Augment,
) -> (Tensor, BatchTargets) {
    let [ih, iw] = g.input;
    let [oh, ow] = g.output;
    let [my, mx] = g.margin();
    let c = g.input_channels;
    let mut xs = vec![0.0f32; indices.len() * ih * iw * c];
    let mut classes = vec![0u16; indices.len() * oh * ow];
    for (b, &i) in indices.iter().enumerate() {
        let s = &samples[i];
        // The augmented image and mask (the whole image, so that the window can sit anywhere).
        let (mut image, mut mask): (Vec<f32>, Vec<f32>) = (
            s.image.clone(),
            s.classes.iter().map(|&v| f32::from(v)).collect(),
        );
        let (y0, x0) = match cut {
            Cut::Random { seed, epoch } => {
                // One generator per (seed, epoch, sample): the same draws on a resumed run.
                let mut rng = rand::rngs::StdRng::seed_from_u64(
                    seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9),
                );
                if !augmentation.is_none() {
                    augment::apply(
                        augmentation,
                        Plane {
                            h: s.h,
                            w: s.w,
                            c: s.channels,
                            data: &mut image,
                        },
                        Plane {
                            h: s.h,
                            w: s.w,
                            c: 1,
                            data: &mut mask,
                        },
                        &mut rng,
                    );
                }
                (
                    rng.random_range(0..=s.h - oh),
                    rng.random_range(0..=s.w - ow),
                )
            }
            Cut::Centre => ((s.h - oh) / 2, (s.w - ow) / 2),
        };
        // Input window: the output window grown by the margin, mirrored past the border.
        for y in 0..ih {
            let sy = mirror_index(y0 as isize - my as isize + y as isize, s.h);
            for x in 0..iw {
                let sx = mirror_index(x0 as isize - mx as isize + x as isize, s.w);
                let src = (sy * s.w + sx) * c;
                let dst = ((b * ih + y) * iw + x) * c;
                xs[dst..dst + c].copy_from_slice(&image[src..src + c]);
            }
        }
        for y in 0..oh {
            for x in 0..ow {
                classes[(b * oh + y) * ow + x] = mask[(y0 + y) * s.w + x0 + x].round() as u16;
            }
        }
    }
    let n = indices.len();
    let targets = if loss.sparse() {
        BatchTargets::Classes {
            shape: vec![n, oh, ow],
            classes: classes.iter().map(|&v| i64::from(v)).collect(),
        }
    } else if g.classes == 1 {
        BatchTargets::Dense(Tensor {
            shape: vec![n, oh, ow, 1],
            data: classes.iter().map(|&v| f32::from(v)).collect(),
        })
    } else {
        let k = g.classes;
        let mut data = vec![0.0f32; n * oh * ow * k];
        for (p, &v) in classes.iter().enumerate() {
            data[p * k + usize::from(v)] = 1.0;
        }
        BatchTargets::Dense(Tensor {
            shape: vec![n, oh, ow, k],
            data,
        })
    };
    (
        Tensor {
            shape: vec![n, ih, iw, c],
            data: xs,
        },
        targets,
    )
}
