"""The exercises of notebook 02 · Label propagation: one iteration, the closed form, soft clamping's fixed point."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...lpa import propagate
from ..comparing import Exercise, same_outputs
from .inputs import choice, graph_case

# 02.1 · one iteration of label propagation ---------------------------------------------------

def lpa_iteration_reference(transition, distributions, one_hot, labeled_mask):
    """One clamped LPA step: ``F <- T F``, then the visible rows are reset to their one-hot labels."""
    updated = transition @ distributions
    return torch.where(labeled_mask[:, None], one_hot, updated)


def iteration_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = graph_case(generator)
        one_hot = F.one_hot(labels, num_classes).double() * visible[:, None]
        distributions = torch.softmax(torch.randn(len(labels), num_classes, generator=generator,
                                                  dtype=torch.float64), dim=1)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible",
                      (transition, distributions, one_hot, visible)))
    return cases


# 02.2 · the closed form ----------------------------------------------------------------------

def harmonic_reference(transition, labels, labeled_mask, num_classes):
    return propagate(transition, labels, labeled_mask, num_classes, teleport=0.0)[~labeled_mask]


def harmonic_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = graph_case(generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, row transition "
                      f"of a Gaussian graph (sigma={sigma:.3f})", (transition, labels, visible, num_classes)))
    return cases


# 02.3 · the fixed point of soft clamping -----------------------------------------------------

def soft_clamp_reference(transition, one_hot, alpha):
    """Iterate ``F <- alpha T F + (1 - alpha) Y`` from ``F = Y`` until it stops moving."""
    distributions = one_hot.clone()
    for _ in range(100_000):
        updated = alpha * transition @ distributions + (1 - alpha) * one_hot
        if (updated - distributions).abs().max() < 1e-15:
            break
        distributions = updated
    return updated


def soft_clamp_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = graph_case(generator)
        one_hot = F.one_hot(labels, num_classes).double() * visible[:, None]
        alpha = choice([0.5, 0.8, 0.9, 0.99], generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, alpha={alpha}",
                      (transition, one_hot, alpha)))
    return cases


EXERCISES = {
    "02.1": Exercise(
        "one iteration of label propagation", "lpa_iteration",
        "multiply T by F (every node takes the weighted average of its neighbours' distributions), "
        "then clamp: the visible rows go back to their one-hot labels, e.g. with torch.where",
        same_outputs(iteration_cases, lpa_iteration_reference),
        forbidden=("propagate", "lpa_iteration_reference"), face=("graph", "masking", "sigma"),
        withheld=("sklearn",)),
    "02.2": Exercise(
        "the closed form (harmonic solution)", "harmonic_solution",
        "take the blocks T_UU = T[hidden][:, hidden] and T_UL = T[hidden][:, visible], the one-hot "
        "Y_L of the visible labels, and solve (I - T_UU) F_U = T_UL Y_L with torch.linalg.solve",
        same_outputs(harmonic_cases, harmonic_reference, atol=1e-8),
        forbidden=("propagate", "harmonic_reference", "g_loss", "GLoss", "lpa_predict"),
        face=("graph", "masking", "sigma"), withheld=("sklearn",)),
    "02.3": Exercise(
        "the fixed point of soft clamping", "soft_clamp_fixed_point",
        "at the fixed point F = alpha T F + (1 - alpha) Y; collect the F terms on one side and solve the "
        "linear system (one torch.linalg.solve, no loop)",
        same_outputs(soft_clamp_cases, soft_clamp_reference, atol=1e-8),
        forbidden=("propagate", "soft_clamp_reference", "LabelSpreading"), points=3,
        face=("graph", "masking", "sigma"), withheld=("sklearn",),
        more_hint="(I - alpha T) F = (1 - alpha) Y, so F = (1 - alpha) (I - alpha T)^-1 Y"),
}
