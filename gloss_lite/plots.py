"""Figures the notebooks share.

First used in ``notebooks/00_overview.ipynb``; every notebook that draws a graph uses
``sorted_heatmap``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["sorted_heatmap"]


def sorted_heatmap(ax, affinity, labels, class_names, title, *, vmin=None, vmax=None, cmap="viridis",
                   cbar_label=r"$W_{ij}$"):
    """Draw ``affinity`` (n x n) with rows and columns sorted by class.

    White lines separate the classes and the diagonal is left blank, so a graph that agrees
    with the labels shows bright blocks along the diagonal. Class names label the blocks when
    there are at most 12 classes. ``cbar_label`` names the colour bar (``$T_{ij}$`` for a
    transition matrix).
    """
    import seaborn as sns

    affinity = torch.as_tensor(affinity).detach().cpu()
    labels = torch.as_tensor(labels).cpu()
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    sns.heatmap(
        affinity[order][:, order].numpy(), mask=np.eye(len(affinity), dtype=bool), cmap=cmap,
        vmin=vmin, vmax=vmax, square=True, ax=ax, xticklabels=False, yticklabels=False,
        cbar_kws={"label": cbar_label, "shrink": 0.8},
    )
    edges = counts.cumsum(0).tolist()
    for edge in edges[:-1]:
        ax.axhline(edge, color="white", lw=1.5)
        ax.axvline(edge, color="white", lw=1.5)
    if len(classes) <= 12:
        centres = [edge - count / 2 for edge, count in zip(edges, counts.tolist())]
        ax.set_yticks(centres, [class_names[c] for c in classes], rotation=0, fontsize="small")
    ax.grid(False)
    ax.set(title=title, xlabel="document (sorted by class)", ylabel="")
    return ax
