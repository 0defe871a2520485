"""The contrastive losses of CLIP and SigLIP.

CLIP (Radford et al. 2021), OpenCLIP's ClipLoss: B image and B text features, L2-normalised;
the i-th image and the i-th text are a pair, every other combination a negative.

    logits = s * I @ T.T                                  (B, B), s = exp(logit_scale)
    loss   = ( CE(logits, arange(B))  +  CE(logits.T, arange(B)) ) / 2
             image -> text (rows)         text -> image (columns)

SigLIP (Zhai et al. 2023), OpenCLIP's SigLipLoss: every (image, text) combination is its own
binary classification, positive on the diagonal, with a learned bias b:

    logits = s * I @ T.T + b,     labels = 2 * eye(B) - 1      (+1 on the diagonal, -1 elsewhere)
    loss   = -sum(log sigmoid(labels * logits)) / B

`logit_scale` here is the multiplier s itself (what CLIP.forward returns, already exp'd), as in
OpenCLIP.

clip_loss runs the fused kernel miniclip.kernels.softmax_xent.clip_loss_* through FusedClipLoss:
one pass over S = s * sims (sims = I @ T.T) for the row and the column log-sum-exp, and one
backward pass for both gradients, with P_row = exp(S - lse_row), P_col = exp(S - lse_col):

    dS     = dy / (2B) (P_row + P_col - 2 eye(B))
    dsims  = s dS                                      (autograd carries it on through I @ T.T)
    ds     = sum_ij dS_ij sims_ij

clip_loss_composed, two cross-entropies autograd differentiates, stays as its oracle.

Multi-positive form (UniCL, Yang et al. 2022): when captions come from class names ("a photo of a
sneaker."), two pairs of a batch can share a caption or a class, and the one-hot loss pushes apart
an image and a text that match. Given keys (B,), one per pair (a class id, or which caption it
is), every pair with the same key is a positive, and the targets are spread uniformly over them:

    same_ij = [key_i == key_j],   T_ij = same_ij / count_i      (count_i = sum_j same_ij)
    loss    = ( CE_soft(S, T) + CE_soft(S.T, T) ) / 2,   CE_soft(S, T) = -sum_ij T_ij log softmax(S)_ij / B

(T is symmetric, since count_i = count_j wherever same_ij, so the row and the column targets are
the same matrix.) With keys that never repeat, T = eye(B) and this is the one-hot loss; clip_loss
then runs the one-hot path, so the two are equal exactly. The fused path reuses the one-hot
kernel: the soft loss differs from it only in the positives' term,

    loss   = one-hot loss + (tr(S) - sum_ij T_ij S_ij) / B
    dS     = one-hot dS   + dy / B (eye(B) - T)

FusedMultiPositiveClipLoss adds both; clip_loss_composed(..., keys) is its oracle. SigLIP's
multi-positive form labels every same-key pair +1: labels = 2 same - 1.
Keys are a small host array (the trainer makes them from a batch's token ids and class ids,
miniclip/training/data.py); the labels and targets are built with the features' array module,
so every loss runs on NumPy or CuPy arrays alone. A data-parallel run uses the one-hot loss (the
keys are not gathered across ranks).

Checked in tests/models/test_losses.py: float64 gradcheck (features and logit_scale), the fused
against the composed loss in both kernel modes, and open_clip.loss.ClipLoss / SigLipLoss; the
multi-positive forms in tests/models/test_losses_multi_positive.py (gradcheck, equal to the
one-hot loss without repeats, fused against composed, torch's soft-label cross_entropy).
"""
import numpy as np

from miniclip import functional as F
from miniclip import ops
from miniclip.backend import get_array_module, to_numpy
from miniclip.kernels import softmax_xent as softmax_xent_kernels
from miniclip.tensor import Function, as_tensor


