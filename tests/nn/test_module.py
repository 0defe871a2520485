"""Module mechanics: registration, dotted names, buffers, train/eval, state_dict and strict loading."""
from collections import OrderedDict

import numpy as np
import pytest

import miniclip
from miniclip import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(3)
        self.proj = nn.Linear(3, 2)
        self.register_buffer("counter", np.array(0, np.int64))
        self.register_buffer("mask", np.ones((2, 2), bool), persistent=False)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.array(2.0, np.float32))
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1, bias=False))
        self.note = "a plain attribute"


NET_PARAMETERS = ["scale",
                  "blocks.0.ln.weight", "blocks.0.ln.bias", "blocks.0.proj.weight", "blocks.0.proj.bias",
                  "blocks.1.ln.weight", "blocks.1.ln.bias", "blocks.1.proj.weight", "blocks.1.proj.bias",
                  "head.0.weight", "head.0.bias", "head.2.weight"]


def test_registration_by_attribute_assignment():
    net = Net()
    assert [name for name, _ in net.named_parameters()] == NET_PARAMETERS
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [name for name, _ in net.named_children()] == ["blocks", "head"]
    assert list(net.children()) == [net.blocks, net.head]
    assert "note" not in net._parameters and net.note == "a plain attribute"
    assert net.head[2].bias is None


def test_named_modules_are_depth_first_with_dotted_names():
    names = [name for name, _ in Net().named_modules()]
    assert names == ["", "blocks", "blocks.0", "blocks.0.ln", "blocks.0.proj", "blocks.1", "blocks.1.ln",
                     "blocks.1.proj", "head", "head.0", "head.1", "head.2"]
    assert len(list(Net().modules())) == len(names)


def test_buffers_persistent_and_not():
    net = Net()
    assert [name for name, _ in net.named_buffers()] == ["blocks.0.counter", "blocks.0.mask",
                                                         "blocks.1.counter", "blocks.1.mask"]
    assert net.blocks[0].counter.dtype == np.int64 and not net.blocks[0].counter.requires_grad
    keys = list(net.state_dict())
    assert "blocks.0.counter" in keys and "blocks.0.mask" not in keys      # non-persistent: not saved
    # torch's order: a module's parameters, then its buffers, then its children
    assert keys == ["scale", "blocks.0.counter", "blocks.0.ln.weight", "blocks.0.ln.bias",
                    "blocks.0.proj.weight", "blocks.0.proj.bias", "blocks.1.counter", "blocks.1.ln.weight",
                    "blocks.1.ln.bias", "blocks.1.proj.weight", "blocks.1.proj.bias",
                    "head.0.weight", "head.0.bias", "head.2.weight"]


@pytest.mark.oracle
def test_state_dict_keys_and_order_match_torch(torch):
    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(3)
            self.proj = torch.nn.Linear(3, 2)
            self.register_buffer("counter", torch.tensor(0))
            self.register_buffer("mask", torch.ones(2, 2, dtype=torch.bool), persistent=False)

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))
            self.blocks = torch.nn.ModuleList([TorchBlock(), TorchBlock()])
            self.head = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(),
                                            torch.nn.Linear(4, 1, bias=False))

    reference = TorchNet()
    assert list(Net().state_dict()) == list(reference.state_dict())
    assert [n for n, _ in Net().named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert [n for n, _ in Net().named_modules()] == [n for n, _ in reference.named_modules()]


def test_reassigning_and_deleting():
    net = Net()
    net.scale = None                                   # a parameter slot set to None adds no key
    assert "scale" not in net.state_dict()
    with pytest.raises(TypeError, match="nn.Parameter"):
        net.scale = miniclip.tensor([1.0])
    net.extra = nn.Parameter(np.zeros(2, np.float32))  # a new parameter after construction
    assert "extra" in dict(net.named_parameters())
    del net.extra
    assert "extra" not in dict(net.named_parameters())
    net.head = nn.Identity()                           # replacing a submodule drops its keys
    assert not any(key.startswith("head.") for key in net.state_dict())


def test_assignment_before_init_is_explained():
    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1, np.float32))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgetful()


