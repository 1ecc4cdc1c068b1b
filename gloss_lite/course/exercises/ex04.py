"""The exercises of notebook 04 · Choosing sigma: the SQRT and DICM rules, the sigma of a chosen median weight."""

from __future__ import annotations

import math

import torch

from ...graph import gaussian_affinity
from ...sigma import sigma_dicm, sigma_sqrt
from ..comparing import Exercise, Mismatch, ask, describe, same_outputs
from .inputs import choice, sigma_cases

RULES = ("sigma_sqrt", "sigma_dicm", "pairwise_distances", "estimate")


def check_median_weight(student, generator) -> int:
    """Measured, not compared: the Gaussian graph built with the student's sigma."""
    drawn = sigma_cases(generator)
    for number, (description, (points,)) in enumerate(drawn, start=1):
        weight = choice([0.1, 0.25, 0.5, 0.9], generator)
        where = f"input {number} of {len(drawn)}: {description}, weight={weight}"
        sigma = ask(student, where, points, weight)
        try:
            sigma = float(sigma)
        except (TypeError, ValueError, RuntimeError):
            raise Mismatch(f"expected a number (sigma), got {describe(sigma)}\n  on {where}") from None
        if not (math.isfinite(sigma) and sigma > 0):
            raise Mismatch(f"sigma must be a positive number, got {sigma}\n  on {where}")
        affinity = gaussian_affinity(points, sigma)
        upper = torch.triu_indices(len(affinity), len(affinity), offset=1)
        median = affinity[upper[0], upper[1]].median().item()
        if abs(median - weight) > 1e-6:
            raise Mismatch(f"with your sigma = {sigma:.6g} the median weight of the graph is {median:.6g}, "
                           f"not {weight}\n  on {where}")
    return len(drawn)


EXERCISES = {
    "04.1": Exercise(
        "the SQRT estimate of sigma", "sqrt_rule",
        "Euclidean distances (not squared) between the L2-normalised rows, each pair i < j once; "
        "sigma = sqrt(median / 3)",
        same_outputs(sigma_cases, sigma_sqrt, atol=1e-7),
        forbidden=RULES, face=("graph", "lpa", "masking")),
    "04.2": Exercise(
        "the DICM estimate of sigma", "dicm_rule",
        "the smallest Euclidean distance between two L2-normalised documents of different classes, "
        "divided by 3",
        same_outputs(lambda g: sigma_cases(g, labelled=True), sigma_dicm, atol=1e-7),
        forbidden=RULES, face=("graph", "lpa", "masking")),
    "04.3": Exercise(
        "the sigma that gives the median pair a chosen weight", "sigma_for_median_weight",
        "the weight exp(-d^2 / (2 sigma^2)) falls as d grows, so the median weight belongs to the median "
        "distance d_med (over the pairs i < j of L2-normalised rows); solve exp(-d_med^2 / (2 sigma^2)) = weight",
        check_median_weight,
        forbidden=("sigma_sqrt", "sigma_dicm", "estimate"), points=3, face=("graph", "lpa", "masking"),
        more_hint="sigma = d_med / sqrt(-2 log(weight))"),
}
