"""The exercises of notebook 03 · Masking and the loss: the stratified mask, G-Loss from its parts, the
chance that a random mask breaks a step, the range of the authors' loss."""

from __future__ import annotations

import itertools
import math

import torch

from ...losses import g_loss
from ..comparing import Exercise, Mismatch, ask, compare, describe, same_outputs
from .inputs import choice, graph_case, labels_with_every_class, randint

# 03.1 · the stratified mask ------------------------------------------------------------------

def expected_visible(class_size: int, gamma: float) -> int:
    """Visible members of one class under the stratified rule of ``masking.split_mask``."""
    count = min(max(round(gamma * class_size), 1), class_size)
    return min(count, class_size - 1) if class_size > 1 else count


def check_stratified_mask(student, generator) -> int:
    """The counts per class (half the points), and masks drawn at random from the generator."""
    tried = 0
    for case in range(1, 6):
        num_classes = randint(2, 5, generator)
        n = randint(3 * num_classes, 8 * num_classes, generator)
        labels = labels_with_every_class(n, num_classes, generator, at_least=2)
        gamma = choice([0.3, 0.5, 0.7, 0.9], generator)
        sizes = torch.bincount(labels, minlength=num_classes).tolist()
        where = f"input {case} of 5: labels with class sizes {sizes}, gamma={gamma}"
        masks = []
        for _ in range(8):
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            mask = ask(student, where, labels, gamma, torch.Generator().manual_seed(seed))
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != labels.shape:
                raise Mismatch(f"expected a bool tensor of shape {tuple(labels.shape)}, got {describe(mask)}"
                               f"\n  on {where}")
            for cls, size in enumerate(sizes):
                got, wanted = int(mask[labels == cls].sum()), expected_visible(size, gamma)
                if got != wanted:
                    raise Mismatch(f"class {cls} ({size} members) has {got} visible, expected "
                                   f"min(max(round(gamma * {size}), 1), {size} - 1) = {wanted}\n  on {where}")
            again = ask(student, where, labels, gamma, torch.Generator().manual_seed(seed))
            if not isinstance(again, torch.Tensor) or not torch.equal(mask, again):
                raise Mismatch(f"two calls with generators of the same seed gave different masks: draw "
                               f"every random choice from `generator`\n  on {where}", credit=0.5)
            masks.append(mask)
            tried += 1
        if all(torch.equal(masks[0], m) for m in masks[1:]):
            raise Mismatch(f"8 generators with different seeds all gave the same mask: the visible members "
                           f"must be drawn at random within each class\n  on {where}", credit=0.5)
    return tried


# 03.2 · G-Loss from its parts ---------------------------------------------------------------

def g_loss_cases(generator):
    cases = []
    for _ in range(4):
        points, labels, visible, num_classes, sigma, _ = graph_case(generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, sigma={sigma:.3f}",
                      (points, labels, visible, sigma, num_classes)))
    return cases


def check_g_loss(student, generator, *, target="nll", cases=g_loss_cases) -> int:
    """Value and gradient with respect to the embeddings (half the points for the value alone)."""
    drawn = cases(generator)
    for number, (description, args) in enumerate(drawn, start=1):
        where = f"input {number} of {len(drawn)}: {description}"
        points, labels, visible, sigma, num_classes = args
        leaf = points.clone().requires_grad_()
        expected = g_loss(leaf, labels, visible, sigma=sigma, num_classes=num_classes, scheme="gloss", target=target)
        (expected_gradient,) = torch.autograd.grad(expected, leaf)
        yours = ask(student, where, list(args), 0, call="value_and_gradient")
        compare(yours["value"], expected.detach(), where)
        if not yours["carries_gradient"]:
            raise Mismatch(f"the value is right but carries no gradient: keep every step in torch "
                           f"(no .item(), .numpy() or .detach())\n  on {where}", credit=0.5)
        try:
            compare(yours["gradient"], expected_gradient, where + " (gradient with respect to the embeddings)")
        except Mismatch as mismatch:
            raise Mismatch(f"the value is right, the gradient is not: {mismatch}", credit=0.5) from None
    return len(drawn)


# 03.3 · the chance of a broken step -----------------------------------------------------------

