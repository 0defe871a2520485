"""miniclip.kernels.conv2d: every implementation against reference.py, the reference against oracles.

- One test body runs each implementation (numba_cpu, the patch-embedding path, each numba_cuda
  version) and compares y, dx, dw, db with the reference computed in float64 on the same
  inputs: odd image sizes, prime channel counts, stride 2, padding 1 and 3, 1x1 and 7x7 and
  non-square kernels, images that are not a whole number of patches. CUDA versions run in
  Numba's simulator on tiny cases, and on the CPU cases on a real GPU (marker gpu).
- The reference's backward is checked against central finite differences (float64), and its
  forward and backward against torch.nn.functional.conv2d (marker oracle).
"""
import numpy as np
import pytest

import miniclip.kernels
from miniclip.backend import to_numpy
from miniclip.kernels import conv2d
from miniclip.kernels.conv2d import checks, numba_cpu, numba_cuda, patch_embed, reference
from tests.kernels.test_attention import assert_close, numerical_vjp
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

# A float64 kernel and the float64 reference differ only by summation order.
TOLERANCE = {np.float32: KERNEL_FLOAT32, np.float64: TORCH_FLOAT64}

# (N, C, H, W, OC, (KH, KW), stride, padding)
CPU_CASES = [
    (2, 3, 9, 7, 5, (3, 3), 1, 1),
    (3, 5, 11, 13, 7, (3, 3), 2, 1),
    (2, 7, 8, 8, 11, (1, 1), 1, 0),
    (1, 3, 17, 15, 4, (7, 7), 2, 3),
    (2, 4, 10, 9, 3, (2, 2), 2, 0),          # a patch embedding
    (1, 1, 1, 1, 2, (1, 1), 1, 0),
    (1, 3, 6, 9, 2, (2, 3), (1, 2), (1, 0)),
]
PATCH_CASES = [
    (2, 3, 16, 16, 5, (4, 4), 4, 0),
    (3, 3, 13, 11, 7, (4, 4), 4, 0),         # 13 x 11 is not a whole number of 4 x 4 patches
    (1, 2, 8, 8, 3, (8, 8), 8, 0),           # one patch
    (2, 3, 9, 10, 4, (3, 2), (3, 2), 0),
]
SIMULATOR_CASES = [
    (1, 2, 4, 5, 2, (3, 3), 1, 1),
    (1, 2, 7, 6, 3, (3, 3), 2, 1),
    (2, 1, 4, 4, 2, (2, 2), 2, 0),
    (1, 3, 5, 4, 2, (1, 3), (1, 2), (0, 1)),
]

CPU_IMPLEMENTATIONS = {
    "reference": (reference.conv2d_forward, reference.conv2d_backward),     # its float32 path
    "numba_cpu": (numba_cpu.conv2d_forward, numba_cpu.conv2d_backward),
}
PATCH_IMPLEMENTATIONS = {"patch_embed": (patch_embed.conv2d_forward, patch_embed.conv2d_backward)}
CUDA_IMPLEMENTATIONS = {"cuda_v1": numba_cuda.VERSIONS[1], "cuda_v2": numba_cuda.VERSIONS[2]}


def make_inputs(case, dtype, seed=0):
    """x, w, b, dy as NumPy arrays, and the stride and padding of one case."""
    N, C, H, W, OC, (KH, KW), stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((OC, C, KH, KW))
    b = rng.standard_normal(OC)
    OH, OW = checks.output_size(H, W, KH, KW, checks.pair(stride, "stride"), checks.pair(padding, "padding"))
    dy = rng.standard_normal((N, OC, OH, OW))
    return x.astype(dtype), w.astype(dtype), b.astype(dtype), dy.astype(dtype), stride, padding


