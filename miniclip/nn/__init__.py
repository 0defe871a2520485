"""miniclip.nn: Module, Parameter and the layers, with torch.nn's names and state_dict layout.

    module.py       Module (registration, named_parameters, state_dict, train/eval), Parameter
    containers.py   Sequential, ModuleList
    layers.py       Linear, LayerNorm, Embedding, Dropout, GELU, QuickGELU, ReLU, Identity
    conv.py         Conv2d, BatchNorm2d
    attention.py    MultiheadAttention
    init.py         torch's default random initialisations
"""
from miniclip.nn.module import Module, Parameter
from miniclip.nn.containers import Sequential, ModuleList
from miniclip.nn.layers import Linear, LayerNorm, Embedding, Dropout, GELU, QuickGELU, ReLU, Identity
from miniclip.nn.conv import Conv2d, BatchNorm2d
from miniclip.nn.attention import MultiheadAttention
from miniclip.nn import init

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "Linear", "LayerNorm", "Embedding",
           "Dropout", "GELU", "QuickGELU", "ReLU", "Identity", "Conv2d", "BatchNorm2d",
           "MultiheadAttention", "init"]
