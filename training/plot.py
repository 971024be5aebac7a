"""The loss-curve PNG of a run: train and validation loss per epoch, per head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

HEADS = ("total", "pitch", "step", "duration", "velocity")


def loss_curve(rows: Sequence[dict[str, float]], path: Path) -> Path:
    """Plot train (dashed) and validation (solid) NLL per head against epoch; returns path.

    Matplotlib is imported here with the Agg backend so training never needs a display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, heads in zip(axes, (("total",), HEADS[1:])):
        for i, head in enumerate(heads):
            colour = f"C{i}"
            ax.plot(epochs, [r[f"train_{head}"] for r in rows], "--", color=colour, label=f"train {head}")
            ax.plot(epochs, [r[f"val_{head}"] for r in rows], "-o", color=colour, markersize=3, label=f"val {head}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("NLL (nats per note)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("total loss")
    axes[1].set_title("per head")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
