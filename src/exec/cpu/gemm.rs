//! Row-major f32 matrix multiply on top of the `gemm` crate.

use gemm::Parallelism;

/// `c[m, n] = a[m, k] x b[k, n]` (or `c += ...` when `accumulate`), all row-major, on all
/// cores when the product is large enough.
/// Returns `false` (doing nothing) if a slice is shorter than its shape says.
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) -> bool {
    // Small products are faster on one thread than split across the pool.
    let parallel = (m as u64) * (n as u64) * (k as u64) >= 1 << 18;
    product(m, n, k, a, b, c, accumulate, parallel)
}

/// [`matmul`] on the calling thread: for callers that already run one product per core.
pub fn matmul_serial(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) -> bool {
    product(m, n, k, a, b, c, accumulate, false)
}

#[allow(clippy::too_many_arguments)]
fn product(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
    parallel: bool,
) -> bool {
    let (Some(mk), Some(kn), Some(mn)) = (m.checked_mul(k), k.checked_mul(n), m.checked_mul(n))
    else {
        return false;
    };
    if a.len() < mk || b.len() < kn || c.len() < mn {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            c[..mn].fill(0.0);
        }
        return true;
    }
    strided_product(
        (m, n, k),
        (a, k, 1),
        (b, n, 1),
        (c, n, 1),
        accumulate,
        parallel,
    );
    true
}

/// `c = a x b` (or `c += a x b`) on strided views: element `(i, j)` of `a` is
/// `a[i * rs + j * cs]` for `(a, rs, cs)`, and so on; `m x k` times `k x n`. Panics if a view
/// reaches past its slice (gemm reads raw pointers).
#[allow(clippy::type_complexity)]
pub fn strided_product(
    (m, n, k): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    (c, c_rs, c_cs): (&mut [f32], usize, usize),
    accumulate: bool,
    parallel: bool,
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
    assert!(
        last(m, k, a_rs, a_cs) < a.len()
            && last(k, n, b_rs, b_cs) < b.len()
            && last(m, n, c_rs, c_cs) < c.len(),
        "matrix product out of bounds"
    );
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_by_hand() {
        // [1 2 3; 4 5 6] x [7 8; 9 10; 11 12] = [58 64; 139 154]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [0.0; 4];
        assert!(matmul(2, 2, 3, &a, &b, &mut c, false));
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        assert!(matmul(2, 2, 3, &a, &b, &mut c, true));
        assert_eq!(c, [116.0, 128.0, 278.0, 308.0]);
        assert!(!matmul(3, 2, 3, &a, &b, &mut c, false));
    }
}
