"""The primitive ops: each one a Function with a hand-written backward.

Everything else in miniclip (softmax, layer norm, attention, the losses, ...) is composed from
these, until a fused kernel replaces a composition behind the same signature.

    arithmetic.py   add sub mul div neg pow maximum minimum where, and sum_to_shape
    elementwise.py  exp log sqrt tanh sigmoid relu abs clamp, cast
    reduction.py    sum mean max
    shape.py        reshape transpose permute expand getitem concat stack split (and friends)
    matmul.py       matmul (batched, broadcasting the leading dimensions)
    device.py       to_device (moving a tensor between the CPU and the GPU inside the graph)
"""
from miniclip.ops.arithmetic import add, sub, mul, div, neg, pow, maximum, minimum, where, sum_to_shape
from miniclip.ops.elementwise import exp, log, sqrt, tanh, sigmoid, relu, abs, clamp, cast
from miniclip.ops.reduction import sum, mean, max
from miniclip.ops.shape import (reshape, flatten, transpose, permute, expand, broadcast_to, unsqueeze,
                                squeeze, getitem, concat, cat, stack, split, chunk)
from miniclip.ops.matmul import matmul
from miniclip.ops.device import to_device

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "maximum", "minimum", "where", "sum_to_shape",
           "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "clamp", "cast",
           "sum", "mean", "max",
           "reshape", "flatten", "transpose", "permute", "expand", "broadcast_to", "unsqueeze",
           "squeeze", "getitem", "concat", "cat", "stack", "split", "chunk",
           "matmul", "to_device"]