def clip_logits(image_features, text_features, logit_scale):
    """(logits_per_image, logits_per_text): s * I @ T.T and its transpose."""
    logits_per_image = logit_scale * (image_features @ text_features.T)   # (B, B)
    return logits_per_image, logits_per_image.T


class FusedClipLoss(Function):
    """The CLIP loss of logits = logit_scale * sims by the fused kernel; inputs sims (B, B) and
    logit_scale (one element); gradients for both (see the module docstring)."""

    def forward(self, sims, logit_scale):
        s = logit_scale.reshape(()).astype(sims.dtype)
        logits = s * sims                                                    # (B, B)
        loss, self.lse_row, self.lse_col = softmax_xent_kernels.clip_loss_forward(logits)
        self.sims, self.s, self.logits = sims, s, logits
        return loss

    def backward(self, dy):
        dlogits, dscale = softmax_xent_kernels.clip_loss_backward(self.logits, self.lse_row, self.lse_col,
                                                                  dy, self.sims)
        scale = self.inputs[1]
        return dlogits * self.s, dscale.astype(scale.dtype).reshape(scale.shape)


def positive_pairs(keys, xp):
    """same (B, B) bool on array module xp: same[i, j] = keys[i] == keys[j]; None when keys is None
    or no key repeats (then the positives are the diagonal: the one-hot loss)."""
    if keys is None:
        return None
    keys = to_numpy(keys).reshape(-1)   # (B,) a small host array
    if len(np.unique(keys)) == len(keys):
        return None
    return xp.asarray(keys[:, None] == keys[None, :])                      # (B, B)


def multi_positive_targets(same, dtype):
    """T (B, B) = same / its row sums: each row's target mass spread over its positives."""
    same = same.astype(dtype)
    return same / same.sum(axis=1, keepdims=True)


class FusedMultiPositiveClipLoss(Function):
    """The multi-positive CLIP loss of logits = logit_scale * sims, on the one-hot kernel plus the
    positives' correction (see the module docstring); inputs sims (B, B), logit_scale (one
    element) and the targets T (B, B), a constant."""

    def forward(self, sims, logit_scale, targets):
        xp = get_array_module(sims)
        s = logit_scale.reshape(()).astype(sims.dtype)
        logits = s * sims                                                    # (B, B)
        loss, self.lse_row, self.lse_col = softmax_xent_kernels.clip_loss_forward(logits)
        B = logits.shape[0]
        x = logits.astype(xp.float64)
        correction = (xp.trace(x) - (targets * x).sum()) / B
        self.sims, self.s, self.logits, self.targets = sims, s, logits, targets
        return (loss + correction).astype(sims.dtype)

    def backward(self, dy):
        xp = get_array_module(self.sims)
        dlogits, dscale = softmax_xent_kernels.clip_loss_backward(self.logits, self.lse_row, self.lse_col,
                                                                  dy, self.sims)
        B = self.logits.shape[0]
        extra = xp.asarray(dy, xp.float64) / B * (xp.eye(B) - self.targets)   # (B, B)
        dlogits = dlogits + extra.astype(dlogits.dtype)
        dscale = dscale + (extra * self.sims).sum()
        scale = self.inputs[1]
        return dlogits * self.s, dscale.astype(scale.dtype).reshape(scale.shape)


def clip_loss(image_features, text_features, logit_scale, keys=None):
    """The symmetric cross-entropy over the B x B similarity matrix (OpenCLIP's ClipLoss), by the
    fused kernel (FusedClipLoss) when the matrix is square and of one float dtype. keys (B,): the
    multi-positive form when some key repeats (see the module docstring)."""
    image_features, text_features = as_tensor(image_features), as_tensor(text_features)
    logit_scale = as_tensor(logit_scale, like=image_features)
    sims = image_features @ text_features.T                                  # (B, B)
    if sims.shape[0] == sims.shape[1] and sims.size and logit_scale.size == 1 \
            and sims.dtype.name in ("float32", "float64"):
        same = positive_pairs(keys, get_array_module(sims.data))
        if same is None:
            return FusedClipLoss.apply(sims, logit_scale)
        return FusedMultiPositiveClipLoss.apply(sims, logit_scale, targets=multi_positive_targets(same, np.float64))
    return clip_loss_composed(image_features, text_features, logit_scale, keys)


