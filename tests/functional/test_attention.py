"""scaled_dot_product_attention: float64 gradcheck and torch on the same inputs (the output and
the gradients of query, key, value, and of an additive mask), for T = 1, T = 7, cross-attention,
causal, boolean masks (one row keeps exactly one key) and additive masks; clear errors.

packed_self_attention (multi-head self-attention over one packed q/k/v projection), in both
kernel modes: float64 gradcheck through PackedSelfAttention, its value and gradient against the
unpacked paths (float32 and float64, causal, additive masks, B = 2, L = 5, H = 3, D = 4, L = 1,
one head), that it copies no layout (its output is the kernel's saved o, the kernel writes dqkv),
its fallbacks (dropout, a mask with a gradient, float16) and its errors."""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from miniclip.functional import attention as F_attention
from miniclip.functional.attention import (PackedSelfAttention, packed_self_attention_composed,
                                           scaled_dot_product_attention_composed)
from tests.helpers import assert_matches_torch, make_inputs, normal
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

_rng = np.random.default_rng(5)
KEEP_7x7 = _rng.random((7, 7)) > 0.4
KEEP_7x7[:, 0] = True                              # every query keeps at least one key ...
KEEP_7x7[2] = np.arange(7) == 4                    # ... and query 2 keeps exactly one, key 4
KEEP_PER_BATCH = _rng.random((2, 1, 3, 5)) > 0.5   # (B, 1, L, S): broadcast over the heads
KEEP_PER_BATCH[..., 1] = True
ADDITIVE_7x7 = _rng.standard_normal((7, 7))
ADDITIVE_7x7[3, [0, 5]] = -np.inf                  # an additive mask may drop keys with -inf


def sdpa(**kwargs):
    """The miniclip and the torch function of q, k, v with the same keyword arguments."""
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs),
            lambda t, q, k, v: t.nn.functional.scaled_dot_product_attention(q, k, v, **_torch_args(t, kwargs)))


def _torch_args(t, kwargs):
    return {name: t.tensor(value) if isinstance(value, np.ndarray) else value for name, value in kwargs.items()}


CASES = [
    # name, (miniclip fn, torch fn), shapes of q, k, v (and an additive mask)
    ("T1", sdpa(), [(2, 3, 1, 5), (2, 3, 1, 5), (2, 3, 1, 4)]),
    ("T7_no_heads", sdpa(), [(2, 7, 5), (2, 7, 5), (2, 7, 3)]),
    ("T7_causal", sdpa(is_causal=True), [(1, 2, 7, 3), (1, 2, 7, 3), (1, 2, 7, 3)]),
    ("causal_cross_L3_S5", sdpa(is_causal=True), [(2, 3, 4), (2, 5, 4), (2, 5, 2)]),
    ("bool_mask_one_key_in_a_row", sdpa(attn_mask=KEEP_7x7), [(2, 7, 3), (2, 7, 3), (2, 7, 5)]),
    ("bool_mask_per_batch", sdpa(attn_mask=KEEP_PER_BATCH), [(2, 2, 3, 3), (2, 2, 5, 3), (2, 2, 5, 3)]),
    ("additive_mask_with_inf_scale", sdpa(attn_mask=ADDITIVE_7x7, scale=0.3),
     [(1, 7, 5), (1, 7, 5), (1, 7, 5)]),
    ("additive_mask_gradient",
     (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
      lambda t, q, k, v, m: t.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)),
     [(2, 5, 3), (2, 7, 3), (2, 7, 3), (1, 5, 7)]),
]


@pytest.mark.parametrize("name, fns, shapes", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fns, shapes):
    assert miniclip.gradcheck(fns[0], make_inputs(shapes, normal), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fns, shapes", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fns, shapes):
    assert_matches_torch(torch, *fns, make_inputs(shapes, normal))


def test_a_row_that_keeps_one_key_copies_that_value():
    q, k, v = make_inputs([(2, 7, 3), (2, 7, 3), (2, 7, 5)])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=KEEP_7x7)
    np.testing.assert_allclose(out.data[:, 2], v.data[:, 4], rtol=1e-15)


def test_dropout_p_draws_from_the_seeded_generator():
    q, k, v = make_inputs([(2, 7, 3), (2, 7, 3), (2, 7, 5)])
    outs = []
    for _ in range(2):
        miniclip.manual_seed(11)
        outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).data)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], F.scaled_dot_product_attention(q, k, v).data)


