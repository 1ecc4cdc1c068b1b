"""Auto-checks for the coded exercises at the end of every notebook.

Each exercise asks the student to write one piece of the method as a function. ``check(id, fn)``
runs ``fn`` and the package's reference on fresh random inputs and compares them:

    >>> from gloss_lite.course.exercises import check
    >>> check("01.2", gaussian_kernel)         # doctest: +SKIP
    Exercise 01.2 (the Gaussian kernel) passed on 5 random inputs.

A difference raises ``ExerciseFailed`` (an ``AssertionError``) whose message says what differs,
on which input, and gives a hint (a fuller one after the third failed try); it also names the
random seed, so ``check(id, fn, seed=...)`` repeats the same inputs. A stub that still raises
``NotImplementedError`` is let through as it is, so an unfinished exercise reads as unfinished.
A function that does not return within ``timeout`` seconds fails with a message that says so.

A solution may not call the package's implementation of what it is asked to write: every
exercise lists those names (``Exercise.forbidden``), and ``check`` refuses a function that uses
one, under any alias (``reference_uses`` reads the names its code refers to). ``EXERCISES``
lists every exercise by id (``"NN.k"``: notebook ``NN``, exercise ``k``) with its points;
``gloss_lite.course.grading`` grades whole submissions with the same checks.

The references are the package's own functions wherever the package has one; the few that it
has no function for (one LPA iteration, a training step) are written out here.
"""

from __future__ import annotations

import builtins
import copy
import importlib
import math
import random
import signal
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..baselines import SupConLoss, TripletLoss
from ..encoders import mean_pool
from ..evaluate import lpa_predict
from ..graph import gaussian_affinity, squared_distances, transition_matrix
from ..losses import g_loss, mix_losses
from ..lpa import propagate
from ..masking import split_mask
from ..reproduction.run import paired_interval, verdict
from ..sigma import sigma_dicm, sigma_sqrt
from ..training import gradient_share

DEFAULT_TIMEOUT = 60.0  # seconds a student's function may take for one whole check


class ExerciseFailed(AssertionError):
    """The student's function disagrees with the reference (the message says where and why).

    ``credit`` is the share of the exercise's points earned anyway (an exercise with parts, one
    of them right); ``reason`` is ``"wrong"``, ``"timeout"`` or ``"reference"``.
    """

    def __init__(self, message: str, *, credit: float = 0.0, reason: str = "wrong") -> None:
        super().__init__(message)
        self.credit, self.reason = credit, reason


class _Mismatch(Exception):
    """Raised inside a checker; ``check`` turns it into ``ExerciseFailed`` with the hint added.

    ``credit``: the share of the points the parts checked before this one are worth.
    """

    def __init__(self, message: str, *, credit: float = 0.0) -> None:
        super().__init__(message)
        self.credit = credit


class _TimeUp(BaseException):
    """Raised in the student's code by the alarm; a BaseException, so ``except Exception`` lets it by."""


@dataclass(frozen=True)
class Exercise:
    """One coded exercise: what it asks for, how to check it, a hint, its points, what it may not call.

    ``forbidden`` names the package's implementations of the exercise (a bare name such as
    ``"sigma_sqrt"`` is looked up in the package's modules, a dotted one such as
    ``"torch.autograd.grad"`` imported); ``more_hint`` is shown from the third failed try on.
    """

    title: str
    function: str  # the name of the function the student writes
    hint: str
    checker: Callable[[Callable, torch.Generator], int]  # raises _Mismatch; returns how many inputs it tried
    forbidden: tuple[str, ...] = ()
    points: int = 2
    more_hint: str = ""
    parts: tuple[str, ...] = field(default=())  # names of the parts that earn partial credit, in order


# ---------------------------------------------------------------------------------------------
# Comparing a student's function with a reference
# ---------------------------------------------------------------------------------------------

def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, {value.dtype}"
    return type(value).__name__


_current = {"where": "before the first input"}


def _call(function: Callable, args: tuple, where: str):
    _current["where"] = where
    try:
        return function(*args)
    except NotImplementedError:
        raise
    except Exception as error:  # the student's code broke: say so, on which input
        raise _Mismatch(f"your function raised {type(error).__name__}: {error}\n  on {where}") from error


def _compare(yours, expected, where: str, *, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Raise ``_Mismatch`` unless ``yours`` equals ``expected`` (tensors: within tolerance)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(yours, torch.Tensor):
            raise _Mismatch(f"expected a tensor, got {_describe(yours)}\n  on {where}")
        if yours.shape != expected.shape:
            raise _Mismatch(f"expected shape {tuple(expected.shape)}, got {tuple(yours.shape)}\n  on {where}")
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if not torch.equal(yours.to(expected.dtype), expected):
                first = (yours.to(expected.dtype) != expected).nonzero()[0].tolist()
                raise _Mismatch(f"values differ first at index {first}: yours {yours[tuple(first)].item()}, "
                                f"expected {expected[tuple(first)].item()}\n  on {where}")
            return
        yours = yours.detach().to(torch.float64).cpu()
        expected = expected.detach().to(torch.float64).cpu()
        if not torch.isfinite(yours).all():
            raise _Mismatch(f"your result holds NaN or inf\n  on {where}")
        gap = (yours - expected).abs()
        if not (gap <= atol + rtol * expected.abs()).all():
            index = tuple(torch.unravel_index(gap.argmax(), gap.shape)) if gap.dim() else ()
            shown = f" at index {[int(i) for i in index]}" if index else ""
            raise _Mismatch(f"largest difference {gap.max().item():.3g}{shown}: yours {yours[index].item():.6g}, "
                            f"expected {expected[index].item():.6g}\n  on {where}")
        return
    try:
        yours = float(yours)
    except (TypeError, ValueError):
        raise _Mismatch(f"expected a number, got {_describe(yours)}\n  on {where}") from None
    if not abs(yours - float(expected)) <= atol + rtol * abs(float(expected)):
        raise _Mismatch(f"yours {yours:.6g}, expected {float(expected):.6g}\n  on {where}")


def _same_outputs(cases: Callable[[torch.Generator], list[tuple[str, tuple]]], reference: Callable, **tolerance):
    """A checker that calls the student's function and ``reference`` on the same inputs."""

    def checker(student: Callable, generator: torch.Generator) -> int:
        drawn = cases(generator)
        for number, (description, args) in enumerate(drawn, start=1):
            where = f"input {number} of {len(drawn)}: {description}"
            expected = reference(*args)
            yours = _call(student, tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args), where)
            _compare(yours, expected, where, **tolerance)
        return len(drawn)

    return checker


# ---------------------------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------------------------

def _randint(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high + 1, (), generator=generator))


