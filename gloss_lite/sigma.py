"""Choosing the kernel width sigma.

Taught in ``notebooks/04_sigma_estimation.ipynb``.

Sigma sets the scale at which two documents count as neighbours in
``W_ij = exp(-||e_i - e_j||^2 / (2 sigma^2))``. Too small and each node talks only to its
nearest neighbour; too large and every weight is close to 1, so propagation returns the class
prior. The paper tunes sigma with Optuna (G-Loss-O) or estimates it from the embeddings:

- G-Loss-SQRT: ``sigma = sqrt(median_{i<j} ||e_i - e_j|| / 3)`` (``torch.median``: for an even
  number of pairs, the lower of the two middle values);
- DICM (direct inter-class minimum): ``sigma = min_{y_i != y_j} ||e_i - e_j|| / 3``, the smallest
  distance between two documents of different classes (the next larger one if the smallest is 0).

Both are computed on L2-normalised embeddings, as the graph is.

The authors' code differs in two details, available as options:

- their SQRT takes the median of the whole ``N x N`` matrix, its zero diagonal included
  (``include_diagonal=True``); the ``N`` zeros pull the median down a little;
- their DICM falls back to ``median_{i<j} ||e_i - e_j|| / 3`` (no square root) when no two
  documents of different classes lie at a non-zero distance (``fallback=True``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_choice, class_ids
from .graph import check_embeddings


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||e_i - e_j||`` of the L2-normalised rows, ``n x n``, without gradient."""
    check_embeddings(embeddings)
    unit = F.normalize(embeddings.detach().double(), dim=1)
    return torch.cdist(unit, unit, compute_mode="donot_use_mm_for_euclid_dist")


def _upper_median(distances: torch.Tensor) -> torch.Tensor:
    upper = torch.triu_indices(len(distances), len(distances), offset=1)
    return distances[upper[0], upper[1]].median()


def sigma_sqrt(embeddings: torch.Tensor, *, include_diagonal: bool = False) -> float:
    """G-Loss-SQRT: ``sqrt(median pairwise distance / 3)`` over the pairs ``i < j``.

    ``include_diagonal=True`` takes the median over all ``N^2`` entries, zeros included, as the
    authors' ``compute_sigma`` does.
    """
    distances = pairwise_distances(embeddings)
    median = distances.flatten().median() if include_diagonal else _upper_median(distances)
    if median <= 0:
        raise ValueError("all embeddings point the same way (median distance 0); sigma is undefined")
    return float(torch.sqrt(median / 3.0))


def sigma_dicm(embeddings: torch.Tensor, labels: torch.Tensor, *, fallback: bool = False) -> float:
    """DICM: the smallest distance between two documents of different classes, divided by 3.

    If the smallest such distance is 0 (a duplicate document under two labels), the next
    larger non-zero distance is used. If there is none (one class only, or every pair of
    different classes coincides), ``fallback=True`` returns the authors' fallback, the median
    pairwise distance divided by 3; otherwise it is an error. ``labels`` are integer class ids
    (a tensor or a sequence of ints); class names are refused: encode them first
    (``gloss_lite.data`` does).
    """
    distances = pairwise_distances(embeddings)
    labels = class_ids(labels).cpu()
    if labels.shape != (len(distances),):
        raise ValueError(f"shapes disagree: {len(distances)} embeddings and labels of shape {tuple(labels.shape)}")
    between = distances[labels[:, None] != labels[None, :]]
    between = between[between > 0]
    if len(between) == 0 and fallback:
        return float(_upper_median(distances) / 3.0)
    if len(between) == 0:
        raise ValueError("sigma_dicm needs two documents of different classes at a non-zero distance")
    return float(between.min() / 3.0)


SIGMA_RULES = ("sqrt", "dicm")


def check_sigma_setting(sigma) -> None:
    """Refuse a sigma setting that is neither a positive finite number nor a rule of ``SIGMA_RULES``."""
    if isinstance(sigma, bool):
        raise ValueError(f"sigma must be a number, got the bool {sigma!r}")
    if isinstance(sigma, str):
        if sigma in SIGMA_RULES:
            return
    elif isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0:
        return
    raise ValueError(f"sigma must be a positive number, 'sqrt' or 'dicm', got {sigma!r}")


def estimate(rule: str, embeddings: torch.Tensor, labels=None, *, variant: str = "course") -> float:
    """Sigma by ``rule`` (``"sqrt"`` or ``"dicm"``) on ``embeddings``: the one dispatch of the rules.

    ``variant="authors"`` is the authors' form of each rule: SQRT over the full distance matrix
    (diagonal included), DICM with its median fallback. DICM needs ``labels``.
    """
    check_choice("rule", rule, SIGMA_RULES)
    check_choice("variant", variant, ("course", "authors"))
    authors = variant == "authors"
    if rule == "sqrt":
        return sigma_sqrt(embeddings, include_diagonal=authors)
    if labels is None:
        raise ValueError("the 'dicm' rule needs the documents' labels: estimate('dicm', embeddings, labels)")
    return sigma_dicm(embeddings, labels, fallback=authors)
