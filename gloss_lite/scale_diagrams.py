"""Two diagrams of a G-Loss step that outgrows one batch or one device.

Drawn in ``notebooks/08_the_graph_beyond_one_batch.ipynb`` before the mathematics they show:

* ``draw_cached_backward``: the cached (GradCache-style) step. (1) Embed every chunk without
  gradient and keep only ``E``; (2) compute the loss on ``E`` and ``G = dL/dE``; (3) embed chunk
  ``k`` again with gradient and push ``G_k`` back through it. The chain rule,
  ``dL/dtheta = sum_k G_k^T dE_k/dtheta``, makes the gradient exact.
* ``draw_gather``: one graph across processes. Every rank embeds its share, gathers all
  embeddings with their gradient, draws the same mask and computes the same loss; the gather's
  backward sums ``dL/dE_r`` over the ranks (``W dL/dE_r``) and DDP's average divides by ``W``.

Forward arrows are black, backward arrows red and dashed, as in every diagram of the course.
Imports matplotlib only.
"""

from __future__ import annotations

from matplotlib.patches import FancyBboxPatch

__all__ = ["draw_cached_backward", "draw_gather"]

FORWARD = "black"
BACKWARD = "#d62728"
CACHE_FILL = "#c6dbef"
TEXT_FILL = "#f0f0f0"


def _box(ax, x, y, width, height, text, fill=TEXT_FILL, fontsize=9):
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=fill, edgecolor="black", lw=1))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, *, backward=False, text=None, offset=(0.0, 0.12)):
    style = {"arrowstyle": "-|>", "lw": 1.3, "color": BACKWARD if backward else FORWARD,
             "linestyle": "--" if backward else "-", "shrinkA": 2, "shrinkB": 2}
    ax.annotate("", xy=end, xytext=start, arrowprops=style)
    if text:
        middle = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        ax.text(*middle, text, ha="center", va="bottom", fontsize=8,
                color=BACKWARD if backward else FORWARD)


def _frame(ax, width, height, title):
    ax.set(xlim=(-0.2, width), ylim=(-0.6, height), aspect="equal")
    ax.axis("off")
    ax.set_title(title, fontsize="medium")


def draw_cached_backward(ax, chunks: int = 3):
    """The three phases of a cached step on ``chunks`` chunks of one batch (one axis)."""
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, got {chunks}")
    height = 1.1 * chunks
    _frame(ax, 10.6, height + 1.3, "The cached step: embed without gradient, loss once, "
           "re-embed chunk by chunk")
    centres = [height - 1.1 * k - 0.55 for k in range(chunks)]
    for k, y in enumerate(centres, start=1):
        _box(ax, 0.0, y - 0.35, 1.0, 0.7, f"$X_{k}$")
        _box(ax, 1.8, y - 0.35, 1.6, 0.7, "encoder\nno gradient")
        _arrow(ax, (1.0, y), (1.8, y))
        _arrow(ax, (3.4, y), (4.3, y), text="1: $E_" + str(k) + "$")
        _box(ax, 7.7, y - 0.35, 1.6, 0.7, "encoder\nwith gradient", fill="white")
        _arrow(ax, (7.7, y), (6.0, y), backward=True, text=f"3: $G_{k}$")
    _box(ax, 4.3, centres[-1] - 0.45, 1.7, centres[0] - centres[-1] + 0.9,
         "$E$\ncached\n(a leaf)", fill=CACHE_FILL)
    top = centres[0] + 0.45
    _box(ax, 4.55, top + 0.35, 1.2, 0.55, r"$\mathcal{L}(E)$")
    _arrow(ax, (5.15, top), (5.15, top + 0.35))
    ax.text(6.0, top + 0.62, r"2: $G = \partial\mathcal{L}/\partial E$", fontsize=8,
            color=BACKWARD, va="center")
    ax.text(9.5, centres[len(centres) // 2], r"$\sum_k G_k^\top \partial E_k/\partial\theta$"
            "\n= the plain gradient", fontsize=8, va="center", color=BACKWARD)
    return ax


def draw_gather(ax, world_size: int = 2):
    """One graph across ``world_size`` processes: gather with gradient, one mask, summed backward."""
    if world_size < 2:
        raise ValueError(f"a gather needs at least two ranks, got world_size={world_size}")
    height = 1.6 * world_size
    _frame(ax, 11.4, height + 0.2, "One graph across processes: gather with gradient, "
           "one mask, backward summed")
    names = ", ".join(f"E_{r}" for r in range(world_size))
    for r in range(world_size):
        y = height - 1.6 * r - 0.8
        _box(ax, 0.0, y - 0.35, 1.2, 0.7, f"rank {r}\n$X_{r}$")
        _box(ax, 1.9, y - 0.35, 1.5, 0.7, f"encoder\n$\\theta$ (copy {r})")
        _box(ax, 4.1, y - 0.3, 0.9, 0.6, f"$E_{r}$")
        _arrow(ax, (1.2, y), (1.9, y))
        _arrow(ax, (3.4, y), (4.1, y))
        _box(ax, 6.3, y - 0.4, 1.7, 0.8, f"$E = [{names}]$", fill=CACHE_FILL, fontsize=8)
        for s in range(world_size):
            source = height - 1.6 * s - 0.8
            _arrow(ax, (5.0, source), (6.3, y), text="gather" if (r, s) == (0, 0) else None)
        _box(ax, 8.7, y - 0.35, 2.4, 0.7, r"$\mathcal{L}(E)$, same mask" + "\n(shared seed)",
             fontsize=8)
        _arrow(ax, (8.0, y), (8.7, y))
    bottom = height - 1.6 * (world_size - 1) - 0.8
    _arrow(ax, (6.3, bottom - 0.5), (5.0, bottom - 0.5), backward=True,
           text=r"backward: $\sum_s \partial\mathcal{L}/\partial E_r = W\,\partial\mathcal{L}/\partial E_r$",
           offset=(0.0, -0.42))
    ax.text(0.0, -0.45, r"DDP averages the ranks' gradients ($\div W$): the $W$ cancels",
            fontsize=8, color=BACKWARD)
    return ax
