"""Float32 accuracy: how far miniclip's float32 gradients are from float64 truth, beside PyTorch's.

    python -m miniclip.bench accuracy                                  # tiny-rn-xs, 2 seeds, and the op table
    python -m miniclip.bench accuracy --model tiny-vit-xs --seeds 3 --batch 8 --train
    python -m miniclip.bench accuracy --case ../shared/cases/rn_stem_float32.npz --no-ops

What it measures. For one tensor g computed in float32 and its float64 truth g64 computed from the
same float32-representable inputs, the error is

    error(g) = max |g - g64| / max |g64|

(a relative error of the tensor's largest entry: a gradient's small entries carry little of the
update, and an elementwise relative error would divide by entries that are zero in truth).
Two tables:
- per parameter of a whole CLIP (the CLIP loss, backward): miniclip's float32 gradient and, when
  torch and open_clip are importable, OpenCLIP's float32 gradient of the same weights and inputs;
  the truth is miniclip in float64. Parameters whose true gradient is zero (below 1e-10 of the
  model's largest) are left out: any error divided by zero is meaningless.
- per op (miniclip.functional's ops, the CLIP loss) in each kernel mode ("fast" and
  "reference", miniclip.kernels.use): the output and each input's gradient, torch.nn.functional's
  float32 error beside it. The truth is the float64 reference.
ratio = max(miniclip's error, u) / max(torch's error, u), u = 2^-24 (float32's unit roundoff: an
error below it is exact to float32). The worst ratios are printed first. With several draws, a
last table takes each side's worst error over them, parameter by parameter: one draw's error of
one number is one sample of rounding noise, and where a gradient cancels (logit_scale's, at init)
either side lands 10x closer than its usual on some draw.

Why kinks are excluded. ReLU's gradient jumps at 0: an input that is -3e-8 in float64 and +7e-9
in float32 (both within float32's rounding of a sum that cancels) passes a gradient in one run and
not in the other, and every gradient upstream of it changes by far more than rounding (the shared
case rn_stem_float32.npz: 9e-3 instead of 3e-6). Comparing there measures on which side of 0 a
rounding landed, not how well the arithmetic was done. So each float32 run records its ReLU
decisions (which inputs were > 0), and its truth is the float64 run that takes the same decisions
(ReLU replaced by a multiplication with the recorded mask): errors then measure rounding only.
The inputs whose sign differs between the float32 and float64 runs (kink flips) are reported, with
the error against plain float64, so a flip is seen, not hidden. Max pooling has kinks too (ties), but
no model uses it; the op table draws continuous inputs, where ties do not occur.
"""
import contextlib
import json
from dataclasses import dataclass, field

import numpy as np

import miniclip
from miniclip import functional as F
from miniclip import kernels, losses
from miniclip.bench import import_torch
from miniclip.errors import UserError
from miniclip.models import create_model, load_config, model_tensors
from miniclip.openclip_step import make_inputs
from miniclip.tensor import Tensor

UNIT_ROUNDOFF = 2.0 ** -24         # float32's: errors below it count as exact
ZERO_GRADIENT = 1e-10              # a true gradient below this fraction of the model's largest is zero


def max_rel_error(got, truth):
    """max |got - truth| / max |truth| (0 when both are zero)."""
    got, truth = np.asarray(got, np.float64), np.asarray(truth, np.float64)
    scale = np.abs(truth).max(initial=0.0)
    diff = np.abs(got - truth).max(initial=0.0)
    return diff / scale if scale > 0 else diff


def ratio(ours, theirs):
    """How many times miniclip's error is torch's, both floored at float32's unit roundoff."""
    return max(ours, UNIT_ROUNDOFF) / max(theirs, UNIT_ROUNDOFF)


# ---------------------------------------------------------------------------------------------
# Kinks: record a run's ReLU decisions, replay them in another run
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def relu_decisions(replay=None):
    """Within the block, miniclip.functional.relu records each call's input (yielded, a list of
    arrays in call order); with `replay` (masks from another run, the same order) it returns
    x * mask instead: the same function of x on that run's side of every kink."""
    inputs, relu = [], F.relu

    def recording_relu(x):
        inputs.append(np.array(x.data))
        if replay is None:
            return relu(x)
        mask = replay[len(inputs) - 1]
        if mask.shape != x.shape:
            raise RuntimeError(f"ReLU call {len(inputs) - 1}: replayed mask {mask.shape} for input {x.shape}")
        return x * Tensor(mask.astype(x.dtype))
    F.relu = recording_relu
    try:
        yield inputs
    finally:
        F.relu = relu


