"""MultiheadAttention against torch.nn.MultiheadAttention with the same weights: both input
layouts, self- and cross-attention, causal attention, boolean and float masks, the weights
returned by need_weights=True, no bias, and the gradients of every parameter.

Self-attention runs the packed kernel (functional.attention.PackedSelfAttention): its output,
the kernel's o, is out_proj's input itself, and it agrees with the unpacked fallback in float32
and float64, with every kind of mask, in both input layouts."""
import numpy as np
import pytest

import miniclip
from miniclip import nn
from miniclip.functional import attention as F_attention
from miniclip.functional.attention import PackedSelfAttention
from tests.helpers import standard_normal
from tests.nn.torch_compare import compare_with_torch, copy_weights
from tests.tolerances import KERNEL_FLOAT32, TORCH_FLOAT64

E, H = 12, 3


def both(batch_first=True, bias=True, torch=None):
    return (nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first),
            torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first))


def self_attention(**kwargs):
    """Call a layer on (x, x, x), returning only the output."""
    return lambda layer, x: layer(x, x, x, need_weights=False, **kwargs)[0]


@pytest.mark.oracle
@pytest.mark.parametrize("batch_first, bias", [(True, True), (False, True), (True, False)],
                         ids=["batch_first", "sequence_first", "no_bias"])
def test_self_attention_matches_torch(torch, batch_first, bias):
    ours, theirs = both(batch_first, bias, torch)
    compare_with_torch(torch, ours, theirs, [standard_normal(2, 7, E)], call=self_attention())


@pytest.mark.oracle
@pytest.mark.parametrize("T", [1, 7, 77])
def test_causal_attention_matches_torch(torch, T):
    causal = np.triu(np.ones((T, T), bool), 1)              # torch's convention: True = not allowed

    def call(layer, x):
        if isinstance(layer, nn.MultiheadAttention):        # miniclip needs no mask with is_causal
            return layer(x, x, x, is_causal=True)[0]
        return layer(x, x, x, need_weights=False, attn_mask=torch.from_numpy(causal), is_causal=True)[0]

    compare_with_torch(torch, *both(torch=torch), [standard_normal(2, T, E)], call=call)


def test_causal_flag_and_causal_mask_agree():
    layer = nn.MultiheadAttention(E, H, batch_first=True).double()
    x = miniclip.tensor(standard_normal(3, 6, E))
    by_flag = layer(x, x, x, is_causal=True)[0]
    by_mask = layer(x, x, x, attn_mask=np.triu(np.ones((6, 6), bool), 1))[0]
    unmasked = layer(x, x, x)[0]
    np.testing.assert_allclose(by_flag.data, by_mask.data, **TORCH_FLOAT64)
    assert not np.allclose(by_flag.data[:, :-1], unmasked.data[:, :-1])   # the mask does something
    np.testing.assert_allclose(by_flag.data[:, -1], unmasked.data[:, -1], **TORCH_FLOAT64)  # last token sees all


@pytest.mark.oracle
def test_cross_attention_with_a_boolean_mask_matches_torch(torch):
    L, S = 5, 8
    mask = np.random.default_rng(4).random((L, S)) < 0.5     # True = not allowed
    mask[:, 3] = False                                        # every query keeps at least key 3
    mask[0] = True
    mask[0, 6] = False                                        # query 0 attends to key 6 only

    def call(layer, q, kv):
        attn_mask = mask if isinstance(layer, nn.MultiheadAttention) else torch.from_numpy(mask)
        return layer(q, kv, kv, need_weights=False, attn_mask=attn_mask)[0]

    compare_with_torch(torch, *both(torch=torch), [standard_normal(2, L, E), standard_normal(2, S, E, seed=1)], call=call)


@pytest.mark.oracle
def test_float_mask_per_batch_and_head_matches_torch(torch):
    B, T = 2, 6
    mask = -3 * np.random.default_rng(5).random((B * H, T, T))   # torch's (B * H, L, S) layout

    def call(layer, x):
        attn_mask = mask if isinstance(layer, nn.MultiheadAttention) else torch.from_numpy(mask)
        return layer(x, x, x, need_weights=False, attn_mask=attn_mask)[0]

    compare_with_torch(torch, *both(batch_first=False, torch=torch), [standard_normal(T, B, E)], call=call)


@pytest.mark.oracle
@pytest.mark.parametrize("causal", [False, True])
def test_need_weights_returns_torch_head_averaged_weights(torch, causal):
    ours, theirs = both(torch=torch)
    copy_weights(torch, ours, theirs)
    x = standard_normal(2, 5, E)
    mask = np.triu(np.ones((5, 5), bool), 1) if causal else None
    out, weights = ours(miniclip.tensor(x), miniclip.tensor(x), miniclip.tensor(x), need_weights=True,
                        is_causal=causal)
    tx = torch.from_numpy(x)
    expected, expected_weights = theirs(tx, tx, tx, need_weights=True, is_causal=causal,
                                        attn_mask=None if mask is None else torch.from_numpy(mask))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), **TORCH_FLOAT64)
    np.testing.assert_allclose(weights.data, expected_weights.detach().numpy(), **TORCH_FLOAT64)
    assert weights.shape == (2, 5, 5) and (np.triu(weights.data[0], 1) == 0).all() == causal


