//! The products and patch moves that training's convolutions are made of.
//!
//! A convolution, forward or transposed, relates an image and a patch matrix: each row of the
//! matrix belongs to one pixel of the "row grid", each column to a kernel tap `(a, b)` and a
//! channel, and entry `(r, (a, b, ch))` is image pixel `r * stride + tap * dilation - offset`
//! (zero outside the image). A convolution gathers its input into patches and multiplies by the
//! kernel; its input gradient scatters the patch gradient back. A transposed convolution is the
//! same pair the other way round, with the output as the image and the input as the row grid.

use rayon::prelude::*;

/// `c = a x b` (or `c += a x b`), each operand a strided view: element `(i, j)` of `a` is
/// `a[i * a_rs + j * a_cs]`, and so on. `m x k` times `k x n`; on all cores when large.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    c: &mut [f32],
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
) {
    let parallel = (m as u64) * (n as u64) * (k as u64) >= 1 << 18;
    crate::exec::cpu::gemm::strided_product(
        (m, n, k),
        (a, a_rs, a_cs),
        (b, b_rs, b_cs),
        (c, c_rs, c_cs),
        accumulate,
        parallel,
    );
}

/// How a patch matrix lies over an image (see the module comment), per spatial axis
/// `[depth, rows, columns]` (an image is a volume of depth 1, with a kernel of depth 1).
#[derive(Debug, Clone, Copy)]
pub struct PatchMap {
    pub batch: usize,
    /// The row grid (output pixels of a convolution, input pixels of a transposed one).
    pub grid: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    /// Image pixels before the first tap of grid position 0.
    pub offset: [usize; 3],
    /// Image depth, height, width and channels.
    pub image: [usize; 4],
    /// The channels of the image a patch reads: `[first, count]` (one group of a grouped
    /// convolution, or all).
    pub channels: [usize; 2],
}

impl PatchMap {
    pub fn rows(&self) -> usize {
        self.batch * self.grid.iter().product::<usize>()
    }

    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    pub fn row_len(&self) -> usize {
        self.taps() * self.channels[1]
    }

    /// The image coordinate tap `tap` of grid position `g` reads along `axis`, if inside.
    fn target(&self, g: usize, tap: usize, axis: usize) -> Option<usize> {
        let p = (g * self.stride[axis] + tap * self.dilation[axis]) as isize
            - self.offset[axis] as isize;
        (p >= 0 && (p as usize) < self.image[axis]).then_some(p as usize)
    }

    /// The grid position whose tap `tap` reads image coordinate `p` along `axis`.
    fn source(&self, p: usize, tap: usize, axis: usize) -> Option<usize> {
        let t = (p + self.offset[axis]) as isize - (tap * self.dilation[axis]) as isize;
        let s = self.stride[axis] as isize;
        (t >= 0 && t % s == 0 && ((t / s) as usize) < self.grid[axis]).then_some((t / s) as usize)
    }

