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
Checked in tests/models/test_losses.py: float64 gradcheck (features and logit_scale), the fused
against the composed loss in both kernel modes, and open_clip.loss.ClipLoss / SigLipLoss.
"""
import numpy as np

from miniclip import functional as F
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


def clip_loss(image_features, text_features, logit_scale):
    """The symmetric cross-entropy over the B x B similarity matrix (OpenCLIP's ClipLoss), by the
    fused kernel (FusedClipLoss) when the matrix is square and of one float dtype."""
    image_features, text_features = as_tensor(image_features), as_tensor(text_features)
    logit_scale = as_tensor(logit_scale, like=image_features)
    sims = image_features @ text_features.T                                  # (B, B)
    if sims.shape[0] == sims.shape[1] and sims.size and logit_scale.size == 1 \
            and sims.dtype.name in ("float32", "float64"):
        return FusedClipLoss.apply(sims, logit_scale)
    return clip_loss_composed(image_features, text_features, logit_scale)


def clip_loss_composed(image_features, text_features, logit_scale):
    """clip_loss as two cross-entropies, differentiated by autograd: FusedClipLoss's oracle."""
    logits_per_image, logits_per_text = clip_logits(image_features, text_features, logit_scale)
    labels = np.arange(logits_per_image.shape[0])
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(image_features, text_features, logit_scale, logit_bias):
    """The pairwise sigmoid loss, summed over all B^2 pairs and divided by B (SigLipLoss)."""
    logits = logit_scale * (image_features @ text_features.T) + logit_bias   # (B, B)
    B = logits.shape[0]
    labels = (2 * np.eye(B) - 1).astype(logits.dtype)
    return -F.logsigmoid(labels * logits).sum() / B
