"""One comparison for every layer test: the same weights, the same float64 inputs and the same
upstream gradient through a miniclip layer and its torch.nn twin; outputs, input gradients and
parameter gradients must agree (tolerances.TORCH_FLOAT64).

Loading our state_dict into the torch layer with strict=True also proves the keys and shapes
are torch's, which is what lets OpenCLIP checkpoints load.
"""
import numpy as np

import miniclip
from tests.tolerances import TORCH_FLOAT64


def copy_weights(torch, ours, theirs):
    """ours' state_dict into theirs (strict: every key and shape must match), both in float64."""
    ours.double()
    theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, strict=True)


def compare_with_torch(torch, ours, theirs, inputs, call=None, seed=0):
    """Run ours(*inputs) and theirs(*inputs) (or call(layer, *inputs)); compare outputs and
    gradients. Float inputs get gradients; integer ones (token ids) are passed as they are."""
    call = call or (lambda layer, *args: layer(*args))
    copy_weights(torch, ours, theirs)
    our_inputs = [miniclip.tensor(x, requires_grad=x.dtype.kind == "f") for x in inputs]
    their_inputs = [torch.tensor(x, requires_grad=x.dtype.kind == "f") for x in inputs]

    out = call(ours, *our_inputs)
    expected = call(theirs, *their_inputs)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), **TORCH_FLOAT64, err_msg="output")

    upstream = np.random.default_rng(seed).standard_normal(out.shape)    # never all ones
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    for i, (x, tx) in enumerate(zip(our_inputs, their_inputs)):
        if x.requires_grad:
            np.testing.assert_allclose(x.grad, tx.grad.numpy(), **TORCH_FLOAT64, err_msg=f"grad of input {i}")
    their_params = dict(theirs.named_parameters())
    our_params = dict(ours.named_parameters())
    assert our_params.keys() == their_params.keys()
    for name, param in our_params.items():
        np.testing.assert_allclose(param.grad, their_params[name].grad.numpy(), **TORCH_FLOAT64,
                                   err_msg=f"grad of {name}")
    return out
