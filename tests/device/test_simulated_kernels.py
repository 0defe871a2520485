"""One training step with the Numba CUDA kernels, in Numba's CUDA simulator on the CuPy stand-in.

The other device tests run `python -m miniclip.train --device cuda` with the NumPy reference
kernels. This one takes the path a GPU takes: for a CuPy array miniclip.kernels picks each
family's numba_cuda.py, and tests/cupy_standin/simulator.py hands the stand-in's memory to the
simulated kernels. One step of the trainer's own parts (train.forward_backward, AdamW over
train.parameter_groups) on a minuscule CLIP is compared with the same step on the CPU with the
reference kernels: the loss, every gradient, and every parameter after AdamW's update. The test
fails if a family's CUDA kernels did not run (a silent fall-back to the reference would pass the
comparison), or if the step read more from the device than the loss.

Why in-process and not `python -m miniclip.train`: the trainer always evaluates, before the first
step and after the last, and on the shapes data each evaluation encodes 3 x 360 zero-shot prompts.
The simulator runs one Python thread per CUDA thread, and layer norm launches a block of 128
threads per token row: tens of thousands of simulated blocks, where this step has a couple of hundred.
"""
import numpy as np
import pytest

from miniclip import kernels, optim
from miniclip.backend import to_numpy
from miniclip.creation import manual_seed
from miniclip.models import create_model
from miniclip.train import forward_backward, parameter_groups
from tests import cupy_standin
from tests.cupy_standin import simulator

# Two heads per tower, 5 image tokens (a class token and 2 x 2 patches), captions of 4 to 6 tokens.
CONFIG = {"embed_dim": 8,
          "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 8, "head_width": 4, "layers": 1},
          "text_cfg": {"context_length": 12, "vocab_size": 40, "width": 8, "heads": 2, "layers": 1}}
BATCH = 3
# Float32 with different summation orders through a whole model, forward and backward.
STEP_FLOAT32 = dict(rtol=1e-4, atol=1e-6)
FAMILIES = ("layer_norm", "attention", "softmax_xent", "adamw")   # what this model's step launches


def batch():
    """Images (B, 3, H, W) and token ids (B, context): start 38, words, end-of-text 39 (the largest
    id, which marks the caption's end), then zeros."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float32)
    tokens = np.zeros((BATCH, 12), np.int64)
    for row, words in enumerate((2, 4, 3)):
        tokens[row, :words + 2] = [38, *rng.integers(1, 38, words), 39]
    return images, tokens


def model_and_optimizer(device):
    """A fresh model (always the same initial weights) on `device`, and the trainer's AdamW for it."""
    manual_seed(0)
    model = create_model(CONFIG).to(device)
    model.train()
    return model, optim.AdamW(parameter_groups(model, 0.1), lr=2e-3, betas=(0.9, 0.98), eps=1e-6)


def on_host(model, what):
    """{name: a NumPy copy of each parameter's `what` ("grad" or "data")}."""
    return {name: to_numpy(getattr(p, what)).copy() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_a_training_step_with_the_simulated_cuda_kernels_matches_the_cpu():
    images, tokens = batch()
    with cupy_standin.installed() as standin, kernels.use("fast"):
        import cupy
        model, optimizer = model_and_optimizer("cuda")
        device_images = cupy.asarray(images)
        standin.reset_counts()
        simulator.launches.clear()
        loss = forward_backward(model, device_images, tokens, accum_freq=1)
        optimizer.step()
        transfers, launched = dict(standin.transfers), dict(simulator.launches)
        grads, params = on_host(model, "grad"), on_host(model, "data")

    families = {name.split(":")[0].split(".")[-2] for name in launched}
    assert all(name.split(":")[0].endswith(".numba_cuda") for name in launched), launched
    assert set(FAMILIES) <= families, f"no numba_cuda kernel of {set(FAMILIES) - families} ran: {launched}"
    assert sum(transfers.values()) == 1, f"the step read from the device more than once (the loss): {transfers}"

    with kernels.use("reference"):
        model, optimizer = model_and_optimizer("cpu")
        assert loss == pytest.approx(forward_backward(model, images, tokens, accum_freq=1), rel=STEP_FLOAT32["rtol"])
        for name, p in model.named_parameters():
            np.testing.assert_allclose(grads[name], p.grad, **STEP_FLOAT32, err_msg=f"the gradient of {name}")
            # AdamW's first step moves a parameter by about lr * g / (|g| + eps): where g is zero in
            # exact arithmetic (the key bias: softmax ignores a constant added to every key) float32
            # noise sets the step. So the CPU steps from the device's gradients, checked just above.
            p.grad = grads[name]
        optimizer.step()
        for name, p in model.named_parameters():
            np.testing.assert_allclose(params[name], p.data, **STEP_FLOAT32, err_msg=f"the updated {name}")
