"""miniclip.kernels.attention: every implementation against reference.py, the reference against oracles.

- One test body runs each implementation (numba_cpu, each numba_cuda version) on the same cases
  and compares o, lse, dq, dk, dv with the reference computed in float64 on the same inputs.
  CPU cases have irregular lengths (T = 1, 7, 13, 65, 77; Tq != Tk), d = 32 and 64, causal and
  additive masks, a mask that leaves one key per row. CUDA versions run in Numba's simulator on
  tiny cases (v2 with 3 x 2 tiles: a few blocks of 6 threads), and on the CPU cases on a real
  GPU (marker gpu).
- Output arrays (out=, dq=, dk=, dv=) given as strided views, as multi-head attention passes
  them, are returned, written whole, with the values of the fresh outputs, in every
  implementation and through the dispatch in both kernel modes; wrong ones raise clear errors.
- numba_cpu's own paths: causal with more keys than queries, several head groups (both pool
  threads), calls after larger ones and in the other dtype (its kept temporaries), a row whose
  every key is masked (NaN, as torch), and its fused elementwise kernels one call at a time
  against NumPy with np.exp, in float32 and float64.
- The reference's backward is checked against central finite differences (float64), and its
  forward and backward against torch's scaled_dot_product_attention (marker oracle).
"""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest

import miniclip.kernels
from miniclip.backend import to_numpy
from miniclip.kernels import attention
from miniclip.kernels.attention import numba_cpu, numba_cuda, reference
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

# A float64 kernel and the float64 reference differ only by summation order.
TOLERANCE = {np.float32: KERNEL_FLOAT32, np.float64: TORCH_FLOAT64}

# (B, H, Tq, Tk, d, is_causal, mask kind)
CPU_CASES = [
    (2, 3, 7, 7, 32, True, None),
    (1, 2, 13, 13, 64, False, None),
    (2, 2, 65, 65, 64, False, None),
    (1, 2, 77, 77, 32, True, None),
    (2, 1, 77, 77, 64, False, "padding"),
    (1, 1, 1, 1, 32, False, None),
    (1, 2, 1, 13, 32, False, None),
    (2, 2, 13, 77, 32, False, "float"),
    (1, 2, 77, 13, 32, True, None),
    (1, 2, 65, 70, 32, False, "one_key"),
]
SIMULATOR_CASES = [
    (1, 2, 5, 7, 4, False, None),
    (2, 1, 1, 1, 8, False, None),
    (1, 1, 6, 6, 4, True, None),
    (1, 1, 6, 5, 8, True, None),
    (1, 1, 5, 6, 4, False, "one_key"),
    (2, 1, 3, 5, 4, False, "padding"),
]

CPU_IMPLEMENTATIONS = {
    "reference": (reference.attention_forward, reference.attention_backward),   # its float32 path
    "numba_cpu": (numba_cpu.attention_forward, numba_cpu.attention_backward),
    # small key tiles: several tiles even at T = 13, so the rescaling by alpha is exercised
    "numba_cpu[Bc=8]": (functools.partial(numba_cpu.attention_forward, Bc=8),
                        functools.partial(numba_cpu.attention_backward, Bc=8)),
}
CUDA_IMPLEMENTATIONS = {   # tiny tiles in the simulator: a few blocks of 6 threads
    "cuda_v1": numba_cuda.VERSIONS[1],
    "cuda_v2[Br=3,Bc=2]": (functools.partial(numba_cuda.attention_forward_v2, Br=3, Bc=2),
                           functools.partial(numba_cuda.attention_backward_v2, Br=3, Bc=2)),
}
GPU_IMPLEMENTATIONS = {"cuda_v1": numba_cuda.VERSIONS[1], "cuda_v2": numba_cuda.VERSIONS[2]}


