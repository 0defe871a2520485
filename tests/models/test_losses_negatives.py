"""clip_loss_with_negatives: the CLIP loss with extra captions that match no image (NegCLIP).

Without negatives it is clip_loss_composed (one-hot and multi-positive); with them, its value is
the formula written out in NumPy, its float64 gradients pass the central-difference check
(features, negatives and logit_scale), and it equals torch's cross_entropy with probability
targets over the widened logits.
"""
import numpy as np

import miniclip
from miniclip.gradcheck import gradcheck
from miniclip.losses import clip_loss_composed, clip_loss_with_negatives
from tests.models.test_losses import features
from tests.tolerances import GRADCHECK, TORCH_FLOAT64

KEYS = np.array([3, 0, 3, 5, 0, 0, 9])   # B = 7: a pair, a triple and singletons


def negatives(N, D, seed):
    rng = np.random.default_rng(seed)
    n = rng.standard_normal((N, D))
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_without_negatives_it_is_the_clip_loss():
    image, text, scale = features(7, 5, seed=1, scale=14.3)
    for keys in (None, KEYS):
        loss = clip_loss_with_negatives(image, text, negatives(0, 5, 2), scale, keys=keys)
        assert float(loss.data) == float(clip_loss_composed(image, text, scale, keys=keys).data)


def test_the_value_is_the_formula():
    image, text, scale = features(7, 5, seed=3, scale=14.3)
    extra = negatives(4, 5, seed=4)
    same = (KEYS[:, None] == KEYS[None, :]).astype(float)
    targets = same / same.sum(axis=1, keepdims=True)
    per_image = log_softmax(scale * image @ np.concatenate([text, extra]).T)         # (7, 11)
    per_text = log_softmax(scale * text @ image.T)                                     # (7, 7)
    expected = -((per_image[:, :7] * targets).sum() + (per_text * targets).sum()) / 7 / 2
    loss = clip_loss_with_negatives(image, text, extra, scale, keys=KEYS)
    np.testing.assert_allclose(float(loss.data), expected, rtol=1e-12)
    # A negative equal to an image's own caption competes with it: the loss rises.
    closer = extra.copy()
    closer[0] = text[0]
    assert float(clip_loss_with_negatives(image, text, closer, scale).data) > \
        float(clip_loss_with_negatives(image, text, extra, scale).data)


def test_gradients_pass_the_central_difference_check():
    image, text, scale = features(5, 4, seed=5, scale=3.0)
    arrays = (image, text, negatives(3, 4, seed=6), scale)
    inputs = [miniclip.tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    assert gradcheck(lambda i, t, n, s: clip_loss_with_negatives(i, t, n, s, keys=KEYS[:5]), inputs, **GRADCHECK)


def test_matches_torch_probability_target_cross_entropy(torch):
    image, text, scale = features(7, 5, seed=7, scale=14.3)
    extra = negatives(3, 5, seed=8)
    t_image, t_text, t_extra, t_scale = (torch.tensor(a, requires_grad=True) for a in (image, text, extra, scale))
    same = torch.tensor(KEYS[:, None] == KEYS[None, :], dtype=torch.float64)
    targets = same / same.sum(1, keepdim=True)
    widened = torch.cat([targets, torch.zeros(7, 3, dtype=torch.float64)], dim=1)
    per_image = t_scale * t_image @ torch.cat([t_text, t_extra]).T
    t_loss = (torch.nn.functional.cross_entropy(per_image, widened)
              + torch.nn.functional.cross_entropy(t_scale * t_text @ t_image.T, targets)) / 2
    t_loss.backward()
    inputs = [miniclip.tensor(a, dtype=np.float64, requires_grad=True) for a in (image, text, extra, scale)]
    loss = clip_loss_with_negatives(*inputs, keys=KEYS)
    loss.backward()
    np.testing.assert_allclose(float(loss.data), t_loss.item(), **TORCH_FLOAT64)
    for ours, theirs in zip(inputs, (t_image, t_text, t_extra, t_scale)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), **TORCH_FLOAT64)
