"""Pictures of the method on a graph small enough to see every node.

Drawn in ``notebooks/00_overview.ipynb`` (the pipeline: embed, graph, mask, propagate, score)
and ``notebooks/02_label_propagation.ipynb`` (labels flowing, one iteration per panel; the
four blocks of the transition matrix). The caller computes every number with the package
(``gaussian_affinity``, ``transition_matrix``, ``propagate``); these functions only draw them,
so a picture shows exactly what the method does.

A node's colour is the mixture of its class colours weighted by its label distribution,

    colour(u) = sum_c F_uc * colour_c,

so a node that is sure of class ``c`` has the colour of ``c`` and an undecided one a blend.
Edges are drawn with a width proportional to ``W_ij / max W``.

Imports numpy, torch and matplotlib only.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colors as mcolors
from matplotlib.collections import LineCollection

from .plots import mixed_colours

__all__ = [
    "colour_legend",
    "draw_graph",
    "draw_pipeline",
    "draw_propagation_steps",
    "draw_transition_blocks",
    "HIDDEN_GREY",
]

HIDDEN_GREY = "#bdbdbd"


def _array(values) -> np.ndarray:
    return torch.as_tensor(values).detach().cpu().double().numpy()


def draw_graph(ax, positions, affinity, node_colours, *, edge_width=4.0, node_size=320, min_weight=0.02):
    """Draw nodes at ``positions`` (n x 2) and the edges of ``affinity`` (n x n).

    An edge's width is ``edge_width * W_ij / max W``; edges below ``min_weight`` of the largest
    are left out so that the picture stays readable. ``node_colours`` holds one colour per node.
    Returns the scatter of the nodes.
    """
    points, weights = _array(positions), _array(affinity)
    if points.shape != (len(weights), 2) or weights.shape != (len(weights), len(weights)):
        raise ValueError(f"positions must be n x 2 and affinity n x n, got {points.shape} and {weights.shape}")
    top = weights.max() if weights.max() > 0 else 1.0
    i, j = np.triu_indices(len(weights), k=1)
    keep = weights[i, j] / top >= min_weight
    segments = np.stack([points[i[keep]], points[j[keep]]], axis=1)
    ax.add_collection(LineCollection(segments, linewidths=edge_width * weights[i, j][keep] / top,
                                     colors="#555555", alpha=0.55, zorder=1))
    nodes = ax.scatter(points[:, 0], points[:, 1], s=node_size, c=list(node_colours),
                       edgecolors="black", linewidths=1.0, zorder=2)
    pad = 0.15 * max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 1e-9)
    ax.set(xlim=(points[:, 0].min() - pad, points[:, 0].max() + pad),
           ylim=(points[:, 1].min() - pad, points[:, 1].max() + pad), aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return nodes


def _label_nodes(ax, positions, texts, *, fontsize=8):
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.75, "lw": 0}
    for (x, y), text in zip(_array(positions), texts):
        if text:
            ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3, bbox=box)


def draw_pipeline(axes, positions, affinity, labels, visible, distributions, class_colours):
    """The five steps of G-Loss on one small batch, one panel each (``axes``: five axes).

    1. embed: the unit embeddings (``positions``, 2-D) in their class colours;
    2. graph: the Gaussian-kernel edges ``affinity``;
    3. mask: the hidden nodes (``~visible``) in grey with a question mark;
    4. propagate: each hidden node in the mixture of its propagated distribution
       (``distributions``, n x C, the output of ``propagate``), its probability of the true
       class written on it;
    5. score: ``-log F_{u, y_u}`` of every hidden node as a bar; their mean is G-Loss.

    Returns the G-Loss value drawn (the mean of the bars).
    """
    if len(axes) != 5:
        raise ValueError(f"draw_pipeline needs five axes, got {len(axes)}")
    labels, visible = torch.as_tensor(labels), torch.as_tensor(visible, dtype=torch.bool)
    F = _array(distributions)
    truth = [class_colours[c] for c in labels.tolist()]
    hidden = (~visible).nonzero().flatten().tolist()
    circle = np.linspace(0, 2 * np.pi, 200)
    for ax in axes[:4]:
        ax.plot(np.cos(circle), np.sin(circle), color="#dddddd", lw=1, zorder=0)
    no_edges = np.zeros_like(_array(affinity))
    draw_graph(axes[0], positions, no_edges, truth)
    draw_graph(axes[1], positions, affinity, truth)
    masked = [HIDDEN_GREY if not v else colour for v, colour in zip(visible.tolist(), truth)]
    draw_graph(axes[2], positions, affinity, masked)
    _label_nodes(axes[2], positions, ["?" if not v else "" for v in visible.tolist()], fontsize=10)
    propagated = [colour if v else mixed_colours(F[i:i + 1], class_colours)[0]
                  for i, (v, colour) in enumerate(zip(visible.tolist(), truth))]
    draw_graph(axes[3], positions, affinity, propagated)
    _label_nodes(axes[3], positions, [f"{F[i, labels[i]]:.2f}" if i in hidden else "" for i in range(len(F))])
    losses = [-np.log(F[u, labels[u]]) for u in hidden]
    axes[4].bar(range(len(hidden)), losses, color=[truth[u] for u in hidden], edgecolor="black")
    value = float(np.mean(losses))
    axes[4].axhline(value, color="black", ls="--", lw=1.2)
    axes[4].text(-0.4, value, f"mean = {value:.2f}", va="bottom", ha="left")
    axes[4].set(xticks=range(len(hidden)), xticklabels=[f"{F[u, labels[u]]:.2f}" for u in hidden],
                xlabel="hidden node: its $F_{u,\\,y_u}$", ylabel=r"$-\log F_{u,\,y_u}$")
    titles = ("1 embed: unit vectors", "2 graph: kernel weights", "3 mask: hide labels",
              "4 propagate: $F_U$", "5 score: G-Loss")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize="medium")
    return value


def draw_propagation_steps(axes, positions, affinity, steps, visible, class_colours, *, titles=None,
                           node_size=650):
    """Labels flowing on a small graph: one panel per entry of ``steps`` (each an n x C ``F``).

    Visible nodes are drawn with a thick black ring; every node is coloured by the mixture of its
    distribution and carries its probability of class 0 (two decimals), so a reader can follow
    one number from panel to panel.
    """
    if len(axes) != len(steps):
        raise ValueError(f"one axis per step: got {len(axes)} axes and {len(steps)} steps")
    visible = torch.as_tensor(visible, dtype=torch.bool).tolist()
    for index, (ax, F) in enumerate(zip(axes, steps)):
        F = _array(F)
        nodes = draw_graph(ax, positions, affinity, mixed_colours(F, class_colours), node_size=node_size)
        nodes.set_linewidths([3.0 if v else 0.8 for v in visible])
        _label_nodes(ax, positions, [f"{row[0]:.2f}" for row in F], fontsize=7)
        if titles is not None:
            ax.set_title(titles[index], fontsize="medium")
    return axes


def draw_transition_blocks(ax, transition, visible, *, cmap="Blues"):
    """``T`` with its rows and columns ordered visible first, hidden second, and its four blocks named.

    The lines split ``T`` into ``T_LL``, ``T_LU`` (top) and ``T_UL``, ``T_UU`` (bottom). Label
    propagation reads only the bottom row of blocks: ``F_U <- T_UU F_U + T_UL Y_L``.
    """
    visible = torch.as_tensor(visible, dtype=torch.bool)
    order = torch.cat([visible.nonzero().flatten(), (~visible).nonzero().flatten()])
    matrix = _array(transition)[order.numpy()][:, order.numpy()]
    n, split = len(matrix), int(visible.sum())
    image = ax.imshow(matrix, cmap=cmap, vmin=0, interpolation="nearest")
    for line in (ax.axhline, ax.axvline):
        line(split - 0.5, color="crimson", lw=2)
    centres = {"L": (split - 1) / 2, "U": (split + n - 1) / 2}
    for row in "LU":
        for col in "LU":
            ax.text(centres[col], centres[row], f"$T_{{{row}{col}}}$", ha="center", va="center",
                    fontsize=15, color="crimson",
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "lw": 0})
    ticks = [f"{'L' if k < split else 'U'}{int(i)}" for k, i in enumerate(order.tolist())]
    ax.set_xticks(range(n), ticks, fontsize=7)
    ax.set_yticks(range(n), ticks, fontsize=7)
    ax.grid(False)
    ax.set(title="T, visible nodes first", xlabel="to node j", ylabel="from node i")
    return image


def colour_legend(ax, class_names, class_colours, *, title=None, **kwargs):
    """A legend with one filled marker per class, in the class colours."""
    handles = [ax.scatter([], [], s=80, color=mcolors.to_hex(class_colours[c]), edgecolors="black")
               for c in range(len(class_names))]
    return ax.legend(handles, list(class_names), title=title, frameon=False, **kwargs)
