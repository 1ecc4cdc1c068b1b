"""The exercises of notebook 02 · Label propagation: how long a walk wanders, the closed form, soft clamping's
fixed point."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...lpa import propagate
from ..comparing import Exercise, same_outputs
from .inputs import choice, graph_case

# 02.1 · how long a walk wanders before it is absorbed ------------------------------------------

def absorption_steps_reference(transition, labeled_mask):
    """The expected number of steps before a walk from each hidden node first reaches a visible one.

    Iterates ``t <- 1 + T_UU t`` from ``t = 0`` (after ``k`` rounds, the expected number of steps
    taken within the first ``k``) until it stops moving; the fixed point solves
    ``(I - T_UU) t = 1``.
    """
    hidden = ~labeled_mask
    t_uu = transition[hidden][:, hidden]
    steps = torch.zeros(len(t_uu), dtype=transition.dtype)
    for _ in range(1_000_000):
        updated = 1.0 + t_uu @ steps
        if (updated - steps).abs().max() < 1e-13 * updated.abs().max():
            return updated
        steps = updated
    return steps


def absorption_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = graph_case(generator)
        cases.append((f"n={len(labels)}, {int(visible.sum())} visible, row transition of a Gaussian graph "
                      f"(sigma={sigma:.3f})", (transition, visible)))
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
        "how long a walk wanders", "absorption_steps",
        "a walk from a hidden node u takes one step and, if it lands on a hidden node u', goes on from "
        "there: t_u = 1 + sum over hidden u' of T_uu' t_u'. Collect the t terms on one side and solve one "
        "linear system",
        same_outputs(absorption_cases, absorption_steps_reference, atol=1e-7, rtol=1e-7),
        forbidden=("propagate", "absorption_steps_reference"), face=("graph", "masking", "sigma"),
        withheld=("sklearn",),
        more_hint="(I - T_UU) t = 1: torch.linalg.solve(I - T[hidden][:, hidden], ones)"),
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