def _labels_with_every_class(n: int, num_classes: int, generator: torch.Generator, *, at_least: int = 1):
    """``n`` labels in which each of ``num_classes`` classes occurs at least ``at_least`` times."""
    base = torch.arange(num_classes).repeat_interleave(at_least)
    rest = torch.randint(0, num_classes, (n - len(base),), generator=generator)
    labels = torch.cat([base, rest])
    return labels[torch.randperm(n, generator=generator)]


def _embeddings(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


def _graph_case(generator: torch.Generator, *, sizes=(6, 14), classes=(2, 4)):
    """A row-stochastic ``T`` from random embeddings, labels, and a mask keeping every class visible."""
    num_classes = _randint(*classes, generator)
    n = _randint(max(sizes[0], 2 * num_classes + 1), sizes[1], generator)
    embeddings = _embeddings(n, 5, generator)
    labels = _labels_with_every_class(n, num_classes, generator, at_least=2)
    visible = torch.zeros(n, dtype=torch.bool)
    for cls in range(num_classes):  # one visible member of every class, then a random share of the rest
        visible[(labels == cls).nonzero().flatten()[0]] = True
    visible |= torch.rand(n, generator=generator, dtype=torch.float64) < 0.3
    if visible.all():
        visible[(labels == labels[-1]).nonzero().flatten()[-1]] = False
    sigma = 0.3 + torch.rand((), generator=generator, dtype=torch.float64).item()
    transition = transition_matrix(gaussian_affinity(embeddings, sigma), "row")
    return embeddings, labels, visible, num_classes, sigma, transition


# ---------------------------------------------------------------------------------------------
# 00 · Overview
# ---------------------------------------------------------------------------------------------

def _pooling_cases(generator):
    cases = []
    for _ in range(4):
        b, length, d = _randint(2, 5, generator), _randint(3, 9, generator), _randint(3, 8, generator)
        hidden = torch.randn(b, length, d, generator=generator, dtype=torch.float64)
        lengths = torch.randint(1, length + 1, (b,), generator=generator)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        cases.append((f"{b} texts of up to {length} tokens, d={d}, real lengths {lengths.tolist()}", (hidden, mask)))
    return cases


def _cosine_cases(generator):
    cases = []
    for _ in range(4):
        n, d = _randint(2, 9, generator), _randint(2, 8, generator)
        scale = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 5 + 0.1  # rows of any length
        cases.append((f"{n} x {d} embeddings with row norms between 0.1 and 5",
                      (_embeddings(n, d, generator) * scale,)))
    return cases


def _cosine_reference(embeddings):
    unit = F.normalize(embeddings, dim=1)
    return unit @ unit.T


# ---------------------------------------------------------------------------------------------
# 01 · The similarity graph
# ---------------------------------------------------------------------------------------------

def _embedding_cases(generator, *, with_sigma=False):
    cases = []
    for _ in range(5):
        n, d = _randint(2, 10, generator), _randint(2, 8, generator)
        embeddings = _embeddings(n, d, generator) * (torch.rand((), generator=generator).item() * 4 + 0.5)
        if with_sigma:
            sigma = round(0.2 + 1.3 * torch.rand((), generator=generator).item(), 3)
            cases.append((f"{n} x {d} embeddings, sigma={sigma}", (embeddings, sigma)))
        else:
            cases.append((f"{n} x {d} embeddings", (embeddings,)))
    return cases


# ---------------------------------------------------------------------------------------------
# 02 · Label propagation
# ---------------------------------------------------------------------------------------------

def lpa_iteration_reference(transition, distributions, one_hot, labeled_mask):
    """One clamped LPA step: ``F <- T F``, then the visible rows are reset to their one-hot labels."""
    updated = transition @ distributions
    return torch.where(labeled_mask[:, None], one_hot, updated)


def _iteration_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = _graph_case(generator)
        one_hot = F.one_hot(labels, num_classes).double() * visible[:, None]
        distributions = torch.softmax(torch.randn(len(labels), num_classes, generator=generator,
                                                  dtype=torch.float64), dim=1)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible",
                      (transition, distributions, one_hot, visible)))
    return cases


def harmonic_reference(transition, labels, labeled_mask, num_classes):
    return propagate(transition, labels, labeled_mask, num_classes, teleport=0.0)[~labeled_mask]


def _harmonic_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = _graph_case(generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, row transition "
                      f"of a Gaussian graph (sigma={sigma:.3f})", (transition, labels, visible, num_classes)))
    return cases


# ---------------------------------------------------------------------------------------------
# 03 · Masking and the loss
# ---------------------------------------------------------------------------------------------

def _expected_visible(class_size: int, gamma: float) -> int:
    """Visible members of one class under the stratified rule of ``masking.split_mask``."""
    count = min(max(round(gamma * class_size), 1), class_size)
    return min(count, class_size - 1) if class_size > 1 else count


def _check_stratified_mask(student, generator) -> int:
    tried = 0
    for case in range(1, 6):
        num_classes = _randint(2, 5, generator)
        n = _randint(3 * num_classes, 8 * num_classes, generator)
        labels = _labels_with_every_class(n, num_classes, generator, at_least=2)
        gamma = [0.3, 0.5, 0.7, 0.9][_randint(0, 3, generator)]
        sizes = torch.bincount(labels, minlength=num_classes).tolist()
        where = f"input {case} of 5: labels with class sizes {sizes}, gamma={gamma}"
        masks = []
        for draw in range(8):
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            mask = _call(student, (labels.clone(), gamma, torch.Generator().manual_seed(seed)), where)
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != labels.shape:
                raise _Mismatch(f"expected a bool tensor of shape {tuple(labels.shape)}, got {_describe(mask)}"
                                f"\n  on {where}")
            for cls, size in enumerate(sizes):
                got, wanted = int(mask[labels == cls].sum()), _expected_visible(size, gamma)
                if got != wanted:
                    raise _Mismatch(f"class {cls} ({size} members) has {got} visible, expected "
                                    f"min(max(round(gamma * {size}), 1), {size} - 1) = {wanted}\n  on {where}")
            again = _call(student, (labels.clone(), gamma, torch.Generator().manual_seed(seed)), where)
            if not torch.equal(mask, again):
                raise _Mismatch(f"two calls with generators of the same seed gave different masks: draw "
                                f"every random choice from `generator`\n  on {where}", credit=0.5)
            masks.append(mask)
            tried += 1
        if all(torch.equal(masks[0], m) for m in masks[1:]):
            raise _Mismatch(f"8 generators with different seeds all gave the same mask: the visible members "
                            f"must be drawn at random within each class\n  on {where}", credit=0.5)
    return tried


def _g_loss_cases(generator):
    cases = []
    for _ in range(4):
        embeddings, labels, visible, num_classes, sigma, _ = _graph_case(generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, sigma={sigma:.3f}",
                      (embeddings, labels, visible, sigma, num_classes)))
    return cases


