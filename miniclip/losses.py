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
OpenCLIP. Checked against open_clip.loss.ClipLoss / SigLipLoss, values and gradients, in tests.
"""
import numpy as np

from miniclip import functional as F


def clip_logits(image_features, text_features, logit_scale):
    """(logits_per_image, logits_per_text): s * I @ T.T and its transpose."""
    logits_per_image = logit_scale * (image_features @ text_features.T)   # (B, B)
    return logits_per_image, logits_per_image.T


def clip_loss(image_features, text_features, logit_scale):
    """The symmetric cross-entropy over the B x B similarity matrix (OpenCLIP's ClipLoss)."""
    logits_per_image, logits_per_text = clip_logits(image_features, text_features, logit_scale)
    labels = np.arange(logits_per_image.shape[0])
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(image_features, text_features, logit_scale, logit_bias):
    """The pairwise sigmoid loss, summed over all B^2 pairs and divided by B (SigLipLoss)."""
    logits = logit_scale * (image_features @ text_features.T) + logit_bias   # (B, B)
    B = logits.shape[0]
    labels = (2 * np.eye(B) - 1).astype(logits.dtype)
    return -F.logsigmoid(labels * logits).sum() / B