def make_inputs(case, dtype, seed=0):
    """q, k, v, mask (or None) and an upstream gradient do for one case, as NumPy arrays."""
    B, H, Tq, Tk, d, is_causal, mask_kind = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, d))
    k = rng.standard_normal((B, H, Tk, d))
    v = rng.standard_normal((B, H, Tk, d))
    do = rng.standard_normal((B, H, Tq, d))
    mask = None
    if mask_kind == "float":                      # (Tq, Tk), broadcast over batch and heads
        mask = rng.standard_normal((Tq, Tk))
    elif mask_kind == "padding":                  # (B, 1, 1, Tk): batch entry b hides its last 2b keys
        mask = np.zeros((B, 1, 1, Tk))
        for b in range(B):
            mask[b, ..., Tk - 2 * b:] = -np.inf
    elif mask_kind == "one_key":                  # (B, H, Tq, Tk): each row keeps exactly one key, near the end,
        mask = np.full((B, H, Tq, Tk), -np.inf)   # every other row with a bias of -1e4 (its scores far below 0)
        for i in range(Tq):
            mask[..., i, Tk - 1 - i % 3] = -1e4 * (i % 2)
    cast = (lambda a: None if a is None else a.astype(dtype))
    return cast(q), cast(k), cast(v), cast(mask), cast(do)


def assert_close(name, got, expected, rtol, atol):
    """assert_allclose, plus the worst element's index and values, for a readable failure."""
    got = to_numpy(got)
    excess = np.abs(got.astype(np.float64) - expected) - (atol + rtol * np.abs(expected))
    worst = np.unravel_index(np.argmax(np.nan_to_num(excess, nan=np.inf)), excess.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol,
                               err_msg=f"{name}: worst at index {worst}: expected {expected[worst]!r}, "
                                       f"got {got[worst]!r}")


def check_against_reference(forward, backward, case, dtype, xp):
    q, k, v, mask, do = make_inputs(case, dtype)
    is_causal = case[5]
    scale = 1 / np.sqrt(case[4])
    as64 = [None if a is None else a.astype(np.float64) for a in (q, k, v, mask, do)]
    o_ref, lse_ref = reference.attention_forward(*as64[:3], scale, is_causal=is_causal, mask=as64[3])
    grads_ref = reference.attention_backward(*as64[:3], o_ref, lse_ref, as64[4], scale,
                                             is_causal=is_causal, mask=as64[3])

    dev = (lambda a: None if a is None else xp.asarray(a))
    o, lse = forward(dev(q), dev(k), dev(v), scale, is_causal=is_causal, mask=dev(mask))
    grads = backward(dev(q), dev(k), dev(v), o, lse, dev(do), scale, is_causal=is_causal, mask=dev(mask))

    # Gradients are sums of terms of the size of the largest outputs, and keep those terms'
    # rounding error even where they cancel to 0 (dS = P (dP - D) is exactly 0 for a row that
    # sees one key): the absolute tolerance scales with the largest expected value.
    rtol = TOLERANCE[dtype]["rtol"]
    atol = TOLERANCE[dtype]["atol"] * max(1.0, *(np.abs(x).max() for x in (o_ref, *grads_ref)))
    for name, got, expected in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *grads), (o_ref, lse_ref, *grads_ref)):
        assert got.dtype == dtype, f"{name} has dtype {got.dtype}, expected {np.dtype(dtype)}"
        assert got.shape == expected.shape, f"{name} has shape {got.shape}, expected {expected.shape}"
        assert_close(f"{name} for case {case}, {np.dtype(dtype)}", got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CPU_CASES, ids=str)
@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_cpu_implementation_matches_reference(implementation, case, dtype):
    check_against_reference(*CPU_IMPLEMENTATIONS[implementation], case, dtype, np)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SIMULATOR_CASES, ids=str)
@pytest.mark.parametrize("implementation", CUDA_IMPLEMENTATIONS)
def test_cuda_version_matches_reference(implementation, case, dtype, cuda_xp):
    check_against_reference(*CUDA_IMPLEMENTATIONS[implementation], case, dtype, cuda_xp)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CPU_CASES, ids=str)
@pytest.mark.parametrize("implementation", GPU_IMPLEMENTATIONS)
def test_cuda_version_matches_reference_at_full_size(implementation, case, dtype, cuda_xp):
    check_against_reference(*GPU_IMPLEMENTATIONS[implementation], case, dtype, cuda_xp)