def _check_g_loss(student, generator, *, target="nll", cases=None) -> int:
    """Value and gradient with respect to the embeddings (half the points for the value alone)."""
    drawn = (cases or _g_loss_cases)(generator)
    for number, (description, args) in enumerate(drawn, start=1):
        where = f"input {number} of {len(drawn)}: {description}"
        embeddings, *rest = args
        mine = embeddings.clone().requires_grad_()
        expected = g_loss(mine, *rest[:2], sigma=rest[2], num_classes=rest[3], scheme="gloss", target=target)
        (expected_grad,) = torch.autograd.grad(expected, mine)
        theirs = embeddings.clone().requires_grad_()
        yours = _call(student, (theirs, *rest), where)
        _compare(yours, expected.detach(), where)
        if not isinstance(yours, torch.Tensor) or not yours.requires_grad:
            raise _Mismatch(f"the value is right but carries no gradient: keep every step in torch "
                            f"(no .item(), .numpy() or .detach())\n  on {where}", credit=0.5)
        (your_grad,) = torch.autograd.grad(yours, theirs)
        try:
            _compare(your_grad, expected_grad, where + " (gradient with respect to the embeddings)")
        except _Mismatch as mismatch:
            raise _Mismatch(f"the value is right, the gradient is not: {mismatch}", credit=0.5) from None
    return len(drawn)


# ---------------------------------------------------------------------------------------------
# 04 · Choosing sigma
# ---------------------------------------------------------------------------------------------

def _sigma_cases(generator, *, labelled=False):
    cases = []
    for _ in range(5):
        n = [3, 6, 7, 10, 11, 14][_randint(0, 5, generator)]  # n (n - 1) / 2 pairs is odd: one middle value
        d = _randint(3, 8, generator)
        embeddings = _embeddings(n, d, generator) * (torch.rand((), generator=generator).item() * 3 + 0.5)
        if labelled:
            labels = _labels_with_every_class(n, _randint(2, 3, generator), generator)
            cases.append((f"{n} x {d} embeddings, labels {labels.tolist()}", (embeddings, labels)))
        else:
            cases.append((f"{n} x {d} embeddings ({n * (n - 1) // 2} pairs)", (embeddings,)))
    return cases


# ---------------------------------------------------------------------------------------------
# 05 · Fine-tuning
# ---------------------------------------------------------------------------------------------

def training_step_reference(encoder, head, optimizer, inputs, labels, labeled_mask, sigma, lam, num_classes):
    """One G-Loss + CE step on one encoder pass: the value of the mixed loss before the update."""
    embeddings = encoder(inputs)
    ce = F.cross_entropy(head(embeddings), labels)
    graph = g_loss(embeddings, labels, labeled_mask, sigma=sigma, num_classes=num_classes)
    loss = mix_losses(ce, graph, lam)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _check_training_step(student, generator) -> int:
    steps = 3
    for case in range(1, 4):
        _, labels, visible, num_classes, sigma, _ = _graph_case(generator, sizes=(8, 14))
        inputs = torch.randn(len(labels), 6, generator=generator, dtype=torch.float64)
        lam = [0.0, 0.5, 0.9][case - 1]
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
        encoder = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()).double()
        head = torch.nn.Linear(5, num_classes).double()
        models = {who: (copy.deepcopy(encoder), copy.deepcopy(head)) for who in ("yours", "expected")}
        optimizers = {who: torch.optim.SGD([*e.parameters(), *h.parameters()], lr=0.5)
                      for who, (e, h) in models.items()}
        where = (f"input {case} of 3: a small encoder (Linear 6->5 + tanh) and head, n={len(labels)}, "
                 f"C={num_classes}, sigma={sigma:.3f}, lam={lam}, SGD lr=0.5")
        for step in range(1, steps + 1):
            args = {who: (*models[who], optimizers[who], inputs, labels, visible, sigma, lam, num_classes)
                    for who in models}
            expected = training_step_reference(*args["expected"])
            yours = _call(student, args["yours"], where)
            _compare(yours, expected, f"{where}, step {step} (the returned loss)")
            for (name, mine), (_, theirs) in zip(
                    [*models["yours"][0].named_parameters(), *models["yours"][1].named_parameters()],
                    [*models["expected"][0].named_parameters(), *models["expected"][1].named_parameters()]):
                _compare(mine, theirs, f"{where}, step {step} (parameter {name} after the update)")
    return 3


def _transductive_cases(generator):
    cases = []
    for _ in range(4):
        num_classes = _randint(2, 4, generator)
        centres = torch.randn(num_classes, 6, generator=generator, dtype=torch.float64) * 2
        train_labels = _labels_with_every_class(_randint(8, 16, generator), num_classes, generator)
        test_labels = torch.randint(0, num_classes, (_randint(3, 8, generator),), generator=generator)
        noisy = lambda y: centres[y] + torch.randn(len(y), 6, generator=generator, dtype=torch.float64)  # noqa: E731
        sigma = round(0.3 + 0.5 * torch.rand((), generator=generator).item(), 3)
        cases.append((f"{len(train_labels)} train and {len(test_labels)} test documents, C={num_classes}, "
                      f"sigma={sigma}", (noisy(train_labels), train_labels, noisy(test_labels), num_classes, sigma)))
    return cases


def transductive_reference(train_embeddings, train_labels, test_embeddings, num_classes, sigma):
    return lpa_predict(train_embeddings, train_labels, test_embeddings, num_classes, sigma=sigma)


# ---------------------------------------------------------------------------------------------
# 06 · Comparing losses
# ---------------------------------------------------------------------------------------------

def _metric_cases(generator, parameter: str, values: list[float]):
    cases = []
    for _ in range(4):
        num_classes = _randint(2, 4, generator)
        n = _randint(2 * num_classes + 1, 12, generator)
        labels = _labels_with_every_class(n, num_classes, generator, at_least=2)
        value = values[_randint(0, len(values) - 1, generator)]
        cases.append((f"{n} x 5 embeddings, labels {labels.tolist()}, {parameter}={value}",
                      (_embeddings(n, 5, generator), labels, value)))
    return cases


# ---------------------------------------------------------------------------------------------
# Exercises of understanding: a limit, a fixed point, a derivative, worked out rather than copied
# ---------------------------------------------------------------------------------------------

def _wide_kernel_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, _, _ = _graph_case(generator)
        cases.append((f"labels {labels.tolist()}, {int(visible.sum())} visible, C={num_classes}",
                      (labels, visible, num_classes)))
    return cases


def wide_kernel_reference(labels, labeled_mask, num_classes):
    """``F_U`` on the complete graph of equal weights, the limit of the Gaussian graph as sigma grows."""
    n = len(labels)
    uniform = (torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)) / (n - 1)
    return propagate(uniform, labels, labeled_mask, num_classes, teleport=0.0)[~labeled_mask]