def broken_step_reference(class_counts, gamma: float) -> float:
    """P(a random mask leaves some class without a visible member), by inclusion-exclusion.

    The random mask keeps ``k = ceil(gamma n)`` of the ``n`` labels, a uniformly random subset
    (``split_mask(..., stratified=False)``). A set ``S`` of classes with ``m_S`` members in all is
    entirely hidden with probability ``C(n - m_S, k) / C(n, k)``, so
    ``P = sum over non-empty S of (-1)^(|S| + 1) C(n - m_S, k) / C(n, k)``.
    """
    counts = [int(m) for m in class_counts]
    n = sum(counts)
    k = math.ceil(gamma * n)
    total = 0.0
    for size in range(1, len(counts) + 1):
        for group in itertools.combinations(counts, size):
            total += (-1) ** (size + 1) * math.comb(n - sum(group), k) / math.comb(n, k)
    return total


def broken_step_cases(generator):
    cases = []
    while len(cases) < 5:
        counts = [randint(1, 8, generator) for _ in range(randint(2, 5, generator))]
        gamma = choice([0.3, 0.5, 0.7, 0.9], generator)
        if math.ceil(gamma * sum(counts)) < sum(counts):  # split_mask refuses a mask with no hidden node
            cases.append((f"class counts {counts}, gamma={gamma}", (counts, gamma)))
    return cases


# 03.4 · the range of the authors' loss ---------------------------------------------------------

def authors_loss_range_reference(num_classes: int) -> tuple[float, float]:
    """Smallest and largest ``-F_y + log sum_c exp(F_c)`` over the distributions ``F`` on C classes.

    Linear plus convex, so both extremes sit at corners of the simplex: one-hot on the true class
    gives ``log(1 + (C - 1)/e)``, one-hot on a wrong class ``log(e + C - 1)``.
    """
    return math.log(1 + (num_classes - 1) / math.e), math.log(math.e + num_classes - 1)


def check_authors_loss_range(student, generator) -> int:
    sizes = [2] + [randint(3, 60, generator) for _ in range(4)]
    for number, num_classes in enumerate(sizes, start=1):
        where = f"input {number} of {len(sizes)}: num_classes={num_classes}"
        yours = ask(student, where, num_classes)
        if not isinstance(yours, (tuple, list)) or len(yours) != 2:
            raise Mismatch(f"expected a pair (lowest, highest), got {describe(yours)}\n  on {where}")
        lowest, highest = authors_loss_range_reference(num_classes)
        compare(yours[0], lowest, where + " (the lowest value)", atol=1e-9, rtol=1e-9)
        try:
            compare(yours[1], highest, where + " (the highest value)", atol=1e-9, rtol=1e-9)
        except Mismatch as mismatch:
            raise Mismatch(f"the lowest value is right, the highest is not: {mismatch}", credit=0.5) from None
    return len(sizes)


EXERCISES = {
    "03.1": Exercise(
        "the stratified mask", "stratified_mask",
        "loop over the classes; in a class of m members keep min(max(round(gamma * m), 1), m - 1) "
        "visible, chosen with torch.randperm(m, generator=generator)",
        check_stratified_mask,
        forbidden=("split_mask",), parts=("the counts", "drawn at random from generator"),
        face=("graph", "lpa", "sigma")),
    "03.2": Exercise(
        "G-Loss from its parts (the NLL target)", "g_loss_by_hand",
        "gaussian_affinity -> transition_matrix(W, 'gloss') -> propagate (closed form) gives F; "
        "the loss is the mean over hidden nodes of -log F[i, y_i]",
        check_g_loss,
        forbidden=("g_loss", "GLoss"), parts=("the value", "the gradient"), face=("graph", "lpa", "masking", "sigma")),
    "03.3": Exercise(
        "the chance that a random mask breaks a step", "broken_step_probability",
        "a class is invisible when all its members are hidden, and a given set of s nodes is all hidden "
        "with probability C(n - s, k) / C(n, k), k = ceil(gamma n); several classes can be invisible at "
        "once, so combine the classes by inclusion-exclusion",
        same_outputs(broken_step_cases, broken_step_reference, atol=1e-9, rtol=1e-9),
        points=3, face=(),
        more_hint="sum over the non-empty sets S of classes of (-1)^(|S| + 1) C(n - m_S, k) / C(n, k), "
                  "m_S the members of the classes in S (itertools.combinations, math.comb)"),
    "03.4": Exercise(
        "the range of the authors' loss", "authors_loss_range",
        "the authors' loss of one node, -F_y + log sum_c exp(F_c), is linear plus convex in its row F, so "
        "over the distributions its extremes sit at corners: rows that are one-hot",
        check_authors_loss_range, parts=("the lowest value", "the highest value"), face=(),
        more_hint="one-hot on the true class gives log(1 + (C - 1)/e); one-hot on a wrong class gives "
                  "-0 + log(e + (C - 1) e^0)"),
}
