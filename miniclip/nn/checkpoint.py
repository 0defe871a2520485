"""Activation checkpointing: trade compute for memory by running a block again in backward.

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
from miniclip.tensor import Function, Tensor, is_grad_enabled, no_grad


class CheckpointedBlock(Function):
    """One block's forward without a graph, and its backward by recomputing it (module docstring)."""

    def forward(self, x, block, **options):
        self.x, self.block, self.options = x, block, options
        self.autocast, self.kernel_mode = amp.autocast_dtype(), kernels.mode()
        with no_grad():
            return block(Tensor(x), **options).data

    def backward(self, grad_out):
        x = Tensor(self.x, requires_grad=True)
        with amp.autocast(self.autocast), kernels.use(self.kernel_mode):   # (backward records graphs)
            y = self.block(x, **self.options)
        y.backward(grad_out)   # the parameters' .grad += their share; x.grad = dx
        return x.grad


def checkpoint(block, x, **options):
    """block(x, **options), keeping only x for the backward (torch.utils.checkpoint's job). When
    no gradient is wanted (no_grad, or a frozen block and an input without one) it is block(x)."""
    if not (is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters()))):
        return block(x, **options)
    # A parameter that needs a gradient makes the node part of the graph even when x does not.
    x = x if x.requires_grad else Tensor(x.data, requires_grad=True)
    return CheckpointedBlock.apply(x, block=block, **options)