def narrow_kernel_reference(embeddings):
    """The limit of ``D^-1 W`` as sigma -> 0: all of each row's weight on its nearest neighbour."""
    distances = squared_distances(embeddings).fill_diagonal_(float("inf"))
    return F.one_hot(distances.argmin(dim=1), len(embeddings)).to(embeddings.dtype)


def _distinct_neighbour_cases(generator):
    cases = []
    for _ in range(5):
        n, d = _randint(3, 10, generator), _randint(2, 6, generator)
        cases.append((f"{n} x {d} embeddings", (_embeddings(n, d, generator) * 3,)))
    return cases


def _soft_clamp_cases(generator):
    cases = []
    for _ in range(4):
        _, labels, visible, num_classes, sigma, transition = _graph_case(generator)
        one_hot = F.one_hot(labels, num_classes).double() * visible[:, None]
        alpha = [0.5, 0.8, 0.9, 0.99][_randint(0, 3, generator)]
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, alpha={alpha}",
                      (transition, one_hot, alpha)))
    return cases


def soft_clamp_reference(transition, one_hot, alpha):
    """Iterate ``F <- alpha T F + (1 - alpha) Y`` from ``F = Y`` until it stops moving."""
    distributions = one_hot.clone()
    for _ in range(100_000):
        updated = alpha * transition @ distributions + (1 - alpha) * one_hot
        if (updated - distributions).abs().max() < 1e-15:
            break
        distributions = updated
    return updated


def _random_mask_cases(generator):
    """G-Loss inputs under the authors' mask: ``gamma * n`` visible drawn over the whole batch."""
    cases = []
    while len(cases) < 4:
        embeddings, labels, _, num_classes, sigma, _ = _graph_case(generator)
        gamma = [0.3, 0.5, 0.7][_randint(0, 2, generator)]
        visible = split_mask(labels, gamma, generator=generator, stratified=False)
        if set(labels[~visible].tolist()) <= set(labels[visible].tolist()):  # every hidden class seen
            cases.append((f"n={len(labels)}, C={num_classes}, a random mask of gamma={gamma} "
                          f"({int(visible.sum())} visible), sigma={sigma:.3f}",
                          (embeddings, labels, visible, sigma, num_classes)))
    return cases


def _check_median_weight(student, generator) -> int:
    """Measured, not compared: the Gaussian graph built with the student's sigma."""
    drawn = _sigma_cases(generator)
    for number, (description, (embeddings,)) in enumerate(drawn, start=1):
        weight = [0.1, 0.25, 0.5, 0.9][_randint(0, 3, generator)]
        where = f"input {number} of {len(drawn)}: {description}, weight={weight}"
        sigma = _call(student, (embeddings.clone(), weight), where)
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise _Mismatch(f"expected a number (sigma), got {_describe(sigma)}\n  on {where}") from None
        if not (math.isfinite(sigma) and sigma > 0):
            raise _Mismatch(f"sigma must be a positive number, got {sigma}\n  on {where}")
        affinity = gaussian_affinity(embeddings, sigma)
        upper = torch.triu_indices(len(affinity), len(affinity), offset=1)
        median = affinity[upper[0], upper[1]].median().item()
        if abs(median - weight) > 1e-6:
            raise _Mismatch(f"with your sigma = {sigma:.6g} the median weight of the graph is {median:.6g}, "
                            f"not {weight}\n  on {where}")
    return len(drawn)


def _check_solve_gradient(student, generator) -> int:
    """Both gradients of ``X = A^-1 B`` against autograd: half the points each."""
    drawn = 0
    for number in range(1, 5):
        m, c = _randint(2, 6, generator), _randint(1, 4, generator)
        a = torch.eye(m, dtype=torch.float64) - 0.8 * torch.softmax(
            torch.randn(m, m, generator=generator, dtype=torch.float64), dim=1)  # like I - T_UU
        b = torch.randn(m, c, generator=generator, dtype=torch.float64)
        upstream = torch.randn(m, c, generator=generator, dtype=torch.float64)
        where = f"input {number} of 4: A = I - 0.8 P ({m} x {m}, P row-stochastic), B {m} x {c}"
        a_leaf, b_leaf = a.clone().requires_grad_(), b.clone().requires_grad_()
        expected_a, expected_b = torch.autograd.grad(torch.linalg.solve(a_leaf, b_leaf), (a_leaf, b_leaf),
                                                     upstream)
        yours = _call(student, (a.clone(), b.clone(), upstream.clone()), where)
        if not isinstance(yours, tuple) or len(yours) != 2:
            raise _Mismatch(f"expected a pair (grad_A, grad_B), got {_describe(yours)}\n  on {where}")
        _compare(yours[1], expected_b, where + " (grad_B)")
        try:
            _compare(yours[0], expected_a, where + " (grad_A)")
        except _Mismatch as mismatch:
            raise _Mismatch(f"grad_B is right, grad_A is not: {mismatch}", credit=0.5) from None
        drawn += 1
    return drawn


def _collapse_cases(generator):
    cases = []
    for _ in range(4):
        num_classes = _randint(2, 5, generator)
        labels = _labels_with_every_class(_randint(2 * num_classes, 12, generator), num_classes, generator,
                                          at_least=2)
        temperature = [0.05, 0.1, 0.5, 1.0][_randint(0, 3, generator)]
        cases.append((f"labels {labels.tolist()}, temperature={temperature}", (labels, temperature)))
    return cases


def collapse_reference(labels, temperature):
    """SupCon of one-hot embeddings (every class on its own unit vector, the classes orthogonal), in
    float64 and averaged over every anchor. (pytorch-metric-learning's ``SupConLoss`` averages only
    over the anchors whose loss is not 0 in float32, which at a small temperature drops some.)"""
    unit = F.one_hot(labels).double()
    logits = unit @ unit.T / temperature
    itself = torch.eye(len(labels), dtype=torch.bool)
    positives = (labels[:, None] == labels[None, :]) & ~itself
    log_prob = logits - torch.logsumexp(logits.masked_fill(itself, float("-inf")), dim=1, keepdim=True)
    return (-(log_prob * positives).sum(1) / positives.sum(1)).mean()


# ---------------------------------------------------------------------------------------------
# The exercises

def _authors_mask_cases(generator):
    """(n, gamma, seed) triples, among them sizes where gamma * n is a whole number."""
    cases = [("n=10, gamma=0.7 (gamma * n is whole)", (10, 0.7, 3)), ("n=128, gamma=0.7", (128, 0.7, 5))]
    for _ in range(3):
        gamma = [0.3, 0.5, 0.6, 0.7, 0.9][_randint(0, 4, generator)]
        n = _randint(12, 60, generator)  # large enough that one node stays hidden
        cases.append((f"n={n}, gamma={gamma}", (n, gamma, _randint(0, 10_000, generator))))
    return cases


