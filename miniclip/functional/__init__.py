"""miniclip.functional: every op, with torch.nn.functional's names and signatures.

The primitives of miniclip.ops (each with a hand-written backward) are re-exported here, next to
the ops composed from them or given their own hand-derived backward:

    activation.py     softmax log_softmax logsumexp gelu quick_gelu logsigmoid dropout
    loss.py           cross_entropy
    normalization.py  layer_norm batch_norm normalize
    linear.py         linear embedding
    conv.py           conv2d unfold avg_pool2d max_pool2d adaptive_avg_pool2d
    attention.py      scaled_dot_product_attention packed_self_attention
    mlp.py            mlp (a transformer block's c_fc -> activation -> c_proj)

linear is one Function with a hand-written backward (FusedLinear: the bias added in place);
layer_norm, gelu, quick_gelu, scaled_dot_product_attention, conv2d and cross_entropy run fused
kernels (miniclip.kernels, chosen by the array's device and kernels.use()) through Fused*
Functions in their modules; packed_self_attention and mlp are Functions over whole sub-blocks
that keep fewer or no layout copies (PackedSelfAttention, FusedMLP). The versions they replaced stay importable from those modules as the
kernels' test oracles, and run where a kernel does not apply (each function's docstring says
when): linear_composed, LayerNorm, Gelu, quick_gelu_composed, scaled_dot_product_attention_composed, Conv2d,
CrossEntropy, packed_self_attention_composed, mlp_composed.
"""
from miniclip.ops import *  # noqa: F401,F403
from miniclip.functional.activation import (softmax, log_softmax, logsumexp, gelu, quick_gelu, logsigmoid,
                                            dropout)
from miniclip.functional.loss import cross_entropy
from miniclip.functional.normalization import layer_norm, batch_norm, normalize
from miniclip.functional.linear import linear, embedding
from miniclip.functional.conv import conv2d, unfold, avg_pool2d, max_pool2d, adaptive_avg_pool2d
from miniclip.functional.attention import (scaled_dot_product_attention, scaled_dot_product_attention_composed,
                                           packed_self_attention)
from miniclip.functional.mlp import mlp
