"""The plots of a run folder, drawn from its metrics.jsonl (so they can be redrawn at any time).

    plots/training.png      loss, logit scale (exp, the inverse temperature) and learning rate per step
    plots/accuracy.png      the evaluation metrics in [0, 1] (zero-shot top-1, hard negatives, R@1) per step
    plots/similarity.png    cosine similarities of the first val images (rows) and captions (columns)
"""
import json
import os

# Figures built directly, not through pyplot: they draw to files on any machine (no display
# needed) and leave pyplot's backend alone, so a notebook that imports the trainer still shows
# its own plots inline.
from matplotlib.figure import Figure


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training(records, path):
    steps = [r for r in records if "loss" in r]
    if not steps:
        return
    fig = Figure(figsize=(13, 3.5))
    axes = fig.subplots(1, 3)
    x = [r["step"] for r in steps]
    for ax, key, title in zip(axes, ("loss", "logit_scale", "lr"),
                              ("training loss", "logit scale exp(t)", "learning rate")):
        ax.plot(x, [r[key] for r in steps])
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_accuracy(records, path):
    evals = [r for r in records if "eval" in r]
    keys = sorted({k for r in evals for k in r["eval"]
                   if k.endswith("_top1") or k.startswith("hard_negatives") or k.endswith("R@1")})
    if not keys:
        return
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for key in keys:
        points = [(r["step"], r["eval"][key]) for r in evals if key in r["eval"]]
        ax.plot(*zip(*points), marker="o", label=key)
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_title("evaluation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_similarity(similarity, captions, path):
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    image = ax.imshow(similarity, cmap="viridis")
    ax.set_xticks(range(len(captions)), [c[:40] for c in captions], rotation=90, fontsize=6)
    ax.set_ylabel("val image")
    ax.set_title("cosine similarity: images (rows) x captions (columns); pairs on the diagonal")
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_run(run_folder, plot_data=None):
    """Redraw the run's plots; plot_data = {"similarity", "captions"} from the last evaluation."""
    folder = os.path.join(run_folder, "plots")
    os.makedirs(folder, exist_ok=True)
    records = read_metrics(os.path.join(run_folder, "metrics.jsonl"))
    plot_training(records, os.path.join(folder, "training.png"))
    plot_accuracy(records, os.path.join(folder, "accuracy.png"))
    if plot_data:
        plot_similarity(plot_data["similarity"], plot_data["captions"], os.path.join(folder, "similarity.png"))