def authors_mask_reference(n, gamma, seed):
    labels = torch.arange(n) % 2
    return split_mask(labels, gamma, generator=torch.Generator().manual_seed(seed), stratified=False)


def _check_gradient_share(student, generator) -> int:
    """Weighted CE and aux terms with known gradients at one or two embedding tensors."""
    cases = 0
    for two_passes in (False, True, False, True):
        n, d = _randint(3, 9, generator), _randint(2, 6, generator)
        a, b = _embeddings(n, d, generator), _embeddings(n, d, generator)
        lam = [0.1, 0.5, 0.9][_randint(0, 2, generator)]
        start = _embeddings(n, d, generator)

        def terms():
            first = start.clone().requires_grad_()
            second = start.clone().requires_grad_() if two_passes else first
            return (1 - lam) * (first * a).sum(), first, lam * ((second * b) ** 2).sum() / 2, second

        where = f"input {cases + 1} of 4: n={n}, d={d}, lam={lam}, {'two passes' if two_passes else 'one pass'}"
        expected = gradient_share(*terms())
        _compare(_call(student, terms(), where), expected, where, atol=1e-9)
        cases += 1
    return cases


def _verdict_cases(generator):
    cases = [("three equal differences of 0.02, 'higher'", ([0.02, 0.02, 0.02], "higher")),
             ("one seed only", ([0.05], "higher"))]
    for better in ("higher", "lower", "higher"):
        n = _randint(2, 6, generator)
        centre = [-0.05, 0.0, 0.05][_randint(0, 2, generator)]
        values = (centre + 0.03 * torch.randn(n, generator=generator, dtype=torch.float64)).tolist()
        cases.append((f"{n} differences around {centre}, {better!r}", (values, better)))
    return cases


def verdict_reference(differences, better):
    _, low, high = paired_interval(differences)
    return verdict(low, high, better)


def _same_verdict(student, generator) -> int:
    drawn = _verdict_cases(generator)
    for number, (description, args) in enumerate(drawn, start=1):
        where = f"input {number} of {len(drawn)}: {description}: {[round(v, 4) for v in args[0]]}"
        expected, yours = verdict_reference(*args), _call(student, (list(args[0]), args[1]), where)
        if yours != expected:
            raise _Mismatch(f"yours {yours!r}, expected {expected!r}\n  on {where}")
    return len(drawn)


def _coupling_loss(weights: torch.Tensor):
    """A loss of all the embeddings at once (every row's term depends on every other row), as G-Loss is."""

    def loss_of_embeddings(embeddings):
        return torch.logsumexp(embeddings @ embeddings.T / 2, dim=1).mean() + (embeddings * weights).sum()

    return loss_of_embeddings


def _check_cached_gradient(student, generator) -> int:
    """dLoss/dW of a linear "encoder" against one backward pass; the loss must see cached embeddings."""
    cases = 0
    for number in range(1, 5):
        n, d_in, d = _randint(5, 13, generator), _randint(2, 5, generator), _randint(2, 4, generator)
        chunk_size = _randint(1, n, generator) if number > 1 else 1
        weight = _embeddings(d_in, d, generator)
        inputs = _embeddings(n, d_in, generator)
        loss_of = _coupling_loss(_embeddings(n, d, generator))
        where = f"input {number} of 4: X {n} x {d_in}, W {d_in} x {d}, chunk_size={chunk_size}"
        leaf = weight.clone().requires_grad_()
        (expected,) = torch.autograd.grad(loss_of(inputs @ leaf), leaf)
        calls = []

        def watched(embeddings):
            calls.append((tuple(embeddings.shape), embeddings.grad_fn is None and embeddings.requires_grad))
            return loss_of(embeddings)

        yours = _call(student, (weight.clone(), inputs.clone(), watched, chunk_size), where)
        if len(calls) != 1 or calls[0][0] != (n, d):
            raise _Mismatch(f"call loss_of_embeddings once, on all {n} cached embeddings ({n} x {d}); it was "
                            f"called {len(calls)} time(s) with shapes {[shape for shape, _ in calls]}\n  on {where}")
        if not calls[0][1]:
            raise _Mismatch(f"loss_of_embeddings got embeddings that carry the encoder's graph (or no gradient): "
                            f"step 1 embeds under torch.no_grad(), step 2 calls the loss on a leaf that requires "
                            f"grad, so the cached step never holds every chunk's graph at once\n  on {where}")
        _compare(yours, expected, where, atol=1e-9)
        cases += 1
    return cases


def _check_ce_scales(student, generator) -> int:
    """Each rank's factor c_r such that DDP's average of c_r * (local mean) is the global-batch mean."""
    cases = [[4, 4], [5, 7], [9]]
    for _ in range(2):
        cases.append([_randint(1, 9, generator) for _ in range(_randint(2, 5, generator))])
    for number, sizes in enumerate(cases, start=1):
        where = f"input {number} of {len(cases)}: local batch sizes {sizes}"
        yours = _call(student, (list(sizes),), where)
        try:
            factors = [float(value) for value in yours]
        except (TypeError, ValueError):
            raise _Mismatch(f"expected a list of {len(sizes)} numbers, got {_describe(yours)}\n  on {where}") from None
        if len(factors) != len(sizes):
            raise _Mismatch(f"expected one factor per rank ({len(sizes)}), got {len(factors)}\n  on {where}")
        for _ in range(3):  # random per-document losses: DDP averages the ranks' scaled means
            losses = [torch.rand(size, generator=generator, dtype=torch.float64) for size in sizes]
            ddp = sum(c * float(part.mean()) for c, part in zip(factors, losses)) / len(sizes)
            whole = float(torch.cat(losses).mean())
            if abs(ddp - whole) > 1e-9:
                raise _Mismatch(f"DDP's average of your scaled local means is {ddp:.6g}, the mean over the global "
                                f"batch is {whole:.6g} (your factors {[round(c, 4) for c in factors]})\n  on {where}")
    return len(cases)


