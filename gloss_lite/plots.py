"""Figures the notebooks share.

First used in ``notebooks/00_overview.ipynb``; every notebook that draws a graph uses
``sorted_heatmap``, and every figure that colours classes takes its colours from
``class_palette``, so a class keeps one colour across the panels of a notebook and no colour
names two classes of different label sets (topic and sentiment of the same reviews).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "circle_snapshots",
    "CLASS_COLOURS",
    "class_palette",
    "distribution_heatmap",
    "loss_curve",
    "mark_sigmas",
    "mask_rows",
    "mixed_colours",
    "mixed_gradient",
    "plain_log_axis",
    "rate_panels",
    "score_curves",
    "sigma_legend",
    "sigma_panels",
    "sorted_heatmap",
    "trial_scatter",
]

# The order in which classes receive colours: red and blue first, so that a two-class label
# set (negative, positive) reads as red and blue wherever it appears.
CLASS_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f")


def class_palette(label_sets: Mapping[str, Sequence[str]]) -> dict[str, list]:
    """One colour per class of every label set, no colour shared between two classes.

    ``label_sets`` maps a label set's name to its class names, e.g. ``{"topic": [...],
    "sentiment": ["negative", "positive"]}``. Smaller label sets choose first (so a two-class set
    gets red and blue); up to ten classes in all take ``CLASS_COLOURS``, more take evenly spaced
    hues of matplotlib's ``hsv`` map. Returns ``{name: [colour of class 0, colour of class 1, ...]}``.
    """
    from matplotlib import colormaps

    sizes = {name: len(names) for name, names in label_sets.items()}
    total = sum(sizes.values())
    pool: list[str | tuple[float, float, float, float]]  # a name or matplotlib's RGBA
    if total <= len(CLASS_COLOURS):
        pool = list(CLASS_COLOURS)
    else:
        pool = [colormaps["hsv"](k / total) for k in range(total)]
    palette = {}
    for name in sorted(label_sets, key=lambda key: sizes[key]):
        palette[name], pool = pool[:sizes[name]], pool[sizes[name]:]
    return {name: palette[name] for name in label_sets}


def mixed_colours(distributions, class_colours) -> list[tuple[float, float, float]]:
    """The colour of each row of ``distributions`` (n x C): ``sum_c F_uc * colour_c`` in RGB."""
    from matplotlib import colors as mcolors

    weights = torch.as_tensor(distributions).detach().cpu().double().numpy()
    rgb = np.array([mcolors.to_rgb(colour) for colour in class_colours])
    if weights.ndim != 2 or weights.shape[1] != len(rgb):
        raise ValueError(f"distributions must be n x {len(rgb)} (one column per colour), got {weights.shape}")
    return [tuple(row) for row in np.clip(weights @ rgb, 0.0, 1.0)]


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


def distribution_heatmap(ax, distributions, truth, class_names, title, *, sort=False):
    """Rows of label distributions (one per node, one column per class) as a heatmap in [0, 1].

    ``truth`` holds each row's true class. With ``sort=False`` (a few rows) every cell is
    annotated and the true class is boxed in red; with ``sort=True`` (many rows) the rows are
    sorted by their true class and red lines separate the classes, so a graph that agrees with
    the labels shows a staircase. Returns the image.
    """
    values = torch.as_tensor(distributions).detach().cpu().double()
    truth = torch.as_tensor(truth).cpu()
    if sort:
        order = torch.argsort(truth, stable=True)
        values, truth = values[order], truth[order]
    image = ax.imshow(values.numpy(), aspect="auto", cmap="Blues", vmin=0, vmax=1,
                      interpolation="nearest")
    rows, classes = values.shape
    if sort:
        for edge in torch.bincount(truth, minlength=classes).cumsum(0)[:-1].tolist():
            ax.axhline(edge - 0.5, color="crimson", lw=0.8)
        ax.set_yticks([])
    else:
        for row in range(rows):
            for col in range(classes):
                value = values[row, col].item()
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "black")
            ax.add_patch(_box(truth[row].item(), row))
        ax.set_yticks(range(rows), [f"node {i}" for i in range(rows)], fontsize="small")
    shown = list(class_names) if classes <= 12 else [""] * classes
    ax.set_xticks(range(classes), shown, rotation=45, ha="right")
    ax.grid(False)
    ax.set(title=title, xlabel="class")
    return image


def _box(col, row):
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="crimson", lw=2.5)


# --- 03 · Masking and the loss --------------------------------------------------------------------


def mask_rows(ax, labels, masks: dict, class_names, colours):
    """One row of dots per mask over a batch sorted by class: filled = visible label, open = hidden.

    ``masks`` maps a row name to ``n`` bools; ``colours`` gives each class its colour (from
    ``class_palette``).
    """
    labels = torch.as_tensor(labels).cpu()
    for row, mask in enumerate(masks.values()):
        for i, (label, seen) in enumerate(zip(labels.tolist(), torch.as_tensor(mask).tolist())):
            colour = colours[label]
            ax.scatter(i, -row, s=110, color=colour if seen else "white", edgecolors=colour, linewidths=2)
    ax.set_yticks([-row for row in range(len(masks))], list(masks))
    present, counts = torch.unique_consecutive(labels, return_counts=True)
    edges = counts.cumsum(0).tolist()
    for edge in edges[:-1]:
        ax.axvline(edge - 0.5, color="grey", lw=0.8)
    centres = [(a + b) / 2 - 0.5 for a, b in zip([0] + edges[:-1], edges)]
    ax.set_xticks(centres, [class_names[c] for c in present.tolist()], rotation=30, ha="right")
    ax.set(xlim=(-0.8, len(labels) - 0.2), ylim=(-len(masks) + 0.4, 0.6),
           xlabel="documents of the minibatch, by class", title="Filled: label visible; open: label hidden")
    ax.grid(False)
    return ax


def rate_panels(rates: dict, batch_sizes, gammas):
    """One panel per label set: the share of batches a random mask breaks, against the batch size.

    ``rates[name]`` is a ``len(gammas) x len(batch_sizes)`` array; NaN marks a setting the package
    cannot draw (``ceil(gamma n) = n``: no hidden node), left out of the line.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rates), figsize=(5.4 * len(rates), 3.8), sharey=True, squeeze=False)
    shades = plt.colormaps["viridis"](np.linspace(0, 0.9, len(gammas)))
    for ax, (name, table) in zip(axes[0], rates.items()):
        for shade, gamma, row in zip(shades, gammas, np.asarray(table, dtype=float)):
            ax.plot(batch_sizes, row, "o-", color=shade, label=f"{gamma:g}")
        ax.axhline(0, color="black", ls="--", lw=1.2, label="stratified")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.set(title=name, xlabel="batch size", ylim=(-0.03, 1.03))
    axes[0, 0].set_ylabel("batches with an invisible class")
    axes[0, -1].legend(title=r"random, $\gamma$ =", loc="upper left", bbox_to_anchor=(1.02, 1),
                       frameon=False)
    fig.tight_layout()
    return fig