def check_against_reference(forward, backward, case, dtype, xp, with_bias=True):
    x, w, b, dy, stride, padding = make_inputs(case, dtype)
    b = b if with_bias else None
    as64 = (lambda a: None if a is None else a.astype(np.float64))
    y_ref = reference.conv2d_forward(as64(x), as64(w), as64(b), stride, padding)
    grads_ref = reference.conv2d_backward(as64(dy), as64(x), as64(w), stride, padding)

    dev = (lambda a: None if a is None else xp.asarray(a))
    y = forward(dev(x), dev(w), dev(b), stride, padding)
    grads = backward(dev(dy), dev(x), dev(w), stride, padding)

    # Every output is a sum of C*KH*KW (or N*OH*OW) products: the absolute tolerance scales with
    # the largest expected value, since float32 rounds each term, not only the (maybe small) sum.
    rtol = TOLERANCE[dtype]["rtol"]
    atol = TOLERANCE[dtype]["atol"] * max(1.0, *(np.abs(a).max() for a in (y_ref, *grads_ref)))
    for name, got, expected in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref)):
        assert got.dtype == dtype, f"{name} has dtype {got.dtype}, expected {np.dtype(dtype)}"
        assert got.shape == expected.shape, f"{name} has shape {got.shape}, expected {expected.shape}"
        assert_close(f"{name} for case {case}, {np.dtype(dtype)}", got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CPU_CASES, ids=str)
@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_cpu_implementation_matches_reference(implementation, case, dtype):
    check_against_reference(*CPU_IMPLEMENTATIONS[implementation], case, dtype, np)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", PATCH_CASES, ids=str)
@pytest.mark.parametrize("implementation", [*CPU_IMPLEMENTATIONS, *PATCH_IMPLEMENTATIONS])
def test_patch_embedding_matches_reference(implementation, case, dtype, with_bias):
    implementations = {**CPU_IMPLEMENTATIONS, **PATCH_IMPLEMENTATIONS}
    check_against_reference(*implementations[implementation], case, dtype, np, with_bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SIMULATOR_CASES, ids=str)
@pytest.mark.parametrize("implementation", CUDA_IMPLEMENTATIONS)
def test_cuda_version_matches_reference(implementation, case, dtype, cuda_xp):
    check_against_reference(*CUDA_IMPLEMENTATIONS[implementation], case, dtype, cuda_xp)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CPU_CASES + PATCH_CASES, ids=str)
@pytest.mark.parametrize("implementation", [*CUDA_IMPLEMENTATIONS, *PATCH_IMPLEMENTATIONS])
def test_cuda_version_matches_reference_at_full_size(implementation, case, dtype, cuda_xp):
    x, w, _, _, stride, padding = make_inputs(case, dtype)
    if implementation == "patch_embed" and not patch_embed.is_patch_embedding(w, stride, padding):
        pytest.skip("not a patch embedding")
    implementations = {**CUDA_IMPLEMENTATIONS, **PATCH_IMPLEMENTATIONS}
    check_against_reference(*implementations[implementation], case, dtype, cuda_xp)


@pytest.mark.parametrize("implementation", ["numba_cpu", "patch_embed", *CUDA_IMPLEMENTATIONS])
def test_non_contiguous_inputs(implementation, cuda_xp):
    """x and w as transposed views, as an NHWC tensor permuted to NCHW."""
    forward, backward = {**CPU_IMPLEMENTATIONS, **PATCH_IMPLEMENTATIONS, **CUDA_IMPLEMENTATIONS}[implementation]
    xp = cuda_xp if implementation in CUDA_IMPLEMENTATIONS else np
    rng = np.random.default_rng(1)
    x_nhwc, w_nhwc = rng.standard_normal((2, 6, 4, 3)), rng.standard_normal((5, 2, 2, 3))
    x, w = (xp.asarray(a).transpose(0, 3, 1, 2) for a in (x_nhwc, w_nhwc))     # (N, C, H, W) views
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y = forward(x, w, None, 2, 0)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx, dw, db = backward(dy, x, w, 2, 0)
    x, w = (np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in (x_nhwc, w_nhwc))
    y_ref = reference.conv2d_forward(x, w, None, 2, 0)
    dx_ref, dw_ref, db_ref = reference.conv2d_backward(to_numpy(dy), x, w, 2, 0)
    for name, got, expected in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), (y_ref, dx_ref, dw_ref, db_ref)):
        assert_close(name, got, expected, **TORCH_FLOAT64)


