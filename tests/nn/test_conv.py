"""Conv2d and BatchNorm2d against torch.nn with the same weights: outputs, gradients, running
statistics and the num_batches_tracked counter, in training and in eval."""
import numpy as np
import pytest

import miniclip
from miniclip import nn
from tests.helpers import standard_normal
from tests.nn.torch_compare import compare_with_torch, copy_weights
from tests.tolerances import TORCH_FLOAT64


@pytest.mark.oracle
@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3),
    dict(kernel_size=(3, 2), stride=2, padding=1),
    dict(kernel_size=4, stride=4, bias=False),                   # ViT's patch embedding
], ids=["3x3", "3x2_stride2_pad1", "patchify_no_bias"])
def test_conv2d_matches_torch(torch, kwargs):
    compare_with_torch(torch, nn.Conv2d(3, 5, **kwargs), torch.nn.Conv2d(3, 5, **kwargs), [standard_normal(2, 3, 8, 7)])


def test_conv2d_initialisation_bound_uses_the_kernel_area():
    miniclip.manual_seed(0)
    conv = nn.Conv2d(6, 40, kernel_size=(3, 5))
    assert conv.weight.shape == (40, 6, 3, 5) and conv.weight.dtype == np.float32
    bound = 1 / np.sqrt(6 * 3 * 5)
    assert bound * 0.95 < np.abs(conv.weight.data).max() <= bound


@pytest.mark.oracle
def test_batch_norm_training_matches_torch_including_running_statistics(torch):
    ours, theirs = nn.BatchNorm2d(3, momentum=0.2), torch.nn.BatchNorm2d(3, momentum=0.2)
    rng = np.random.default_rng(1)
    ours.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    ours.bias.data[...] = rng.standard_normal(3)
    ours.running_mean.data[...] = rng.standard_normal(3)
    ours.running_var.data[...] = rng.uniform(0.5, 2.0, 3)
    for step, x in enumerate([2 * standard_normal(4, 3, 5, 3) + 1, standard_normal(2, 3, 4, 4, seed=2) - 1]):
        compare_with_torch(torch, ours, theirs, [x], seed=step)
        for key, value in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), **TORCH_FLOAT64,
                                       err_msg=f"{key} after step {step + 1}")
    assert ours.num_batches_tracked.item() == 2 and ours.num_batches_tracked.dtype == np.int64


@pytest.mark.oracle
def test_batch_norm_eval_uses_running_statistics(torch):
    ours, theirs = nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)
    rng = np.random.default_rng(3)
    ours.running_mean.data[...] = rng.standard_normal(4)
    ours.running_var.data[...] = rng.uniform(0.5, 2.0, 4)
    ours.eval()
    theirs.eval()
    before = ours.state_dict()
    compare_with_torch(torch, ours, theirs, [standard_normal(2, 4, 3, 5)])
    for key, value in before.items():                         # eval changes no statistic
        np.testing.assert_array_equal(ours.state_dict()[key], value.astype(ours.state_dict()[key].dtype))


def test_batch_norm_buffers_are_saved_with_torch_keys():
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    bn.double()
    assert bn.running_var.dtype == np.float64 and bn.num_batches_tracked.dtype == np.int64
    copy = nn.BatchNorm2d(3)
    copy.load_state_dict(bn.state_dict())
    assert copy.running_var.dtype == np.float32


@pytest.mark.oracle
def test_copy_weights_refuses_a_mismatched_layer(torch):
    """The oracle helper itself: a wrong torch twin must fail loudly, not compare garbage."""
    with pytest.raises(RuntimeError, match="size mismatch"):
        copy_weights(torch, nn.Conv2d(3, 5, 3), torch.nn.Conv2d(3, 5, 2))