    /// Every tap `(flat tap index, [ta, tb, tc])` in row-major order.
    fn taps_iter(&self) -> impl Iterator<Item = (usize, [usize; 3])> + '_ {
        let [kd, kh, kw] = self.kernel;
        (0..kd * kh * kw).map(move |t| (t, [t / (kh * kw), t / kw % kh, t % kw]))
    }

    /// Rows `first_row ..` of the patch matrix of `image` into `out` (whole rows of
    /// [`PatchMap::row_len`]; zeros outside the image), in parallel over rows.
    pub fn gather_rows(&self, image: &[f32], first_row: usize, out: &mut [f32]) {
        let [gd, gh, gw] = self.grid;
        let [d, h, w, c] = self.image;
        let [first, count] = self.channels;
        let row_len = self.row_len().max(1);
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, patch)| {
                let r = first_row + i;
                let (n, g) = (
                    r / (gd * gh * gw),
                    [r / (gh * gw) % gd, r / gw % gh, r % gw],
                );
                for (t, tap) in self.taps_iter() {
                    let entry = &mut patch[t * count..(t + 1) * count];
                    match (
                        self.target(g[0], tap[0], 0),
                        self.target(g[1], tap[1], 1),
                        self.target(g[2], tap[2], 2),
                    ) {
                        (Some(z), Some(y), Some(x)) => {
                            let pixel = (((n * d + z) * h + y) * w + x) * c + first;
                            entry.copy_from_slice(&image[pixel..pixel + count]);
                        }
                        _ => entry.fill(0.0),
                    }
                }
            });
    }

    /// The patch matrix of `image` (`[rows, row_len]`, zeros outside the image).
    pub fn gather(&self, image: &[f32]) -> Vec<f32> {
        let mut patches = vec![0.0f32; self.rows() * self.row_len()];
        self.gather_rows(image, 0, &mut patches);
        patches
    }

    /// The other direction: for image pixels `first_pixel ..` (whole rows of
    /// `taps * count` in `out`), entry `(tap, ch)` is channel `first + ch` of the grid value
    /// (`grid`, `grid_c` channels per position) whose tap reads that pixel, or 0 where none
    /// does. Multiplying these rows by the kernel with its last two axes swapped scatters a
    /// patch gradient (or a transposed convolution) without write conflicts.
    pub fn gather_reverse(
        &self,
        grid: &[f32],
        grid_c: usize,
        [first, count]: [usize; 2],
        first_pixel: usize,
        out: &mut [f32],
    ) {
        let [gd, gh, gw] = self.grid;
        let [d, h, w, _] = self.image;
        let row_len = (self.taps() * count).max(1);
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, row)| {
                let q = first_pixel + i;
                let (n, p) = (q / (d * h * w), [q / (h * w) % d, q / w % h, q % w]);
                for (t, tap) in self.taps_iter() {
                    let entry = &mut row[t * count..(t + 1) * count];
                    match (
                        self.source(p[0], tap[0], 0),
                        self.source(p[1], tap[1], 1),
                        self.source(p[2], tap[2], 2),
                    ) {
                        (Some(gz), Some(gy), Some(gx)) => {
                            let at = (((n * gd + gz) * gh + gy) * gw + gx) * grid_c + first;
                            entry.copy_from_slice(&grid[at..at + count]);
                        }
                        _ => entry.fill(0.0),
                    }
                }
            });
    }

    /// Adds each patch entry into the image pixel it reads (the transpose of
    /// [`PatchMap::gather`]), in parallel over image pixels: each pixel sums the entries of the
    /// grid positions whose taps read it.
    pub fn scatter_add(&self, patches: &[f32], image: &mut [f32]) {
        let [gd, gh, gw] = self.grid;
        let [d, h, w, c] = self.image;
        let [first, count] = self.channels;
        let row_len = self.row_len();
        image
            .par_chunks_mut(c.max(1))
            .enumerate()
            .for_each(|(q, pixel)| {
                let (n, p) = (q / (d * h * w), [q / (h * w) % d, q / w % h, q % w]);
                for (t, tap) in self.taps_iter() {
                    if let (Some(gz), Some(gy), Some(gx)) = (
                        self.source(p[0], tap[0], 0),
                        self.source(p[1], tap[1], 1),
                        self.source(p[2], tap[2], 2),
                    ) {
                        let at = (((n * gd + gz) * gh + gy) * gw + gx) * row_len + t * count;
                        for (v, add) in pixel[first..first + count]
                            .iter_mut()
                            .zip(&patches[at..at + count])
                        {
                            *v += add;
                        }
                    }
                }
            });
    }
}

/// Rows per partial sum of [`add_column_sums`]: a fixed cut, so that the order of the additions
/// (and the result) does not depend on the number of threads.
const SUM_ROWS: usize = 4096;

/// Sum over rows of a `[rows, n]` row-major matrix, added into `out` (`n` long): blocks of
/// [`SUM_ROWS`] rows summed on all cores, then the blocks' sums added in order.
pub fn add_column_sums(matrix: &[f32], n: usize, out: &mut [f32]) {
    let n = n.max(1);
    let partials: Vec<Vec<f32>> = matrix
        .par_chunks(SUM_ROWS * n)
        .map(|block| {
            let mut sum = vec![0.0f32; n];
            for row in block.chunks(n) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sum
        })
        .collect();
    for sum in partials {
        for (o, v) in out.iter_mut().zip(sum) {
            *o += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_by_hand() {
        // a = [1 2 3; 4 5 6], b = [7 8; 9 10; 11 12]: a x b = [58 64; 139 154].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [0.0; 4];
        gemm((2, 2, 3), &a, (3, 1), &b, (2, 1), &mut c, (2, 1), false);
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        // a^T x a (a read as 3x2 column-major): [17 22 27; 22 29 36; 27 36 45].
        let mut d = [0.0; 9];
        gemm((3, 3, 2), &a, (1, 3), &a, (3, 1), &mut d, (3, 1), false);
        assert_eq!(d, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
    }

    #[test]
    fn gather_then_scatter_counts_each_pixel_by_its_taps() {
        // A 3x3 kernel over a 3x3 image, one pixel of padding: the centre pixel is read by all
        // nine output pixels, a corner by four.
        let map = PatchMap {
            batch: 1,
            grid: [1, 3, 3],
            kernel: [1, 3, 3],
            stride: [1, 1, 1],
            dilation: [1, 1, 1],
            offset: [0, 1, 1],
            image: [1, 3, 3, 1],
            channels: [0, 1],
        };
        let ones = map.gather(&[1.0; 9]);
        let mut counts = [0.0; 9];
        map.scatter_add(&ones, &mut counts);
        assert_eq!(counts, [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
    }
}