@pytest.mark.parametrize("implementation", ["reference", "numba_cpu", "patch_embed", *CUDA_IMPLEMENTATIONS])
def test_without_dx_gives_the_same_dw_and_db(implementation, cuda_xp):
    """need_dx=False (an image batch needs no gradient) returns dx None and changes nothing else."""
    backward = {**CPU_IMPLEMENTATIONS, **PATCH_IMPLEMENTATIONS, **CUDA_IMPLEMENTATIONS}[implementation][1]
    xp = cuda_xp if implementation in CUDA_IMPLEMENTATIONS else np
    x, w, _, dy, stride, padding = (xp.asarray(a) if isinstance(a, np.ndarray) else a
                                    for a in make_inputs((2, 3, 6, 4, 2, (2, 2), 2, 0), np.float64))
    _, dw, db = backward(dy, x, w, stride, padding)
    dx, dw_alone, db_alone = backward(dy, x, w, stride, padding, need_dx=False)
    assert dx is None
    assert_close("dw", dw_alone, dw, **TORCH_FLOAT64)
    assert_close("db", db_alone, db, **TORCH_FLOAT64)


def test_patch_path_writes_channels_last_and_reads_its_gradient_without_a_copy():
    """y (N, OC, OH, OW) is a view of (N, OH, OW, OC) memory: the ViT's tokens (N, OH*OW, OC) are a view."""
    x, w, b, _, stride, padding = make_inputs((2, 3, 8, 8, 5, (4, 4), 4, 0), np.float32)
    y = patch_embed.conv2d_forward(x, w, b, stride, padding)                  # (2, 5, 2, 2)
    tokens = y.reshape(2, 5, 4).transpose(0, 2, 1)                            # (N, OH*OW, OC)
    assert tokens.flags.c_contiguous and np.shares_memory(tokens, y)
    dy_tokens = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    dy = dy_tokens.transpose(0, 2, 1).reshape(2, 5, 2, 2)                     # the gradient in y's layout
    dx, dw, db = patch_embed.conv2d_backward(dy, x, w, stride, padding)
    expected = reference.conv2d_backward(np.ascontiguousarray(dy), x, w, stride, padding)
    for name, got, want in zip(("dx", "dw", "db"), (dx, dw, db), expected):
        assert_close(name, got, want, **TOLERANCE[np.float32])


# --- the reference against independent oracles ----------------------------------------------

@pytest.mark.parametrize("case", [(2, 2, 5, 4, 3, (3, 3), 2, 1), (1, 3, 4, 6, 2, (2, 3), (2, 1), (0, 1))], ids=str)
def test_reference_backward_matches_finite_differences(case):
    x, w, b, dy, stride, padding = make_inputs(case, np.float64, seed=3)
    dx, dw, db = reference.conv2d_backward(dy, x, w, stride, padding)
    eps = GRADCHECK["eps"]
    numeric = (numerical_vjp(lambda x_: reference.conv2d_forward(x_, w, b, stride, padding), x.copy(), dy, eps),
               numerical_vjp(lambda w_: reference.conv2d_forward(x, w_, b, stride, padding), w.copy(), dy, eps),
               numerical_vjp(lambda b_: reference.conv2d_forward(x, w, b_, stride, padding), b.copy(), dy, eps))
    for name, analytic, expected in zip(("dx", "dw", "db"), (dx, dw, db), numeric):
        assert_close(name, analytic, expected, rtol=GRADCHECK["rtol"], atol=GRADCHECK["atol"])


@pytest.mark.oracle
@pytest.mark.parametrize("case", CPU_CASES + PATCH_CASES[1:2], ids=str)
def test_reference_matches_torch(case, torch):
    x, w, b, dy, stride, padding = make_inputs(case, np.float64)
    y = reference.conv2d_forward(x, w, b, stride, padding)
    dx, dw, db = reference.conv2d_backward(dy, x, w, stride, padding)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    ty.backward(torch.tensor(dy))
    for name, got, expected in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), (ty, tx.grad, tw.grad, tb.grad)):
        assert_close(name, got, expected.detach().numpy(), **TORCH_FLOAT64)


# --- dispatch and input checks -----------------------------------------------------------------