def _check_balanced_batch(student, generator) -> int:
    """A random batch of distinct documents holding two of every class, drawn from ``generator``."""
    tried = 0
    for number in range(1, 5):
        num_classes = _randint(2, 4, generator)
        n = _randint(2 * num_classes + 2, 24, generator)
        labels = _labels_with_every_class(n, num_classes, generator, at_least=2)
        batch_size = _randint(2 * num_classes, n - 1, generator)
        sizes = torch.bincount(labels, minlength=num_classes).tolist()
        where = f"input {number} of 4: labels with class sizes {sizes}, batch_size={batch_size}"
        seen, batches = torch.zeros(n, dtype=torch.bool), set()
        for draw in range(200):
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            batch = _call(student, (labels.clone(), batch_size, torch.Generator().manual_seed(seed)), where)
            try:
                indices = [int(i) for i in batch]
            except (TypeError, ValueError):
                raise _Mismatch(f"expected a list of {batch_size} indices, got {_describe(batch)}\n  on {where}") \
                    from None
            if len(indices) != batch_size or len(set(indices)) != batch_size or not all(0 <= i < n for i in indices):
                raise _Mismatch(f"expected {batch_size} distinct indices in 0..{n - 1}, got {indices}\n  on {where}")
            counts = torch.bincount(labels[indices], minlength=num_classes)
            if int(counts.min()) < 2:
                raise _Mismatch(f"the batch {sorted(indices)} holds {counts.tolist()} documents of the classes "
                                f"0..{num_classes - 1}: every class needs at least two\n  on {where}")
            again = _call(student, (labels.clone(), batch_size, torch.Generator().manual_seed(seed)), where)
            if [int(i) for i in again] != indices:
                raise _Mismatch(f"two calls with generators of the same seed gave different batches: draw every "
                                f"random choice from `generator`\n  on {where}", credit=0.5)
            seen[indices] = True
            batches.add(tuple(sorted(indices)))
            tried += 1
        if len(batches) == 1 or not bool(seen.all()):
            never = (~seen).nonzero().flatten().tolist()
            raise _Mismatch(f"200 generators with different seeds gave {len(batches)} different batch(es) and never "
                            f"chose the documents {never}: the two of each class and the rest must be drawn at "
                            f"random\n  on {where}", credit=0.5)
    return tried

# ---------------------------------------------------------------------------------------------

_GRAPH = ("gaussian_affinity", "transition_matrix", "squared_distances", "pairwise_distances")
_LPA = ("propagate", "g_loss", "GLoss", "lpa_predict")