@dataclass
class Flip:
    """A ReLU input on the other side of 0 in float32 than in float64."""
    call: int                # which ReLU call of the forward (0 = the first)
    shape: tuple
    count: int               # how many of its inputs flipped
    index: tuple             # the first of them
    value32: float
    value64: float

    def __str__(self):
        return (f"ReLU call {self.call} {self.shape}: {self.count} input(s), e.g. at {self.index} "
                f"float32 {self.value32:+.3g} vs float64 {self.value64:+.3g}")


def kink_flips(inputs32, inputs64):
    """The ReLU calls whose inputs' signs (> 0 or not) differ between two runs."""
    flips = []
    for call, (a, b) in enumerate(zip(inputs32, inputs64)):
        where = np.argwhere((a > 0) != (b > 0))
        if len(where):
            index = tuple(int(i) for i in where[0])
            flips.append(Flip(call, a.shape, len(where), index, float(a[index]), float(b[index])))
    return flips


# ---------------------------------------------------------------------------------------------
# Whole models: per-parameter gradients of the CLIP loss
# ---------------------------------------------------------------------------------------------

@dataclass
class Draw:
    """One model case: a config, its weights and a batch (float32 images, int64 token ids)."""
    config: dict
    state: dict
    images: np.ndarray
    tokens: np.ndarray
    name: str = ""


def draw(config, seed, batch):
    """miniclip's random init and make_inputs' batch (N(0, 1) images, random token rows) for `seed`."""
    miniclip.manual_seed(seed)
    model = create_model(config)
    images, tokens = make_inputs(model.config, batch, seed)
    return Draw(model.config, model_tensors(model), images, tokens, f"seed {seed}")


def load_case(path):
    """A case file like ../shared/cases/rn_stem_float32.npz: config (JSON), sd/<key> arrays, img, txt."""
    z = np.load(path)
    state = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
    return Draw(load_config(json.loads(str(z["config"]))), state, z["img"], z["txt"], str(path))


def miniclip_gradients(case, dtype, train=False, replay=None):
    """({parameter: gradient as float64}, [ReLU inputs]) of the CLIP loss in `dtype`."""
    model = create_model(case.config)
    model.load_state_dict(case.state)
    if dtype == np.float64:
        model.double()
    model.train(train)
    with relu_decisions(replay) as relu_inputs:
        losses.clip_loss(*model(miniclip.tensor(case.images.astype(dtype)), miniclip.tensor(case.tokens))).backward()
    grads = {k: np.asarray(p.grad, np.float64) for k, p in model.named_parameters() if p.grad is not None}
    return grads, relu_inputs


def openclip_gradients(case, torch, open_clip, train=False):
    """The same from OpenCLIP in float32: ({parameter: gradient}, [ReLU inputs])."""
    model = open_clip.CLIP(**{k: case.config[k] for k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")})
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in case.state.items()},
                                                strict=False)
    if unexpected or set(missing) - {"attn_mask"}:                # the causal mask is OpenCLIP's buffer only
        raise RuntimeError(f"OpenCLIP's model does not take these weights: missing {missing}, unexpected {unexpected}")
    model.train(train)
    relu_inputs = []
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_pre_hook(lambda m, args: relu_inputs.append(args[0].detach().numpy().copy()))
    out = model(torch.from_numpy(case.images), torch.from_numpy(case.tokens))
    open_clip.ClipLoss()(*out).backward()
    grads = {k: p.grad.double().numpy() for k, p in model.named_parameters() if p.grad is not None}
    return grads, relu_inputs


@dataclass
class ModelReport:
    """Per-parameter float32 errors of one draw, each against float64 on the float32 run's branch."""
    name: str
    rows: list = field(default_factory=list)      # (parameter, miniclip error, torch error or None)
    flips: list = field(default_factory=list)     # miniclip's kink flips
    torch_flips: list = field(default_factory=list)
    plain_worst: tuple = None                      # (parameter, error) against plain float64, if flips


