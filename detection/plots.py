"""Training curves as PNG: the loss terms of metrics.jsonl against iterations."""

from __future__ import annotations

import json
from pathlib import Path


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Draw total loss and its four Faster R-CNN terms per logged iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    iterations = [record["iteration"] for record in records]
    figure, axis = plt.subplots(figsize=(7, 4))
    for key in ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"):
        axis.plot(iterations, [record[key] for record in records], label=key, linewidth=2 if key == "loss" else 1)
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)
