"""miniclip.functional: every op, with torch.nn.functional's names and signatures.

The primitives of miniclip.ops (each with a hand-written backward) are re-exported here, next to
the ops composed from them or given their own hand-derived backward:

    activation.py     softmax log_softmax logsumexp gelu quick_gelu logsigmoid dropout
    loss.py           cross_entropy
    normalization.py  layer_norm batch_norm normalize
    linear.py         linear embedding
    conv.py           conv2d unfold avg_pool2d max_pool2d adaptive_avg_pool2d
    attention.py      scaled_dot_product_attention

When a fused kernel (miniclip.kernels) takes one of these names, the version here stays
importable from its module (the Function classes Softmax, LogSoftmax, CrossEntropy, LayerNorm,
Conv2d, and scaled_dot_product_attention_composed) as the kernel's test oracle.
"""
from miniclip.ops import *  # noqa: F401,F403
from miniclip.functional.activation import (softmax, log_softmax, logsumexp, gelu, quick_gelu, logsigmoid,
                                            dropout)
from miniclip.functional.loss import cross_entropy
from miniclip.functional.normalization import layer_norm, batch_norm, normalize
from miniclip.functional.linear import linear, embedding
from miniclip.functional.conv import conv2d, unfold, avg_pool2d, max_pool2d, adaptive_avg_pool2d
from miniclip.functional.attention import scaled_dot_product_attention, scaled_dot_product_attention_composed
