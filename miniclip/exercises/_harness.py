"""The machinery behind every exercise: templates, loading the learner's file, and the check.

An exercise is a module in this package (its file name is its NAME) that defines

    TITLE     one line: what the learner writes
    TUTORIAL  the notebook that teaches it
    MATH      the text of the template's docstring: the forward, and what to derive
    FILL      the functions the learner writes; here they hold the solution, and the template
              keeps their signature and docstring with the body replaced by NotImplementedError
    GIVEN     (optional) helper functions copied into the template as they are
    RETURNS   {function name: the input each returned array is the gradient of}, for the report
    cases()   a list of Case: float64 inputs, a forward, how the learner's functions give the
              gradients, and miniclip's own version of the same computation

`check` runs every case in four steps, stopping a case at its first failure:
  1. call the learner's backward on a random upstream gradient (NotImplementedError here
     means "not filled in yet"; any other exception is reported with the line that raised it);
  2. every gradient must have its input's shape and be finite;
  3. miniclip.gradcheck: float64 central differences, every element (the report names the
     input and the worst index);
  4. the same gradients from miniclip's own implementation, on the same upstream gradient.
"""
import importlib.util
import inspect

import textwrap
import traceback
import types

import numpy as np

from miniclip.gradcheck import GradcheckError, gradcheck
from miniclip.tensor import Function, Tensor

# The tolerances of miniclip.gradcheck (tests/tolerances.py, GRADCHECK) and for the comparison
# with miniclip's own backward: an entry passes when |yours - expected| <= ATOL + RTOL |expected|.
ATOL, RTOL = 1e-6, 1e-4


class NotFilledIn(Exception):
    """The learner's function still raises NotImplementedError."""


class Case:
    """One check: differentiable float64 inputs, the forward, the learner's backward, miniclip's.

    inputs:    {name: float64 array}, the inputs whose gradients are checked, in order
    forward:   forward(**inputs) -> (output array, saved), saved being anything backward needs
    backward:  backward(learner, dout, saved) -> {name: gradient}, calling the learner's functions
    library:   library(**tensors) -> output Tensor, built with miniclip (its autograd or kernels)
    """

    def __init__(self, title, inputs, forward, backward, library):
        self.title, self.inputs = title, dict(inputs)
        self.forward, self.backward, self.library = forward, backward, library


class Result:
    """What check() found: `passed`, `unfilled` (function names), and the report `text`."""

    def __init__(self, name, lines, passed, unfilled):
        self.name, self.lines, self.passed, self.unfilled = name, lines, passed, unfilled

    @property
    def text(self):
        return "\n".join(self.lines)

    def __bool__(self):
        return self.passed

    def __repr__(self):
        return self.text

    def _repr_pretty_(self, printer, cycle):     # IPython shows the report, not an object repr
        printer.text(self.text)


# ---- templates ----------------------------------------------------------------------------
def template(exercise):
    """The text of the learner's file: MATH, the imports, GIVEN as they are, FILL as stubs."""
    parts = [f'"""Exercise {exercise.NAME}: {exercise.TITLE}\n\n{_math_text(exercise)}\n\n'
             f"Fill in every function that raises NotImplementedError, then check your work:\n\n"
             f"    python -m miniclip.exercises check {exercise.NAME} exercises/{exercise.NAME}.py\n\n"
             f"The notebook {exercise.TUTORIAL} derives this step by step.\n"
             f'"""\n',
             "import numpy as np\n"]
    for fn in getattr(exercise, "GIVEN", ()):
        parts.append("\n" + inspect.getsource(fn).rstrip() + "\n")
    for fn in exercise.FILL:
        doc = inspect.getdoc(fn)
        doc = textwrap.indent(f'"""{doc}"""' if "\n" not in doc else f'"""{doc}\n"""', "    ")
        parts.append(f"\ndef {fn.__name__}{inspect.signature(fn)}:\n{doc}\n"
                     f"    raise NotImplementedError(\"{fn.__name__} is not written yet\")\n")
    return "\n".join(parts)


def _math_text(exercise):
    return textwrap.dedent(exercise.MATH).strip("\n")


def load_file(path):
    """Import the learner's file as a fresh module (a new one on every call: edits are seen)."""
    name = f"miniclip_exercise_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_namespace(learner):
    """A module, a dict of functions (e.g. a notebook's globals()) or any object with attributes."""
    if isinstance(learner, dict):
        return types.SimpleNamespace(**learner)
    return learner


# ---- the check ----------------------------------------------------------------------------
def _call_learner(step, where):
    """Run step(); turn NotImplementedError into NotFilledIn and other errors into a readable line."""
    try:
        return step()
    except NotImplementedError as error:
        raise NotFilledIn(str(error) or "a function raises NotImplementedError") from None
    except NotFilledIn:
        raise
    except Exception as error:          # the learner's bug: say where it happened
        frames = traceback.extract_tb(error.__traceback__)
        own = [f for f in frames if "/numpy/" not in f.filename.replace("\\", "/")]
        frame = (own or frames)[-1]
        raise RuntimeError(f"{where} raised {type(error).__name__}: {error}\n"
                           f"      at {frame.filename}:{frame.lineno} in {frame.name}: {frame.line}") from None