def compare(grads, truth):
    """{parameter: error} for the parameters whose true gradient is not zero."""
    largest = max(np.abs(g).max() for g in truth.values())
    return {k: max_rel_error(grads[k], t) for k, t in truth.items() if np.abs(t).max() > ZERO_GRADIENT * largest}


def model_report(case, train=False, oracle=None):
    """Measure one draw; `oracle` is (torch, open_clip) or None."""
    ours, relu32 = miniclip_gradients(case, np.float32, train)
    plain, relu64 = miniclip_gradients(case, np.float64, train)
    report = ModelReport(case.name, flips=kink_flips(relu32, relu64))
    masks = [x > 0 for x in relu32]
    truth = miniclip_gradients(case, np.float64, train, replay=masks)[0] if report.flips else plain
    errors = compare(ours, truth)
    if report.flips:
        report.plain_worst = max(compare(ours, plain).items(), key=lambda kv: kv[1])
    theirs_errors = {}
    if oracle is not None:
        theirs, relu_torch = openclip_gradients(case, *oracle, train)
        if [x.shape for x in relu_torch] != [x.shape for x in relu32]:
            raise RuntimeError("OpenCLIP's and miniclip's ReLU calls differ: their decisions cannot be replayed")
        report.torch_flips = kink_flips(relu_torch, relu64)
        their_masks = [x > 0 for x in relu_torch]
        their_truth = truth if all((a == b).all() for a, b in zip(their_masks, masks)) else \
            miniclip_gradients(case, np.float64, train, replay=their_masks)[0]
        theirs_errors = compare(theirs, their_truth)
    report.rows = [(k, e, theirs_errors.get(k)) for k, e in errors.items()]
    return report


def worst_over_draws(reports):
    """[(parameter, worst miniclip error, worst torch error or None)] over several draws' reports.

    One draw's error of one scalar is one sample of rounding noise, and where the gradient is a
    sum that cancels (logit_scale's, at init: every image's features are nearly the same) either
    side can be lucky by 10x; the worst over draws compares the two sides' noise, not their luck."""
    worst = {}
    for report in reports:
        for name, ours, theirs in report.rows:
            previous = worst.get(name, (0.0, None))
            worst[name] = (max(previous[0], ours), None if theirs is None else max(previous[1] or 0.0, theirs))
    return [(name, ours, theirs) for name, (ours, theirs) in worst.items()]


def print_rows(title, rows):
    """Parameter rows (name, miniclip error, torch error or None), the worst ratio first."""
    print(title)
    print(f"  {'parameter':44} {'miniclip':>9} {'torch':>9} {'ratio':>7}")
    for name, ours, theirs in sorted(rows, key=lambda r: -ratio(r[1], r[2] or 0.0)):
        torch_text = f"{theirs:9.1e} {ratio(ours, theirs):6.1f}x" if theirs is not None else ""
        print(f"  {name:44} {ours:9.1e} {torch_text}")


def print_model_report(report):
    lines = [f"\n{report.name}: float32 parameter gradients of the CLIP loss, error vs float64 on the same branch"]
    for side, flips in (("miniclip", report.flips), ("torch", report.torch_flips)):
        lines += [f"  kink flip ({side}): {flip}" for flip in flips]
    if report.plain_worst:
        name, error = report.plain_worst
        lines.append(f"  against plain float64 (the flipped kink's other branch) miniclip's worst is {error:.1e} ({name})")
    print_rows("\n".join(lines), report.rows)


# ---------------------------------------------------------------------------------------------
# Ops: forward and backward of each functional op, in each kernel mode
# ---------------------------------------------------------------------------------------------

@dataclass
class Op:
    """One functional op: its inputs (name -> array, drawn once) and the call on each side.
    Float inputs named in `grads` get gradients; the rest are constants of the run's dtype."""
    name: str
    inputs: callable          # rng -> {name: array}
    grads: tuple
    ours: callable            # (*tensors) -> Tensor
    theirs: callable          # (torch, *tensors) -> torch.Tensor


