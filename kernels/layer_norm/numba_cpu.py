"""Layer norm, GELU and QuickGELU as Numba CPU kernels (the math is in reference.py).

Mean and variance in one pass: sum and sum of squares in float64, of the row shifted by its
first element K = x_0 (the "shifted data" algorithm, Chan, Golub & LeVeque 1983):

    d_j = x_j - K,   s = sum_j d_j,   ss = sum_j d_j^2
    mean = K + s / C,   var = ss / C - (s / C)^2

Why shifted sums, and not plain ones or Welford's update:
- plain sums cancel: var = E[x^2] - mean^2 subtracts two numbers of size mean^2, so rows with
  |mean| >> std (activations around 1e3 with std 1) lose log10(mean^2 / var) digits: 6 of
  float64's 16 there, all of float32's 7. After the shift the numbers subtracted are of size
  (mean - K)^2 + var, and since K is one of the row's values, (K - mean)^2 <= C var: at most
  log10(C + 1) digits are lost (3 for C = 768), whatever the row.
- Welford's update (mean += (x - mean) / n, ...) is stable too, but its division per element
  sits on a chain of dependent steps: measured here 2.9 ms for the statistics of 4160 x 256
  against 0.09 ms for the sums, which LLVM vectorises once allowed to reorder them
  (fastmath "reassoc": the same reordering a GPU's tree reduction does).
The statistics stay float64; y is then written with x's dtype's arithmetic, the mean split into
hi + lo (see the backward below): 0.25 against 0.44 ms for 4160 x 256 float32 on one core.

The backward reads each row twice: once for mean(dxhat) and mean(dxhat * xhat), once to write
dx. dweight and dbias are column sums over all rows; to run rows in parallel, each chunk of rows
sums into its own (C,) row of a partial buffer, and the partials are added at the end. The first
loop (the sums) runs in float64; the second (dx) in x's dtype, so in 16 AVX-512 lanes for
float32 instead of 8: 0.47 against 0.74 ms for 4160 x 256 on one core, measured. The mean is
passed as hi + lo in x's dtype (hi = mean rounded, lo = the rest), so x - hi - lo keeps the
digits that a float32 mean would lose when |mean| >> std. dweight stays on a float64 xhat: it
sums dy * xhat over every row, and the float32 roundings of xhat add up past 1e-5 when that sum
cancels (tests/kernels/test_layer_norm.py catches it at 77 x 257).

GELU needs erf, and Numba's math.erf is a scalar call into libm, one element at a time: GELU
forward + backward took ~30% of a tiny-vit-xs training step. `erf` below is built, like
softmax_xent's exp, from multiplies, adds and (in float64) one division, so LLVM turns the loop
into SIMD code. In float64, two polynomials, both evaluated for every element and one of them
selected (a SIMD loop cannot branch per element, but it can blend):

    |z| < 2:      erf(z) = z P(z^2)                         P ~ erf(z)/z, an even function
    2 <= |z| < 6: erf(z) = 1 - exp(-z^2) t Q(t),  t = 1/|z|  Q ~ |z| exp(z^2) erfc(|z|)
    |z| >= 6:     erf(z) = +-1                              (erfc(6) = 2e-17: 1 - that rounds to 1)

erf(z)/z and z exp(z^2) erfc(z) are smooth and slowly varying on those intervals, so Chebyshev
polynomials of degree 18 and 12 reach float64's rounding. float32 needs less: beyond |z| = 3.92
its erf rounds to +-1, and below, one polynomial z P(z^2) of degree 16 reaches its rounding
(no exp, no division: half the work of the two-polynomial form). The coefficients are fitted
when this module is imported (`_chebyshev_fit`: least squares on 4001 Chebyshev points,
math.erf as the data), then turned into power series in the mapped variable s in [-1, 1] for
Horner's rule. exp(-z^2) is softmax_xent's exp_nonpositive.
Measured against math.erf over a dense grid of [-10, 10] and around |z| = 2, 3.92, 6: max absolute
error 1.4e-15 in float64 (~6 roundings of 1), 1.7e-7 in float32 (~3 roundings of 1)
(tests/kernels/test_layer_norm.py::test_vectorised_*erf_matches_math_erf).

Like the exp, erf and GELU run in the input's precision (an overload per dtype, with constants
of that dtype: a Python float would turn float32 math into float64): float32 GELU in 16 lanes
with the one polynomial, forward 5x and backward 4x faster than in float64 (4160 x 1024:
5.5 -> 1.1 ms and 8.4 -> 2.0 ms, measured on the shared machine).

Parallelism: prange measured 1.9-2.0x on 2 cores for every kernel here (4160x256 layer norm,
4160x1024 activations), when both cores are free; below 2^19 elements the kernels run on one
thread (softmax_xent's `threads_for`: waking the second thread costs 40-50 us). QuickGELU's exp
is softmax_xent's SIMD exp_nonpositive (measured 3-4x faster than math.exp); it still computes
in float64.

Checked against reference.py in tests/kernels/test_layer_norm.py.
"""
import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