EXERCISES: dict[str, Exercise] = {
    "00.1": Exercise(
        "mean pooling", "mean_pooling",
        "divide the masked sum of token vectors by the number of real tokens; "
        "attention_mask[..., None] broadcasts the mask over the d dimensions",
        _same_outputs(_pooling_cases, mean_pool),
        forbidden=("mean_pool", "load_encoder")),
    "00.2": Exercise(
        "the cosine-similarity matrix", "cosine_similarity_matrix",
        "scale every row to length 1 first (torch.nn.functional.normalize(x, dim=1)); "
        "then one matrix product gives every cosine at once, 1 on the diagonal",
        _same_outputs(_cosine_cases, _cosine_reference),
        forbidden=("_cosine_reference", *_GRAPH)),
    "00.3": Exercise(
        "label propagation when sigma is huge", "wide_kernel_limit",
        "as sigma grows, every off-diagonal weight tends to 1: T becomes (J - I) / (n - 1). By symmetry all "
        "hidden rows of F_U are equal; put that into F_U = T_UU F_U + T_UL Y_L and solve for the common row",
        _same_outputs(_wide_kernel_cases, wide_kernel_reference, atol=1e-9),
        forbidden=(*_GRAPH, *_LPA, "wide_kernel_reference"), points=3,
        more_hint="the common row is the share of each class among the visible labels: "
                  "one_hot(labels[labeled_mask], C).mean(0), repeated for every hidden node"),
    "01.1": Exercise(
        "squared distances of normalised embeddings", "pairwise_squared_distances",
        "normalise the rows, then ||u_i - u_j||^2 = |u_i|^2 + |u_j|^2 - 2 u_i.u_j = 2 - 2 cos; "
        "clamp tiny negative values to 0 and make the diagonal exactly 0",
        _same_outputs(_embedding_cases, squared_distances),
        forbidden=_GRAPH),
    "01.2": Exercise(
        "the Gaussian kernel", "gaussian_kernel",
        "W_ij = exp(-||u_i - u_j||^2 / (2 sigma^2)) on the L2-normalised rows u, and W_ii = 0: "
        "a document is not its own neighbour",
        _same_outputs(lambda g: _embedding_cases(g, with_sigma=True), gaussian_affinity),
        forbidden=("gaussian_affinity", "transition_matrix")),
    "01.3": Exercise(
        "the transition matrix when sigma is tiny", "narrow_kernel_limit",
        "write T_ij = W_ij / sum_k W_ik as 1 / sum_k exp((d_ij^2 - d_ik^2) / (2 sigma^2)) and let sigma -> 0: "
        "which k make the sum blow up, and which j keep it at 1?",
        _same_outputs(_distinct_neighbour_cases, narrow_kernel_reference),
        forbidden=("gaussian_affinity", "transition_matrix", "narrow_kernel_reference"), points=3,
        more_hint="only the nearest neighbour j of i keeps T_ij -> 1, every other entry -> 0: a one-hot row "
                  "at the argmin of the squared distances, the diagonal excluded"),
    "02.1": Exercise(
        "one iteration of label propagation", "lpa_iteration",
        "multiply T by F (every node takes the weighted average of its neighbours' distributions), "
        "then clamp: the visible rows go back to their one-hot labels, e.g. with torch.where",
        _same_outputs(_iteration_cases, lpa_iteration_reference),
        forbidden=("propagate", "lpa_iteration_reference")),
    "02.2": Exercise(
        "the closed form (harmonic solution)", "harmonic_solution",
        "take the blocks T_UU = T[hidden][:, hidden] and T_UL = T[hidden][:, visible], the one-hot "
        "Y_L of the visible labels, and solve (I - T_UU) F_U = T_UL Y_L with torch.linalg.solve",
        _same_outputs(_harmonic_cases, harmonic_reference, atol=1e-8),
        forbidden=("propagate", "harmonic_reference", "g_loss", "GLoss", "lpa_predict")),
    "02.3": Exercise(
        "the fixed point of soft clamping", "soft_clamp_fixed_point",
        "at the fixed point F = alpha T F + (1 - alpha) Y; collect the F terms on one side and solve the "
        "linear system (one torch.linalg.solve, no loop)",
        _same_outputs(_soft_clamp_cases, soft_clamp_reference, atol=1e-8),
        forbidden=("propagate", "soft_clamp_reference", "LabelSpreading"), points=3,
        more_hint="(I - alpha T) F = (1 - alpha) Y, so F = (1 - alpha) (I - alpha T)^-1 Y"),
    "03.1": Exercise(
        "the stratified mask", "stratified_mask",
        "loop over the classes; in a class of m members keep min(max(round(gamma * m), 1), m - 1) "
        "visible, chosen with torch.randperm(m, generator=generator)",
        _check_stratified_mask,
        forbidden=("split_mask",), parts=("the counts", "drawn at random from generator")),
    "03.2": Exercise(
        "G-Loss from its parts (the NLL target)", "g_loss_by_hand",
        "gaussian_affinity -> transition_matrix(W, 'gloss') -> propagate (closed form) gives F; "
        "the loss is the mean over hidden nodes of -log F[i, y_i]",
        _check_g_loss,
        forbidden=("g_loss", "GLoss"), parts=("the value", "the gradient")),
    "03.3": Exercise(
        "G-Loss with the authors' target and a random mask", "authors_g_loss",
        "the same F_U as in 03.2, scored the way the authors' code scores it: F_U is handed to "
        "cross_entropy as if it were logits, so a softmax is applied to the probabilities",
        lambda student, generator: _check_g_loss(student, generator, target="authors", cases=_random_mask_cases),
        forbidden=("g_loss", "GLoss"), points=3, parts=("the value", "the gradient"),
        more_hint="torch.nn.functional.cross_entropy(F[hidden], labels[hidden]); F from propagate on "
                  "transition_matrix(gaussian_affinity(embeddings, sigma), 'gloss')"),
    "04.1": Exercise(
        "the SQRT estimate of sigma", "sqrt_rule",
        "Euclidean distances (not squared) between the L2-normalised rows, each pair i < j once; "
        "sigma = sqrt(median / 3)",
        _same_outputs(_sigma_cases, sigma_sqrt, atol=1e-7),
        forbidden=("sigma_sqrt", "sigma_dicm", "pairwise_distances")),
    "04.2": Exercise(
        "the DICM estimate of sigma", "dicm_rule",
        "the smallest Euclidean distance between two L2-normalised documents of different classes, "
        "divided by 3",
        _same_outputs(lambda g: _sigma_cases(g, labelled=True), sigma_dicm, atol=1e-7),
        forbidden=("sigma_sqrt", "sigma_dicm", "pairwise_distances")),
    "04.3": Exercise(
        "the sigma that gives the median pair a chosen weight", "sigma_for_median_weight",
        "the weight exp(-d^2 / (2 sigma^2)) falls as d grows, so the median weight belongs to the median "
        "distance d_med (over the pairs i < j of L2-normalised rows); solve exp(-d_med^2 / (2 sigma^2)) = weight",
        _check_median_weight,
        forbidden=("sigma_sqrt", "sigma_dicm"), points=3,
        more_hint="sigma = d_med / sqrt(-2 log(weight))"),
    "05.1": Exercise(
        "a G-Loss + CE training step", "training_step",
        "one encoder pass; CE of head(embeddings) on all labels; g_loss on the same embeddings; "
        "mix_losses(ce, graph, lam); zero the gradients, backward, step; return the loss as a float",
        _check_training_step,
        forbidden=("training_step_reference", "train_model", "train_one_epoch", "fit")),
    "05.2": Exercise(
        "transductive prediction with LPA", "transductive_predict",
        "one graph over train + test documents (train labels visible, test hidden): gaussian_affinity, "
        "transition_matrix(..., 'gloss'), propagate, then argmax over the test rows; float64 helps",
        _same_outputs(_transductive_cases, transductive_reference),
        forbidden=("lpa_predict", "transductive_reference", "evaluate_lpa")),
    "05.3": Exercise(
        "the gradient of the closed-form solve, by hand", "solve_gradient",
        "differentiate A X = B: dA X + A dX = dB. With G = dL/dX, dL = <G, dX> = <G, A^-1 (dB - dA X)>; "
        "move A^-1 to the other side of the inner product",
        _check_solve_gradient,
        forbidden=("torch.autograd.grad", "torch.autograd.backward", "backward", "grad", "jacobian", "vjp"),
        points=3, parts=("grad_B", "grad_A"),
        more_hint="grad_B = A^-T G (torch.linalg.solve(A.T, G)) and grad_A = -grad_B X^T"),
    "06.1": Exercise(
        "the supervised contrastive loss", "supervised_contrastive_loss",
        "cosine similarities s / temperature; per anchor i and positive p: "
        "-(s_ip / t - logsumexp over all a != i of s_ia / t); average per anchor, then over the anchors",
        _same_outputs(lambda g: _metric_cases(g, "temperature", [0.1, 0.2, 0.5]),
                      lambda e, y, t: SupConLoss(t)(e, y), atol=1e-5, rtol=1e-4),
        forbidden=("SupConLoss", "NTXentLoss")),
    "06.2": Exercise(
        "the batch-all triplet loss", "batch_all_triplet_loss",
        "Euclidean distances between L2-normalised rows; for every (anchor, positive, negative) "
        "max(0, d_ap - d_an + margin); average over the triplets whose loss is > 0",
        _same_outputs(lambda g: _metric_cases(g, "margin", [0.1, 0.3, 0.5]),
                      lambda e, y, m: TripletLoss(m, "all")(e, y), atol=1e-5, rtol=1e-4),
        forbidden=("TripletLoss", "TripletMarginLoss", "triplet_margin_loss", "TripletMarginWithDistanceLoss")),
    "06.3": Exercise(
        "supervised contrastive loss at perfect collapse", "supcon_at_collapse",
        "every class sits on one unit vector and the classes are orthogonal: an anchor of a class of m "
        "members sees m - 1 similarities of 1 and n - m of 0; write its loss from the formula, then average",
        _same_outputs(_collapse_cases, collapse_reference, atol=1e-5, rtol=1e-4),
        forbidden=("SupConLoss", "NTXentLoss", "collapse_reference"), points=3,
        more_hint="an anchor of a class of size m pays -1/t + log((m - 1) e^(1/t) + (n - m)); average over anchors"),
    "07.1": Exercise(
        "the authors' random mask", "authors_mask",
        "draw one random permutation of 0..n-1 from a generator seeded with seed; node i is visible when "
        "its entry is below gamma * n (compare in floating point, as the authors' code does)",
        _same_outputs(_authors_mask_cases, authors_mask_reference),
        forbidden=("split_mask", "GLoss", "authors_mask_reference"),
        more_hint="torch.randperm(n, generator=torch.Generator().manual_seed(seed)) < gamma * n"),
    "07.2": Exercise(
        "the gradient share of the aux term", "push_share",
        "take the gradient of each (already weighted) term with respect to the embeddings it was computed "
        "from, keeping the graph (retain_graph=True); the share is ||g_aux|| / (||g_ce|| + ||g_aux||)",
        _check_gradient_share,
        forbidden=("gradient_share",), points=2,
        more_hint="torch.autograd.grad(term, tensor, retain_graph=True)[0].norm() for each term"),
    "07.3": Exercise(
        "a verdict from paired differences", "paired_verdict",
        "mean d, sample standard deviation s (ddof=1), n seeds: the 95% interval is d +- t s / sqrt(n) with "
        "t = scipy.stats.t.ppf(0.975, n - 1); 'supported' when it lies on the claimed side of 0 ('higher': "
        "above, 'lower': below), 'not supported' when on the other side, else 'undecided at this sample size' "
        "(always with one seed)",
        _same_verdict,
        forbidden=("paired_interval", "verdict", "verdict_reference", "summarise"), points=3,
        more_hint="with equal differences s = 0 and the interval is the single value d"),
    "08.1": Exercise(
        "the cached gradient", "cached_gradient",
        "step 1: embed every chunk X_k @ W under torch.no_grad() and concatenate; step 2: make the embeddings a "
        "leaf that requires grad, call the loss once and take G = dLoss/dE; step 3: embed each chunk again with "
        "gradient and push its rows G_k back, adding up the chunks' contributions to dLoss/dW",
        _check_cached_gradient,
        forbidden=("cached_backward",), points=3,
        more_hint="torch.autograd.grad(X_k @ W, W, G_k)[0] is chunk k's term; W needs requires_grad_() in step 3"),
    "08.2": Exercise(
        "the cross-entropy scale under DDP", "ce_scales",
        "rank r averages its own n_r documents and DDP averages the W ranks; choose c_r so that "
        "(1/W) sum_r c_r mean_r equals the mean over all N = sum_r n_r documents",
        _check_ce_scales,
        forbidden=("local_batch",), points=2,
        more_hint="the global mean is sum_r (n_r / N) mean_r, so c_r / W = n_r / N"),
    "08.3": Exercise(
        "a class-balanced batch", "balanced_batch",
        "for every class draw two of its documents at random (torch.randperm with the generator), then fill "
        "the batch with a random choice of the documents not yet taken",
        _check_balanced_batch,
        forbidden=("ClassBalancedBatchSampler",), points=2,
        more_hint="members = (labels == c).nonzero().flatten(); members[torch.randperm(len(members), "
                  "generator=generator)[:2]]"),
}


