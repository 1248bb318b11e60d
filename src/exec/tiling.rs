//! Images of any size: how a model with a fixed input size covers them.
//!
//! - A valid-padding U-Net (output smaller than input by a margin on each side) uses the
//!   overlap-tile strategy of the U-Net paper: the image is mirror-padded by the margin, cut
//!   into input tiles whose output tiles lie side by side, and the outputs are stitched.
//! - A same-padding U-Net (output as large as input) runs on the image mirror-padded up to
//!   the next size the network accepts, and the output is cropped back.

/// Index into an axis of length `n` after mirror padding by `before` (reflect without repeating
/// the edge, as numpy's `reflect`); works for any offset, however far outside.
pub fn mirror_index(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Copies `[y0, y0+th) x [x0, x0+tw)` of an image `[h, w, c]` mirror-padded by `(py, px)`
/// into `out` (`[th, tw, c]`).
#[allow(clippy::too_many_arguments)]
pub fn extract_tile(
    image: &[f32],
    [h, w, c]: [usize; 3],
    (py, px): (usize, usize),
    (y0, x0): (usize, usize),
    (th, tw): (usize, usize),
    out: &mut [f32],
) {
    for ty in 0..th {
        let sy = mirror_index((y0 + ty) as isize - py as isize, h);
        for tx in 0..tw {
            let sx = mirror_index((x0 + tx) as isize - px as isize, w);
            let src = (sy * w + sx) * c;
            out[(ty * tw + tx) * c..(ty * tw + tx + 1) * c].copy_from_slice(&image[src..src + c]);
        }
    }
}

/// One tile along an axis: its input is `[start, start + len)` of the padded image, output
/// index `o` of the tile is image position `offset + o`, and the tile gives the image its
/// outputs `keep.0..keep.1` (tile output indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub offset: isize,
    pub keep: (usize, usize),
}

/// Exact tiles along an axis of a same-padding net: the padded length `n` and the tile `tile`
/// are sizes the net accepts, `halo` and every tile start are multiples of `align` (the net's
/// total stride), so each layer's pooling grid in a tile is the whole image's. A tile keeps its
/// outputs at least `halo` from a cut edge; at the image's own edges (first and last tile) it
/// keeps them up to the edge, where the whole-image run has the same zero padding.
/// `pad_before` is the mirror padding in front of the image. `None` when the tile is not
/// larger than `2 * halo` (no kept centre) or the sizes are not aligned.
pub fn exact_spans(
    n: usize,
    tile: usize,
    halo: usize,
    align: usize,
    pad_before: usize,
) -> Option<Vec<Span>> {
    let align = align.max(1);
    if tile >= n {
        return Some(vec![Span {
            start: 0,
            offset: -(pad_before as isize),
            keep: (0, n),
        }]);
    }
    if tile <= 2 * halo || halo % align != 0 || (n - tile) % align != 0 {
        return None;
    }
    // Neighbouring starts at most `tile - 2 * halo` apart, on the grid.
    let step = (tile - 2 * halo) / align * align;
    if step == 0 {
        return None;
    }
    let mut starts: Vec<usize> = (0..n - tile).step_by(step).collect();
    starts.push(n - tile);
    let spans = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            // The boundary with the next tile is where the next one's exact part begins.
            let lo = if i == 0 { 0 } else { halo };
            let hi = match starts.get(i + 1) {
                Some(&next) => next + halo - start,
                None => tile,
            };
            Span {
                start,
                offset: start as isize - pad_before as isize,
                keep: (lo, hi),
            }
        })
        .collect();
    Some(spans)
}

/// Overlapping tiles for blending: starts `step` apart (at least 1), the last one ending at `n`.
/// Every tile keeps all its outputs; they are averaged with [`blend_weights`].
pub fn blend_spans(n: usize, tile: usize, step: usize, pad_before: usize) -> Vec<Span> {
    let tile = tile.min(n);
    let mut starts: Vec<usize> = (0..n - tile).step_by(step.max(1)).collect();
    starts.push(n - tile);
    starts
        .into_iter()
        .map(|start| Span {
            start,
            offset: start as isize - pad_before as isize,
            keep: (0, tile),
        })
        .collect()
}

/// The overlap-tile of the U-Net paper for a valid net along an axis: tiles of `tile_in` give
/// `tile_out = tile_in - 2 * margin` outputs each, from an image mirror-padded to `padded` (an
/// accepted size: the margin before the image, the rest after). Tile starts are multiples of
/// `align` (the net's total stride) and the last tile ends at `padded`, so every tile sees the
/// pooling grid of one whole run at `padded`, and gives exactly its outputs. Output `o` of a
/// tile is image position `start + o`. `None` when `tile_out < align`.
pub fn overlap_spans(
    padded: usize,
    tile_in: usize,
    tile_out: usize,
    align: usize,
) -> Option<Vec<Span>> {
    let align = align.max(1);
    let step = tile_out / align * align;
    if tile_in > padded || tile_out > tile_in || step == 0 {
        return None;
    }
    let mut starts: Vec<usize> = (0..padded - tile_in).step_by(step).collect();
    starts.push(padded - tile_in);
    let spans = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| Span {
            start,
            offset: start as isize,
            // Up to where the next tile's outputs begin (it gives the same values after).
            keep: (0, starts.get(i + 1).map_or(tile_out, |&next| next - start)),
        })
        .collect();
    Some(spans)
}