def test_large_scores_do_not_overflow():
    """Scores near 1e3: exp would overflow without subtracting the running max (float64, so the
    inputs' own rounding does not dominate)."""
    q, k, v, _, do = make_inputs((2, 2, 13, 70, 32, False, None), np.float64)
    for name in ("numba_cpu", "numba_cpu[Bc=8]"):
        o, lse = CPU_IMPLEMENTATIONS[name][0](q * 30, k * 30, v, 1.0)
        o_ref, lse_ref = reference.attention_forward(q * 30, k * 30, v, 1.0)
        assert np.isfinite(o).all() and lse_ref.max() > 500
        assert_close("o", o, o_ref, **TORCH_FLOAT64)
        assert_close("lse", lse, lse_ref, **TORCH_FLOAT64)


# --- numba_cpu's own paths -----------------------------------------------------------------------

# Causal with more keys than queries (keys past the last query get no gradient), and enough heads
# for several head groups (B * H = 80 > HEADS_PER_TASK), so both pool threads run, each with its own
# kept temporaries.
NUMBA_CPU_CASES = [
    (1, 2, 13, 30, 32, True, None),
    (40, 2, 13, 13, 8, True, None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", NUMBA_CPU_CASES, ids=str)
@pytest.mark.parametrize("implementation", ["numba_cpu", "numba_cpu[Bc=8]"])
def test_numba_cpu_paths_match_reference(implementation, case, dtype):
    check_against_reference(*CPU_IMPLEMENTATIONS[implementation], case, dtype, np)


def test_numba_cpu_kept_temporaries_do_not_leak_between_calls():
    """numba_cpu keeps each pool thread's temporaries (S, dP, K^T, V^T) from call to call: calls
    after a larger one, and after one in the other dtype, still match the reference."""
    for case, dtype in [(CPU_CASES[4], np.float64), (CPU_CASES[0], np.float32), (CPU_CASES[1], np.float64),
                        (CPU_CASES[4], np.float32)]:
        for name in ("numba_cpu", "numba_cpu[Bc=8]"):
            check_against_reference(*CPU_IMPLEMENTATIONS[name], case, dtype, np)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning", "ignore:divide by zero:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("implementation", ["numba_cpu", "numba_cpu[Bc=8]"])
def test_fully_masked_row_gives_nan(implementation, dtype):
    """A query whose every key is masked has no softmax: its output row is NaN, as the
    reference's and torch's, and its lse -inf (torch's logsumexp of no terms; the reference's
    is NaN). Its NaN reaches the backward where the reference's does (its dq row, its head's dk
    and dv) and nowhere else."""
    q, k, v, mask, do = make_inputs((2, 2, 13, 21, 8, False, "float"), dtype)
    mask = np.repeat(mask[None, None], 2, axis=1)       # (1, H, Tq, Tk)
    mask[0, 1, 4] = -np.inf                             # query 4 of head 1 sees no key
    forward, backward = CPU_IMPLEMENTATIONS[implementation]
    o, lse = forward(q, k, v, 0.5, mask=mask)
    grads = backward(q, k, v, o, lse, do, 0.5, mask=mask)
    assert np.isnan(o[:, 1, 4]).all() and (lse[:, 1, 4] == -np.inf).all()
    assert not np.isnan(o[:, 0]).any() and not np.isnan(np.delete(o[:, 1], 4, axis=1)).any()

    as64 = [a.astype(np.float64) for a in (q, k, v, mask, do)]
    o_ref, lse_ref = reference.attention_forward(*as64[:3], 0.5, mask=as64[3])
    grads_ref = reference.attention_backward(*as64[:3], o_ref, lse_ref, as64[4], 0.5, mask=as64[3])
    rtol = TOLERANCE[dtype]["rtol"]
    atol = TOLERANCE[dtype]["atol"] * max(1.0, *(np.nanmax(np.abs(x)) for x in (o_ref, *grads_ref)))
    lse_ref[:, 1, 4] = -np.inf
    for name, got, expected in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *grads), (o_ref, lse_ref, *grads_ref)):
        assert_close(f"{name} with a fully masked row, {np.dtype(dtype)}", got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_cpu_fused_tiles_match_numpy(dtype, is_causal):
    """The fused passes between numba_cpu's matmuls, one call at a time, against the same
    formulas in NumPy with np.exp. Their exp is softmax_xent's exp_nonpositive (a polynomial,
    in the scores' precision): in float64 it must agree to TORCH_FLOAT64, in float32 to
    KERNEL_FLOAT32. Two key tiles of the online softmax (the second raises the max of some rows
    and not of others; -inf scores; the causal mask starting mid-tile), the normalised single
    tile, and the backward's P and scale dS."""
    rng = np.random.default_rng(3)
    G, H, Tq, n = 2, 3, 9, 6
    scale = dtype(0.7)
    S1, S2, dP = (rng.uniform(-30, 30, (G, H, Tq, n)).astype(dtype) for _ in range(3))
    S2[:, :, ::2] -= 40                                  # even rows: the second tile does not raise the max
    # a mask (-inf at random) or the causal rule: the API takes one or the other
    bias = None if is_causal else np.where(rng.random((G, H, Tq, n)) < 0.2, -np.inf,
                                           rng.standard_normal((G, H, Tq, n))).astype(dtype)
    tol = TOLERANCE[dtype]

    def scores(S, j0):                                  # NumPy's scale S + bias, or S with keys j > i at -inf
        s = scale * S.astype(np.float64)
        future = np.arange(j0, j0 + n)[None, :] > np.arange(Tq)[:, None]
        return np.where(future, -np.inf, s) if is_causal else s + bias

    m, l, alpha = np.full((G, H, Tq), -np.inf, dtype), np.zeros((G, H, Tq), dtype), np.empty((G, H, Tq), dtype)
    m_ref, l_ref = np.full((G, H, Tq), -np.inf), np.zeros((G, H, Tq))
    for j0, S in ((0, S1.copy()), (6, S2.copy())):      # keys 0..5, then 6..11 (causal: rows 0..5 see none)
        s = scores(S, j0)
        new = np.maximum(m_ref, s.max(axis=-1))
        shift = np.where(new == -np.inf, 0, new)        # a row with no key seen yet: P = 0, l = 0
        P_ref = np.exp(s - shift[..., None])
        alpha_ref = np.where(new == -np.inf, 1, np.exp(m_ref - shift))
        l_ref = alpha_ref * l_ref + P_ref.sum(axis=-1)
        m_ref = new
        numba_cpu._online_softmax_tile(S, scale, bias, is_causal, j0, m, l, alpha, False)
        for name, got, expected in (("P", S, P_ref), ("m", m, m_ref), ("l", l, l_ref), ("alpha", alpha, alpha_ref)):
            assert_close(f"{name} after the tile at key {j0}", got, expected, **tol)

    S = S1.copy()
    m[:], l[:] = -np.inf, 0
    numba_cpu._online_softmax_tile(S, scale, bias, is_causal, 0, m, l, alpha, True)
    s = scores(S1, 0)
    P_ref = np.exp(s - s.max(axis=-1, keepdims=True))
    assert_close("P normalised", S, P_ref / P_ref.sum(axis=-1, keepdims=True), **tol)

    lse = (m + np.log(l)).astype(dtype)
    D = rng.standard_normal((G, H, Tq)).astype(dtype)
    S, dS = S1.copy(), dP.copy()
    numba_cpu._softmax_backward_tile(S, dS, scale, bias, is_causal, 0, lse, D)
    P_ref = np.exp(s - lse[..., None])
    assert_close("backward P", S, P_ref, **tol)
    assert_close("backward scale dS", dS, scale * P_ref * (dP - D[..., None]), **tol)


def head_views(xp, arrays, layout):
    """(B, H, T, d) views of (B, T, H, d) arrays, laid out as a model produces them."""
    if layout == "heads":        # x.reshape(B, T, H, d).transpose(1, 2)
        return [xp.asarray(a).swapaxes(1, 2) for a in arrays]
    if layout == "fused_qkv":    # one (B, T, 3, H, d) projection, split: rows 3*H*d apart
        qkv = xp.asarray(np.stack(arrays[:3], axis=2))
        return [qkv[:, :, i].swapaxes(1, 2) for i in range(3)] + [xp.asarray(arrays[3]).swapaxes(1, 2)]
    # "columns": transposed storage, so not even a row is contiguous (a copy is needed)
    return [xp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1))).swapaxes(-1, -2) for a in arrays]


