"""The run folder's plots (miniclip/training/plots.py): drawn to PNG files without a display, and
without touching pyplot's backend, so a notebook that imports the trainer keeps its inline plots."""
import json
import os
import subprocess
import sys

import numpy as np

from miniclip.training.plots import plot_run


def test_importing_the_trainer_leaves_pyplots_backend_alone():
    # svg stands for any backend a user chose (Jupyter's inline one): forcing Agg would replace it.
    code = ("import matplotlib; before = matplotlib.get_backend(); import miniclip.train, miniclip.training.plots; "
            "import matplotlib.pyplot; print(before, matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "MPLBACKEND": "svg"})
    before, after = result.stdout.split()
    assert before == after == "svg"


def test_plot_run_writes_the_three_pngs(tmp_path):
    records = [{"step": s, "epoch": 0, "loss": 4.0 - s / 10, "lr": 1e-3, "logit_scale": 14.0} for s in range(1, 6)]
    records += [{"step": 5, "eval": {"zeroshot_seen_top1": 0.5, "val_image_to_text_R@1": 0.2}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_run(str(tmp_path), {"similarity": np.eye(3), "captions": ["a", "b", "c"]})
    for name in ("training.png", "accuracy.png", "similarity.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, name