# softmax_xent's exp in multiplies and adds, which LLVM vectorises (math.exp is a scalar libm call),
# and its rule for when a second thread pays (one thread below 2^19 elements)
from ..softmax_xent.numba_cpu import exp_nonpositive, threads_for


# reassoc lets LLVM split the sums into SIMD lanes; contract fuses multiply-adds. No flags that
# assume away inf or nan.
FASTMATH = {"reassoc", "contract"}


def as_dtype_of(value, array):
    """value cast to array's dtype (jitted code only; see the overload below)."""
    raise TypeError("as_dtype_of is only callable from Numba-compiled code")


@overload(as_dtype_of)
def _as_dtype_of_overload(value, array):
    dtype = array.dtype
    return lambda value, array: dtype(value)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _layer_norm_forward(x, weight, bias, eps, y, mean, rstd):
    N, C = x.shape
    for i in prange(N):
        K = np.float64(x[i, 0])                     # the shift: any value of the row will do
        s, ss = 0.0, 0.0
        for j in range(C):
            d = x[i, j] - K
            s += d
            ss += d * d
        mu = K + s / C
        r = 1.0 / math.sqrt(max(ss / C - (s / C) ** 2, 0.0) + eps)   # max: rounding can dip below 0
        mean[i], rstd[i] = mu, r
        # y in x's dtype (16 SIMD lanes in float32), the mean as hi + lo (see the backward)
        mu_hi = as_dtype_of(mu, x)
        mu_lo, r = as_dtype_of(mu - mu_hi, x), as_dtype_of(r, x)
        for j in range(C):
            y[i, j] = (x[i, j] - mu_hi - mu_lo) * r * weight[j] + bias[j]


