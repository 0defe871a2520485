"""Gradient-check exercises: write a backward by hand, and let miniclip's gradcheck judge it.

    python -m miniclip.exercises list                     # what there is
    python -m miniclip.exercises start layer_norm         # writes ./exercises/layer_norm.py
    python -m miniclip.exercises check layer_norm         # checks ./exercises/layer_norm.py

or, from Python (a notebook cell):

    import miniclip.exercises as ex
    ex.check("layer_norm", my_module)          # a module, a file path, or a dict such as globals()

Each exercise is one module in this package (adding a module adds an exercise; nothing else
lists them). Its FILL functions hold the solution, the template keeps only their signature and
docstring, and check() runs float64 central differences (miniclip.gradcheck) and compares with
miniclip's own implementation. _harness.py describes what an exercise module defines.
"""
import importlib
import os
import pkgutil

from miniclip.exercises import _harness
from miniclip.exercises._harness import Case, Result  # noqa: F401

__all__ = ["names", "get", "template", "start", "check", "Case", "Result"]


def names():
    """The exercise names, sorted: every module here whose name does not start with '_'."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "__main__":
            found.append(info.name)
    return sorted(found)


def get(name):
    """The exercise module `name`."""
    if name not in names():
        raise KeyError(f"no exercise named {name!r}; the exercises are: {', '.join(names())}")
    module = importlib.import_module(f"miniclip.exercises.{name}")
    module.NAME = name
    return module


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
