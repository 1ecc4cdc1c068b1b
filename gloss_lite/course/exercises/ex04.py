"""The exercises of notebook 04 · Choosing sigma: the SQRT rule, the sigma of a chosen number of neighbours,
the sigma of a chosen median weight."""

from __future__ import annotations

import math

import torch

from ...graph import gaussian_affinity, transition_matrix
from ...sigma import sigma_sqrt
from ..comparing import Exercise, Mismatch, ask, describe, same_outputs
from .inputs import choice, embeddings, randint, sigma_cases

RULES = ("sigma_sqrt", "sigma_dicm", "pairwise_distances", "estimate")


def ask_sigma(student, where: str, *args) -> float:
    """The student's sigma on one input, refused unless it is a positive finite number."""
    sigma = ask(student, where, *args)
    try:
        sigma = float(sigma)
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"expected a number (sigma), got {describe(sigma)}\n  on {where}") from None
    if not (math.isfinite(sigma) and sigma > 0):
        raise Mismatch(f"sigma must be a positive number, got {sigma}\n  on {where}")
    return sigma


# 04.2 · a sigma for a chosen number of neighbours ---------------------------------------------

def mean_effective_neighbours(points: torch.Tensor, sigma: float) -> float:
    """Mean over the rows of ``exp(-sum_j T_ij log T_ij)``, ``T`` the paper's transition (log domain)."""
    transition = transition_matrix(gaussian_affinity(points, sigma, log=True), "gloss", log=True)
    return torch.exp(-torch.special.xlogy(transition, transition).sum(dim=1)).mean().item()


def sigma_for_neighbours_reference(points: torch.Tensor, k: float) -> float:
    """The sigma whose graph has ``k`` effective neighbours on average: bisection on log sigma.

    The mean grows from 1 (each row one-hot) to ``n - 1`` (each row uniform) as sigma grows.
    """
    low, high = math.log(1e-3), math.log(1e3)
    for _ in range(80):
        middle = (low + high) / 2
        if mean_effective_neighbours(points, math.exp(middle)) < k:
            low = middle
        else:
            high = middle
    return math.exp((low + high) / 2)


def check_neighbours_sigma(student, generator) -> int:
    """Measured, not compared: the mean effective number of neighbours at the student's sigma."""
    tried = 4
    for number in range(1, tried + 1):
        n, d = randint(8, 24, generator), randint(3, 8, generator)
        points = embeddings(n, d, generator)
        k = round(1.5 + (n - 3.5) * torch.rand((), generator=generator).item(), 2)
        where = f"input {number} of {tried}: {n} x {d} embeddings, k={k}"
        sigma = ask_sigma(student, where, points, k)
        measured = mean_effective_neighbours(points, sigma)
        if abs(measured - k) > 1e-3 * k:
            raise Mismatch(f"with your sigma = {sigma:.6g} the mean effective number of neighbours is "
                           f"{measured:.6g}, not {k}\n  on {where}")
    return tried


def check_median_weight(student, generator) -> int:
    """Measured, not compared: the Gaussian graph built with the student's sigma."""
    drawn = sigma_cases(generator)
    for number, (description, (points,)) in enumerate(drawn, start=1):
        weight = choice([0.1, 0.25, 0.5, 0.9], generator)
        where = f"input {number} of {len(drawn)}: {description}, weight={weight}"
        sigma = ask_sigma(student, where, points, weight)
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
        "the sigma of a chosen number of neighbours", "sigma_for_neighbours",
        "the mean effective number of neighbours, exp(-sum_j T_ij log T_ij) averaged over the rows of the "
        "paper's transition matrix, grows from 1 to n - 1 with sigma: bisect on log(sigma), building T from "
        "log W (gaussian_affinity(..., log=True), transition_matrix(..., 'gloss', log=True))",
        check_neighbours_sigma, points=3, face=("graph",),
        more_hint="keep low, high = log(1e-3), log(1e3); 60 to 80 halvings; torch.special.xlogy(T, T) "
                  "gives 0 log 0 = 0"),
    "04.3": Exercise(
        "the sigma that gives the median pair a chosen weight", "sigma_for_median_weight",
        "the weight exp(-d^2 / (2 sigma^2)) falls as d grows, so the median weight belongs to the median "
        "distance d_med (over the pairs i < j of L2-normalised rows); solve exp(-d_med^2 / (2 sigma^2)) = weight",
        check_median_weight,
        forbidden=("sigma_sqrt", "sigma_dicm", "estimate"), points=3, face=("graph", "lpa", "masking"),
        more_hint="sigma = d_med / sqrt(-2 log(weight))"),
}