def _normal(rng, shape, offset=0.0, scale=1.0):
    """float32-representable draws (as float64), so both precisions start from the same numbers."""
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


def _images(rng, shape, offset=0.0):
    return {"x": _normal(rng, shape, offset)}


def _conv(n, c, size, oc, k):
    return lambda rng: {"x": _normal(rng, (n, c, size, size)), "weight": _normal(rng, (oc, c, k, k), scale=0.2),
                        "bias": _normal(rng, (oc,))}


def _clip_loss_inputs(rng):
    f = rng.standard_normal((2, 64, 128))
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    return {"image": f[0].astype(np.float32).astype(np.float64), "text": f[1].astype(np.float32).astype(np.float64),
            "scale": np.array(float(np.float32(100.0)))}


def _torch_clip_loss(torch, image, text, scale):
    logits = scale * image @ text.T
    labels = torch.arange(len(logits))
    return (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2


def _bn(training):
    def ours(x, mean, var, w, b):
        return F.batch_norm(x, mean if not training else None, var if not training else None, w, b, training)

    def theirs(torch, x, mean, var, w, b):
        return torch.nn.functional.batch_norm(x, None if training else mean, None if training else var, w, b, training)
    inputs = lambda rng: {"x": _normal(rng, (32, 16, 32, 32), offset=10.0), "running_mean": _normal(rng, (16,), 10.0),
                          "running_var": np.abs(_normal(rng, (16,))) + 0.5, "weight": _normal(rng, (16,)),
                          "bias": _normal(rng, (16,))}
    return inputs, ours, theirs


OPS = [
    Op("linear", lambda rng: {"x": _normal(rng, (1024, 64, 32)), "weight": _normal(rng, (48, 32), scale=0.2),
                              "bias": _normal(rng, (48,))}, ("x", "weight", "bias"),
       lambda x, w, b: F.linear(x, w, b), lambda t, x, w, b: t.nn.functional.linear(x, w, b)),
    Op("matmul", lambda rng: {"a": _normal(rng, (8, 77, 64)), "b": _normal(rng, (8, 64, 77))}, ("a", "b"),
       lambda a, b: a @ b, lambda t, a, b: a @ b),
    Op("conv2d 3x3 s1 p1", _conv(8, 16, 32, 16, 3), ("x", "weight", "bias"),
       lambda x, w, b: F.conv2d(x, w, b, padding=1), lambda t, x, w, b: t.nn.functional.conv2d(x, w, b, padding=1)),
    Op("conv2d 3x3 s2 p1", _conv(8, 3, 64, 8, 3), ("x", "weight", "bias"),
       lambda x, w, b: F.conv2d(x, w, b, 2, 1), lambda t, x, w, b: t.nn.functional.conv2d(x, w, b, 2, 1)),
    Op("conv2d 1x1", _conv(8, 64, 16, 64, 1), ("x", "weight", "bias"),
       lambda x, w, b: F.conv2d(x, w, b), lambda t, x, w, b: t.nn.functional.conv2d(x, w, b)),
    Op("conv2d patch 8", _conv(8, 3, 64, 64, 8), ("x", "weight", "bias"),
       lambda x, w, b: F.conv2d(x, w, b, 8), lambda t, x, w, b: t.nn.functional.conv2d(x, w, b, 8)),
    Op("layer_norm", lambda rng: {"x": _normal(rng, (16, 77, 256), offset=10.0), "weight": _normal(rng, (256,)),
                                  "bias": _normal(rng, (256,))}, ("x", "weight", "bias"),
       lambda x, w, b: F.layer_norm(x, 256, w, b), lambda t, x, w, b: t.nn.functional.layer_norm(x, (256,), w, b)),
    Op("batch_norm train", _bn(True)[0], ("x", "weight", "bias"), *_bn(True)[1:]),
    Op("batch_norm eval", _bn(False)[0], ("x", "weight", "bias"), *_bn(False)[1:]),
    Op("softmax", lambda rng: _images(rng, (16, 77, 77), 0.0), ("x",),
       lambda x: F.softmax(x * 4.0, -1), lambda t, x: t.softmax(x * 4.0, -1)),
    Op("log_softmax", lambda rng: _images(rng, (16, 77, 77), 0.0), ("x",),
       lambda x: F.log_softmax(x * 4.0, -1), lambda t, x: t.log_softmax(x * 4.0, -1)),
    Op("cross_entropy", lambda rng: {"logits": _normal(rng, (256, 1000), scale=4.0),
                                     "target": rng.integers(0, 1000, 256)}, ("logits",),
       lambda x, y: F.cross_entropy(x, y), lambda t, x, y: t.nn.functional.cross_entropy(x, y)),
    Op("clip_loss", _clip_loss_inputs, ("image", "text", "scale"),
       lambda i, t, s: losses.clip_loss(i, t, s), _torch_clip_loss),
    Op("attention", lambda rng: {q: _normal(rng, (4, 4, 77, 64)) for q in "qkv"}, tuple("qkv"),
       lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
       lambda t, q, k, v: t.nn.functional.scaled_dot_product_attention(q, k, v)),
    Op("attention causal", lambda rng: {q: _normal(rng, (4, 4, 77, 64)) for q in "qkv"}, tuple("qkv"),
       lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
       lambda t, q, k, v: t.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)),
    Op("gelu", lambda rng: _images(rng, (64, 77, 256)), ("x",),
       lambda x: F.gelu(x), lambda t, x: t.nn.functional.gelu(x)),
    Op("quick_gelu", lambda rng: _images(rng, (64, 77, 256)), ("x",),
       lambda x: F.quick_gelu(x), lambda t, x: x * t.sigmoid(1.702 * x)),
    Op("mlp", lambda rng: {"x": _normal(rng, (16, 77, 128)), "fc_weight": _normal(rng, (512, 128), scale=0.09),
                           "fc_bias": _normal(rng, (512,)), "proj_weight": _normal(rng, (128, 512), scale=0.04),
                           "proj_bias": _normal(rng, (128,))}, ("x", "fc_weight", "fc_bias", "proj_weight", "proj_bias"),
       lambda x, w1, b1, w2, b2: F.mlp(x, w1, b1, w2, b2),
       lambda t, x, w1, b1, w2, b2: t.nn.functional.linear(t.nn.functional.gelu(t.nn.functional.linear(x, w1, b1)),
                                                            w2, b2)),
    Op("relu", lambda rng: _images(rng, (64, 32, 32, 32)), ("x",), lambda x: F.relu(x), lambda t, x: t.relu(x)),
    Op("avg_pool2d", lambda rng: _images(rng, (16, 64, 32, 32), 10.0), ("x",),
       lambda x: F.avg_pool2d(x, 2), lambda t, x: t.nn.functional.avg_pool2d(x, 2)),
    Op("max_pool2d", lambda rng: _images(rng, (16, 64, 32, 32)), ("x",),
       lambda x: F.max_pool2d(x, 3, 2, 1), lambda t, x: t.nn.functional.max_pool2d(x, 3, 2, 1)),
    Op("adaptive_avg_pool2d", lambda rng: _images(rng, (16, 64, 32, 32), 10.0), ("x",),
       lambda x: F.adaptive_avg_pool2d(x, 1), lambda t, x: t.nn.functional.adaptive_avg_pool2d(x, 1)),
    Op("mean over 4096 (spatial)", lambda rng: _images(rng, (16, 64, 64, 64), 10.0), ("x",),
       lambda x: x.mean((2, 3)), lambda t, x: x.mean((2, 3))),
    Op("normalize", lambda rng: _images(rng, (256, 512), 0.5), ("x",),
       lambda x: F.normalize(x, dim=-1), lambda t, x: t.nn.functional.normalize(x, dim=-1)),
]


