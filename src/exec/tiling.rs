//! Images of any size: how a model with a fixed input size covers them.
//!
//! - A valid-padding U-Net (output smaller than input by a margin on each side) uses the
//!   overlap-tile strategy of the U-Net paper: the image is mirror-padded by the margin, cut
//!   into input tiles whose output tiles lie side by side, and the outputs are stitched.
//! - A same-padding U-Net (output as large as input) runs on the image mirror-padded up to
//!   the next size the network accepts, and the output is cropped back.

/// How one spatial axis is covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisTiles {
    /// Mirror padding before the image (the margin, for valid nets).
    pub pad_before: usize,
    /// Start of each input tile in the padded image.
    pub starts: Vec<usize>,
    /// Length of the padded image.
    pub padded: usize,
}

/// Tiles for a valid net: input tile `tile_in`, output tile `tile_out = tile_in - 2 * margin`.
/// The last tile is shifted back so it ends at the image edge (it overlaps its neighbour).
pub fn overlap_tiles(image: usize, tile_in: usize, tile_out: usize) -> Option<AxisTiles> {
    if tile_out == 0 || tile_in < tile_out || (tile_in - tile_out) % 2 != 0 || image == 0 {
        return None;
    }
    let margin = (tile_in - tile_out) / 2;
    // Outputs cover [0, image); an image smaller than a tile is padded up to one tile.
    let covered = image.max(tile_out);
    let mut starts: Vec<usize> = (0..covered).step_by(tile_out).collect();
    if let Some(last) = starts.last_mut() {
        *last = (*last).min(covered - tile_out);
    }
    starts.dedup();
    Some(AxisTiles {
        pad_before: margin,
        starts,
        padded: covered + 2 * margin,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_unet_tiles_a_512_image() {
        // 572 -> 388: margin 92. 512 = 388 + 124, so two tiles, the second starting at 124.
        let t = overlap_tiles(512, 572, 388).unwrap();
        assert_eq!(t.pad_before, 92);
        assert_eq!(t.starts, vec![0, 124]);
        assert_eq!(t.padded, 512 + 184);
        // Every output pixel is covered.
        let covered: Vec<bool> = (0..512)
            .map(|p| t.starts.iter().any(|&s| (s..s + 388).contains(&p)))
            .collect();
        assert!(covered.iter().all(|&c| c));
    }

    #[test]
    fn small_image_is_one_tile() {
        let t = overlap_tiles(100, 572, 388).unwrap();
        assert_eq!(t.starts, vec![0]);
        assert_eq!(t.padded, 388 + 184);
    }

    #[test]
    fn mirror_reflects_without_repeating_the_edge() {
        // numpy.pad([0,1,2,3], 3, mode='reflect') = [3,2,1,0,1,2,3,2,1,0]
        let got: Vec<usize> = (-3..7).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }
}
