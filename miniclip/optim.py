"""Optimizers (SGD, AdamW), gradient clipping and learning-rate schedules, as torch.optim / OpenCLIP.

An optimizer holds `param_groups`: a list of dicts, each with "params" (a list of Parameters)
and its own hyper-parameters, torch's convention. CLIP training puts the gains, biases and
logit_scale in a group with weight_decay=0:

    optimizer = AdamW([{"params": decay, "weight_decay": 0.2},
                       {"params": no_decay, "weight_decay": 0.0}], lr=5e-4)

`step()` updates every parameter that has a gradient, in place, on its `.data` array: arrays
carry no graph, so an update is never recorded by autograd. The same lines run on NumPy and
CuPy arrays (`xp = get_array_module(p.data)`).

SGD with momentum mu, weight decay lambda and learning rate lr (torch.optim.SGD):
    g = grad + lambda p;   b = g (first step) else mu b + g;   d = g + mu b (nesterov) else b;   p -= lr d

AdamW (Loshchilov & Hutter 2019, torch.optim.AdamW), step t = 1, 2, ...:
    p -= lr lambda p                                        decoupled weight decay
    m  = beta1 m + (1 - beta1) g                            first moment
    v  = beta2 v + (1 - beta2) g^2                          second moment
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

AdamW.step runs this update as one fused multi-tensor pass over every parameter
(miniclip.kernels.adamw: Numba on the CPU, one numba.cuda launch on the GPU, the array-operation
reference under kernels.use("reference")), on flat buffers that the parameters are views of.

Checked step for step against torch.optim in tests/test_optim.py (in both kernel modes), with save/load resuming
bit for bit, clip_grad_norm against torch.nn.utils.clip_grad_norm_, and the schedules against
hand-computed values.
"""
import math

import numpy as np

from miniclip.backend import get_array_module, to_device, to_numpy
from miniclip.kernels import adamw as adamw_kernels


class Optimizer:
    """The base class: param_groups, per-parameter state, zero_grad, state_dict/load_state_dict."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.param_groups = []
        self.state = {}           # Parameter -> dict of its state (step count, moment arrays)
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty list of parameters")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group; hyper-parameters it does not set take the optimizer's defaults."""
        group = dict(group)
        group["params"] = list(group["params"])
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if id(p) in seen:
                raise ValueError("a parameter appears in more than one param group")
            seen.add(id(p))
        self.param_groups.append(group)

    def zero_grad(self):
        """Forget the gradients (set them to None), before the next backward."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """{"state": {index: {name: value}}, "param_groups": [...]}, torch's layout: parameters are
        numbered in the order of the groups, arrays are NumPy copies, step counts Python numbers."""
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        state = {index[id(p)]: {name: _copy_to_numpy(value) for name, value in s.items()}
                 for p, s in self.state.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by state_dict(), onto this optimizer's
        parameters (same groups, same sizes); arrays move to each parameter's device."""
        saved_groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in saved_groups]
        if sizes != saved_sizes:
            raise ValueError(f"the saved optimizer has param groups of sizes {saved_sizes}, this one "
                             f"{sizes}: it was saved for a different model or grouping")
        params = {}
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
            params.update(zip(saved["params"], group["params"]))
        self.state = {}
        for i, saved in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {name: _copy_to(value, p) for name, value in saved.items()}


def _copy_to_numpy(value):
    return np.array(to_numpy(value), copy=True) if hasattr(value, "shape") else value


def _copy_to(value, param):
    """An array of the saved state as a fresh array on the parameter's device; numbers as they are."""
    if not hasattr(value, "shape"):
        return value
    return to_device(np.array(to_numpy(value), copy=True), param.device)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def step(self):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if wd != 0:
                    d = d + wd * p.data                      # L2 decay: part of the gradient
                if mu != 0:
                    state = self.state.setdefault(p, {})
                    if "momentum_buffer" in state:
                        buf = mu * state["momentum_buffer"] + d
                    else:
                        buf = d.copy()                       # torch starts the buffer at the first gradient
                    state["momentum_buffer"] = buf
                    d = d + mu * buf if group["nesterov"] else buf
                p.data -= lr * d


