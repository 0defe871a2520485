"""--grad-checkpointing: the same gradients as the plain backward, bit for bit, from a graph that
keeps one node per transformer block instead of every operation inside it."""
import json
import os

import numpy as np
import pytest

import miniclip
from miniclip import train
from miniclip.training.plots import read_metrics
from tests.training.conftest import TINY


def three_block_model(**overrides):
    config = json.loads(json.dumps(TINY))
    config["vision_cfg"]["layers"] = config["text_cfg"]["layers"] = 3
    config["text_cfg"]["vocab_size"] = 600
    config.update(overrides)
    miniclip.manual_seed(0)
    return miniclip.create_model(config).double()


def batch():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 3, 16, 16))
    tokens = np.zeros((6, 24), np.int64)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 598, rng.integers(1, 500, (6, 5)), 599   # SOT ... EOT
    return images, tokens


def gradients(model, accum_freq=1):
    model.zero_grad()
    loss = train.forward_backward(model, *batch(), accum_freq)
    return loss, {name: p.grad.copy() for name, p in model.named_parameters() if p.grad is not None}


def graph_nodes(tensor):
    """The Functions of the graph that ends at `tensor`, by class name."""
    seen, stack, names = set(), [tensor._ctx], []
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        names.append(type(fn).__name__)
        stack += [x._ctx for x in fn.inputs]
    return names


def test_checkpointed_blocks_give_the_same_loss_and_gradients_bit_for_bit():
    for accum_freq in (1, 2):
        loss, expected = gradients(three_block_model(), accum_freq)
        model = three_block_model()
        model.set_grad_checkpointing()
        loss_checkpointed, got = gradients(model, accum_freq)
        assert loss_checkpointed == loss and got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_the_graph_keeps_one_node_per_block_and_its_input_only():
    images, tokens = batch()
    plain = three_block_model()
    nodes = graph_nodes(plain.encode_image(miniclip.Tensor(images)))
    model = three_block_model()
    model.set_grad_checkpointing()
    checkpointed = graph_nodes(model.encode_image(miniclip.Tensor(images)))
    assert checkpointed.count("CheckpointedBlock") == 3 and "CheckpointedBlock" not in nodes
    assert len(checkpointed) < len(nodes) - 3 * 10, (len(checkpointed), len(nodes))   # each block: tens of ops
    assert plain.state_dict().keys() == model.state_dict().keys()   # the weights' names stay


def test_a_frozen_tower_is_not_checkpointed_and_gets_no_gradient():
    model = three_block_model()
    model.set_grad_checkpointing()
    model.visual.requires_grad_(False)
    images, tokens = batch()
    assert "CheckpointedBlock" not in graph_nodes(model.encode_image(miniclip.Tensor(images)))
    assert graph_nodes(model.encode_text(tokens)).count("CheckpointedBlock") == 3
    train.forward_backward(model, images, tokens, 1)
    assert all(p.grad is None for p in model.visual.parameters())


@pytest.mark.parametrize("extra", [[], ["--precision", "amp", "--accum-freq", "2"]])
def test_the_flag_trains_as_without_it(run_flags, extra):
    """The recomputation runs in the first forward's autocast dtype: float16 gives the same losses too."""
    flags = run_flags + ["--max-steps", "3"] + extra
    losses = []
    for name, extra in (("plain", []), ("checkpointed", ["--grad-checkpointing"])):
        assert train.main(flags + extra + ["--name", name]) == 0
        folder = os.path.join(flags[flags.index("--logs") + 1], name)
        losses.append([r["loss"] for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "loss" in r])
    assert len(losses[0]) == 3 and losses[1] == losses[0]

