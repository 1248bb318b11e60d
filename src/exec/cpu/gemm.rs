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
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the slices hold at least m*k, k*n and m*n elements (checked above); the strides
    // describe dense row-major matrices inside them; `c` does not alias `a` or `b` (it is a
    // distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    true
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
