"""Module and Parameter: how a network keeps track of its weights, as in torch.nn.

A `Parameter` is a Tensor that requires a gradient and that a Module registers as one of its
weights. A `Module` is a tree: assigning a Parameter, a buffer or another Module to an attribute
registers it (`__setattr__` files it in `_parameters`, `_buffers` or `_modules`), so

    self.ln_1 = LayerNorm(width)          ->  the keys ln_1.weight and ln_1.bias

and walking the tree gives every weight its dotted name (`transformer.resblocks.0.attn.in_proj_weight`).
Those names are the state_dict keys, and they are PyTorch's, so an OpenCLIP checkpoint loads by
key. Buffers are arrays that belong to the model but are not trained (BatchNorm's running
statistics); a non-persistent buffer is left out of the state_dict.

Checked by tests/nn/test_module.py (registration, names, train/eval, state_dict round trip,
strict loading) and, through every layer, against torch.nn in tests/nn/test_layers.py.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from miniclip import backend
from miniclip.tensor import Tensor


class Parameter(Tensor):
    """A trainable weight: a leaf Tensor with requires_grad=True, registered by Modules.

    `data` may be an array or a Tensor; a Tensor's array is taken as it is (not copied) and
    the Parameter starts a fresh leaf, cut from whatever graph made the Tensor.
    """

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


# What load_state_dict returns when strict=False, as torch's `_IncompatibleKeys`.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """The base class of every layer and model. Subclasses set attributes in __init__ (after
    calling super().__init__()) and define forward(); calling the module calls forward."""

    def __init__(self):
        # object.__setattr__, because our own __setattr__ needs these dicts to exist already.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration -------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called: "
                                 f"call super().__init__() first in {type(self).__name__}.__init__")
        if isinstance(value, Parameter):
            self._register(self._parameters, name, value)
        elif isinstance(value, Module):
            self._register(self._modules, name, value)
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to the parameter {name!r}: "
                                "wrap it in nn.Parameter(...) or assign None")
            self._parameters[name] = None
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to the submodule {name!r}")
            self._modules[name] = None
        elif name in self._buffers:
            self._buffers[name] = _as_buffer(name, value)
        else:
            object.__setattr__(self, name, value)

    def _register(self, registry, name, value):
        """registry[name] = value, and `name` removed from every other place it may be. A name
        already in `registry` keeps its position, so the state_dict order stays torch's."""
        for other in (self.__dict__, self._parameters, self._buffers, self._modules):
            if other is not registry:
                other.pop(name, None)
        self._non_persistent_buffers.discard(name)
        registry[name] = value

    def __getattr__(self, name):
        # Called only when normal lookup fails, i.e. for registered parameters, buffers and modules.
        for registry in ("_parameters", "_buffers", "_modules"):
            values = self.__dict__.get(registry, {})
            if name in values:
                return values[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register a Parameter (or None, a placeholder that adds no key) under `name`."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, "
                            f"got {type(param).__name__}")
        self._register(self._parameters, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Register an array that is part of the model's state but not trained.

        Persistent buffers are saved in state_dict (BatchNorm's running_mean); non-persistent
        ones are not (a causal mask that is cheap to rebuild). `tensor` may be None.
        """
        self._register(self._buffers, name, _as_buffer(name, tensor))
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module, got {type(module).__name__}")
        self._register(self._modules, name, module)

    # ---- walking the tree -----------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every module below it, depth first;
        a module reachable twice is listed once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))      # reversed: the first child is popped first

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) for every parameter; a shared parameter is listed once."""
        yield from self._named_members("_parameters", prefix)

    def parameters(self):
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix=""):
        yield from self._named_members("_buffers", prefix)

    def buffers(self):
        for _, buffer in self.named_buffers():
            yield buffer

    def _named_members(self, registry, prefix):
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    # ---- modes, gradients, devices ----------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (dropout active, BatchNorm uses batch statistics) on every module."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Forget the gradients (set them to None, as torch does by default)."""
        for param in self.parameters():
            param.grad = None

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter, e.g. to lock an image tower."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def apply(self, fn):
        """Call fn(module) on every submodule, children first, then on self (torch's order)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, device):
        """Move every parameter, gradient and buffer to 'cpu' or 'cuda', in place."""
        return self._convert(lambda array: backend.to_device(array, device))

    def float(self):
        """Cast floating-point parameters and buffers to float32 (integer buffers stay)."""
        return self._convert(lambda array: array.astype(np.float32) if array.dtype.kind == "f" else array)

    def double(self):
        """Cast floating-point parameters and buffers to float64 (integer buffers stay)."""
        return self._convert(lambda array: array.astype(np.float64) if array.dtype.kind == "f" else array)

    def _convert(self, fn):
        # The Parameter objects stay the same (an optimizer may hold them); only their arrays change.
        for tensor in list(self.parameters()) + list(self.buffers()):
            tensor.data = fn(tensor.data)
            if tensor.grad is not None:
                tensor.grad = fn(tensor.grad)
        return self

    # ---- saving and loading -----------------------------------------------------------------
    def state_dict(self):
        """An ordered dict of dotted name -> NumPy array (a copy) of every parameter and
        persistent buffer, in torch's order and with torch's keys."""
        state = OrderedDict()
        for name, tensor in self._state_items():
            state[name] = np.array(backend.to_numpy(tensor.data), copy=True)
        return state

    def _state_items(self):
        """(key, Tensor) for every entry of the state_dict. Unlike named_parameters, a tensor
        shared by two modules appears under both names, as in torch."""
        items = []
        for module_name, module in self._all_modules_with_duplicates():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    items.append((prefix + name, param))
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers:
                    items.append((prefix + name, buffer))
        return items

    def _all_modules_with_duplicates(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child._all_modules_with_duplicates(f"{prefix}.{name}" if prefix else name)

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, CuPy or Tensors) into the parameters and buffers, in place.

        Values are cast to each parameter's dtype and moved to its device. A shape mismatch is
        always an error; with strict=True missing and unexpected keys are errors too. Every
        problem is reported in one message, so a wrong checkpoint is diagnosed in one go.
        Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self._state_items())
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        mismatched = []
        for key, tensor in own.items():
            if key in state_dict:
                shape = tuple(_array(state_dict[key]).shape)
                if shape != tuple(tensor.shape):
                    mismatched.append(f"{key}: checkpoint {shape}, model {tuple(tensor.shape)}")

        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
        if problems:
            raise RuntimeError(f"error(s) loading the state_dict of {type(self).__name__}:\n  "
                               + "\n  ".join(problems))

        for key, tensor in own.items():
            if key in state_dict:
                value = backend.to_device(_array(state_dict[key]), tensor.device)
                tensor.data[...] = value.astype(tensor.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # ---- printing ---------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses of this module's repr; layers override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        children = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _as_buffer(name, value):
    """Buffers are Tensors that never require a gradient (None is allowed as a placeholder)."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise TypeError(f"buffer {name!r} requires grad: register it as a Parameter instead")
        return value
    return Tensor(value)


def _array(value):
    return value.data if isinstance(value, Tensor) else value
