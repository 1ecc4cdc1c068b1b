"""What sigma and gamma do to one minibatch: the numbers, a panel, a sweep and a widget.

Used by the interactive demos of ``notebooks/01_similarity_graph.ipynb`` and
``notebooks/04_sigma_estimation.ipynb``.

For a minibatch with embeddings ``E`` (rows L2-normalised first, ``U``), labels ``y`` and one pair
``(sigma, gamma)``, ``explore`` computes, with the package's own functions:

- the graph: ``W = gaussian_affinity(U, sigma)`` and ``T = transition_matrix(log W, scheme)``
  (built from ``log W``, so a tiny sigma does not underflow);
- the **effective number of neighbours** of node ``i``, the perplexity of its row of ``T``,

      k_eff(i) = exp(H(T_i)),   H(T_i) = -sum_j T_ij log T_ij   (0 log 0 = 0),

  which is ``k`` for a row with ``k`` equal entries (1 for a one-hot row, ``n - 1`` for a uniform
  one); the view reports the **mean over the rows**, ``(1/n) sum_i k_eff(i)``;
- the mask: ``split_mask(y, gamma, generator=torch.Generator().manual_seed(seed))`` (stratified),
  the same mask for the same ``(gamma, seed)`` whatever sigma;
- the **LPA accuracy** on the hidden nodes: the share of hidden ``u`` with
  ``argmax_c F_uc = y_u``, where ``F = propagate(T, y, mask, C)``;
- the **G-Loss** value ``g_loss(U, y, mask, sigma=sigma, num_classes=C, scheme=scheme)``;
- the size of **the G-Loss update**, ``||dL/dU||_F``: the Frobenius norm of the gradient of that
  value with respect to the unit embeddings. A gradient step of learning rate ``lr`` moves the
  batch's points by ``lr`` times this much in total, so it says how hard G-Loss pushes at this
  sigma (it vanishes when the graph is flat and propagation returns the class prior).

``sweep`` tabulates these numbers over a grid, ``draw_view`` draws one view (the heatmap of ``W``
or ``T`` beside the numbers), ``draw_sweep`` the grid, and ``explorer_widget`` puts ``draw_view``
under two sliders. Where no one can move the sliders (``NO_WIDGETS_ENV`` set, as the course's
notebook runner sets it) it draws the starting view once instead: creating widgets under
papermill can stall its kernel client.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import check_class_range, check_int, class_ids
from .graph import check_embeddings, gaussian_affinity, transition_matrix
from .losses import g_loss
from .lpa import propagate
from .masking import split_mask
from .plots import sorted_heatmap

__all__ = [
    "BatchView",
    "draw_sweep",
    "draw_view",
    "effective_neighbours",
    "explore",
    "explorer_widget",
    "MATRICES",
    "NO_WIDGETS_ENV",
    "NUMBERS",
    "StaticExplorer",
    "sweep",
    "WIDGET_TEXT",
]

MATRICES = ("affinity", "transition")
NUMBERS = ("effective_neighbours", "lpa_accuracy", "g_loss", "update_norm")


def effective_neighbours(transition: torch.Tensor) -> torch.Tensor:
    """``exp(-sum_j T_ij log T_ij)`` for every row ``i`` of a transition matrix (``0 log 0 = 0``)."""
    if not isinstance(transition, torch.Tensor) or transition.dim() != 2 or not transition.is_floating_point():
        raise ValueError("transition must be a 2-D float tensor (rows are distributions over the neighbours)")
    values = transition.detach()
    if (values < 0).any() or not torch.isfinite(values).all():
        raise ValueError("transition must be finite and non-negative (see gloss_lite.graph.transition_matrix)")
    return torch.exp(-torch.special.xlogy(values, values).sum(dim=1))


@dataclass(frozen=True)
class BatchView:
    """The graph of one minibatch at one ``(sigma, gamma)`` and what propagation and G-Loss make of it."""

    sigma: float
    gamma: float
    log_affinity: torch.Tensor
    transition: torch.Tensor
    labeled_mask: torch.Tensor
    effective_neighbours: float
    lpa_accuracy: float
    g_loss: float
    update_norm: float

    @property
    def affinity(self) -> torch.Tensor:
        """``W`` itself (its entries underflow to 0 when sigma is small; ``log_affinity`` does not)."""
        return self.log_affinity.exp()

    @property
    def numbers(self) -> dict:
        """``sigma``, ``gamma``, the number of hidden nodes and the four measured numbers, as a dict."""
        return {"sigma": self.sigma, "gamma": self.gamma, "hidden": int((~self.labeled_mask).sum()),
                **{name: getattr(self, name) for name in NUMBERS}}


def _check_batch(embeddings, labels, num_classes) -> torch.Tensor:
    check_embeddings(embeddings)
    labels = class_ids(labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"shapes disagree: {len(embeddings)} embeddings and {len(labels)} labels")
    check_int("num_classes", num_classes, minimum=2)
    check_class_range(labels, num_classes)
    return F.normalize(embeddings.detach(), dim=1)


def explore(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    sigma: float,
    gamma: float,
    scheme: str = "gloss",
    seed: int = 0,
) -> BatchView:
    """The graph of the minibatch at ``(sigma, gamma)`` and its four numbers (see the module docstring).

    Raises:
        ValueError: embeddings, labels or num_classes that do not fit together; a sigma, gamma or
            scheme that ``gaussian_affinity``, ``split_mask`` or ``transition_matrix`` refuse.
    """
    unit = _check_batch(embeddings, labels, num_classes)
    mask = split_mask(labels, gamma, generator=torch.Generator().manual_seed(seed))
    log_affinity = gaussian_affinity(unit, sigma, log=True)
    transition = transition_matrix(log_affinity, scheme, log=True)
    distributions = propagate(transition, labels, mask, num_classes)
    hidden = ~mask
    accuracy = (distributions[hidden].argmax(dim=1) == labels[hidden].to(distributions.device)).double().mean()
    points = unit.clone().requires_grad_(True)
    loss = g_loss(points, labels, mask, sigma=sigma, num_classes=num_classes, scheme=scheme)
    (gradient,) = torch.autograd.grad(loss, points)
    return BatchView(
        sigma=float(sigma), gamma=float(gamma), log_affinity=log_affinity, transition=transition,
        labeled_mask=mask, effective_neighbours=float(effective_neighbours(transition).mean()),
        lpa_accuracy=float(accuracy), g_loss=float(loss.detach()), update_norm=float(gradient.norm()),
    )


def sweep(embeddings, labels, num_classes, sigmas, gammas, *, scheme: str = "gloss", seed: int = 0):
    """``explore`` at every ``(sigma, gamma)`` of the grid: a pandas DataFrame, one row per pair
    (columns ``sigma``, ``gamma``, ``hidden`` and the four numbers)."""
    import pandas as pd

    rows = [explore(embeddings, labels, num_classes, sigma=float(s), gamma=float(g), scheme=scheme, seed=seed).numbers
            for g in gammas for s in sigmas]
    if not rows:
        raise ValueError("sweep needs at least one sigma and one gamma")
    return pd.DataFrame(rows)


def _summary(view: BatchView, labels: torch.Tensor, num_classes: int) -> str:
    n, hidden = len(labels), int((~view.labeled_mask).sum())
    majority = torch.bincount(labels[~view.labeled_mask.to(labels.device)], minlength=num_classes).max() / hidden
    return "\n".join([
        f"sigma = {view.sigma:.4g}, gamma = {view.gamma:.2f}",
        f"{n - hidden} visible, {hidden} hidden labels",
        "",
        "effective neighbours (mean exp H(T_i))",
        f"    {view.effective_neighbours:.1f} of n - 1 = {n - 1}",
        "LPA accuracy on the hidden nodes",
        f"    {view.lpa_accuracy:.3f} (majority share {float(majority):.3f})",
        "G-Loss",
        f"    {view.g_loss:.4f} (log C = {math.log(num_classes):.4f})",
        "G-Loss update ||dL/dU||",
        f"    {view.update_norm:.4g}",
    ])


def draw_view(view: BatchView, labels: torch.Tensor, class_names, *, matrix: str = "affinity"):
    """One figure: the heatmap of ``W`` (``matrix="affinity"``) or ``T`` (``"transition"``), rows and
    columns sorted by class, beside the view's numbers. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")
    off = ~torch.eye(len(view.transition), dtype=torch.bool)
    shown, name, symbol = (view.affinity, "W", "$W_{ij}$") if matrix == "affinity" else \
        (view.transition, "T", "$T_{ij}$")
    if matrix == "affinity" and not shown[off].quantile(0.99) > shown[off].min():  # W underflows: show W / max W
        shown = (view.log_affinity - view.log_affinity[off].max()).exp()
        name, symbol = "W / max W (W itself underflows to 0)", r"$W_{ij} / \max W$"
    low, high = shown[off].min().item(), shown[off].quantile(0.99).item()
    fig, (heat, text) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.25, 1]})
    sorted_heatmap(heat, shown, labels, class_names, f"{name} sorted by class, from {low:.2g} to {high:.2g}",
                   vmin=low, vmax=high, cbar_label=symbol)
    text.axis("off")
    text.text(0.0, 0.5, _summary(view, labels, len(class_names)), family="monospace", va="center", fontsize=10.5)
    fig.tight_layout()
    return fig