# ---------------------------------------------------------------------------------------------
# Calls to the reference
# ---------------------------------------------------------------------------------------------

_PACKAGE_MODULES = ("graph", "lpa", "losses", "masking", "sigma", "encoders", "evaluate", "train", "reproduce",
                    "cached", "distributed", "sampling", "exercises")


def _forbidden_objects(names: tuple[str, ...]) -> dict[int, str]:
    """``id(object) -> name`` for every forbidden name that resolves to an object."""
    found = {}
    for name in names:
        if "." in name:
            module, _, attribute = name.rpartition(".")
            try:
                found[id(getattr(importlib.import_module(module), attribute))] = name
            except (ImportError, AttributeError):
                pass
            continue
        for module in _PACKAGE_MODULES:
            try:
                value = getattr(importlib.import_module(f"gloss_lite.{module}"), name, None)
            except ImportError:
                continue
            if value is not None:
                found[id(value)] = name
    return found


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _code_names(constant)
    return names


def reference_uses(function: Callable, forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden names ``function`` refers to: itself, its globals (under any alias), its closure
    and the attributes it reads (``module.sigma_sqrt``). Empty when it uses none.

    This reads what the compiled code names; a call assembled at run time (``getattr(m, "si" + "gma")``)
    is not seen.
    """
    objects = _forbidden_objects(forbidden)
    short = {name.rpartition(".")[2] for name in forbidden}
    if id(function) in objects:
        return [objects[id(function)]]
    target = getattr(function, "func", function)  # functools.partial
    code = getattr(target, "__code__", None)
    if code is None:
        return []
    used = set()
    scope = getattr(target, "__globals__", {})
    for name in _code_names(code):
        value = scope.get(name, getattr(builtins, name, None)) if name in scope or hasattr(builtins, name) else None
        if value is not None and id(value) in objects:
            used.add(objects[id(value)])
        elif name not in scope and name in short:
            used.add(name)
    for cell in getattr(target, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if id(value) in objects:
            used.add(objects[id(value)])
    return sorted(used)


# ---------------------------------------------------------------------------------------------
# Checking, with a time limit
# ---------------------------------------------------------------------------------------------

_failures: dict[str, int] = {}  # failed tries per exercise in this Python session, for the fuller hint


def _run_with_time_limit(run: Callable[[], int], timeout: float | None) -> int:
    """``run()``, stopped after ``timeout`` seconds: by an alarm on the main thread (it interrupts the
    student's code), elsewhere by waiting for a worker thread (which is then left to finish alone)."""
    if timeout is None:
        return run()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def alarm(signum, frame):
            raise _TimeUp

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return run()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome = {}

    def worker():
        try:
            outcome["tried"] = run()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _TimeUp
    if "error" in outcome:
        raise outcome["error"]
    return outcome["tried"]


def check(exercise_id: str, function: Callable, *, seed: int | None = None,
          timeout: float | None = DEFAULT_TIMEOUT) -> None:
    """Check a student's function against the reference of exercise ``exercise_id`` (e.g. ``"01.2"``).

    Prints one line when it passes. Raises ``ExerciseFailed`` with what differs, on which input,
    a hint and the seed to repeat the inputs; when ``function`` uses the package's implementation
    (``reason="reference"``); or when the whole check takes more than ``timeout`` seconds
    (``reason="timeout"``; ``None``: no limit). Lets ``NotImplementedError`` through unchanged.
    """
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are {', '.join(EXERCISES)}")
    if not callable(function):
        raise TypeError(f"check({exercise_id!r}, ...) needs your function itself, got {_describe(function)}")
    exercise = EXERCISES[exercise_id]
    used = reference_uses(function, exercise.forbidden)
    if used:
        raise ExerciseFailed(
            f"Exercise {exercise_id} ({exercise.title}): not yet. Your function uses the reference "
            f"implementation ({', '.join(used)}); the exercise is to write it yourself.\n"
            f"Hint: {exercise.hint}.", reason="reference")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    repeat = (f"(Random inputs from seed {seed}: check({exercise_id!r}, {exercise.function}, seed={seed}) "
              f"repeats them.)")
    _current["where"] = "before the first input"
    try:
        tried = _run_with_time_limit(lambda: exercise.checker(function, torch.Generator().manual_seed(seed)),
                                     timeout)
    except _TimeUp:
        raise ExerciseFailed(
            f"Exercise {exercise_id} ({exercise.title}): not yet. The check did not finish within {timeout:g} s "
            f"(stopped {_current['where'].replace('input', 'at input', 1)}): look for a loop that never ends "
            f"or work that grows too fast.\n{repeat}", reason="timeout") from None
    except _Mismatch as mismatch:
        _failures[exercise_id] = _failures.get(exercise_id, 0) + 1
        more = (f"\nA fuller hint (after {_failures[exercise_id]} tries): {exercise.more_hint}."
                if exercise.more_hint and _failures[exercise_id] >= 3 else "")
        raise ExerciseFailed(
            f"Exercise {exercise_id} ({exercise.title}): not yet. {mismatch}\n"
            f"Hint: {exercise.hint}.{more}\n{repeat}", credit=mismatch.credit
        ) from mismatch.__cause__
    print(f"Exercise {exercise_id} ({exercise.title}) passed on {tried} random inputs.")
