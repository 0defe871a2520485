"""The image layers: Conv2d and BatchNorm2d (used by ViT's patch embedding and the ResNet tower).

    Conv2d       y[b, o] = bias[o] + sum over c, i, j of weight[o, c, i, j] * x[b, c, stride*h + i, stride*w + j]
                 weight (out_channels, in_channels, kernel_height, kernel_width), bias (out_channels,)
    BatchNorm2d  y = (x - mean) / sqrt(var + eps) * weight + bias, per channel, with mean and var
                 over (batch, height, width) in training and the running estimates in eval.

BatchNorm2d keeps three buffers, as torch does, so ResNet checkpoints load by key:
running_mean and running_var (updated in training as r = (1 - momentum) r + momentum * batch
statistic, with the unbiased variance) and num_batches_tracked (an int64 counter).

Checked against torch.nn.Conv2d / BatchNorm2d with the same weights in tests/nn/test_conv.py.
"""
import numpy as np

from miniclip import functional as F
from miniclip.nn import init
from miniclip.nn.module import Module, Parameter
from miniclip.tensor import Tensor


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(init.fan_in_uniform((out_channels, in_channels, *self.kernel_size), fan_in))
        self.bias = Parameter(init.fan_in_uniform((out_channels,), fan_in)) if bias else None

    def forward(self, x):                                   # x: (B, in_channels, H, W)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class BatchNorm2d(Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", Tensor(np.zeros(num_features, np.float32)))
        self.register_buffer("running_var", Tensor(np.ones(num_features, np.float32)))
        self.register_buffer("num_batches_tracked", Tensor(np.array(0, np.int64)))

    def forward(self, x):                                   # x: (B, C, H, W)
        if self.training:
            self.num_batches_tracked.data += 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
