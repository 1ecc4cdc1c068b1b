"""The exercises of notebook 01 · The similarity graph: the k-nearest-neighbour graph, the Gaussian
kernel, the transition matrix when sigma is tiny."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...graph import gaussian_affinity, knn_sparsify, squared_distances
from ..comparing import Exercise, same_outputs
from .inputs import embeddings, randint


def embedding_cases(generator, *, with_sigma=False):
    cases = []
    for _ in range(5):
        n, d = randint(2, 10, generator), randint(2, 8, generator)
        points = embeddings(n, d, generator) * (torch.rand((), generator=generator).item() * 4 + 0.5)
        if with_sigma:
            sigma = round(0.2 + 1.3 * torch.rand((), generator=generator).item(), 3)
            cases.append((f"{n} x {d} embeddings, sigma={sigma}", (points, sigma)))
        else:
            cases.append((f"{n} x {d} embeddings", (points,)))
    return cases


# 01.1 · the k-nearest-neighbour graph -----------------------------------------------------

def knn_cases(generator):
    """The Gaussian affinity of random embeddings (no two weights of a row are equal) and a k."""
    cases = []
    for _ in range(5):
        n, d = randint(4, 10, generator), randint(2, 6, generator)
        sigma = round(0.3 + torch.rand((), generator=generator).item(), 3)
        k = randint(1, n - 2, generator)
        affinity = gaussian_affinity(embeddings(n, d, generator), sigma)
        cases.append((f"W of {n} random embeddings (sigma={sigma}), k={k}", (affinity, k)))
    return cases


# 01.3 · the transition matrix when sigma is tiny ---------------------------------------------

def narrow_kernel_reference(points):
    """The limit of ``D^-1 W`` as sigma -> 0: all of each row's weight on its nearest neighbour."""
    distances = squared_distances(points).fill_diagonal_(float("inf"))
    return F.one_hot(distances.argmin(dim=1), len(points)).to(points.dtype)


def distinct_neighbour_cases(generator):
    cases = []
    for _ in range(5):
        n, d = randint(3, 10, generator), randint(2, 6, generator)
        cases.append((f"{n} x {d} embeddings", (embeddings(n, d, generator) * 3,)))
    return cases


EXERCISES = {
    "01.1": Exercise(
        "the k-nearest-neighbour graph", "knn_graph",
        "every node chooses its k largest weights, never itself (set the diagonal to -inf, then topk); "
        "an edge stays when either end chose it (choices | choices.T) and keeps its weight; all other "
        "entries are 0",
        same_outputs(knn_cases, knn_sparsify),
        forbidden=("knn_sparsify",), face=("lpa", "masking")),
    "01.2": Exercise(
        "the Gaussian kernel", "gaussian_kernel",
        "W_ij = exp(-||u_i - u_j||^2 / (2 sigma^2)) on the L2-normalised rows u, and W_ii = 0: "
        "a document is not its own neighbour",
        same_outputs(lambda g: embedding_cases(g, with_sigma=True), gaussian_affinity),
        forbidden=("gaussian_affinity", "transition_matrix"), face=("lpa", "masking")),
    "01.3": Exercise(
        "the transition matrix when sigma is tiny", "narrow_kernel_limit",
        "write T_ij = W_ij / sum_k W_ik as 1 / sum_k exp((d_ij^2 - d_ik^2) / (2 sigma^2)) and let sigma -> 0: "
        "which k make the sum blow up, and which j keep it at 1?",
        same_outputs(distinct_neighbour_cases, narrow_kernel_reference),
        forbidden=("gaussian_affinity", "transition_matrix", "narrow_kernel_reference"), points=3,
        face=("lpa", "masking"),
        more_hint="only the nearest neighbour j of i keeps T_ij -> 1, every other entry -> 0: a one-hot row "
                  "at the argmin of the squared distances, the diagonal excluded"),
}
