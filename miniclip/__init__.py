"""miniclip: CLIP from scratch on NumPy (CPU) and CuPy (GPU).

    import miniclip
    x = miniclip.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss = (x @ x).sum()
    loss.backward()              # x.grad now holds d loss / d x

The layers, bottom to top: backend (numpy | cupy), tensor (autograd), ops (primitives with
hand-written backward), functional (everything composed from them), gradcheck, nn, optim; then
models, losses, tokenizer and data, each usable after `import miniclip` alone, as in torch
(miniclip.losses.clip_loss, miniclip.data.ShapesDataset, ...). The commands (miniclip.train,
.zeroshot, .search, ...) are not imported here: `python -m` runs them as fresh modules.
"""
from miniclip import environment   # first: thread settings that must precede NumPy (see environment.py)
from miniclip.tensor import Tensor, Function, tensor, no_grad, is_grad_enabled
from miniclip.gradcheck import gradcheck, GradcheckError
from miniclip.backend import has_gpu
from miniclip import ops, functional, nn, optim, losses, data, tokenizer, models
from miniclip.creation import zeros, ones, zeros_like, ones_like, full, arange, randn, rand, manual_seed
from miniclip.models import create_model, load_checkpoint, list_models, save_model, load_model
from miniclip.ops import (cat, concat, stack, split, chunk, where, maximum, minimum, matmul, exp, log,
                          sqrt, tanh, sigmoid, relu, clamp)

__version__ = "0.1.0"