BAD = [
    # shapes of q, k, v, keyword arguments, words the message must contain
    ([(2, 7, 3), (2, 7, 4), (2, 7, 3)], {}, r"got query \(2, 7, 3\), key \(2, 7, 4\), value \(2, 7, 3\)"),
    ([(2, 7, 3), (2, 7, 3), (2, 5, 3)], {}, r"value \(2, 5, 3\)"),
    ([(2, 7, 3), (2, 7, 3), (2, 7, 3)], {"attn_mask": KEEP_7x7, "is_causal": True}, r"not both"),
]


@pytest.mark.parametrize("shapes, kwargs, message", BAD)
def test_bad_input_gives_a_clear_error(shapes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.scaled_dot_product_attention(*make_inputs(shapes), **kwargs)


# --- self-attention over a packed q/k/v projection ---------------------------------------------

PACKED_MASKS = {                                   # additive masks broadcastable to (B, H, L, L) = (2, 3, 5, 5)
    "LxL_with_inf": np.where(_rng.random((5, 5)) > 0.3, _rng.standard_normal((5, 5)), -np.inf),
    "per_batch_and_head": -3 * _rng.random((2, 3, 5, 5)),
}
PACKED_MASKS["LxL_with_inf"][:, 1] = 0.5           # every query keeps key 1
PACKED_CASES = [
    # name, (B, L, H, D), keyword arguments
    ("B2_L5_H3_D4", (2, 5, 3, 4), {}),
    ("causal", (2, 5, 3, 4), {"is_causal": True}),
    ("additive_mask_LxL_with_inf", (2, 5, 3, 4), {"attn_mask": PACKED_MASKS["LxL_with_inf"]}),
    ("additive_mask_per_batch_and_head_scale", (2, 5, 3, 4),
     {"attn_mask": PACKED_MASKS["per_batch_and_head"], "scale": 0.3}),
    ("L1", (3, 1, 2, 3), {}),
    ("one_head_L7_causal", (1, 7, 1, 5), {"is_causal": True}),
]
PACKED_IDS = [c[0] for c in PACKED_CASES]


def unpacked_composed(qkv, num_heads, attn_mask=None, is_causal=False, scale=None):
    """The heads split and merged by autograd around the composed softmax: no kernel at all."""
    B, L, E3 = qkv.shape
    q, k, v = (t.reshape(B, L, num_heads, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))   # (B, H, L, D)
    out = scaled_dot_product_attention_composed(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    return out.transpose(1, 2).reshape(B, L, E3 // 3)                                           # (B, L, E)


PACKED_ORACLES = {"unpacked": packed_self_attention_composed, "composed": unpacked_composed}


@pytest.fixture(params=["fast", "reference"])
def kernel_mode(request):
    with miniclip.kernels.use(request.param):
        yield request.param


def qkv_input(shape, dtype, seed=0):
    B, L, H, D = shape
    return np.random.default_rng(seed).standard_normal((B, L, 3 * H * D)).astype(dtype)


def packed_and_gradient(fn, qkv, num_heads, kwargs):
    """fn(qkv) on a fresh leaf, and the gradient of qkv for a fixed random upstream gradient."""
    x = miniclip.tensor(qkv, requires_grad=True)
    out = fn(x, num_heads, **kwargs)
    out.backward(np.random.default_rng(1).standard_normal(out.shape).astype(qkv.dtype))
    return out, x.grad


@pytest.mark.parametrize("name, shape, kwargs", PACKED_CASES, ids=PACKED_IDS)
def test_packed_gradcheck(name, shape, kwargs, kernel_mode):
    qkv = miniclip.tensor(qkv_input(shape, np.float64), requires_grad=True)
    assert isinstance(F_attention.packed_self_attention(qkv, shape[2], **kwargs)._ctx, PackedSelfAttention)
    assert miniclip.gradcheck(lambda x: F_attention.packed_self_attention(x, shape[2], **kwargs), [qkv],
                              **GRADCHECK)


@pytest.mark.parametrize("oracle", PACKED_ORACLES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, shape, kwargs", PACKED_CASES, ids=PACKED_IDS)
def test_packed_matches_the_unpacked_paths(name, shape, kwargs, dtype, oracle, kernel_mode):
    """PackedSelfAttention against the heads split by chunk/reshape/transpose around the fused
    scaled_dot_product_attention ("unpacked", the fallback) and around the composed softmax."""
    qkv = qkv_input(shape, dtype)
    out, dqkv = packed_and_gradient(F_attention.packed_self_attention, qkv, shape[2], kwargs)
    assert isinstance(out._ctx, PackedSelfAttention) and out.dtype == dqkv.dtype == dtype
    expected, expected_dqkv = packed_and_gradient(PACKED_ORACLES[oracle], qkv, shape[2], kwargs)
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else KERNEL_FLOAT32
    np.testing.assert_allclose(out.data, expected.data, **tolerance, err_msg="output")
    np.testing.assert_allclose(dqkv, expected_dqkv, **tolerance, err_msg="gradient of qkv")


def test_packed_output_is_the_saved_o_and_the_kernel_writes_dqkv(monkeypatch):
    """No layout copy either way: the (B, L, E) output shares the memory the kernel wrote o into
    (and saved for the backward), and the kernel's dq, dk, dv are views of the returned dqkv."""
    written = {}
    backward = F_attention.attention_kernels.attention_backward

    def spy(*args, dq=None, dk=None, dv=None, **kwargs):
        written.update(dq=dq, dk=dk, dv=dv)
        return backward(*args, dq=dq, dk=dk, dv=dv, **kwargs)
    monkeypatch.setattr(F_attention.attention_kernels, "attention_backward", spy)
    qkv = miniclip.tensor(qkv_input((2, 5, 3, 4), np.float32), requires_grad=True)
    out = F_attention.packed_self_attention(qkv, 3)
    fn = out._ctx
    assert out.shape == (2, 5, 12) and np.shares_memory(out.data, fn.o)
    np.testing.assert_array_equal(out.data.reshape(2, 5, 3, 4).transpose(0, 2, 1, 3), fn.o)
    assert all(np.shares_memory(x, qkv.data) for x in (fn.q, fn.k, fn.v))
    dqkv = fn.backward(np.ones(out.shape, np.float32))       # what autograd receives (a leaf's .grad is a copy)
    assert dqkv.shape == (2, 5, 36)
    for index, name in enumerate(("dq", "dk", "dv")):
        assert np.shares_memory(written[name], dqkv), f"{name} was not written into dqkv"
        np.testing.assert_array_equal(dqkv.reshape(2, 5, 3, 3, 4)[:, :, index].transpose(0, 2, 1, 3), written[name])


def test_packed_falls_back_where_the_kernel_does_not_apply():
    """Dropout, a mask that needs a gradient, float16: the unpacked path, still correct."""
    qkv = miniclip.tensor(qkv_input((2, 5, 3, 4), np.float64), requires_grad=True)
    miniclip.manual_seed(3)
    dropped = F_attention.packed_self_attention(qkv, 3, dropout_p=0.5)
    miniclip.manual_seed(3)
    np.testing.assert_array_equal(dropped.data, packed_self_attention_composed(qkv, 3, dropout_p=0.5).data)
    assert not isinstance(dropped._ctx, PackedSelfAttention)

    mask = miniclip.tensor(PACKED_MASKS["per_batch_and_head"], requires_grad=True)
    assert miniclip.gradcheck(lambda x, m: F_attention.packed_self_attention(x, 3, attn_mask=m), [qkv, mask],
                              **GRADCHECK)
    assert not isinstance(F_attention.packed_self_attention(qkv, 3, attn_mask=mask)._ctx, PackedSelfAttention)

    half = F_attention.packed_self_attention(miniclip.tensor(qkv_input((2, 5, 3, 4), np.float16)), 3)
    assert half.dtype == np.float16 and half.shape == (2, 5, 12)


@pytest.mark.parametrize("shape, kwargs, message", [
    ((2, 5, 36), {"num_heads": 5}, r"E divisible by num_heads = 5, got \(2, 5, 36\)"),
    ((2, 5, 3, 36), {"num_heads": 3}, r"expected qkv \(B, L, 3 E\)"),
    ((2, 5, 36), {"num_heads": 3, "is_causal": True, "attn_mask": np.zeros((5, 5))}, "not both"),
])
def test_packed_bad_input_gives_a_clear_error(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F_attention.packed_self_attention(miniclip.tensor(np.ones(shape)), **kwargs)
