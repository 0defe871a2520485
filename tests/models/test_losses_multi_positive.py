"""The multi-positive (UniCL) forms of clip_loss and siglip_loss, and the keys the trainer makes.

Without a repeated key both are the one-hot losses exactly; with repeats, the fused clip_loss
(FusedMultiPositiveClipLoss) against the composed soft-target cross-entropies in both kernel
modes, float64 gradcheck of both paths (features and logit_scale), and torch's F.cross_entropy
with probability targets / binary_cross_entropy_with_logits on the same inputs.
"""
import numpy as np
import pytest

import miniclip
from miniclip import kernels
from miniclip.functional import normalize
from miniclip.losses import (FusedClipLoss, FusedMultiPositiveClipLoss, clip_loss, clip_loss_composed,
                             siglip_loss)
from tests.helpers import make_inputs, normal
from tests.models.test_losses import features, run
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

# Keys with a pair, a triple and singletons; B = 7.
KEYS = np.array([3, 0, 3, 5, 0, 0, 9])


@pytest.fixture(params=["fast", "reference"])
def mode(request):
    with kernels.use(request.param):
        yield request.param


def with_keys(loss_fn, keys):
    return lambda *inputs: loss_fn(*inputs, keys=keys)


def test_keys_that_never_repeat_give_the_one_hot_loss_exactly(mode):
    arrays = features(7, 5, seed=1, scale=14.3)
    loss, grads = run(with_keys(clip_loss, np.array([4, 1, 0, 2, 6, 5, 3])), arrays, np.float32)
    expected, expected_grads = run(clip_loss, arrays, np.float32)
    assert isinstance(loss._ctx, FusedClipLoss)
    assert loss.data == expected.data
    for g, e in zip(grads, expected_grads):
        np.testing.assert_array_equal(g, e)
    loss, _ = run(with_keys(siglip_loss, np.arange(7)), [*arrays, np.array(-3.0)], np.float64)
    assert loss.data == run(siglip_loss, [*arrays, np.array(-3.0)], np.float64)[0].data


def test_the_multi_positive_targets_reduce_to_the_one_hot_loss_without_repeats(mode):
    """The correction terms themselves (not the dispatch) vanish when T = eye(B)."""
    arrays = features(6, 4, seed=2, scale=9.0)
    sims = miniclip.tensor(arrays[0] @ arrays[1].T, requires_grad=True)
    scale = miniclip.tensor(arrays[2], requires_grad=True)
    loss = FusedMultiPositiveClipLoss.apply(sims, scale, targets=np.eye(6))
    loss.backward(np.asarray(1.3))
    expected_sims, expected_scale = (miniclip.tensor(a, requires_grad=True) for a in (sims.data, arrays[2]))
    expected = FusedClipLoss.apply(expected_sims, expected_scale)
    expected.backward(np.asarray(1.3))
    np.testing.assert_allclose(loss.data, expected.data, **TORCH_FLOAT64)
    np.testing.assert_allclose(sims.grad, expected_sims.grad, **TORCH_FLOAT64)
    np.testing.assert_allclose(scale.grad, expected_scale.grad, **TORCH_FLOAT64)


def test_identical_captions_alone_change_nothing(mode):
    """Two pairs with the same text have equal logits in their columns, so spreading the target
    over them gives the one-hot loss's value; it is different captions of a class that matter."""
    image, text, scale = features(6, 5, seed=4, scale=12.0)
    text[4] = text[1]
    loss, _ = run(with_keys(clip_loss, np.array([0, 1, 2, 3, 1, 5])), [image, text, scale], np.float64)
    assert isinstance(loss._ctx, FusedMultiPositiveClipLoss)
    np.testing.assert_allclose(loss.data, clip_loss(image, text, scale).data, **TORCH_FLOAT64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_multi_positive_matches_composed(mode, dtype):
    arrays = features(7, 5, seed=7, scale=30.0)
    loss, grads = run(with_keys(clip_loss, KEYS), arrays, dtype)
    expected, expected_grads = run(with_keys(clip_loss_composed, KEYS), arrays, dtype)
    assert isinstance(loss._ctx, FusedMultiPositiveClipLoss)
    assert loss.dtype == dtype and all(g.dtype == dtype for g in grads)
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else dict(KERNEL_FLOAT32, atol=1e-5)
    np.testing.assert_allclose(loss.data, expected.data, **tolerance, err_msg=f"loss ({mode})")
    for name, g, e in zip(["image features", "text features", "logit_scale"], grads, expected_grads):
        np.testing.assert_allclose(g, e, **tolerance, err_msg=f"gradient of {name} ({mode})")
    one_hot, _ = run(clip_loss, arrays, dtype)
    assert abs(float(loss.data) - float(one_hot.data)) > 0.1   # the repeats do change the loss


@pytest.mark.parametrize("loss_fn", [clip_loss, clip_loss_composed])
def test_multi_positive_clip_loss_gradcheck(mode, loss_fn):
    image, text, scale = make_inputs([(7, 4), (7, 4), ()], normal)
    scale.data[...] = 3.0

    def loss(image, text, scale):
        return loss_fn(normalize(image, dim=-1), normalize(text, dim=-1), scale, keys=KEYS)
    assert miniclip.gradcheck(loss, [image, text, scale], **GRADCHECK)


def test_multi_positive_siglip_loss_gradcheck():
    image, text, scale, bias = make_inputs([(7, 4), (7, 4), (), ()], normal)
    scale.data[...], bias.data[...] = 3.0, -2.0

    def loss(image, text, scale, bias):
        return siglip_loss(normalize(image, dim=-1), normalize(text, dim=-1), scale, bias, keys=KEYS)
    assert miniclip.gradcheck(loss, [image, text, scale, bias], **GRADCHECK)


@pytest.mark.oracle
def test_multi_positive_clip_loss_matches_torch_soft_label_cross_entropy(torch, mode):
    arrays = features(7, 6, seed=5, scale=20.0)
    loss, grads = run(with_keys(clip_loss, KEYS), arrays, np.float64)
    image, text, scale = (torch.tensor(a, requires_grad=True) for a in arrays)
    same = torch.tensor(KEYS[:, None] == KEYS[None, :], dtype=torch.float64)
    logits = scale * image @ text.T
    t_loss = (torch.nn.functional.cross_entropy(logits, same / same.sum(1, keepdim=True)) +
              torch.nn.functional.cross_entropy(logits.T, same.T / same.sum(0)[:, None])) / 2
    (t_loss * 1.7).backward()
    np.testing.assert_allclose(loss.data, t_loss.item(), **TORCH_FLOAT64)
    for g, t in zip(grads, (image, text, scale)):
        np.testing.assert_allclose(g, t.grad.numpy(), **TORCH_FLOAT64)


@pytest.mark.oracle
def test_multi_positive_siglip_loss_matches_torch(torch):
    image, text, scale = features(7, 6, seed=3, scale=10.0)
    arrays = [image, text, scale, np.array(-10.0)]
    loss, grads = run(with_keys(siglip_loss, KEYS), arrays, np.float64)
    t_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    logits = t_inputs[2] * t_inputs[0] @ t_inputs[1].T + t_inputs[3]
    labels = torch.tensor(KEYS[:, None] == KEYS[None, :], dtype=torch.float64)
    t_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / 7
    (t_loss * 1.7).backward()
    np.testing.assert_allclose(loss.data, t_loss.item(), **TORCH_FLOAT64)
    for g, t in zip(grads, t_inputs):
        np.testing.assert_allclose(g, t.grad.numpy(), **TORCH_FLOAT64)