@pytest.mark.parametrize("layout", ["heads", "fused_qkv", "columns"])
@pytest.mark.parametrize("implementation", [*CPU_IMPLEMENTATIONS, *CUDA_IMPLEMENTATIONS])
def test_non_contiguous_inputs(implementation, layout, cuda_xp):
    """q, k, v as strided views of the model's arrays; numba_cpu takes those with contiguous rows
    as they are (NumPy's matmul gives BLAS their row stride), every other one copies them."""
    forward, backward = {**CPU_IMPLEMENTATIONS, **CUDA_IMPLEMENTATIONS}[implementation]
    xp = cuda_xp if implementation in CUDA_IMPLEMENTATIONS else np
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((2, 5, 3, 4)) for _ in range(4)]             # (B, T, H, d)
    q, k, v, do = head_views(xp, arrays, layout)                                # (B, H, T, d) views
    assert not q.flags.c_contiguous and q.shape == (2, 3, 5, 4)
    o, lse = forward(q, k, v, 0.5, is_causal=True)
    grads = backward(q, k, v, o, lse, do, 0.5, is_causal=True)
    assert all(x.flags.c_contiguous for x in (o, lse, *grads))
    q, k, v, do = (np.ascontiguousarray(a.swapaxes(1, 2)) for a in arrays)
    o_ref, lse_ref = reference.attention_forward(q, k, v, 0.5, is_causal=True)
    grads_ref = reference.attention_backward(q, k, v, o_ref, lse_ref, do, 0.5, is_causal=True)
    for name, got, expected in zip(("o", "dq", "dk", "dv"), (o, *grads), (o_ref, *grads_ref)):
        assert_close(name, got, expected, **TORCH_FLOAT64)