def _upstream(shape, rng):
    """A random upstream gradient, never all ones, so every output element weighs differently."""
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def _compare(name, yours, expected):
    """None when they agree, else a line naming the worst index."""
    yours, expected = np.asarray(yours, np.float64), np.asarray(expected, np.float64)
    error = np.abs(yours - expected)
    bad = error > ATOL + RTOL * np.abs(expected)
    if not bad.any():
        return None
    worst = np.unravel_index(np.argmax(np.where(bad, error, -1)), error.shape)
    return (f"the gradient of {name} differs from miniclip's own in {int(bad.sum())} of {bad.size} "
            f"entries; worst at index {tuple(int(i) for i in worst)}: yours {yours[worst]:.10g}, "
            f"miniclip's {expected[worst]:.10g}")


def _run_case(case, learner, where, rng):
    """Run one case; return None when it passes, else a failure message (raises NotFilledIn)."""
    names = list(case.inputs)
    out, saved = case.forward(**{n: a.copy() for n, a in case.inputs.items()})
    dout = _upstream(np.shape(out), rng)
    grads = _call_learner(lambda: case.backward(learner, dout, saved), where)

    # 2. shapes and finiteness, before any numerics
    for name in names:
        g, x = grads.get(name), case.inputs[name]
        if g is None:
            return f"no gradient for {name} (got None)"
        g = np.asarray(g)
        if g.shape != np.shape(x):
            return (f"the gradient of {name} has shape {g.shape}, but {name} has shape {np.shape(x)}: "
                    "a gradient always has its input's shape (sum over the dimensions broadcasting added)")
        if not np.all(np.isfinite(g)):
            return f"the gradient of {name} holds inf or nan at index {tuple(np.argwhere(~np.isfinite(g))[0])}"

    # 3. central differences, through a Function whose backward is the learner's
    class LearnersBackward(Function):
        def forward(self, *arrays):
            y, self.saved = case.forward(**dict(zip(names, arrays)))
            return np.asarray(y, np.float64)

        def backward(self, dy):
            grads = _call_learner(lambda: case.backward(learner, dy, self.saved), where)
            return tuple(np.asarray(grads[n], np.float64) for n in names)

    tensors = [Tensor(np.array(case.inputs[n], np.float64), requires_grad=True) for n in names]
    try:
        gradcheck(lambda *ts: LearnersBackward.apply(*ts), tensors, names=names,
                  eps=1e-6, atol=ATOL, rtol=RTOL)
    except GradcheckError as error:
        return str(error)

    # 4. miniclip's own gradients on the same upstream gradient
    tensors = [Tensor(np.array(case.inputs[n], np.float64), requires_grad=True) for n in names]
    y = case.library(**dict(zip(names, tensors)))
    y.backward(dout.astype(y.dtype).reshape(y.shape))
    for name, t in zip(names, tensors):
        expected = t.grad if t.grad is not None else np.zeros(t.shape)
        problem = _compare(name, grads[name], expected)
        if problem:
            return problem
    return None


def check(exercise, learner, where="your code", seed=0):
    """Check the learner's functions against every case of `exercise`; return a Result."""
    learner = as_namespace(learner)
    lines = [f"Checking exercise {exercise.NAME}: {exercise.TITLE}"]
    missing = [fn.__name__ for fn in exercise.FILL if not callable(getattr(learner, fn.__name__, None))]
    if missing:
        lines.append(f"  ✗ {where} does not define {', '.join(missing)}; "
                     f"start from the template: python -m miniclip.exercises start {exercise.NAME}")
        return Result(exercise.NAME, lines, False, [])
    rng = np.random.default_rng(seed)
    passed, unfilled = True, []
    for case in exercise.cases():
        try:
            problem = _run_case(case, learner, where, rng)
        except NotFilledIn as error:
            unfilled.append(str(error))
            passed = False
            lines.append(f"  ✗ {case.title}: not filled in yet ({error})")
            continue
        except RuntimeError as error:
            problem = str(error)
        if problem is None:
            lines.append(f"  ✓ {case.title}")
        else:
            passed = False
            lines.append(f"  ✗ {case.title}:\n" + textwrap.indent(problem, "      "))
    if passed:
        lines.append(f"PASSED: all {len(lines) - 1} cases agree with finite differences and with miniclip.")
    elif unfilled:
        lines.append(f"NOT FILLED IN: some functions still raise NotImplementedError. Write their bodies "
                     f"(each docstring states the math), then check again.")
    else:
        lines.append("FAILED: see the first ✗ above. 'numeric' is the finite-difference estimate, the truth "
                     "up to ~1e-8; 'analytic' is what your backward returned.")
    return Result(exercise.NAME, lines, passed, unfilled)