# No "contract" here: g = dy * weight must round the same way in both loops, or a fused
# multiply-add makes g - mean(g) in a row of one element a rounding error times rstd (316 at
# eps = 1e-5) instead of 0.
@njit(cache=True, parallel=True, fastmath={"reassoc"})
def _layer_norm_backward(dy, x, weight, mean, rstd, mean_hi, mean_lo, rstd_x, n_chunks, dx, dweight, dbias):
    N, C = x.shape
    chunk = (N + n_chunks - 1) // n_chunks
    part_dw = np.zeros((n_chunks, C))               # each chunk's share of the column sums
    part_db = np.zeros((n_chunks, C))
    for c in prange(n_chunks):
        for i in range(c * chunk, min(N, (c + 1) * chunk)):
            # The sums in float64, from a float64 xhat: dweight sums dy * xhat over every row,
            # and float32 rounding in each xhat adds up past the tolerance when the sum cancels.
            mu, r = mean[i], rstd[i]
            mean_g, mean_gx = 0.0, 0.0              # mean(dxhat), mean(dxhat * xhat)
            for j in range(C):
                xhat = (x[i, j] - mu) * r
                g = dy[i, j] * weight[j]
                mean_g += g
                mean_gx += g * xhat
                part_dw[c, j] += dy[i, j] * xhat
                part_db[c, j] += dy[i, j]
            mean_g = as_dtype_of(mean_g / C, x)
            mean_gx = as_dtype_of(mean_gx / C, x)
            # dx in x's dtype (16 SIMD lanes in float32): mean as hi + lo, so x - hi - lo loses
            # nothing to |mean| >> std
            mu_hi, mu_lo, r = mean_hi[i], mean_lo[i], rstd_x[i]
            for j in range(C):
                xhat = (x[i, j] - mu_hi - mu_lo) * r
                dx[i, j] = r * (dy[i, j] * weight[j] - mean_g - xhat * mean_gx)
    # Plain loops: inside a parallel function, part_dw[:, j].sum() would become a parallel
    # reduction of its own, 2C of them, each paying the cost of waking the threads (~0.4 ms).
    for j in range(C):
        dw, db = 0.0, 0.0
        for c in range(n_chunks):
            dw += part_dw[c, j]
            db += part_db[c, j]
        dweight[j], dbias[j] = dw, db


def layer_norm_forward(x, weight, bias, eps):
    """(y (N, C) like x, mean (N,) float64, rstd (N,) float64)."""
    N = x.shape[0]
    y = np.empty_like(x)
    mean = np.empty(N, np.float64)
    rstd = np.empty(N, np.float64)
    with threads_for(x.size):
        _layer_norm_forward(x, weight, bias, float(eps), y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx (N, C), dweight (C,), dbias (C,))."""
    dx = np.empty_like(x)
    dweight = np.empty_like(weight)
    dbias = np.empty_like(weight)
    mean_hi = mean.astype(x.dtype)                  # mean = hi + lo to twice x's precision
    mean_lo = (mean - mean_hi).astype(x.dtype)
    with threads_for(x.size):
        n_chunks = max(1, min(x.shape[0], numba.get_num_threads()))
        _layer_norm_backward(dy, x, weight, mean, rstd, mean_hi, mean_lo, rstd.astype(x.dtype), n_chunks,
                             dx, dweight, dbias)
    return dx, dweight, dbias


# ---------------------------------------------------------------- GELU and QuickGELU
ERF_SPLIT, ERF_ONE = 2.0, 6.0         # the three intervals of |z| (see the module docstring)


def _chebyshev_fit(f, lo, hi, degree, n_points=4001):
    """Chebyshev coefficients of f on [lo, hi] (least squares on Chebyshev points, float64)."""
    s = np.cos(np.linspace(0.0, np.pi, n_points))                    # points in [-1, 1]
    u = lo + (hi - lo) * (s + 1.0) / 2.0
    return np.polynomial.chebyshev.chebfit(s, np.array([f(v) for v in u]), degree)


def _erf_over_z_of_z2(u):
    """P(u) = erf(z) / z at u = z^2 (2 / sqrt(pi) at 0)."""
    z = math.sqrt(u)
    return math.erf(z) / z if z > 0 else 2.0 / math.sqrt(math.pi)


def _scaled_erfc_of_t(t):
    """Q(t) = z exp(z^2) erfc(z) at t = 1/z."""
    z = 1.0 / t
    return z * math.exp(z * z) * math.erfc(z)


def _power_series(f, lo, hi, degree, dtype):
    """f on [lo, hi] as a power series in s (the interval mapped onto [-1, 1]), in `dtype`:
    every |coefficient| < 0.7, so Horner's rule loses nothing to cancellation."""
    return np.polynomial.chebyshev.cheb2poly(_chebyshev_fit(f, lo, hi, degree)).astype(dtype)


