#!/usr/bin/env python3
"""Fits the float32 tanh of src/exec/cpu/kernels.rs: tanh(x) = x P(x^2) / Q(x^2) on
[-LIMIT, LIMIT] (beyond, tanh is +-1 in float32 to within half an ulp), P of degree NP and Q of
degree NQ, Q(0) = 1, by iteratively reweighted linear least squares on the relative error
(Sanathanan-Koerner iterations), on float64.

    python3 tools/fits/tanh_fit.py

Prints the coefficients as float32 and the error of the float32 evaluation (Horner, as the Rust
code does it) against float64 tanh on 2,000,001 points: what the doc comment of `tanh` states.
Needs numpy.
"""
import numpy as np

LIMIT = 9.0
NP, NQ = 6, 3


def fit():
    x = np.linspace(0, LIMIT, 40001)[1:]
    x = np.concatenate([x, LIMIT * np.sin(np.linspace(0, np.pi / 2, 20001))[1:] ** 2])
    t = x * x
    f = np.tanh(x) / x
    q = np.ones_like(t)
    for _ in range(30):
        # P(t) - f Q(t) = 0 with Q(0) = 1, weighted by 1 / (f Q_prev): the relative error.
        w = 1 / (f * q)
        cols = [t ** k for k in range(NP + 1)] + [-f * t ** k for k in range(1, NQ + 1)]
        a = np.stack(cols, 1) * w[:, None]
        scale = np.abs(a).max(0)
        sol, *_ = np.linalg.lstsq(a / scale, f * w, rcond=None)
        sol /= scale
        p_c, q_c = sol[: NP + 1], np.concatenate([[1.0], sol[NP + 1:]])
        q = np.polyval(q_c[::-1], t)
    err = np.abs(np.polyval(p_c[::-1], t) / q / f - 1).max()
    print(f"exact-arithmetic max relative error on [0, {LIMIT}]: {err:.3g}")
    return p_c, q_c


def tanh_f32(x, p, q):
    x = np.clip(x.astype(np.float32), np.float32(-LIMIT), np.float32(LIMIT))
    t = x * x
    pp = np.float32(p[-1])
    for c in p[-2::-1]:
        pp = pp * t + np.float32(c)
    qq = np.float32(q[-1])
    for c in q[-2::-1]:
        qq = qq * t + np.float32(c)
    return x * pp / qq


def main():
    p, q = fit()
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    print("P =", [float(v) for v in p32])
    print("Q =", [float(v) for v in q32])
    x = np.linspace(-12, 12, 2_000_001).astype(np.float32)
    y = tanh_f32(x, p32, q32).astype(np.float64)
    ref = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    nz = x != 0
    print(f"float32 evaluation: max abs error {np.abs(y - ref).max():.3g}, max rel error "
          f"{(np.abs(y - ref)[nz] / np.abs(ref[nz])).max():.3g}, max {(np.abs(y - ref) / ulp).max():.2f} ulp")
    tiny = np.float32(1e-30)
    print("tanh(1e-30) =", tanh_f32(np.array([tiny]), p32, q32)[0], "; |y| <= 1:",
          bool(np.all(np.abs(y) <= 1)), "; monotone:", bool(np.all(np.diff(y) >= 0)))


if __name__ == "__main__":
    main()