def test_shared_parameter_is_listed_once_but_saved_under_both_names():
    a = nn.Linear(2, 2)
    tied = nn.Sequential(a, nn.Linear(2, 2))
    tied[1].weight = a.weight
    assert len(list(tied.parameters())) == 3
    assert list(tied.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_train_eval_propagates_to_every_module():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.blocks.train()
    assert net.blocks[1].proj.training and not net.head.training


def test_zero_grad_and_requires_grad():
    net = Net()
    for p in net.parameters():
        p.grad = np.ones_like(p.data)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.blocks.requires_grad_(False)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["scale", "head.0.weight",
                                                                         "head.0.bias", "head.2.weight"]


def test_apply_visits_children_first():
    visited = []
    Net().apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Net" and visited[:3] == ["LayerNorm", "Linear", "Block"]


def test_containers_index_iterate_and_slice():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seq.append(nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and list(seq)[1] is seq[1]
    assert isinstance(seq[:2], nn.Sequential) and len(seq[:2]) == 2
    blocks = nn.ModuleList()
    blocks.append(nn.Linear(1, 1)).extend([nn.Linear(1, 2), nn.Linear(2, 2)])
    assert len(blocks) == 3 and blocks[1].out_features == 2
    assert [b.out_features for b in blocks] == [1, 2, 2]
    assert [name for name, _ in blocks.named_parameters()][-2:] == ["2.weight", "2.bias"]


def test_state_dict_is_a_copy_and_round_trips():
    miniclip.manual_seed(0)
    source = Net()
    miniclip.manual_seed(1)
    target = Net()
    state = source.state_dict()
    assert isinstance(state, OrderedDict) and all(isinstance(v, np.ndarray) for v in state.values())
    state["scale"][...] = 5.0                          # editing the copy leaves the model alone
    assert source.scale.item() == 2.0
    weight = target.blocks[0].proj.weight
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.blocks[0].proj.weight is weight      # loaded in place: an optimizer still sees it
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value, err_msg=key)
    assert target.state_dict()["blocks.1.counter"].dtype == np.int64


def test_load_accepts_tensors_and_casts_to_the_parameter_dtype():
    layer = nn.Linear(2, 2)
    weight = np.arange(4.0).reshape(2, 2)              # float64
    layer.load_state_dict({"weight": miniclip.tensor(weight), "bias": np.array([1, 2])})
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.data, weight)
    np.testing.assert_array_equal(layer.bias.data, [1.0, 2.0])


def test_strict_load_reports_every_problem_in_one_message():
    state = Net().state_dict()
    del state["blocks.0.ln.bias"], state["head.2.weight"]
    state["blocks.0.proj.weight"] = np.zeros((5, 3), np.float32)
    state["blocks.1.proj.bias"] = np.zeros((7,), np.float32)
    state["visual.proj"] = np.zeros(1)
    state["logit_bias"] = np.zeros(1)
    with pytest.raises(RuntimeError) as error:
        Net().load_state_dict(state)
    message = str(error.value)
    for expected in ["missing keys (2): blocks.0.ln.bias, head.2.weight",
                     "unexpected keys (2): visual.proj, logit_bias",
                     "shape mismatches (2)", "blocks.0.proj.weight: checkpoint (5, 3), model (2, 3)",
                     "blocks.1.proj.bias: checkpoint (7,), model (2,)"]:
        assert expected in message, message


def test_non_strict_load_returns_the_keys_but_still_refuses_wrong_shapes():
    net = Net()
    before = net.head[0].weight.data.copy()
    state = {"scale": np.array(3.0), "unknown": np.zeros(2)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert net.scale.item() == 3.0 and unexpected == ["unknown"] and len(missing) == len(NET_PARAMETERS) + 1
    np.testing.assert_array_equal(net.head[0].weight.data, before)
    with pytest.raises(RuntimeError, match="scale: checkpoint \\(2,\\), model \\(\\)"):
        net.load_state_dict({"scale": np.zeros(2)}, strict=False)


def test_double_casts_floats_and_keeps_integer_buffers():
    net = Net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.blocks[0].counter.dtype == np.int64
    assert net.float().scale.dtype == np.float32


def test_seeded_construction_is_repeatable():
    miniclip.manual_seed(3)
    first = Net().state_dict()
    miniclip.manual_seed(3)
    second = Net().state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    miniclip.manual_seed(4)
    assert not np.array_equal(Net().state_dict()["head.0.weight"], first["head.0.weight"])


def test_repr_shows_the_tree():
    text = repr(nn.Sequential(nn.Linear(2, 3), nn.GELU()))
    assert text == ("Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                    "  (1): GELU(approximate='none')\n)")