def test_dispatch_picks_the_patch_path_and_follows_the_kernel_mode(monkeypatch):
    calls = []
    for module in (reference, numba_cpu, patch_embed):
        monkeypatch.setattr(module, "conv2d_forward",
                            lambda *args, _name=module.__name__.split(".")[-1]: calls.append(_name))
    x, w3, w4 = np.ones((1, 2, 8, 8)), np.ones((3, 2, 3, 3)), np.ones((3, 2, 4, 4))
    conv2d.conv2d_forward(x, w3, None, 1, 1)
    conv2d.conv2d_forward(x, w4, None, 4, 0)
    conv2d.conv2d_forward(x, w4, None, (4, 4), (0, 0))
    conv2d.conv2d_forward(x, w4, None, 4, 1)          # padded: not a patch embedding
    with miniclip.kernels.use("reference"):
        conv2d.conv2d_forward(x, w4, None, 4, 0)
    assert calls == ["numba_cpu", "patch_embed", "patch_embed", "numba_cpu", "reference"]


def good_inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)


@pytest.mark.parametrize("change, error, message", [
    (lambda x, w, b: (x[0], w, b, 1, 1), ValueError, r"x must have shape \(N, C, H, W\)"),
    (lambda x, w, b: (x, w[0], b, 1, 1), ValueError, r"w must have shape \(OC, C, KH, KW\)"),
    (lambda x, w, b: (x, w[:, :2], b, 1, 1), ValueError, "w has 2 input channels"),
    (lambda x, w, b: (x, w, b[:3], 1, 1), ValueError, r"b must have shape \(OC,\)"),
    (lambda x, w, b: (x, w.astype(np.float32), b, 1, 1), TypeError, "share one dtype"),
    (lambda x, w, b: (x.astype(np.int32), w, b, 1, 1), TypeError, "x has dtype int32"),
    (lambda x, w, b: (x, w, b, 0, 1), ValueError, "stride must be >= 1"),
    (lambda x, w, b: (x, w, b, 1, -1), ValueError, "padding >= 0"),
    (lambda x, w, b: (x, w, b, 1.5, 1), TypeError, "stride must be an int or a pair"),
    (lambda x, w, b: (x[:, :, :2, :2], w, b, 1, 0), ValueError, "does not fit"),
])
@pytest.mark.parametrize("implementation", ["dispatch", "numba_cuda"])
def test_bad_inputs_raise_clear_errors(change, error, message, implementation):
    forward = conv2d.conv2d_forward if implementation == "dispatch" else numba_cuda.conv2d_forward
    with pytest.raises(error, match=message):
        forward(*change(*good_inputs()))


def test_backward_checks_dy():
    x, w, b = good_inputs()
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 6, 6\); expected \(N, OC, OH, OW\) = \(2, 4, 7, 7\)"):
        conv2d.conv2d_backward(np.zeros((2, 4, 6, 6)), x, w, 1, 1)
    with pytest.raises(TypeError, match="dy has dtype float32"):
        conv2d.conv2d_backward(np.zeros((2, 4, 7, 7), np.float32), x, w, 1, 1)


def test_patch_path_refuses_other_convolutions():
    x, w, b = good_inputs()
    with pytest.raises(ValueError, match="needs kernel == stride and padding 0"):
        patch_embed.conv2d_forward(x, w, b, 1, 1)


# --- the CUDA kernels compile for a real GPU -----------------------------------------------------

COMPILE_FOR_SM90 = """
import numpy as np
from numba import int64, typeof
from miniclip.kernels.conv2d import numba_cuda
from tests.kernels.test_attention import compile_to_ptx
for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
    a4, a2, a1 = (typeof(np.zeros((1,) * n, dtype)) for n in (4, 2, 1))
    K, i = numba_cuda._kernels(dtype), int64
    compile_to_ptx(dtype, {"forward_v1": (K.forward_v1, (a4, a4, a1, i, i, i, i, a4)),
                           "backward_dx_v1": (K.backward_dx_v1, (a4, a4, i, i, i, i, a4)),
                           "backward_dw_v1": (K.backward_dw_v1, (a4, a4, i, i, i, i, a4)),
                           "im2col_v2": (K.im2col_v2, (a4,) + (i,) * 8 + (a2,)),
                           "col2im_v2": (K.col2im_v2, (a2,) + (i,) * 8 + (a4,))})
"""


@pytest.mark.slow
def test_cuda_kernels_compile_for_a_real_gpu():
    """Compile every version for sm_90 with NVVM: the simulator accepts code the CUDA compiler
    rejects (the helpers live in test_attention.py)."""
    from tests.kernels.test_attention import run_compile_check
    run_compile_check(COMPILE_FOR_SM90)