/// How blended tiles weigh their outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlendWeights {
    /// `exp(-d² / (2σ²))` from the tile's centre with σ = tile / 8 (MONAI's default
    /// `sigma_scale` 0.125), floored at 1e-3 so that every pixel has some weight.
    Gaussian,
    /// Every output counts the same: the plain average of the overlapping tiles.
    Constant,
}

impl BlendWeights {
    pub fn name(self) -> &'static str {
        match self {
            BlendWeights::Gaussian => "gaussian",
            BlendWeights::Constant => "constant",
        }
    }
}

/// The weight of each output position along one axis of a tile of `len` (a tile's weight is
/// the product of its rows' and columns').
pub fn blend_weights(len: usize, kind: BlendWeights) -> Vec<f32> {
    match kind {
        BlendWeights::Constant => vec![1.0; len],
        BlendWeights::Gaussian => {
            let sigma = (len as f64 / 8.0).max(1e-6);
            let centre = (len as f64 - 1.0) / 2.0;
            (0..len)
                .map(|i| {
                    let d = i as f64 - centre;
                    ((-d * d / (2.0 * sigma * sigma)).exp() as f32).max(1e-3)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position `0..n` of the padded image is kept by exactly one tile.
    fn kept_once(spans: &[Span], n: usize, offset_of_zero: isize) -> bool {
        let mut count = vec![0; n];
        for s in spans {
            for o in s.keep.0..s.keep.1 {
                count[(s.offset + o as isize - offset_of_zero) as usize] += 1;
            }
        }
        count.iter().all(|&c| c == 1)
    }

    #[test]
    fn original_unet_tiles_a_512_image_on_its_pooling_grid() {
        // 572 -> 388, margin 92. 512 + 184 = 696 is not accepted (≡ 12 mod 16): 700 is, so
        // the image is covered up to 516. Starts step by 384 (388 rounded down to 16): 0, then
        // the last at 700 - 572 = 128.
        let t = overlap_spans(700, 572, 388, 16).unwrap();
        let starts: Vec<usize> = t.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 128]);
        assert!(t.iter().all(|s| s.start % 16 == 0));
        assert!(kept_once(&t, 516, 0));
        // A tile smaller than the stride cannot step on the grid.
        assert_eq!(overlap_spans(700, 188, 4, 16), None);
    }

    #[test]
    fn exact_spans_keep_a_halo_from_every_cut_edge() {
        // 256 padded, tiles of 136, halo 56, grid 8: starts 24 apart (136 - 112).
        let spans = exact_spans(256, 136, 56, 8, 3).unwrap();
        let starts: Vec<usize> = spans.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 24, 48, 72, 96, 120]);
        assert!(kept_once(&spans, 256, -3));
        for (i, s) in spans.iter().enumerate() {
            assert_eq!(s.start % 8, 0);
            // Cut edges (not the image's) are at least the halo away from kept outputs.
            if i > 0 {
                assert!(s.keep.0 >= 56);
            }
            if i + 1 < spans.len() {
                assert!(136 - s.keep.1 >= 56);
            }
        }
        // No kept centre: refused, not a silent wrong plan.
        assert_eq!(exact_spans(256, 112, 56, 8, 0), None);
        // A tile as large as the image is one span.
        assert_eq!(exact_spans(256, 256, 56, 8, 0).unwrap().len(), 1);
    }

    #[test]
    fn blend_spans_cover_and_weights_peak_in_the_centre() {
        let spans = blend_spans(100, 40, 30, 0);
        let starts: Vec<usize> = spans.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 30, 60]);
        let w = blend_weights(9, BlendWeights::Gaussian);
        // exp(-d²/(2σ²)) with σ = 9/8: the centre 1, d = 4 gives exp(-16/2.53125) ≈ 0.0018.
        assert_eq!(w[4], 1.0);
        assert!((w[0] - (-16.0f64 / (2.0 * 1.125 * 1.125)).exp() as f32).abs() < 1e-6);
        assert_eq!(blend_weights(3, BlendWeights::Constant), vec![1.0; 3]);
    }

    #[test]
    fn mirror_reflects_without_repeating_the_edge() {
        // numpy.pad([0,1,2,3], 3, mode='reflect') = [3,2,1,0,1,2,3,2,1,0]
        let got: Vec<usize> = (-3..7).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }
}