@njit(cache=True, inline="always")
def horner(c, s):
    """sum_k c[k] s^k (c's length is a compile-time constant here, so LLVM unrolls the loop)."""
    p = c[len(c) - 1]
    for k in range(len(c) - 2, -1, -1):
        p = p * s + c[k]
    return p


def _erf_in(float_t, p_degree, q_degree):
    """erf(z) in float_t arithmetic (see the module docstring), for the overload below."""
    F = float_t
    P = _power_series(_erf_over_z_of_z2, 0.0, ERF_SPLIT ** 2, p_degree, float_t)           # u = z^2 on [0, 4]
    Q = _power_series(_scaled_erfc_of_t, 1.0 / ERF_ONE, 1.0 / ERF_SPLIT, q_degree, float_t)  # t on [1/6, 1/2]
    split, one = F(ERF_SPLIT), F(ERF_ONE)

    def erf(z):
        a = abs(z)
        u = a * a
        small = z * horner(P, u * F(2.0 / ERF_SPLIT ** 2) - F(1.0))                  # z P(z^2)
        t = F(1.0) / max(a, split)                  # max: no division by 0 when |z| is small
        s = (t - F(1.0 / ERF_ONE)) * F(2.0 / (1.0 / ERF_SPLIT - 1.0 / ERF_ONE)) - F(1.0)
        large = F(1.0) - exp_nonpositive(-u) * t * horner(Q, s)                       # erf(|z|)
        if a >= one:
            return F(1.0) if z > 0 else F(-1.0)
        if a >= split:
            return large if z > 0 else -large
        return small
    return erf


def _erf_one_polynomial_in(float_t, degree, top):
    """erf(z) = z P(z^2) for |z| < top, +-1 beyond: enough where 1 - erfc(top) rounds to 1
    (float32: erfc(3.92) = 3e-8, half its spacing below 1). One polynomial, no exp, no division."""
    F = float_t
    P = _power_series(_erf_over_z_of_z2, 0.0, top ** 2, degree, float_t)      # u = z^2 on [0, top^2]
    top_f = F(top)

    def erf(z):
        if abs(z) >= top_f:
            return F(1.0) if z > 0 else F(-1.0)
        return z * horner(P, z * z * F(2.0 / top ** 2) - F(1.0))
    return erf


# Degrees for each type's rounding. float64: 18 and 12 (1.4e-15, measured). float32: one
# polynomial of degree 16 up to |z| = 3.92 (1.8e-7, measured; the two-polynomial form reached
# 1.5e-7 with degrees 9 and 4, but its exp and division made float32 GELU ~2x slower).
_erf_float32 = _erf_one_polynomial_in(np.float32, 16, 3.92)
_erf_float64 = _erf_in(np.float64, 18, 12)


def erf(z):
    """erf(z) in z's precision, in multiplies, adds (and in float64 one division), so it vectorises
    (see the module docstring); NaN stays NaN (it falls through to the first polynomial). Jitted code only:
    Numba compiles the float32 or the float64 version (the overload below)."""
    raise TypeError("erf is only callable from Numba-compiled code")


@overload(erf, inline="always", jit_options={"fastmath": {"contract"}})
def _erf_overload(z):
    return {types.float32: _erf_float32, types.float64: _erf_float64}.get(z)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _erf(z, y):
    """erf over a flat array (for the tests and tutorials)."""
    for k in prange(z.size):
        y[k] = erf(z[k])


def erf_array(z):
    """The SIMD erf elementwise over an array of any shape: float32 math for float32 z, else float64."""
    dtype = np.float32 if np.asarray(z).dtype == np.float32 else np.float64
    y = np.empty(np.shape(z), dtype)
    _erf(np.ascontiguousarray(z, dtype).reshape(-1), y.reshape(-1))
    return y


