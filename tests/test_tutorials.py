"""Every tutorial notebook (tutorials/*.ipynb, discovered) runs top to bottom from a clean kernel,
and every committed notebook carries its outputs (it was executed before it was committed).

Each notebook is one test (marked slow) with its own timeout; a failing cell is reported with
its source and the error. The kernel starts in tutorials/, as a reader's would.
"""
import pathlib
import re
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
TIMEOUT_PER_CELL_S = 120          # per cell: the budget of a whole notebook is 2 minutes on 2 cores
# A cell that makes a matplotlib figure must show it as an image (a non-interactive backend, set
# by an import, once swallowed the figures of three notebooks without an error).
DRAWS = re.compile(r"plt\.(show|subplots|figure|imshow|plot)\(")


def cells_drawing_without_an_image(nb):
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and DRAWS.search(c.source)
            and not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_was_committed_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code, f"{path.name} has no code cells"
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()
               and c.get("execution_count") is None]
    assert not not_run, f"{path.name}: cells {not_run} were never executed; run the notebook and save it with outputs"
    assert any(c.get("outputs") for c in code), f"{path.name} has no outputs; run it and save it with outputs"
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert not errors, f"{path.name}: the committed outputs of cells {errors} are errors"
    missing = cells_drawing_without_an_image(nb)
    assert not missing, f"{path.name}: cells {missing} draw a figure but their committed outputs hold no image"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_PER_CELL_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{str(error)[-4000:]}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as error:
        pytest.fail(f"{path.name}: a cell ran longer than {TIMEOUT_PER_CELL_S} s:\n{str(error)[-2000:]}", pytrace=False)
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
    missing = cells_drawing_without_an_image(nb)
    assert not missing, f"{path.name}: cells {missing} draw a figure but showed no image"