def run_ours(op, arrays, dtype, upstream):
    """(output, {input: gradient}) of miniclip's op on the arrays cast to `dtype`."""
    tensors = [miniclip.tensor(a.astype(dtype) if a.dtype.kind == "f" else a, requires_grad=name in op.grads)
               for name, a in arrays.items()]
    y = op.ours(*tensors)
    (y * Tensor(upstream.astype(dtype))).sum().backward()
    return np.asarray(y.data), {name: np.asarray(t.grad) for name, t in zip(arrays, tensors) if name in op.grads}


def run_theirs(op, arrays, upstream, torch):
    """The same with torch in float32."""
    tensors = [torch.tensor(a.astype(np.float32) if a.dtype.kind == "f" else a, requires_grad=name in op.grads)
               for name, a in arrays.items()]
    y = op.theirs(torch, *tensors)
    (y * torch.tensor(upstream.astype(np.float32))).sum().backward()
    return y.detach().numpy(), {name: t.grad.numpy() for name, t in zip(arrays, tensors) if name in op.grads}


def op_rows(op, torch=None, seed=0):
    """[(op, kernel mode, output, miniclip error, torch error or None)] for the output y and each gradient."""
    rng = np.random.default_rng(seed)
    arrays = op.inputs(rng)
    with kernels.use("reference"):
        shape = np.shape(op.ours(*[miniclip.tensor(a) for a in arrays.values()]).data)
        upstream = _normal(rng, shape)
        truth = run_ours(op, arrays, np.float64, upstream)
    theirs = run_theirs(op, arrays, upstream, torch) if torch is not None else None
    rows = []
    for mode in kernels.MODES:
        with kernels.use(mode):
            ours = run_ours(op, arrays, np.float32, upstream)
        for output in ["y"] + list(op.grads):
            pick = (lambda result: result[0]) if output == "y" else (lambda result: result[1][output])
            their_error = max_rel_error(pick(theirs), pick(truth)) if theirs is not None else None
            label = output if output == "y" else f"d{output}"
            rows.append((op.name, mode, label, max_rel_error(pick(ours), pick(truth)), their_error))
    return rows