def draw_sweep(table, *, reference_sigma: float | None = None, reference_label: str = "SQRT"):
    """The numbers of ``sweep`` against sigma, one panel each, one line per gamma (and per label set,
    when ``table`` has a ``labels`` column). ``reference_sigma`` draws a dashed vertical line."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    panels = {"effective_neighbours": ("effective neighbours (mean)", True),
              "lpa_accuracy": ("LPA accuracy on the hidden nodes", False),
              "g_loss": ("G-Loss", True), "update_norm": (r"G-Loss update $\|\partial L / \partial U\|$", True)}
    groups = table.groupby("labels", sort=False) if "labels" in table else [(None, table)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    styles = ["-", "--", ":", "-."]
    for colour, (key, part) in enumerate(groups):
        for style, (gamma, rows) in zip(styles * 10, part.groupby("gamma", sort=True)):
            name = f"gamma = {gamma:g}" if key is None else f"{key}, gamma = {gamma:g}"
            for ax, column in zip(axes, panels):
                ax.plot(rows["sigma"], rows[column], style, marker="o", ms=3, color=f"C{colour}", label=name)
    for ax, (column, (title, log_y)) in zip(axes, panels.items()):
        ax.set(xscale="log", yscale="log" if log_y else "linear", xlabel="sigma (log scale)", title=title)
        ax.yaxis.set_minor_formatter(NullFormatter())
        if reference_sigma is not None:
            ax.axvline(reference_sigma, color="black", ls="--", lw=1)
    axes[1].set_ylim(-0.02, 1.02)
    handles, names = axes[1].get_legend_handles_labels()
    if reference_sigma is not None:
        handles.append(plt.Line2D([], [], color="black", ls="--", lw=1))
        names.append(f"{reference_label} ({reference_sigma:.3g})")
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


WIDGET_TEXT = "Sliders for sigma and gamma: open this notebook in Jupyter to move them."
NO_WIDGETS_ENV = "GLOSS_LITE_NO_WIDGETS"  # "1": draw the starting view, create no widget


@dataclass
class StaticExplorer:
    """What ``explorer_widget`` returns where no widget is made: the view drawn, and one sentence."""

    view: BatchView

    def __repr__(self) -> str:
        return WIDGET_TEXT


def _ExplorerBox(widgets):
    """A ``VBox`` whose plain-text form (what a static copy shows) is ``WIDGET_TEXT``, not its repr."""

    class ExplorerBox(widgets.VBox):
        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            data = bundle[0] if isinstance(bundle, tuple) else bundle
            if isinstance(data, dict):
                data["text/plain"] = WIDGET_TEXT
            return bundle

    return ExplorerBox


def explorer_widget(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names,
    *,
    sigma: float,
    sigma_range: tuple[float, float],
    gamma: float = 0.7,
    gamma_range: tuple[float, float] = (0.1, 0.9),
    matrix: str = "affinity",
    scheme: str = "gloss",
    seed: int = 0,
):
    """Two sliders (sigma, log scale; gamma) over ``draw_view`` of the minibatch; redrawn on release.

    Returns an ``ipywidgets.VBox`` whose attribute ``view`` holds the ``BatchView`` last drawn. Where
    the notebook cannot show widgets (a static web page) its text is ``WIDGET_TEXT``, one sentence,
    instead of the widget's repr. With the environment variable ``NO_WIDGETS_ENV`` set to ``"1"``
    (the course's notebook runner sets it) it draws the starting view and returns a
    ``StaticExplorer``, whose text is that sentence. Without ipywidgets it prints a one-line note
    and returns None.
    """
    low, high = sigma_range
    if not 0 < low < sigma < high:
        raise ValueError(f"sigma_range must satisfy 0 < low < sigma < high, got {sigma_range} with sigma = {sigma}")
    if not 0 < gamma_range[0] <= gamma <= gamma_range[1] < 1:
        raise ValueError(f"gamma_range must lie in (0, 1) around gamma = {gamma}, got {gamma_range}")
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")
    import matplotlib.pyplot as plt

    def drawn(sigma: float, gamma: float) -> BatchView:
        view = explore(embeddings, labels, len(class_names), sigma=sigma, gamma=gamma, scheme=scheme, seed=seed)
        draw_view(view, labels, class_names, matrix=matrix)
        plt.show()
        return view

    if os.environ.get(NO_WIDGETS_ENV) == "1":
        return StaticExplorer(drawn(sigma, gamma))
    try:
        import ipywidgets as widgets
    except ImportError:
        print("ipywidgets is not installed, so there are no sliders here; the figure below shows the same sweep.")
        return None

    num_classes = len(class_names)
    explore(embeddings, labels, num_classes, sigma=sigma, gamma=gamma, scheme=scheme, seed=seed)  # fail early
    exponents = (math.log10(low), math.log10(high))
    sigma_slider = widgets.FloatLogSlider(value=sigma, base=10, min=exponents[0], max=exponents[1],
                                          step=(exponents[1] - exponents[0]) / 80, description="sigma",
                                          readout_format=".3g", continuous_update=False)
    gamma_slider = widgets.FloatSlider(value=gamma, min=gamma_range[0], max=gamma_range[1], step=0.05,
                                       description="gamma", readout_format=".2f", continuous_update=False)
    box = _ExplorerBox(widgets)([widgets.HBox([sigma_slider, gamma_slider])])

    def redraw(sigma, gamma):
        box.view = drawn(sigma, gamma)

    box.children += (widgets.interactive_output(redraw, {"sigma": sigma_slider, "gamma": gamma_slider}),)
    return box
