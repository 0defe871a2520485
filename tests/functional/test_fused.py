"""Every functional op that runs a fused kernel, against the composed version it replaced.

For layer_norm, gelu, quick_gelu, scaled_dot_product_attention, conv2d and cross_entropy, in
both kernel modes (kernels.use("fast"): Numba; kernels.use("reference"): the NumPy references):

- the public function's output was made by the Fused Function (the kernel really runs);
- its value and every input gradient match the composed oracle on the same inputs, in float64
  and float32, for the same random upstream gradient;
- the float64 gradcheck passes through the fused Function.

And the cases the kernels do not take (a boolean mask, dropout, label smoothing, dilation) must
still run, on the composed path. torch is compared with the public functions in the other test
files of this folder, which therefore run the fused paths too.
"""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from miniclip import kernels
from miniclip.functional.activation import FusedGelu, FusedQuickGelu, Gelu, quick_gelu_composed
from miniclip.functional.attention import FusedAttention, PackedSelfAttention, scaled_dot_product_attention_composed
from miniclip.functional.conv import Conv2d, FusedConv2d
from miniclip.functional.loss import CrossEntropy, FusedCrossEntropy
from miniclip.functional.normalization import FusedLayerNorm, LayerNorm
from miniclip.tensor import Tensor
from tests.helpers import make_inputs, normal
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

_rng = np.random.default_rng(7)
TARGET = np.array([10, 0, 3, 3, 1])                   # for logits (5, 11): the first and last class
ADDITIVE_5x7 = _rng.standard_normal((5, 7))
ADDITIVE_5x7[2] = -np.inf
ADDITIVE_5x7[2, 6] = 0.0                              # query 2 keeps exactly one key, the last
PADDING_2x7 = np.zeros((2, 1, 1, 7))                  # (B, 1, 1, S): batch 1 ignores its last 3 keys
PADDING_2x7[1, ..., 4:] = -np.inf
KEEP_5x5 = np.tril(np.ones((5, 5), dtype=bool))


def huge_rows(rng, shape):
    """Logits whose rows sit around +1e4, around -1e4, or mix both: a naive exp over/underflows."""
    x = 3 * rng.standard_normal(shape)
    x[0::3] += 1e4
    x[1::3] -= 1e4
    x[2::3] += 1e4 * rng.choice([-1, 1], x[2::3].shape)
    return x


def conv_composed(stride, padding):
    def fn(x, w, b=None):
        b = Tensor(np.zeros(w.shape[0], w.dtype)) if b is None else b
        return Conv2d.apply(x, w, b, stride=(stride,) * 2, padding=(padding,) * 2, dilation=(1, 1))
    return fn


def attention(**kwargs):
    """(fused public function, composed oracle) of q, k, v with the same keyword arguments."""
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs),
            lambda q, k, v: scaled_dot_product_attention_composed(q, k, v, **kwargs))


CASES = [
    # name, public (fused) fn, composed fn, Fused Function, input shapes, input maker
    ("layer_norm", lambda x, w, b: F.layer_norm(x, 13, w, b),
     lambda x, w, b: LayerNorm.apply(x, w, b), FusedLayerNorm, [(2, 3, 13), (13,), (13,)], normal),
    ("layer_norm_two_dims_one_row", lambda x, w, b: F.layer_norm(x, (5, 3), w, b),
     lambda x, w, b: LayerNorm.apply(x, w, b, n_dims=2), FusedLayerNorm, [(1, 5, 3), (5, 3), (5, 3)], normal),
    ("gelu", F.gelu, Gelu.apply, FusedGelu, [(3, 17)], lambda rng, s: 3 * rng.standard_normal(s)),
    ("quick_gelu", F.quick_gelu, quick_gelu_composed, FusedQuickGelu, [(2, 3, 7)],
     lambda rng, s: 3 * rng.standard_normal(s)),
    ("attention_no_mask", *attention(), FusedAttention, [(2, 3, 7, 4), (2, 3, 5, 4), (2, 3, 5, 4)], normal),
    ("attention_T1", *attention(), FusedAttention, [(2, 1, 1, 3), (2, 1, 1, 3), (2, 1, 1, 3)], normal),
    ("attention_causal_3d", *attention(is_causal=True), FusedAttention, [(2, 7, 3), (2, 7, 3), (2, 7, 3)],
     normal),
    ("attention_causal_cross_L5_S3", *attention(is_causal=True, scale=0.7), FusedAttention,
     [(1, 2, 5, 3), (1, 2, 3, 3), (1, 2, 3, 3)], normal),
    ("attention_additive_one_key", *attention(attn_mask=ADDITIVE_5x7), FusedAttention,
     [(2, 5, 3), (2, 7, 3), (2, 7, 3)], normal),
    ("attention_padding_mask", *attention(attn_mask=PADDING_2x7), FusedAttention,
     [(2, 2, 3, 4), (2, 2, 7, 4), (2, 2, 7, 4)], normal),
    ("conv2d_stride2_pad1", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), conv_composed(2, 1),
     FusedConv2d, [(2, 3, 7, 5), (4, 3, 3, 3), (4,)], normal),
    ("conv2d_no_bias", lambda x, w: F.conv2d(x, w), conv_composed(1, 0), FusedConv2d,
     [(1, 2, 5, 6), (3, 2, 2, 3)], normal),
    ("conv2d_patch_embedding_cut_edge", lambda x, w, b: F.conv2d(x, w, b, stride=4), conv_composed(4, 0),
     FusedConv2d, [(2, 3, 9, 8), (5, 3, 4, 4), (5,)], normal),
    ("cross_entropy_mean", lambda x: F.cross_entropy(x, TARGET), lambda x: CrossEntropy.apply(x, target=TARGET),
     FusedCrossEntropy, [(5, 11)], normal),
    ("cross_entropy_sum", lambda x: F.cross_entropy(x, TARGET, reduction="sum"),
     lambda x: CrossEntropy.apply(x, target=TARGET, reduction="sum"), FusedCrossEntropy, [(5, 11)], normal),
    ("cross_entropy_none", lambda x: F.cross_entropy(x, TARGET, reduction="none"),
     lambda x: CrossEntropy.apply(x, target=TARGET, reduction="none"), FusedCrossEntropy, [(5, 11)], normal),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(params=["fast", "reference"])