def circle_snapshots(snapshots: dict, labels, colours):
    """Points on the unit circle at several steps (``snapshots``: step -> angles), one colour per class."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(snapshots), figsize=(2.7 * len(snapshots), 2.9))
    circle = np.linspace(0, 2 * np.pi, 200)
    labels = torch.as_tensor(labels).numpy()
    for ax, (step, angles) in zip(np.atleast_1d(axes), snapshots.items()):
        ax.plot(np.cos(circle), np.sin(circle), color="lightgrey", lw=1, zorder=0)
        angles = torch.as_tensor(angles).numpy()
        for c in np.unique(labels):
            ax.scatter(np.cos(angles[labels == c]), np.sin(angles[labels == c]), color=colours[c],
                       s=36, alpha=0.8, edgecolors="white", label=f"class {c}")
        ax.set(title=f"step {step}", xlim=(-1.25, 1.25), ylim=(-1.25, 1.25), xticks=[], yticks=[],
               aspect="equal")
    np.atleast_1d(axes)[0].legend(loc="center", fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def loss_curve(ax, step_losses, eval_steps, eval_losses, reference, reference_label):
    """A noisy per-step loss in grey, a smoother evaluation curve in red, a dashed reference level."""
    ax.plot(range(len(step_losses)), step_losses, color="lightgrey", lw=1,
            label="minibatch loss (fresh mask each step)")
    ax.plot(eval_steps, eval_losses, color="crimson", marker="o", ms=3, label="mean over fixed masks")
    ax.axhline(reference, color="black", ls="--", lw=1, label=reference_label)
    ax.set(xlabel="step", ylabel="loss", ylim=(0, None))
    ax.legend(fontsize="small")
    return ax


def score_curves(p, curves: dict, floors: dict):
    """Loss and ``|slope|`` of one hidden node against its true-class probability ``p``.

    ``curves[(form, C)] = (loss, slope)``; ``floors[C]``: a dotted level (the authors' floor).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    forms = sorted({form for form, _ in curves})
    styles = dict(zip(sorted({c for _, c in curves}), ["-", "--", ":"]))
    for (form, c), (loss, slope) in curves.items():
        colour = f"C{forms.index(form)}"
        axes[0].plot(p, loss, color=colour, ls=styles[c], label=f"{form}, C = {c}")
        axes[1].plot(p, np.abs(slope), color=colour, ls=styles[c])
    for level in floors.values():
        axes[0].axhline(level, color="grey", ls=":", lw=1)
    axes[0].set(ylabel="loss", title="Loss of one hidden node (dotted: the authors' floors)", ylim=(0, 3))
    axes[1].set(yscale="log", ylabel="|slope| (log scale)", title="Its slope")
    for ax in axes:
        ax.set_xlabel(r"propagated probability of the true class $F_{u,y_u}$")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def mixed_gradient(lams, grad_a, grad_b, names=("CE", "G"), marks: dict | None = None):
    """Norm and direction of ``(1 - lam) grad_a + lam grad_b`` over ``lams``; ``marks``: label -> lam."""
    import matplotlib.pyplot as plt

    a, b = (torch.as_tensor(g).detach().flatten() for g in (grad_a, grad_b))
    mixed = [(1 - lam) * a + lam * b for lam in lams]
    cos = torch.nn.functional.cosine_similarity
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(lams, [m.norm().item() for m in mixed], color="black")
    axes[0].set(xlabel=r"$\lambda$", ylabel="norm of the mixed gradient", title="How hard the mix pushes")
    for name, g in zip(names, (a, b)):
        axes[1].plot(lams, [cos(m, g, dim=0).item() for m in mixed], label=f"with grad {name}")
    for style, (label, lam) in zip([":", "--"], (marks or {}).items()):
        axes[1].axvline(lam, color="black", ls=style, lw=1, label=label)
    axes[1].set(xlabel=r"$\lambda$", ylabel="cosine similarity", title="Where the mix pushes",
                ylim=(-1.05, 1.05))
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    return fig


# --- 04 · Choosing sigma ----------------------------------------------------------------------------


def plain_log_axis(ax, axis: str = "y"):
    """Log scale on ``axis`` with ticks at 1, 2 and 5 times powers of ten, written as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())
    return ax


def mark_sigmas(ax, marks: dict):
    """Vertical lines at named values of sigma; ``marks``: label -> (sigma, line style)."""
    for sigma, style in marks.values():
        ax.axvline(sigma, color="black", ls=style, lw=1.1)
    return ax


def sigma_legend(fig, marks: dict):
    """One legend below ``fig`` for the lines of ``mark_sigmas`` (room is left for it)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", ls=style, label=f"{label} ({sigma:.3g})")
               for label, (sigma, style) in marks.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def sigma_panels(sigmas, panels: list, marks: dict | None = None, *, ncols: int = 2):
    """Curves against sigma on a log axis, one panel per dict of ``panels``, estimates marked.

    A panel has ``title``, ``ylabel``, ``lines`` (label -> values at ``sigmas``) and optionally
    ``levels`` (label -> a horizontal line), ``log_y`` (plain-number ticks) and ``ylim``.
    ``marks`` (label -> (sigma, line style)) are drawn in every panel, with one legend below.
    """
    import matplotlib.pyplot as plt

    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.6 * nrows + 0.5), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for colour, (label, values) in enumerate(panel["lines"].items()):
            ax.plot(sigmas, values, "o-", ms=3.5, color=f"C{colour}", label=label)
        for style, (label, level) in zip(["-", ":", "-."], panel.get("levels", {}).items()):
            ax.axhline(level, color="crimson", ls=style, lw=1, label=label)
        ax.set_xscale("log")
        if panel.get("log_y"):
            plain_log_axis(ax, "y")
        ax.set(title=panel["title"], xlabel="sigma (log scale)", ylabel=panel["ylabel"])
        if "ylim" in panel:
            ax.set_ylim(*panel["ylim"])
        mark_sigmas(ax, marks or {})
        ax.legend(fontsize="small")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if marks:
        sigma_legend(fig, marks)
    else:
        fig.tight_layout()
    return fig


def trial_scatter(ax, sigmas, values, gammas, marks: dict | None = None):
    """Optuna's trials: objective against sigma (log axis), coloured by gamma, estimates marked."""
    points = ax.scatter(sigmas, values, c=gammas, cmap="viridis", vmin=0.1, vmax=0.9,
                        edgecolor="black", lw=0.3)
    ax.figure.colorbar(points, ax=ax, label="gamma")
    ax.set(xscale="log", xlabel="sigma (log scale)")
    return mark_sigmas(ax, marks or {})
