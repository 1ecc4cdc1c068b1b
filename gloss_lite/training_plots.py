"""Figures of training runs: one fine-tuning run (notebook 05) and a comparison of losses
over seeds (notebook 06), each called in one line from the notebook.

Every function draws with matplotlib and returns the figure (``seed_band`` draws on an axis
it is given); one loss keeps one colour (``loss_colour``) and one class keeps one colour
(``gloss_lite.plots.class_palette``) across the figures of both notebooks. ``frame`` arguments
are pandas DataFrames with one row per (loss, seed, epoch): a ``fit`` history or a results file.
"""

from __future__ import annotations

import numpy as np
import torch

from .plots import class_palette, sorted_heatmap

__all__ = [
    "LOSS_NAMES",
    "embedding_maps",
    "gradient_messages",
    "graph_before_after",
    "loss_colour",
    "relative_curves",
    "score_bars",
    "scores_per_seed",
    "seed_band",
    "seed_bands",
    "training_curves",
]

LOSS_NAMES = {
    "ce": "CE", "gloss": "G-Loss", "gloss+ce": "G-Loss + CE", "scl": "SCL", "scl+ce": "SCL + CE",
    "triplet": "triplet", "triplet+ce": "triplet + CE", "contrastive": "contrastive",
    "contrastive+ce": "contrastive + CE",
}


def loss_colour(loss: str):
    """One colour per loss, the same in every figure of notebooks 05 and 06."""
    import matplotlib

    names = list(LOSS_NAMES)
    index = names.index(loss) if loss in names else len(names)
    return matplotlib.colormaps["tab10"](index % 10)


