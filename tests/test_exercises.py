"""The exercise checker works both ways, for every exercise (discovered, not listed):

- the reference solution (the FILL functions in miniclip/exercises/NAME.py) passes;
- the unfilled template fails with the "not filled in" message;
- a planted wrong gradient (one returned array nudged at one index) fails, and the report names
  the input whose gradient is wrong;
- the command line: list / start / check and their exit codes.
"""
import inspect
import subprocess
import sys
import types

import numpy as np
import pytest

import miniclip.exercises as exercises

NAMES = exercises.names()


def _module_from_source(source, name="learner"):
    """A fresh module from source text: its functions call each other through its own globals,
    exactly as in a learner's file."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def _solution(name):
    return _module_from_source(inspect.getsource(exercises.get(name)), f"solution_{name}")


def _nudged(fn, output_index):
    """fn with its output_index-th returned array changed at one index (the last one)."""
    def wrong(*args, **kwargs):
        out = fn(*args, **kwargs)
        several = isinstance(out, tuple)
        outs = list(out) if several else [out]
        bad = np.array(outs[output_index], dtype=np.float64, copy=True)
        bad.reshape(-1)[-1] += 0.5
        outs[output_index] = bad
        return tuple(outs) if several else outs[0]
    return wrong


def test_there_are_exercises():
    assert {"broadcast", "activations", "matmul", "softmax", "layer_norm", "softmax_xent", "clip_loss",
            "attention", "conv2d"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_exercise_module_is_complete(name):
    ex = exercises.get(name)
    for attribute in ("TITLE", "TUTORIAL", "MATH", "FILL", "RETURNS", "cases"):
        assert hasattr(ex, attribute), f"exercise {name} lacks {attribute}"
    assert set(ex.RETURNS) == {fn.__name__ for fn in ex.FILL}


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_passes(name):
    result = exercises.check(name, _solution(name), verbose=False)
    assert result.passed, result.text
    assert "PASSED" in result.text


@pytest.mark.parametrize("name", NAMES)
def test_unfilled_template_fails_clearly(name, tmp_path):
    path = exercises.start(name, tmp_path)
    result = exercises.check(name, path, verbose=False)
    assert not result.passed
    assert result.unfilled
    assert "NOT FILLED IN" in result.text and "not written yet" in result.text, result.text


def _plants():
    for name in NAMES:
        for fn_name, inputs in exercises.get(name).RETURNS.items():
            for index, input_name in enumerate(inputs or (None,)):
                yield pytest.param(name, fn_name, index, input_name, id=f"{name}-{fn_name}-{index}")


@pytest.mark.parametrize("name, fn_name, index, input_name", list(_plants()))
def test_planted_wrong_gradient_fails_and_names_the_input(name, fn_name, index, input_name):
    learner = _solution(name)
    setattr(learner, fn_name, _nudged(getattr(learner, fn_name), index))
    result = exercises.check(name, learner, verbose=False)
    assert not result.passed, f"a wrong {fn_name} output {index} passed:\n{result.text}"
    assert "FAILED" in result.text
    if input_name is not None:
        assert f"gradcheck failed for {input_name} " in result.text, result.text
        assert "worst at index" in result.text


def test_wrong_shape_is_explained():
    learner = _solution("broadcast")
    learner.sum_to_shape = lambda g, shape: g                      # forgets to sum
    result = exercises.check("broadcast", learner, verbose=False)
    assert not result.passed
    assert "has shape" in result.text and "sum over the dimensions broadcasting added" in result.text


def test_a_learners_exception_names_the_line():
    learner = _solution("softmax")
    learner.softmax_backward = lambda dy, y: dy @ y                # shapes do not fit
    result = exercises.check("softmax", learner, verbose=False)
    assert not result.passed and "raised ValueError" in result.text


def test_a_dict_of_functions_works():
    ex = exercises.get("matmul")
    assert exercises.check("matmul", {"matmul_backward": ex.matmul_backward}, verbose=False).passed


def test_missing_function_is_reported():
    result = exercises.check("matmul", {}, verbose=False)
    assert not result.passed and "does not define matmul_backward" in result.text


def test_start_keeps_an_existing_file(tmp_path):
    path = exercises.start("matmul", tmp_path)
    with open(path, "a") as f:
        f.write("# my work\n")
    with pytest.raises(FileExistsError):
        exercises.start("matmul", tmp_path)
    assert "# my work" in open(path).read()


def test_unknown_exercise():
    with pytest.raises(KeyError, match="the exercises are"):
        exercises.get("no_such_exercise")


# ---- the command line -------------------------------------------------------------------
def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "miniclip.exercises", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(tmp_path):
    listing = _cli("list", cwd=tmp_path)
    assert listing.returncode == 0 and all(name in listing.stdout for name in NAMES)

    assert _cli("start", "softmax", cwd=tmp_path).returncode == 0
    unfilled = _cli("check", "softmax", cwd=tmp_path)                 # ./exercises/softmax.py
    assert unfilled.returncode == 1 and "NOT FILLED IN" in unfilled.stdout

    solved = tmp_path / "exercises" / "softmax.py"
    solved.write_text(solved.read_text().replace(
        'raise NotImplementedError("softmax_backward is not written yet")',
        "return y * (dy - (dy * y).sum(axis=-1, keepdims=True))"))
    passed = _cli("check", "softmax", str(solved), cwd=tmp_path)
    assert passed.returncode == 0 and "PASSED" in passed.stdout, passed.stdout + passed.stderr

    solved.write_text(solved.read_text().replace("return y * (dy", "return 1.01 * y * (dy"))
    wrong = _cli("check", "softmax", str(solved), cwd=tmp_path)
    assert wrong.returncode == 1 and "gradcheck failed for x" in wrong.stdout

    assert _cli("check", "softmax", "missing.py", cwd=tmp_path).returncode == 2
    assert _cli("check", "no_such_exercise", cwd=tmp_path).returncode == 2
    assert _cli("start", "softmax", cwd=tmp_path).returncode == 2     # refuses to overwrite
