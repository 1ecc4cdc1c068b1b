"""Hiding a fraction of the minibatch's labels.

Taught in ``notebooks/03_masking_and_the_loss.ipynb``.

G-Loss keeps the labels of a fraction ``gamma`` of the minibatch visible and hides the rest;
label propagation then predicts the hidden ones from the visible ones, and the loss scores those
predictions.

Two ways to draw the mask:

- ``stratified=False``: the authors' draw, a uniformly random set of visible nodes, node ``i``
  visible when ``pi(i) < gamma * n`` for a random permutation ``pi`` of ``0 .. n-1``; that is
  ``ceil(gamma * n)`` visible nodes (exactly ``gamma * n`` when it is a whole number).
- ``stratified=True`` (the course's default): class by class, about ``gamma`` of each class.

A purely random mask can leave a class with no visible node. Propagation can then never
predict that class, and the hidden nodes of that class get probability 0 for their true label
(an infinite loss). ``stratified=True`` (the default) draws the mask class by class, about
``gamma`` of each class visible, at least one visible node of every class present and, in a
class of two or more, at least one hidden.
"""

from __future__ import annotations

import math

import torch

from .checks import check_in_range, class_ids


def check_gamma(gamma) -> None:
    """``gamma``, the fraction of a batch's labels left visible, must lie in (0, 1)."""
    check_in_range("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True,
                   meaning="is the fraction of visible labels and")


def split_mask(
    labels: torch.Tensor,
    gamma: float,
    *,
    generator: torch.Generator | None = None,
    stratified: bool = True,
) -> torch.Tensor:
    """Draw which labels stay visible.

    Args:
        labels: ``n`` integer class labels.
        gamma: fraction of visible labels, strictly between 0 and 1.
        generator: a ``torch.Generator`` for reproducible masks (same seed, same mask).
        stratified: draw per class, keeping at least one visible node of every class present.

    Returns:
        ``n`` bools on ``labels``' device, True where the label is visible.

    Raises:
        ValueError: gamma outside (0, 1), fewer than 2 labels, or a mask with no hidden node
            (every class has a single member, so stratification keeps them all visible; or, for
            the random draw, ``ceil(gamma * n) = n``).
    """
    check_gamma(gamma)
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a 1-D integer tensor of class ids, got {type(labels).__name__}; "
                         "use torch.as_tensor(labels)")
    class_ids(labels)
    n = len(labels)
    if n < 2:
        raise ValueError(f"masking needs at least 2 labels (one visible, one hidden), got {n}")
    cpu_labels = labels.cpu()
    mask = torch.zeros(n, dtype=torch.bool)

    if not stratified:
        mask = torch.randperm(n, generator=generator) < gamma * n
        if mask.all():
            raise ValueError(
                f"no hidden node after masking: ceil(gamma * n) = {n} of {n} labels stay visible; "
                f"use a batch of at least {math.ceil(1 / (1 - gamma) - 1e-9)} documents or a smaller gamma"
            )
        return mask.to(labels.device)

    for cls in torch.unique(cpu_labels):  # sorted, so the draw order is fixed
        members = (cpu_labels == cls).nonzero().flatten()
        num_visible = min(max(round(gamma * len(members)), 1), len(members))
        if len(members) > 1:
            num_visible = min(num_visible, len(members) - 1)
        mask[members[torch.randperm(len(members), generator=generator)[:num_visible]]] = True
    if mask.all():
        raise ValueError(
            "no hidden node after masking: every class in this batch has a single member; "
            "use a larger batch or a sampler that draws at least two documents per class"
        )
    return mask.to(labels.device)