def _gelu_in(float_t):
    """GELU and its derivative in float_t arithmetic: the constants in float_t too, since a
    Python float would turn float32 math into float64."""
    F = float_t
    half, one = F(0.5), F(1.0)
    inv_sqrt2, inv_sqrt_2pi = F(1.0 / math.sqrt(2.0)), F(1.0 / math.sqrt(2.0 * math.pi))

    def gelu(v):
        """v Phi(v), Phi the standard normal CDF."""
        return v * half * (one + erf(v * inv_sqrt2))

    def gelu_grad(v):
        """Phi(v) + v phi(v)."""
        Phi = half * (one + erf(v * inv_sqrt2))
        phi = exp_nonpositive(-half * v * v) * inv_sqrt_2pi     # the same exp as erf's
        return Phi + v * phi
    return gelu, gelu_grad


_gelu_float32, _gelu_grad_float32 = _gelu_in(np.float32)
_gelu_float64, _gelu_grad_float64 = _gelu_in(np.float64)


def gelu(v):
    """GELU of a float32 or float64 scalar, in its precision (jitted code only)."""
    raise TypeError("gelu is only callable from Numba-compiled code")


def gelu_grad(v):
    """d GELU / dv of a float32 or float64 scalar, in its precision (jitted code only)."""
    raise TypeError("gelu_grad is only callable from Numba-compiled code")


@overload(gelu, inline="always", jit_options={"fastmath": {"contract"}})
def _gelu_overload(v):
    return {types.float32: _gelu_float32, types.float64: _gelu_float64}.get(v)


@overload(gelu_grad, inline="always", jit_options={"fastmath": {"contract"}})
def _gelu_grad_overload(v):
    return {types.float32: _gelu_grad_float32, types.float64: _gelu_grad_float64}.get(v)


# Elementwise, over the rows (N, C) of x with a bias b (C,) added first (zeros when there is
# none): rows in parallel, each row one SIMD loop (a flat loop would need k % C to find the
# bias, which stops LLVM from vectorising). No sums to reorder, so only "contract" (fused
# multiply-adds).
@njit(cache=True, parallel=True, fastmath={"contract"})
def _gelu_forward(x, b, y):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            y[i, j] = gelu(x[i, j] + b[j])


@njit(cache=True, parallel=True, fastmath={"contract"})
def _gelu_backward(dy, x, b, dx):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            dx[i, j] = dy[i, j] * gelu_grad(x[i, j] + b[j])


@njit(cache=True, inline="always", fastmath=FASTMATH)
def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp only ever sees -|z| (so the SIMD exp applies)."""
    e = exp_nonpositive(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _quick_gelu_forward(x, b, y):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            v = np.float64(x[i, j] + b[j])
            y[i, j] = v * sigmoid(1.702 * v)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _quick_gelu_backward(dy, x, b, dx):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            v = np.float64(x[i, j] + b[j])
            s = sigmoid(1.702 * v)
            dx[i, j] = dy[i, j] * (s + 1.702 * v * s * (1.0 - s))


def _elementwise(kernel, out_like, arrays, bias):
    """Run an activation kernel over the (N, C) rows of arrays of any shape (C the last
    dimension; a 0-d array is one row of one), with the bias or zeros."""
    out = np.empty_like(out_like)
    if out.size == 0:
        return out
    C = out.shape[-1] if out.ndim else 1
    bias = np.zeros(C, out.dtype) if bias is None else bias
    with threads_for(out.size):
        kernel(*(a.reshape(-1, C) for a in arrays), bias, out.reshape(-1, C))
    return out


def gelu_forward(x, bias=None):
    return _elementwise(_gelu_forward, x, (x,), bias)


def gelu_backward(dy, x, bias=None):
    return _elementwise(_gelu_backward, x, (dy, x), bias)


def quick_gelu_forward(x, bias=None):
    return _elementwise(_quick_gelu_forward, x, (x,), bias)


def quick_gelu_backward(dy, x, bias=None):
    return _elementwise(_quick_gelu_backward, x, (dy, x), bias)