class AdamW(Optimizer):
    """Adam with decoupled weight decay: the decay shrinks the weights directly instead of being
    added to the gradient, so it is not rescaled by Adam's per-parameter step sizes.

    Each step is one call of the fused multi-tensor kernel miniclip.kernels.adamw.adamw_multi_step
    per device and dtype (the update in the module docstring): on a GPU one kernel launch for all
    the parameters, not one per parameter. For that the parameters and both moments live in flat
    buffers (_FlatBuffers below): each Parameter's .data, and each state's exp_avg and exp_avg_sq,
    is a view into them, and the gradients are gathered into one flat array per step. The state
    keeps torch's layout, one exp_avg and exp_avg_sq array per parameter, so state_dict is unchanged.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._flat = {}           # (device, dtype) -> _FlatBuffers

    def step(self):
        updated = {}              # (device, dtype) -> [(parameter, its group)], those with a gradient
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                if not state:
                    xp = get_array_module(p.data)
                    state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
                state["step"] += 1
                updated.setdefault(_key(p), []).append((p, group))
        for key, members in updated.items():
            flat = self._flat_buffers(key)
            xp = get_array_module(flat.param)
            # One kernel on CuPy for more than 8 gradients under 2 MB each on average (larger ones are
            # copied one by one: still no wait for the GPU). A 0-d gradient may be a NumPy scalar.
            grad = xp.concatenate([xp.asarray(p.grad, dtype=flat.param.dtype).ravel() for p, _ in members])
            segments, grad_offset = [], 0
            for p, group in members:
                size = p.data.size
                segments.append(adamw_kernels.Segment(flat.offsets[p], grad_offset, size, self.state[p]["step"],
                                                      group["lr"], *group["betas"], group["eps"],
                                                      group["weight_decay"]))
                grad_offset += size
            adamw_kernels.adamw_multi_step(flat.param, grad, flat.exp_avg, flat.exp_avg_sq, segments)

    def _flat_buffers(self, key):
        """The flat buffers of the parameters with state on this (device, dtype), rebuilt from the
        current arrays when they no longer hold them: a parameter got its first gradient, or an
        array was replaced (load_state_dict, Module.to, Module.double)."""
        params = [p for p in self.state if _key(p) == key]
        flat = self._flat.get(key)
        if flat is None or not flat.holds(params, self.state):
            flat = self._flat[key] = _FlatBuffers(params, self.state)
        return flat


def _key(p):
    return p.device, str(p.data.dtype)


class _FlatBuffers:
    """Parameters of one device and dtype, and their AdamW moments, as three flat arrays.

    Each parameter's .data and its state's exp_avg and exp_avg_sq become views into `param`,
    `exp_avg` and `exp_avg_sq` at offsets[p]: whatever updates the flat arrays updates them, and
    one kernel can walk every parameter. Built by copying the current arrays in, once.
    """

    def __init__(self, params, state):
        xp, dtype = get_array_module(params[0].data), params[0].data.dtype
        self.params, self.offsets, offset = params, {}, 0
        for p in params:
            self.offsets[p], offset = offset, offset + p.data.size

        def gather(arrays):
            return xp.concatenate([xp.asarray(a, dtype=dtype).ravel() for a in arrays])

        self.param = gather([p.data for p in params])
        self.exp_avg = gather([state[p]["exp_avg"] for p in params])
        self.exp_avg_sq = gather([state[p]["exp_avg_sq"] for p in params])
        self.views = {}           # p -> its (data, exp_avg, exp_avg_sq) views
        for p in params:
            begin, end, shape = self.offsets[p], self.offsets[p] + p.data.size, p.data.shape
            views = tuple(flat[begin:end].reshape(shape) for flat in (self.param, self.exp_avg, self.exp_avg_sq))
            p.data, state[p]["exp_avg"], state[p]["exp_avg_sq"] = views
            self.views[p] = views

    def holds(self, params, state):
        """Whether these are still exactly the parameters, each with the views made for it."""
        return (len(params) == len(self.params) and all(p is q for p, q in zip(params, self.params))
                and all(p.data is data and state[p]["exp_avg"] is m and state[p]["exp_avg_sq"] is v
                        for p, (data, m, v) in self.views.items()))


def clip_grad_norm(parameters, max_norm):
    """Scale all gradients together so that their global L2 norm is at most max_norm.

    total = sqrt(sum over parameters of ||grad||^2); every grad is multiplied by
    min(1, max_norm / (total + 1e-6)), as torch.nn.utils.clip_grad_norm_. Returns total (the
    norm before clipping) as a 0-d array on the gradients' device.

    Nothing here reads a number back to the host: the norms, the total and the clip factor stay
    on the device, and the factor multiplies every gradient there, 1 when no clipping is needed
    (torch does the same with foreach). On a GPU, float(total) would make the host wait for the
    GPU to finish the backward pass; reading one norm per parameter would wait once per parameter.
    """
    params = [p for p in _as_list(parameters) if p.grad is not None]
    if not params:
        return 0.0
    xp = get_array_module(params[0].grad)
    norms = xp.stack([xp.linalg.norm(xp.asarray(p.grad).ravel()) for p in params])     # (P,)
    total = xp.linalg.norm(norms)
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        # Not `p.grad *= scale`: a 0-d gradient may be a NumPy scalar, which *= would not change.
        p.grad = (p.grad * scale).astype(p.grad.dtype, copy=False)
    return total


clip_grad_norm_ = clip_grad_norm        # torch's name


def _as_list(parameters):
    return [parameters] if hasattr(parameters, "grad") else list(parameters)


# ---- learning-rate schedules (OpenCLIP's open_clip_train/scheduler.py) -----------------------
def assign_learning_rate(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def _warmup_lr(base_lr, warmup_length, step):
    return base_lr * (step + 1) / warmup_length


def const_lr(optimizer, base_lr, warmup_length, steps):
    """A function of the step (0, 1, ...) that sets and returns the learning rate:

        lr(step) = base_lr * (step + 1) / warmup_length     for step < warmup_length
                 = base_lr                                   afterwards

    `steps` is unused; it is there so every schedule is called the same way.
    """
    def adjust(step):
        lr = _warmup_lr(base_lr, warmup_length, step) if step < warmup_length else base_lr
        assign_learning_rate(optimizer, lr)
        return lr
    return adjust


def cosine_lr(optimizer, base_lr, warmup_length, steps):
    """A function of the step (0, 1, ..., steps - 1) that sets and returns the learning rate:

        lr(step) = base_lr * (step + 1) / warmup_length                      for step < warmup_length
                 = base_lr * (1 + cos(pi * e / (steps - warmup_length))) / 2   with e = step - warmup_length

    a linear warmup to base_lr, then half a cosine down towards 0 at step = steps.
    """
    if not 0 <= warmup_length < steps:
        raise ValueError(f"cosine_lr needs 0 <= warmup_length < steps, got warmup_length="
                         f"{warmup_length} and steps={steps}")

    def adjust(step):
        if step < warmup_length:
            lr = _warmup_lr(base_lr, warmup_length, step)
        else:
            e, es = step - warmup_length, steps - warmup_length
            lr = 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr
        assign_learning_rate(optimizer, lr)
        return lr
    return adjust


def const_lr_cooldown(optimizer, base_lr, warmup_length, steps, cooldown_steps, cooldown_power=1.0,
                      cooldown_end_lr=0.0):
    """const_lr, then a cooldown over the last `cooldown_steps` of the `steps` (OpenCLIP's
    const-cooldown, for runs whose length is decided late: a cooldown can start from any checkpoint):

        lr(step) = base_lr * (step + 1) / warmup_length                  for step < warmup_length
                 = base_lr                                               until s0 = steps - cooldown_steps
                 = end + (base_lr - end) * (1 - (step - s0) / cooldown_steps) ** cooldown_power   afterwards

    a linear decay to cooldown_end_lr when cooldown_power is 1, a polynomial one otherwise.
    """
    if not 0 < cooldown_steps <= steps - warmup_length:
        raise ValueError(f"const_lr_cooldown needs 0 < cooldown_steps <= steps - warmup_length, got "
                         f"cooldown_steps={cooldown_steps}, steps={steps}, warmup_length={warmup_length}")
    start = steps - cooldown_steps

    def adjust(step):
        if step < warmup_length:
            lr = _warmup_lr(base_lr, warmup_length, step)
        elif step < start:
            lr = base_lr
        else:
            decay = (1 - (step - start) / cooldown_steps) ** cooldown_power
            lr = decay * (base_lr - cooldown_end_lr) + cooldown_end_lr
        assign_learning_rate(optimizer, lr)
        return lr
    return adjust