OUTPUT_CASES = [             # self-attention (Tq = Tk): q, k, v and dq, dk, dv share one (B, T, 3, H, d) array
    (2, 3, 5, 5, 4, False, None),
    (2, 3, 5, 5, 4, True, None),
    (1, 2, 7, 7, 8, False, "float"),
    (2, 1, 6, 6, 4, False, "padding"),
]


def outputs_into_views(forward, backward, case, dtype, xp):
    """Run forward and backward twice: with fresh outputs, and with out, dq, dk, dv as views of
    NaN-filled buffers laid out as multi-head attention lays them out. Checks that the views are
    returned, that every element of the buffers is written, and that the values agree."""
    q, k, v, mask, do = make_inputs(case, dtype)
    B, H, T, _, d, is_causal, _ = case
    scale = 0.5
    q, k, v, do = head_views(xp, [a.swapaxes(1, 2) for a in (q, k, v, do)], "fused_qkv")   # (B, H, T, d) views
    mask = None if mask is None else xp.asarray(mask)
    o_fresh, lse_fresh = forward(q, k, v, scale, is_causal=is_causal, mask=mask)
    grads_fresh = backward(q, k, v, o_fresh, lse_fresh, do, scale, is_causal=is_causal, mask=mask)

    o_buffer = xp.full((B, T, H, d), np.nan, dtype)             # the heads side by side
    out = o_buffer.transpose(0, 2, 1, 3)                         # (B, H, T, d) view
    o, lse = forward(q, k, v, scale, is_causal=is_causal, mask=mask, out=out)
    grad_buffer = xp.full((B, T, 3, H, d), np.nan, dtype)       # dqkv of a packed projection
    views = tuple(grad_buffer.transpose(2, 0, 3, 1, 4))         # dq, dk, dv: (B, H, T, d) views
    grads = backward(q, k, v, o, lse, do, scale, is_causal=is_causal, mask=mask,
                     dq=views[0], dk=views[1], dv=views[2])

    assert o is out and all(g is view for g, view in zip(grads, views)), "the output arrays were not returned"
    assert not xp.isnan(o_buffer).any() and not xp.isnan(grad_buffer).any(), "an output element was not written"
    tolerance = TOLERANCE[dtype]
    for name, got, expected in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *grads),
                                   (o_fresh, lse_fresh, *grads_fresh)):
        assert_close(f"{name} written into a view, case {case}", got, to_numpy(expected), **tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", OUTPUT_CASES, ids=str)
@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_outputs_written_into_strided_views(implementation, case, dtype):
    outputs_into_views(*CPU_IMPLEMENTATIONS[implementation], case, dtype, np)


@pytest.mark.parametrize("implementation", CUDA_IMPLEMENTATIONS)
def test_cuda_outputs_written_into_strided_views(implementation, cuda_xp):
    """One tiny case in the simulator: the CUDA wrappers copy into the views (checks.write_into)."""
    outputs_into_views(*CUDA_IMPLEMENTATIONS[implementation], (1, 2, 3, 3, 4, True, None), np.float32, cuda_xp)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_dispatch_passes_the_output_arrays(mode):
    with miniclip.kernels.use(mode):
        outputs_into_views(attention.attention_forward, attention.attention_backward, OUTPUT_CASES[1],
                           np.float32, np)


@pytest.mark.parametrize("name, make, error, message", [
    ("out", lambda q: np.empty((2, 3, 5, 4)), ValueError, r"out has shape \(2, 3, 5, 4\); expected \(2, 3, 5, 8\)"),
    ("out", lambda q: np.empty(q.shape, np.float32), TypeError, "out has dtype float32; expected the inputs' float64"),
])
@pytest.mark.parametrize("implementation", ["dispatch", "reference", "numba_cuda"])
def test_bad_output_arrays_raise_clear_errors(name, make, error, message, implementation):
    forward = {"dispatch": attention.attention_forward, "reference": reference.attention_forward,
               "numba_cuda": numba_cuda.attention_forward}[implementation]
    q, k, v = good_inputs()
    with pytest.raises(error, match=message):
        forward(q, k, v, 0.5, out=make(q))


@pytest.mark.parametrize("implementation", ["dispatch", "reference", "numba_cuda"])
def test_bad_gradient_arrays_raise_clear_errors(implementation):
    backward = {"dispatch": attention.attention_backward, "reference": reference.attention_backward,
                "numba_cuda": numba_cuda.attention_backward}[implementation]
    q, k, v = good_inputs()
    o, lse = reference.attention_forward(q, k, v, 0.5)
    with pytest.raises(ValueError, match=r"dk has shape \(2, 3, 5, 8\); expected \(2, 3, 7, 8\)"):
        backward(q, k, v, o, lse, o, 0.5, dk=np.empty_like(q))


# --- the reference against independent oracles ----------------------------------------------

def numerical_vjp(f, x, g, eps):
    """sum(g * f(x)) differentiated by central differences, one element of x at a time."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        plus = np.sum(g * f(x))
        x[index] = saved - eps
        minus = np.sum(g * f(x))
        x[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("is_causal, mask_kind", [(False, None), (True, None), (False, "float"), (False, "one_key")])
def test_reference_backward_matches_finite_differences(is_causal, mask_kind):
    q, k, v, mask, do = make_inputs((1, 2, 3, 5, 4, is_causal, mask_kind), np.float64, seed=2)
    scale = 0.7
    o, lse = reference.attention_forward(q, k, v, scale, is_causal=is_causal, mask=mask)
    dq, dk, dv = reference.attention_backward(q, k, v, o, lse, do, scale, is_causal=is_causal, mask=mask)

    def output(q_, k_, v_):
        return reference.attention_forward(q_, k_, v_, scale, is_causal=is_causal, mask=mask)[0]
    numeric = (numerical_vjp(lambda x: output(x, k, v), q.copy(), do, GRADCHECK["eps"]),
               numerical_vjp(lambda x: output(q, x, v), k.copy(), do, GRADCHECK["eps"]),
               numerical_vjp(lambda x: output(q, k, x), v.copy(), do, GRADCHECK["eps"]))
    for name, analytic, expected in zip(("dq", "dk", "dv"), (dq, dk, dv), numeric):
        assert_close(name, analytic, expected, rtol=GRADCHECK["rtol"], atol=GRADCHECK["atol"])


@pytest.mark.oracle
@pytest.mark.parametrize("case", [CPU_CASES[0], CPU_CASES[4], CPU_CASES[7], CPU_CASES[8], CPU_CASES[9]], ids=str)
def test_reference_matches_torch(case, torch):
    q, k, v, mask, do = make_inputs(case, np.float64)
    is_causal = case[5]
    scale = 0.3
    o, lse = reference.attention_forward(q, k, v, scale, is_causal=is_causal, mask=mask)
    dq, dk, dv = reference.attention_backward(q, k, v, o, lse, do, scale, is_causal=is_causal, mask=mask)

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tmask = None if mask is None else torch.tensor(mask)
    to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask, is_causal=is_causal,
                                                          scale=scale)
    to.backward(torch.tensor(do))
    scores = scale * tq.detach() @ tk.detach().transpose(-1, -2)
    if is_causal:
        scores = scores.masked_fill(torch.ones(case[2], case[3], dtype=torch.bool).triu(1), -torch.inf)
    if tmask is not None:
        scores = scores + tmask
    tlse = torch.logsumexp(scores, dim=-1)
    for name, got, expected in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, dq, dk, dv),
                                   (to, tlse, tq.grad, tk.grad, tv.grad)):
        assert_close(name, got, expected.detach().numpy(), **TORCH_FLOAT64)


# --- dispatch and input checks -----------------------------------------------------------------

def test_dispatch_follows_the_kernel_mode(monkeypatch):
    calls = []
    for module in (reference, numba_cpu):
        monkeypatch.setattr(module, "attention_forward",
                            lambda *args, _name=module.__name__, **kwargs: calls.append(_name))
    q = np.ones((1, 1, 2, 4))
    attention.attention_forward(q, q, q, 1.0)
    with miniclip.kernels.use("reference"):
        attention.attention_forward(q, q, q, 1.0)
    assert calls == [numba_cpu.__name__, reference.__name__]


def good_inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 5, 8)), rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((2, 3, 7, 8))


@pytest.mark.parametrize("change, error, message", [
    (lambda q, k, v: (q[0], k, v, {}), ValueError, r"q must have shape \(B, H, T, d\)"),
    (lambda q, k, v: (q.astype(np.float32), k, v, {}), TypeError, "share one dtype"),
    (lambda q, k, v: (q.astype(np.int64), k.astype(np.int64), v.astype(np.int64), {}), TypeError, "q has dtype int64"),
    (lambda q, k, v: (q, k[..., :4], v, {}), ValueError, "k has shape"),
    (lambda q, k, v: (q, k, v[:, :, :6], {}), ValueError, "v has shape"),
    (lambda q, k, v: (q, k, v, {"mask": np.zeros((5, 6))}), ValueError, "does not broadcast"),
    (lambda q, k, v: (q, k, v, {"mask": np.ones((5, 7), dtype=bool)}), TypeError, "additive float mask"),
    (lambda q, k, v: (q, k, v, {"mask": np.zeros((5, 7)), "is_causal": True}), ValueError, "not both"),
])
@pytest.mark.parametrize("implementation", ["dispatch", "numba_cuda"])
def test_bad_inputs_raise_clear_errors(change, error, message, implementation):
    forward = attention.attention_forward if implementation == "dispatch" else numba_cuda.attention_forward
    q, k, v, kwargs = change(*good_inputs())
    with pytest.raises(error, match=message):
        forward(q, k, v, 0.5, **kwargs)


def test_backward_checks_o_lse_and_do():
    q, k, v = good_inputs()
    o, lse = attention.attention_forward(q, k, v, 0.5)
    with pytest.raises(ValueError, match=r"lse has shape \(2, 3\)"):
        attention.attention_backward(q, k, v, o, lse[..., 0], o, 0.5)
    with pytest.raises(TypeError, match="do has dtype float32"):
        attention.attention_backward(q, k, v, o, lse, o.astype(np.float32), 0.5)


def test_cuda_rejects_head_dims_above_the_shared_memory_limit():
    q = np.zeros((1, 1, 2, 130))
    with pytest.raises(ValueError, match="head dim d = 130"):
        numba_cuda.attention_forward(q, q, q, 1.0)


# --- the CUDA kernels compile for a real GPU -----------------------------------------------------

COMPILE_FOR_SM90 = """
import numpy as np
from numba import boolean, cuda, typeof
from miniclip.kernels.attention import numba_cuda
from tests.kernels.test_attention import compile_to_ptx
for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
    a4, a3, scalar = typeof(np.zeros((1,) * 4, dtype)), typeof(np.zeros((1,) * 3, dtype)), typeof(dtype.type(1))
    forward = (a4, a4, a4, scalar, boolean, a4, a4, a3)
    backward = (a4, a4, a4, a3, a3, a4, scalar, boolean, a4)
    v1, v2 = numba_cuda._kernels(dtype, 64, 1, 1), numba_cuda._kernels(dtype, 64, *numba_cuda.default_tiles(dtype))
    compile_to_ptx(dtype, {"forward_v1": (v1.forward_v1, forward), "rowsum_do_o": (v1.rowsum_do_o, (a4, a4, a3)),
                           "backward_dkdv_v1": (v1.backward_dkdv_v1, backward + (a4, a4)),
                           "backward_dq_v1": (v1.backward_dq_v1, backward + (a4,)),
                           "forward_v2": (v2.forward_v2, forward),
                           "backward_dkdv_v2": (v2.backward_dkdv_v2, backward + (a4, a4)),
                           "backward_dq_v2": (v2.backward_dq_v2, backward + (a4,))})
"""


def compile_to_ptx(dtype, kernels):
    """Compile each (kernel, signature) for sm_90 without a GPU; a float32 kernel must do no
    float64 arithmetic (a stray Python float literal would make it, ~64x slower on most GPUs).
    Called in the subprocess of run_compile_check, where numba.cuda is the real one."""
    import types
    import numba.cuda.dispatcher
    from numba import cuda
    # numba-cuda asks the current GPU for its compute capability when it compiles a device
    # function, and there is none: answer for it.
    numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    for name, (kernel, signature) in kernels.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        float64_ops = [line for line in ptx.splitlines() if ".f64" in line and line.split()[0].startswith(
            ("add", "sub", "mul", "fma", "div", "sqrt", "ex2", "lg2"))]
        assert dtype == np.float64 or not float64_ops, f"{name} ({dtype}) does float64 arithmetic: {float64_ops[:3]}"


def run_compile_check(script):
    """Run `script` in a fresh Python without Numba's simulator; skip where libNVVM is missing."""
    if os.environ.get("MINICLIP_REAL_GPU") == "1":
        pytest.skip("on a real GPU the kernels themselves are compiled and run")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    probe = "from numba import cuda\ncuda.compile_ptx(lambda x: None, 'void(float32[:])', cc=(9, 0))"
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
        pytest.skip("numba.cuda cannot compile here (no libNVVM from a CUDA toolkit)")
    repository = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=repository, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_cuda_kernels_compile_for_a_real_gpu():
    """The simulator runs kernels as Python and accepts what the CUDA compiler rejects (a shared
    array whose shape is not a compile-time constant, a tuple a kernel cannot type): compile every
    version for sm_90, as on an H100/H200, with NVVM."""
    run_compile_check(COMPILE_FOR_SM90)