def mode(request):
    with kernels.use(request.param):
        yield request.param


def run(fn, arrays, dtype):
    """fn on fresh leaf tensors of `dtype`; returns the output tensor and the input gradients."""
    inputs = [miniclip.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out = fn(*inputs)
    out.backward(np.random.default_rng(1).standard_normal(out.shape).astype(dtype))
    return out, [x.grad for x in inputs]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, fused, composed, Fused, shapes, maker", CASES, ids=IDS)
def test_fused_matches_composed(mode, name, fused, composed, Fused, shapes, maker, dtype):
    rng = np.random.default_rng(0)
    arrays = [maker(rng, shape) for shape in shapes]
    out, grads = run(fused, arrays, dtype)
    expected, expected_grads = run(composed, arrays, dtype)
    assert isinstance(out._ctx, Fused), f"{name}: ran {type(out._ctx).__name__}, not {Fused.__name__}"
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else KERNEL_FLOAT32
    np.testing.assert_allclose(out.data, expected.data, **tolerance, err_msg=f"{name} ({mode}): output")
    for i, (g, e) in enumerate(zip(grads, expected_grads)):
        np.testing.assert_allclose(g, e, **tolerance, err_msg=f"{name} ({mode}): gradient of input {i}")


@pytest.mark.parametrize("name, fused, composed, Fused, shapes, maker", CASES, ids=IDS)
def test_fused_gradcheck(mode, name, fused, composed, Fused, shapes, maker):
    assert miniclip.gradcheck(fused, make_inputs(shapes, maker), **GRADCHECK)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_on_rows_of_1e4(mode, dtype):
    arrays = [huge_rows(np.random.default_rng(3), (7, 13))]
    target = np.arange(7) * 2
    out, (grad,) = run(lambda x: F.cross_entropy(x, target), arrays, dtype)
    expected, (expected_grad,) = run(lambda x: CrossEntropy.apply(x, target=target), arrays, np.float64)
    assert np.isfinite(out.data) and np.isfinite(grad).all()
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.data, expected.data, **tolerance)
    np.testing.assert_allclose(grad, expected_grad, **tolerance)


@pytest.mark.parametrize("T", [1, 65, 77])
def test_attention_at_clip_lengths(mode, T):
    """The text tower's causal attention at CLIP's sizes (d = 64), float32, against composed."""
    arrays = [np.random.default_rng(T).standard_normal((2, 4, T, 64)) for _ in range(3)]
    fused, composed = attention(is_causal=True)
    out, grads = run(fused, arrays, np.float32)
    expected, expected_grads = run(composed, arrays, np.float32)
    np.testing.assert_allclose(out.data, expected.data, **KERNEL_FLOAT32)
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


FALLBACKS = [
    # name, fn, input shapes: what the kernels do not take runs the composed path
    ("attention_bool_mask", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=KEEP_5x5),
     [(2, 5, 3), (2, 5, 3), (2, 5, 3)]),
    ("attention_value_width_differs", F.scaled_dot_product_attention, [(2, 5, 3), (2, 5, 3), (2, 5, 4)]),
    ("attention_mask_with_gradient",
     lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), [(5, 3), (7, 3), (7, 3), (5, 7)]),
    ("conv2d_dilation", lambda x, w: F.conv2d(x, w, dilation=2), [(1, 2, 7, 7), (3, 2, 3, 3)]),
    ("cross_entropy_label_smoothing", lambda x: F.cross_entropy(x, TARGET, label_smoothing=0.1), [(5, 11)]),
]


@pytest.mark.parametrize("name, fn, shapes", FALLBACKS, ids=[c[0] for c in FALLBACKS])
def test_what_the_kernels_do_not_take_runs_composed(mode, name, fn, shapes):
    out = fn(*make_inputs(shapes, normal))
    fused = (FusedAttention, FusedConv2d, FusedCrossEntropy)
    assert not isinstance(out._ctx, fused), f"{name} ran {type(out._ctx).__name__}"


def test_attention_with_dropout_runs_composed():
    q, k, v = make_inputs([(2, 5, 3)] * 3)
    miniclip.manual_seed(0)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert not isinstance(out._ctx, FusedAttention)


def test_multihead_attention_runs_the_fused_kernel_for_a_boolean_mask(monkeypatch):
    """nn.MultiheadAttention turns torch's boolean masks into additive ones, so the models'
    attention (causal in the text tower, none in the vision tower) always takes the kernel."""
    miniclip.manual_seed(0)
    mha = miniclip.nn.MultiheadAttention(8, 2, batch_first=True)
    x = miniclip.tensor(np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32))
    seen = []
    original = PackedSelfAttention.forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("is_causal"))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(PackedSelfAttention, "forward", spy)
    mha(x, x, x, attn_mask=~KEEP_5x5)
    mha(x, x, x, is_causal=True)
    assert seen == [False, True]
