"""tutorials/exercises/ holds the learner's stubs; this proves they are usable as committed.

- the folder holds exactly one stub per exercise, and each is what `python -m miniclip.exercises
  start NAME` writes today (no drift between the committed files and the templates);
- each committed stub fails the check with the "not filled in" message;
- the learner's pytest entry (tutorials/exercises/test_exercises.py) collects one test per stub,
  fails every one while they are stubs, and passes files that hold the reference solutions.
That folder is not among the test paths (setup.cfg: testpaths = tests), since its tests fail on purpose.
"""
import inspect
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import miniclip.exercises as exercises

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDER = ROOT / "tutorials" / "exercises"
ENTRY = FOLDER / "test_exercises.py"
NAMES = exercises.names()


def _pytest(*args, cwd=ROOT):
    """Run pytest in a subprocess (the learner's command), without writing a cache into the repo."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_one_stub_per_exercise():
    stubs = sorted(p.stem for p in FOLDER.glob("*.py") if p.name != ENTRY.name)
    assert stubs == sorted(NAMES), (f"tutorials/exercises holds {stubs}, the exercises are {NAMES}; write a missing one "
                            f"with: python -m miniclip.exercises start NAME tutorials/exercises")


@pytest.mark.parametrize("name", NAMES)
def test_committed_stub_is_the_current_template(name):
    committed = (FOLDER / f"{name}.py").read_text(encoding="utf-8")
    assert committed == exercises.template(name), (
        f"tutorials/exercises/{name}.py differs from the template `start` writes now; regenerate it with: "
        f"python -m miniclip.exercises start {name} tutorials/exercises --force")


@pytest.mark.parametrize("name", NAMES)
def test_committed_stub_fails_as_not_filled_in(name):
    result = exercises.check(name, str(FOLDER / f"{name}.py"), verbose=False)
    assert not result.passed
    assert result.unfilled, result.text
    assert "NOT FILLED IN" in result.text and "not written yet" in result.text, result.text


def test_learner_entry_collects_one_test_per_stub():
    run = _pytest("--collect-only", "-q", str(FOLDER))
    assert run.returncode == 0, run.stdout + run.stderr
    collected = sorted(re.findall(r"test_exercises\.py::test_exercise\[(\w+)\]", run.stdout))
    assert collected == sorted(NAMES), run.stdout


@pytest.mark.slow
def test_learner_entry_fails_on_stubs_and_passes_on_solutions(tmp_path):
    run = _pytest("-q", str(FOLDER))
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{len(NAMES)} failed" in run.stdout and "NOT FILLED IN" in run.stdout, run.stdout[-3000:]

    # The same entry file next to the reference solutions (each exercise module's own source).
    shutil.copy(ENTRY, tmp_path / ENTRY.name)
    for name in NAMES:
        (tmp_path / f"{name}.py").write_text(inspect.getsource(exercises.get(name)), encoding="utf-8")
    run = _pytest("-q", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert f"{len(NAMES)} passed" in run.stdout, run.stdout
