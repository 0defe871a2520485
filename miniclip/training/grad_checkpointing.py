"""--grad-checkpointing: trade compute for memory by recomputing each transformer block in backward.

Backward needs what forward computed: every block keeps its layer norms' outputs, the attention's
queries, keys, values and statistics, and the MLP's hidden activations, arrays of (B, T, width)
and (B, T, 4 width), until backward reaches it. With checkpointing
(Chen et al. 2016, "Training deep nets with sublinear memory cost") a block's forward runs
without a graph and keeps only its input x; when backward reaches the block, it runs the block's
forward again, this time with a graph, and backwards through it:

    forward:   y = block(x)  under no_grad           keeps x (B, T, width) only
    backward:  y' = block(x') with x' a leaf; y'.backward(dy)   ->  dx = x'.grad,
               and the block's parameters get their gradients as in any backward

The recomputed forward is the same computation on the same input (CLIP's blocks have no dropout,
and the autocast dtype and kernel mode of the first forward are used again), so the gradients
are exactly those of the plain backward (tests/training/test_grad_checkpointing.py checks them
bit for bit). The cost: one more forward of every block per step (the README has measurements).
"""
from miniclip import amp, kernels
from miniclip.models.transformer import ResidualAttentionBlock
from miniclip.tensor import Function, Tensor, is_grad_enabled, no_grad


class CheckpointedBlock(Function):
    """One block's forward without a graph, and its backward by recomputing it (module docstring)."""

    def forward(self, x, block, is_causal=False, keep_token=None):
        self.x, self.block, self.options = x, block, dict(is_causal=is_causal, keep_token=keep_token)
        self.autocast, self.kernel_mode = amp.autocast_dtype(), kernels.mode()
        with no_grad():
            return block.forward_without_checkpoint(Tensor(x), **self.options).data

    def backward(self, grad_out):
        x = Tensor(self.x, requires_grad=True)
        with amp.autocast(self.autocast), kernels.use(self.kernel_mode):   # (backward records graphs)
            y = self.block.forward_without_checkpoint(x, **self.options)
        y.backward(grad_out)   # the parameters' .grad += their share; x.grad = dx
        return x.grad


def set_grad_checkpointing(model):
    """Make every transformer block of the model (both towers) recompute its forward in backward.
    Returns how many blocks it changed. The weights and their names stay as they are."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualAttentionBlock)]
    for block in blocks:
        forward = block.forward
        object.__setattr__(block, "forward_without_checkpoint", forward)
        object.__setattr__(block, "forward", _checkpointed(block))
    return len(blocks)


def _checkpointed(block):
    def forward(x, is_causal=False, keep_token=None):
        if not (is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters()))):
            return block.forward_without_checkpoint(x, is_causal=is_causal, keep_token=keep_token)
        # A parameter that needs a gradient makes the node part of the graph even when x does not.
        x = x if x.requires_grad else Tensor(x.data, requires_grad=True)
        return CheckpointedBlock.apply(x, block=block, is_causal=is_causal, keep_token=keep_token)
    return forward