def clip_loss_composed(image_features, text_features, logit_scale, keys=None):
    """clip_loss as two cross-entropies, differentiated by autograd: FusedClipLoss's oracle (and,
    with repeating keys, FusedMultiPositiveClipLoss's: soft-target cross-entropies)."""
    logits_per_image, logits_per_text = clip_logits(image_features, text_features, logit_scale)
    xp = get_array_module(logits_per_image.data)
    same = positive_pairs(keys, xp)
    if same is None:
        labels = xp.arange(logits_per_image.shape[0])
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    targets = multi_positive_targets(same, logits_per_image.dtype)           # (B, B), symmetric
    return (soft_cross_entropy(logits_per_image, targets) + soft_cross_entropy(logits_per_text, targets)) / 2


def clip_loss_with_negatives(image_features, text_features, negative_text_features, logit_scale, keys=None):
    """The CLIP loss with N extra captions that match no image (NegCLIP, Yuksekgonul et al. 2023):
    each image's softmax runs over the B captions and the N negatives, each caption's over the B
    images as before:

        loss = ( CE_soft(s I @ [T; Tn].T, [targets | 0])  +  CE_soft(s T @ I.T, targets) ) / 2

    targets (B, B): eye(B), or the multi-positive targets of `keys`. The negatives are hard ones
    (the caption with its colours or shapes swapped, miniclip/data/shapes.py): the same words, so
    a tower that reads a caption as a bag of words cannot tell them from the truth, and the loss
    makes it learn which colour goes with which shape. Composed (autograd differentiates it);
    with N = 0 it is clip_loss_composed."""
    image_features, text_features = as_tensor(image_features), as_tensor(text_features)
    logit_scale = as_tensor(logit_scale, like=image_features)
    captions = ops.concat([text_features, as_tensor(negative_text_features)], dim=0)   # (B + N, D)
    logits_per_image = logit_scale * (image_features @ captions.T)                   # (B, B + N)
    logits_per_text = logit_scale * (text_features @ image_features.T)               # (B, B)
    B, xp = logits_per_text.shape[0], get_array_module(logits_per_text.data)
    same = positive_pairs(keys, xp)
    targets = xp.eye(B, dtype=logits_per_text.dtype) if same is None else multi_positive_targets(
        same, logits_per_text.dtype)                                                  # (B, B)
    padded = xp.concatenate([targets, xp.zeros((B, logits_per_image.shape[1] - B), targets.dtype)], axis=1)
    return (soft_cross_entropy(logits_per_image, padded) + soft_cross_entropy(logits_per_text, targets)) / 2


def soft_cross_entropy(logits, targets):
    """-sum_ij targets_ij log softmax(logits)_ij / N: the cross-entropy with a distribution per row
    (torch's F.cross_entropy with probability targets), logits (N, C), targets (N, C) constants."""
    return -(F.log_softmax(logits, dim=1) * targets).sum() / logits.shape[0]


def siglip_loss(image_features, text_features, logit_scale, logit_bias, keys=None):
    """The pairwise sigmoid loss, summed over all B^2 pairs and divided by B (SigLipLoss); with
    keys (B,), every same-key pair is labelled +1."""
    logits = logit_scale * (image_features @ text_features.T) + logit_bias   # (B, B)
    B = logits.shape[0]
    xp = get_array_module(logits.data)
    same = positive_pairs(keys, xp)
    if same is None:
        same = xp.eye(B, dtype=bool)
    labels = (2 * same.astype(logits.dtype) - 1).astype(logits.dtype)       # +1 / -1
    return -F.logsigmoid(labels * logits).sum() / B