def gradient_messages(ce_norms, graph_norms, visible):
    """Bars of ``(1 - lam)|dCE/de_i|`` and ``lam|dG/de_i|`` per document, hidden documents first.

    The two terms of ``(1 - lam) CE + lam G`` each send every embedding a gradient "message";
    notebook 05 compares their sizes on one minibatch.
    """
    import matplotlib.pyplot as plt

    ce_norms, graph_norms = np.asarray(ce_norms), np.asarray(graph_norms)
    visible = np.asarray(visible, dtype=bool)
    order = np.argsort(visible, kind="stable")  # hidden (False) first
    x, hidden = np.arange(len(order)), int((~visible).sum())
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.bar(x - 0.2, ce_norms[order], width=0.4, color=loss_colour("ce"),
           label=r"$(1-\lambda)\,\|\partial L_{CE}/\partial e_i\|$")
    ax.bar(x + 0.2, graph_norms[order], width=0.4, color=loss_colour("gloss"),
           label=r"$\lambda\,\|\partial L_G/\partial e_i\|$")
    top = 1.15 * max(ce_norms.max(), graph_norms.max())
    ax.axvline(hidden - 0.5, color="black", lw=1, ls="--")
    for centre, text in ((hidden / 2, "hidden"), ((hidden + len(x)) / 2, "visible")):
        ax.text(centre - 0.5, top / 1.1, text, ha="center")
    ax.set(xlabel="document of the minibatch (hidden labels first)", ylim=(0, top),
           ylabel="size of the message", xticks=[],
           title="What each loss term asks of each embedding (one step)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def training_curves(history, *, num_classes, frozen_probe, frozen_lpa):
    """Two panels of a ``fit`` history (a DataFrame indexed by epoch): the training loss terms,
    and validation accuracy of the head and of LPA beside the frozen encoder's."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    epochs = np.asarray(history.index)
    for column, name, style in (("loss", "mixed loss", "-o"), ("ce", "CE (head)", "--s"),
                                ("aux", "G-Loss", ":^")):
        left.plot(epochs, history[column], style, label=name)
    left.axhline(np.log(num_classes), color="grey", lw=1, ls="-.", label="log C")
    left.set(xlabel="epoch", ylabel="mean training loss", title="Training loss terms",
             xticks=epochs)
    left.legend()
    for column, name, style in (("val_accuracy", "head", "-o"), ("val_lpa_accuracy", "LPA", "--s")):
        right.plot(epochs, history[column], style, label=name)
    right.axhline(frozen_probe, color="grey", lw=1.2, ls=":", label="frozen probe")
    right.axhline(frozen_lpa, color="black", lw=1.2, ls="-.", label="frozen LPA")
    right.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy",
              xticks=epochs, ylim=(0, 1.02))
    right.legend(loc="lower right")
    fig.tight_layout()
    return fig


def graph_before_after(graphs, labellings, sigma):
    """Heatmaps of the same documents' graphs (``graphs``: title -> n x n weights), one row per
    labelling (``labellings``: name -> (labels, class names)), on one colour scale."""
    import matplotlib.pyplot as plt

    off = ~np.eye(len(next(iter(graphs.values()))), dtype=bool)
    low = min(float(torch.as_tensor(w)[torch.as_tensor(off)].min()) for w in graphs.values())
    high = max(float(torch.as_tensor(w)[torch.as_tensor(off)].max()) for w in graphs.values())
    rows, columns = len(labellings), len(graphs)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 5 * rows), squeeze=False)
    for row, (name, (labels, class_names)) in enumerate(labellings.items()):
        for column, (when, weights) in enumerate(graphs.items()):
            sorted_heatmap(axes[row, column], weights, labels, class_names,
                           f"{when}, sorted by {name}", vmin=low, vmax=high)
    fig.suptitle(f"Graph of {off.shape[0]} fixed test documents, sigma = {sigma:.3f}")
    fig.tight_layout()
    return fig


def embedding_maps(panels, *, columns=2, size=4.6):
    """Scatter maps (t-SNE) with one colour per class, the same in every panel.

    ``panels``: a list of ``(title, xy, labels, class_names)``, ``xy`` an n x 2 array. Colours
    come from ``plots.class_palette`` over every label set shown, so no colour names classes of
    two label sets. The last panel of each label set carries its legend (at most 12 classes).
    """
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    last = {tuple(names): i for i, (_, _, _, names) in enumerate(panels)}
    palette = class_palette({names: names for names in last})
    for i, (ax, (title, xy, labels, names)) in enumerate(zip(axes.flat, panels)):
        xy, labels = np.asarray(xy), np.asarray(labels)
        for c, colour in enumerate(palette[tuple(names)]):
            ax.scatter(*xy[labels == c].T, s=12, alpha=0.8, color=colour, label=names[c])
        ax.set(title=title, xticks=[], yticks=[])
        if last[tuple(names)] == i and len(names) <= 12:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def score_bars(scores, *, chance, title):
    """Grouped bars: ``scores`` maps a method to ``{metric: value}``; the dashed line is the
    majority-class accuracy. Methods named "frozen ..." are grey, the others coloured."""
    import matplotlib
    import matplotlib.pyplot as plt

    methods = list(scores)
    metrics = list(scores[methods[0]])
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    greys = iter(["0.45", "0.65", "0.8", "0.9"])
    colours = iter(matplotlib.colormaps["tab10"].colors)
    for k, method in enumerate(methods):
        x = np.arange(len(metrics)) + (k - (len(methods) - 1) / 2) * width
        colour = next(greys) if method.startswith("frozen") else next(colours)
        bars = ax.bar(x, [scores[method][m] for m in metrics], width, label=method,
                      color=colour)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize="small")
    ax.axhline(chance, color="black", ls="--", lw=1, label="majority class")
    ax.set(xticks=np.arange(len(metrics)), xticklabels=metrics, ylim=(0, 1.1),
           ylabel="test score", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def seed_band(ax, frame, metric, losses, *, key="loss"):
    """Mean over seeds per epoch of ``metric`` for each loss, with a min-max band over seeds.

    ``frame`` has one row per (loss, seed, epoch): a ``fit`` history or a results file.
    """
    for loss in losses:
        per_epoch = frame[frame[key] == loss].groupby("epoch")[metric]
        mean, colour = per_epoch.mean(), loss_colour(loss)
        ax.plot(mean.index, mean.to_numpy(), marker="o", color=colour,
                label=LOSS_NAMES.get(loss, loss))
        ax.fill_between(mean.index, per_epoch.min().to_numpy(), per_epoch.max().to_numpy(),
                        color=colour, alpha=0.15, linewidth=0)
    ax.set_xticks(sorted(frame["epoch"].unique()))
    return ax


def relative_curves(curves, *, xlabel, title):
    """Lines of ``value / value at the first x`` for each name in ``curves`` (name -> (x, y))."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, (x, y) in curves.items():
        y = np.asarray(y, dtype=float)
        ax.plot(x, y / y[0], marker="o", markersize=3, label=name)
    ax.set(xlabel=xlabel, ylabel="loss / loss at the start", ylim=(-0.03, 1.1), title=title)
    ax.legend()
    return fig


def scores_per_seed(final, metrics, losses, *, chance, title, key="loss"):
    """One dot per seed and a bar at the mean, per loss and metric (``final``: one row per
    (loss, seed) with a column per metric, the loss in column ``key``; ``metrics``: column ->
    label)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(losses)
    for k, loss in enumerate(losses):
        rows = final[final[key] == loss]
        for m, column in enumerate(metrics):
            x = m + (k - (len(losses) - 1) / 2) * width
            values = rows[column].to_numpy()
            ax.scatter(np.full(len(values), x), values, color=loss_colour(loss), s=25,
                       label=LOSS_NAMES.get(loss, loss) if m == 0 else None)
            ax.hlines(values.mean(), x - width / 2.5, x + width / 2.5, color=loss_colour(loss))
    ax.axhline(chance, color="black", ls="--", lw=1, label="majority class")
    ax.set(xticks=range(len(metrics)), xticklabels=list(metrics.values()), ylabel="test score",
           title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def seed_bands(frame, metrics, losses, *, key="loss", chance=None, frozen=None, title=""):
    """One panel per metric (``metrics``: column -> panel title) of ``seed_band`` curves.

    ``chance`` draws the majority-class accuracy on every panel; ``frozen`` maps a column to
    the frozen encoder's value, drawn dotted on that panel.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 1.5, 3.8),
                             sharey=True, squeeze=False)
    for ax, (column, panel) in zip(axes[0], metrics.items()):
        seed_band(ax, frame, column, losses, key=key)
        if chance is not None:
            ax.axhline(chance, color="black", ls="--", lw=1, label="majority class")
        if frozen and column in frozen:
            ax.axhline(frozen[column], color="grey", ls=":", lw=1.5, label="frozen encoder")
        ax.set(xlabel="epoch", ylabel="validation accuracy", title=panel)
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    axes[0, -1].legend(handles.values(), handles.keys(), loc="upper left",
                       bbox_to_anchor=(1.01, 1), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
