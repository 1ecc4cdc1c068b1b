"""Random inputs that the exercises of several notebooks share: labels, embeddings, a graph and its mask.

Every function draws from the ``torch.Generator`` it is given, so a checker's seed repeats its
inputs exactly.
"""

from __future__ import annotations

import torch

from ...graph import gaussian_affinity, transition_matrix


def randint(low: int, high: int, generator: torch.Generator) -> int:
    """A whole number from ``low`` to ``high``, both included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def choice(values: list, generator: torch.Generator):
    return values[randint(0, len(values) - 1, generator)]


def labels_with_every_class(n: int, num_classes: int, generator: torch.Generator, *, at_least: int = 1):
    """``n`` labels in which each of ``num_classes`` classes occurs at least ``at_least`` times."""
    base = torch.arange(num_classes).repeat_interleave(at_least)
    rest = torch.randint(0, num_classes, (n - len(base),), generator=generator)
    labels = torch.cat([base, rest])
    return labels[torch.randperm(n, generator=generator)]


def embeddings(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """``n x d`` standard normal float64 embeddings."""
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


def graph_case(generator: torch.Generator, *, sizes=(6, 14), classes=(2, 4)):
    """Random embeddings, labels, a mask that keeps every class visible, sigma, and the row-stochastic
    ``T`` of the Gaussian graph: ``(embeddings, labels, visible, num_classes, sigma, transition)``."""
    num_classes = randint(*classes, generator)
    n = randint(max(sizes[0], 2 * num_classes + 1), sizes[1], generator)
    points = embeddings(n, 5, generator)
    labels = labels_with_every_class(n, num_classes, generator, at_least=2)
    visible = torch.zeros(n, dtype=torch.bool)
    for cls in range(num_classes):  # one visible member of every class, then a random share of the rest
        visible[(labels == cls).nonzero().flatten()[0]] = True
    visible |= torch.rand(n, generator=generator, dtype=torch.float64) < 0.3
    if visible.all():
        visible[(labels == labels[-1]).nonzero().flatten()[-1]] = False
    sigma = 0.3 + torch.rand((), generator=generator, dtype=torch.float64).item()
    transition = transition_matrix(gaussian_affinity(points, sigma), "row")
    return points, labels, visible, num_classes, sigma, transition


def sigma_cases(generator: torch.Generator, *, labelled: bool = False) -> list:
    """Embeddings whose number of pairs ``n (n - 1) / 2`` is odd (one middle distance), with labels if asked."""
    cases = []
    for _ in range(5):
        n = choice([3, 6, 7, 10, 11, 14], generator)
        d = randint(3, 8, generator)
        points = embeddings(n, d, generator) * (torch.rand((), generator=generator).item() * 3 + 0.5)
        if labelled:
            labels = labels_with_every_class(n, randint(2, 3, generator), generator)
            cases.append((f"{n} x {d} embeddings, labels {labels.tolist()}", (points, labels)))
        else:
            cases.append((f"{n} x {d} embeddings ({n * (n - 1) // 2} pairs)", (points,)))
    return cases
