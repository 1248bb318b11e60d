//! The products and patch moves that training's convolutions are made of.
//!
//! A convolution, forward or transposed, relates an image and a patch matrix: each row of the
//! matrix belongs to one pixel of the "row grid", each column to a kernel tap `(a, b)` and a
//! channel, and entry `(r, (a, b, ch))` is image pixel `r * stride + tap * dilation - offset`
//! (zero outside the image). A convolution gathers its input into patches and multiplies by the
//! kernel; its input gradient scatters the patch gradient back. A transposed convolution is the
//! same pair the other way round, with the output as the image and the input as the row grid.

/// `c = a x b` (or `c += a x b`), each operand a strided view: element `(i, j)` of `a` is
/// `a[i * a_rs + j * a_cs]`, and so on. `m x k` times `k x n`.
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
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * c_rs + j * c_cs] = 0.0;
                }
            }
        }
        return;
    }
    // Every element the views reach must be inside its slice: gemm reads raw pointers.
    assert!(
        last(m, k, a_rs, a_cs) < a.len()
            && last(k, n, b_rs, b_cs) < b.len()
            && last(m, n, c_rs, c_cs) < c.len(),
        "training product out of bounds"
    );
    let parallelism = if (m as u64) * (n as u64) * (k as u64) >= 1 << 18 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the strides reach is inside its slice (asserted above), and `c` is a
    // distinct `&mut`, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// How a patch matrix lies over an image (see the module comment), per spatial axis
/// `[rows, columns]`.
#[derive(Debug, Clone, Copy)]
pub struct PatchMap {
    pub batch: usize,
    /// The row grid (output pixels of a convolution, input pixels of a transposed one).
    pub grid: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Image pixels before the first tap of grid position 0.
    pub offset: [usize; 2],
    /// Image height, width and channels.
    pub image: [usize; 3],
    /// The channels of the image a patch reads: `[first, count]` (one group of a grouped
    /// convolution, or all).
    pub channels: [usize; 2],
}

impl PatchMap {
    pub fn rows(&self) -> usize {
        self.batch * self.grid[0] * self.grid[1]
    }

    pub fn row_len(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.channels[1]
    }

    /// For each patch entry that lies inside the image: (entry index, image index).
    fn for_each(&self, mut visit: impl FnMut(usize, usize)) {
        let [gh, gw] = self.grid;
        let [kh, kw] = self.kernel;
        let [h, w, c] = self.image;
        let [first, count] = self.channels;
        let row_len = self.row_len();
        for n in 0..self.batch {
            for gy in 0..gh {
                for gx in 0..gw {
                    let row = ((n * gh + gy) * gw + gx) * row_len;
                    for a in 0..kh {
                        let y = (gy * self.stride[0] + a * self.dilation[0]) as isize
                            - self.offset[0] as isize;
                        if y < 0 || y >= h as isize {
                            continue;
                        }
                        for b in 0..kw {
                            let x = (gx * self.stride[1] + b * self.dilation[1]) as isize
                                - self.offset[1] as isize;
                            if x < 0 || x >= w as isize {
                                continue;
                            }
                            let pixel = ((n * h + y as usize) * w + x as usize) * c + first;
                            let entry = row + (a * kw + b) * count;
                            for ch in 0..count {
                                visit(entry + ch, pixel + ch);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The patch matrix of `image` (`[rows, row_len]`, zeros outside the image).
    pub fn gather(&self, image: &[f32]) -> Vec<f32> {
        let mut patches = vec![0.0f32; self.rows() * self.row_len()];
        self.for_each(|entry, pixel| patches[entry] = image[pixel]);
        patches
    }

    /// Adds each patch entry into the image pixel it reads.
    pub fn scatter_add(&self, patches: &[f32], image: &mut [f32]) {
        self.for_each(|entry, pixel| image[pixel] += patches[entry]);
    }
}

/// Sum over rows of a `[rows, n]` row-major matrix, added into `out` (`n` long).
pub fn add_column_sums(matrix: &[f32], n: usize, out: &mut [f32]) {
    for row in matrix.chunks(n.max(1)) {
        for (o, v) in out.iter_mut().zip(row) {
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
            grid: [3, 3],
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            offset: [1, 1],
            image: [3, 3, 1],
            channels: [0, 1],
        };
        let ones = map.gather(&[1.0; 9]);
        let mut counts = [0.0; 9];
        map.scatter_add(&ones, &mut counts);
        assert_eq!(counts, [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
    }
}
