"""Gradient-check exercises: write a backward by hand, and let miniclip's gradcheck judge it.

    python -m miniclip.exercises list                     # what there is, in the notebooks' order
    python -m miniclip.exercises start layer_norm         # writes ./exercises/layer_norm.py
    python -m miniclip.exercises hint layer_norm          # hint 1 of 3 (--tier 3: the formula)
    python -m miniclip.exercises check layer_norm         # checks ./exercises/layer_norm.py

or, from Python (a notebook cell):

    import miniclip.exercises as ex
    ex.check("layer_norm", my_module)          # a module, a file path, or a dict such as globals()

Each exercise is one module in this package (adding a module adds an exercise; nothing else
lists them). Its FILL functions hold the solution; the template keeps only their signature and
docstring under MATH (the forward, the shapes and the question), HINTS hold the answer in three
tiers, and check() runs float64 central differences (miniclip.gradcheck) and compares with
miniclip's own implementation. _harness.py describes what an exercise module defines.
"""
import importlib
import os
import pkgutil

from miniclip.exercises import _harness
from miniclip.exercises._harness import Case, Result  # noqa: F401

__all__ = ["names", "get", "template", "start", "hint", "check", "Case", "Result"]


def _modules():
    """{name: module} for every module here whose name does not start with '_'."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "__main__":
            found[info.name] = importlib.import_module(f"miniclip.exercises.{info.name}")
            found[info.name].NAME = info.name
    return found


def names():
    """The exercise names in the order the notebooks teach them: by TUTORIAL (its file name starts
    with the notebook's number), then by ORDER within one notebook."""
    modules = _modules()
    return sorted(modules, key=lambda n: (modules[n].TUTORIAL, getattr(modules[n], "ORDER", 0), n))


def get(name):
    """The exercise module `name`."""
    modules = _modules()
    if name not in modules:
        raise KeyError(f"no exercise named {name!r}; the exercises are: {', '.join(names())}")
    return modules[name]


def template(name):
    """The text of the learner's file for exercise `name`."""
    return _harness.template(get(name))


def start(name, directory="exercises", overwrite=False):
    """Write the template to directory/name.py and return its path. An existing file is kept
    (your work!) unless overwrite=True."""
    path = os.path.join(directory, f"{name}.py")
    text = template(name)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists: it may hold your work. Delete it, or pass "
                              "--force (overwrite=True) to start again from the template")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def hint(name, tier=1):
    """The hints of exercise `name` up to `tier` (1: what to think about, 2: the structure,
    3: the formula), as text."""
    if tier not in (1, 2, 3):
        raise ValueError(f"tier is 1, 2 or 3, not {tier!r}")
    return _harness.hints(get(name), tier)


def check(name, learner=None, verbose=True, seed=0):
    """Check a learner's solution of exercise `name`; print the report and return a Result
    (truthy when every case passes).

    learner: a module, a path to a .py file (default ./exercises/NAME.py), or a dict of
             functions (e.g. globals() in a notebook).
    """
    exercise = get(name)
    if learner is None:
        learner = os.path.join("exercises", f"{name}.py")
    where = "your code"
    if isinstance(learner, (str, os.PathLike)):
        where = str(learner)
        if not os.path.exists(learner):
            raise FileNotFoundError(f"{learner} does not exist; write the template first: "
                                    f"python -m miniclip.exercises start {name}")
        learner = _harness.load_file(learner)
    result = _harness.check(exercise, learner, where=where, seed=seed)
    if verbose:
        print(result.text)
    return result