def test_parameters_keys_and_initialisation_follow_torch():
    miniclip.manual_seed(0)
    layer = nn.MultiheadAttention(64, 4)
    assert [(n, p.shape) for n, p in layer.named_parameters()] == [
        ("in_proj_weight", (192, 64)), ("in_proj_bias", (192,)),
        ("out_proj.weight", (64, 64)), ("out_proj.bias", (64,))]
    xavier = np.sqrt(6 / (64 + 192))
    assert 0.95 * xavier < np.abs(layer.in_proj_weight.data).max() <= xavier
    assert 0.95 / 8 < np.abs(layer.out_proj.weight.data).max() <= 1 / 8
    assert (layer.in_proj_bias.data == 0).all() and (layer.out_proj.bias.data == 0).all()
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(10, 3)


def test_dropout_acts_in_training_only():
    miniclip.manual_seed(0)
    layer = nn.MultiheadAttention(E, H, dropout=0.5, batch_first=True)
    x = miniclip.tensor(standard_normal(2, 7, E).astype(np.float32))
    training = layer(x, x, x)[0].data
    layer.eval()
    first, second = layer(x, x, x)[0].data, layer(x, x, x)[0].data
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(training, first)


@pytest.mark.parametrize("batch_first", [True, False])
def test_one_qkv_projection_equals_three(batch_first):
    """forward(x, x, x) projects q, k, v with one (E, 3E) GEMM; three distinct tensors holding
    the same values take the three-projection path. Outputs and parameter gradients agree."""
    layer = nn.MultiheadAttention(E, H, batch_first=batch_first).double()
    x = standard_normal(2, 5, E, seed=3)
    results = []
    for same in (True, False):
        layer.zero_grad()
        inputs = [miniclip.tensor(x, requires_grad=True)]
        inputs += [inputs[0]] * 2 if same else [miniclip.tensor(x, requires_grad=True) for _ in range(2)]
        out = layer(*inputs, need_weights=False)[0]
        out.backward(standard_normal(*out.shape, seed=4))
        results.append([out.data, layer.in_proj_weight.grad.copy(), layer.in_proj_bias.grad.copy(),
                        sum(t.grad for t in {id(t): t for t in inputs}.values())])
    for name, fused, separate in zip(["out", "d in_proj_weight", "d in_proj_bias", "dx"], *results):
        np.testing.assert_allclose(fused, separate, rtol=1e-10, atol=1e-12, err_msg=name)


def out_proj_inputs(layer):
    """The tensors out_proj receives from now on (the concatenated heads), in a list."""
    seen, forward = [], layer.out_proj.forward
    layer.out_proj.forward = lambda x: (seen.append(x), forward(x))[1]
    return seen


def test_self_attention_hands_the_kernels_output_to_out_proj():
    """Self-attention: out_proj's input is PackedSelfAttention's output, the very memory the
    kernel wrote o into. Cross-attention and need_weights=True take the unpacked paths."""
    layer = nn.MultiheadAttention(E, H, batch_first=True)
    seen = out_proj_inputs(layer)
    x, y = (miniclip.tensor(standard_normal(2, 5, E, seed=s).astype(np.float32), requires_grad=True) for s in (0, 1))
    layer(x, x, x)
    fn = seen[-1]._ctx
    assert isinstance(fn, PackedSelfAttention) and np.shares_memory(seen[-1].data, fn.o)
    layer(x, y, y)
    layer(x, x, x, need_weights=True)
    assert not any(isinstance(t._ctx, PackedSelfAttention) for t in seen[1:])


def masks(T):
    rng = np.random.default_rng(6)
    hidden = rng.random((T, T)) < 0.5                       # torch's boolean convention: True = not allowed
    hidden[:, 2] = False                                    # every query keeps key 2
    return {"none": {}, "causal": {"is_causal": True}, "bool": {"attn_mask": hidden},
            "float_per_batch_and_head": {"attn_mask": -3 * rng.random((2 * H, T, T))}}


@pytest.mark.parametrize("mask", masks(5))
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_self_attention_equals_the_unpacked_fallback(dtype, batch_first, mask, monkeypatch):
    """The same layer, the packed path and (packing switched off) the unpacked one: outputs, the
    input gradient and every parameter gradient agree."""
    layer = nn.MultiheadAttention(E, H, batch_first=batch_first)
    layer = layer.double() if dtype == np.float64 else layer.float()
    x = standard_normal(2, 5, E, seed=3).astype(dtype)
    if not batch_first:
        x = np.ascontiguousarray(x.swapaxes(0, 1))          # (L, B, E)
    upstream = standard_normal(*x.shape, seed=4).astype(dtype)
    results = []
    for packed in (True, False):
        if not packed:
            monkeypatch.setattr(F_attention, "_packed_fusable", lambda *args: False)
        layer.zero_grad()
        seen = out_proj_inputs(layer)
        inputs = miniclip.tensor(x, requires_grad=True)
        out = layer(inputs, inputs, inputs, **masks(5)[mask])[0]
        assert isinstance(seen[0]._ctx, PackedSelfAttention) == packed
        out.backward(upstream)
        results.append([out.data, inputs.grad] + [p.grad.copy() for p in layer.parameters()])
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else KERNEL_FLOAT32
    names = ["out", "dx"] + [name for name, _ in layer.named_parameters()]
    for name, packed, unpacked in zip(names, *results):
        np.testing.assert_allclose(packed, unpacked, **tolerance, err_msg=name)