def print_op_rows(rows):
    print("\nops: float32 output y and input gradients d*, error vs the float64 reference")
    print(f"  {'op':26} {'mode':9} {'output':13} {'miniclip':>9} {'torch':>9} {'ratio':>7}")
    for name, mode, output, ours, theirs in sorted(rows, key=lambda r: -ratio(r[3], r[4] or 0.0)):
        torch_text = f"{theirs:9.1e} {ratio(ours, theirs):6.1f}x" if theirs is not None else ""
        print(f"  {name:26} {mode:9} {output:13} {ours:9.1e} {torch_text}")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("--model", default="tiny-rn-xs", help="a built-in config name or a config JSON")
    parser.add_argument("--seeds", type=int, default=2, help="random draws of weights and batch (seeds 0..N-1)")
    parser.add_argument("--batch", type=int, default=4, help="images and texts per draw")
    parser.add_argument("--train", action="store_true", help="training mode (batch norm uses the batch's statistics)")
    parser.add_argument("--case", metavar="NPZ", help="measure this case file instead of random draws")
    parser.add_argument("--no-ops", action="store_true", help="skip the per-op table")
    parser.add_argument("--no-torch", action="store_true", help="skip torch even when it is installed")


def import_open_clip():
    """open_clip, or None when it is not installed (an oracle only, like torch)."""
    try:
        import open_clip
    except ImportError:
        return None
    return open_clip


def load_cases(args):
    """The draws to measure: the --case file, or --seeds random draws of --model."""
    if args.case:
        try:
            return [load_case(args.case)]
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"--case {args.case}: not a readable case file ({e})") from None
    try:
        config = load_config(args.model)
    except ValueError as e:
        raise UserError(f"--model: {e}") from None
    return [draw(config, seed, args.batch) for seed in range(args.seeds)]


def main(args):
    if args.seeds < 1 or args.batch < 2:
        raise UserError(f"--seeds must be at least 1 and --batch at least 2, got {args.seeds} and {args.batch}")
    cases = load_cases(args)
    torch = None if args.no_torch else import_torch()
    open_clip = import_open_clip() if torch is not None else None
    reports = [model_report(case, args.train, open_clip and (torch, open_clip)) for case in cases]
    for report in reports:
        print_model_report(report)
    if len(reports) > 1:
        print_rows(f"\nthe worst over {len(reports)} draws, per parameter", worst_over_draws(reports))
    if not args.no_ops:
        print_op_rows([row for op in OPS for row in op_rows(op, torch)])
