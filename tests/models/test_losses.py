"""clip_loss (the fused kernel) and siglip_loss.

clip_loss in both kernel modes: the fused path against clip_loss_composed (values and the
gradients of both feature matrices and of logit_scale, float64 and float32), float64 gradcheck
through the fused Function, and open_clip.loss.ClipLoss / SigLipLoss on the same inputs.
"""
import numpy as np
import pytest

import miniclip
from miniclip import kernels
from miniclip.functional import normalize
from miniclip.losses import FusedClipLoss, clip_loss, clip_loss_composed, siglip_loss
from tests.helpers import make_inputs, normal
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64


@pytest.fixture(params=["fast", "reference"])
def mode(request):
    with kernels.use(request.param):
        yield request.param


def features(B, D, seed, scale):
    """L2-normalised image and text features (B, D) and logit_scale (0-d), as leaf arrays."""
    rng = np.random.default_rng(seed)
    image, text = (rng.standard_normal((B, D)) for _ in range(2))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image, text, np.array(scale)


def run(loss_fn, arrays, dtype):
    inputs = [miniclip.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    loss = loss_fn(*inputs)
    loss.backward(np.asarray(1.7, dtype))
    return loss, [x.grad for x in inputs]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B, D, scale", [(1, 4, 1.0), (7, 5, 14.3), (31, 16, 100.0)])
def test_fused_clip_loss_matches_composed(mode, B, D, scale, dtype):
    arrays = features(B, D, seed=B, scale=scale)
    loss, grads = run(clip_loss, arrays, dtype)
    expected, expected_grads = run(clip_loss_composed, arrays, dtype)
    assert isinstance(loss._ctx, FusedClipLoss)
    assert loss.dtype == dtype and all(g.dtype == dtype for g in grads)
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else dict(KERNEL_FLOAT32, atol=1e-5)
    np.testing.assert_allclose(loss.data, expected.data, **tolerance, err_msg=f"loss ({mode})")
    for name, g, e in zip(["image features", "text features", "logit_scale"], grads, expected_grads):
        np.testing.assert_allclose(g, e, **tolerance, err_msg=f"gradient of {name} ({mode})")


def test_fused_clip_loss_gradcheck(mode):
    image, text, scale = make_inputs([(6, 4), (6, 4), ()], normal)
    scale.data[...] = 3.0

    def loss(image, text, scale):
        return clip_loss(normalize(image, dim=-1), normalize(text, dim=-1), scale)
    assert miniclip.gradcheck(loss, [image, text, scale], **GRADCHECK)


def test_a_python_float_logit_scale_and_a_non_square_batch():
    image, text, _ = features(5, 3, seed=0, scale=1.0)
    loss = clip_loss(miniclip.tensor(image), miniclip.tensor(text), 10.0)
    np.testing.assert_allclose(loss.data, clip_loss_composed(image, text, 10.0).data, **TORCH_FLOAT64)
    with pytest.raises(ValueError):
        clip_loss(miniclip.tensor(image), miniclip.tensor(text[:4]), 10.0)


@pytest.mark.oracle
@pytest.mark.parametrize("B", [1, 8])
def test_clip_loss_matches_open_clip(open_clip, torch, mode, B):
    arrays = features(B, 6, seed=B, scale=20.0)
    loss, grads = run(clip_loss, arrays, np.float64)
    t_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_loss = open_clip.loss.ClipLoss()(*t_inputs)
    (t_loss * 1.7).backward()
    np.testing.assert_allclose(loss.data, t_loss.item(), **TORCH_FLOAT64)
    for g, t in zip(grads, t_inputs):
        np.testing.assert_allclose(g, t.grad.numpy(), **TORCH_FLOAT64)


@pytest.mark.oracle
def test_siglip_loss_matches_open_clip(open_clip, torch):
    image, text, scale = features(7, 6, seed=3, scale=10.0)
    arrays = [image, text, scale, np.array(-10.0)]
    loss, grads = run(siglip_loss, arrays, np.float64)
    t_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_loss = open_clip.loss.SigLipLoss()(*t_inputs)
    (t_loss * 1.7).backward()
    np.testing.assert_allclose(loss.data, t_loss.item(), **TORCH_FLOAT64)
    for g, t in zip(grads, t_inputs):
        np.testing.assert_allclose(g, t.grad.numpy(), **TORCH_FLOAT64)
