"""Auto-checks for the coded exercises at the end of every notebook.

Each exercise asks the student to write one piece of the method as a function. ``check(id, fn)``
runs ``fn`` and the package's reference on fresh random inputs and compares them:

    >>> from gloss_lite.exercises import check
    >>> check("01.2", gaussian_kernel)         # doctest: +SKIP
    Exercise 01.2 (the Gaussian kernel) passed on 5 random inputs.

A difference raises ``ExerciseFailed`` (an ``AssertionError``) whose message says what differs,
on which input, and gives a hint; it also names the random seed, so ``check(id, fn, seed=...)``
repeats the same inputs. A stub that still raises ``NotImplementedError`` is let through as it
is, so an unfinished exercise reads as unfinished. ``EXERCISES`` lists every exercise by id
(``"NN.k"``: notebook ``NN``, exercise ``k``).

The references are the package's own functions wherever the package has one; the few that it
has no function for (one LPA iteration, a training step) are written out here.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encoders import mean_pool
from .evaluate import lpa_predict
from .graph import gaussian_affinity, squared_distances, transition_matrix
from .losses import SupConLoss, TripletLoss, g_loss, mix_losses
from .lpa import propagate
from .sigma import sigma_dicm, sigma_sqrt


class ExerciseFailed(AssertionError):
    """The student's function disagrees with the reference (the message says where and why)."""


class _Mismatch(Exception):
    """Raised inside a checker; ``check`` turns it into ``ExerciseFailed`` with the hint added."""


@dataclass(frozen=True)
class Exercise:
    """One coded exercise: what it asks for, how to check it, and a hint."""

    title: str
    function: str  # the name of the function the student writes
    hint: str
    checker: Callable[[Callable, torch.Generator], int]  # raises _Mismatch; returns how many inputs it tried


# ---------------------------------------------------------------------------------------------
# Comparing a student's function with a reference
# ---------------------------------------------------------------------------------------------

def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, {value.dtype}"
    return type(value).__name__


def _call(function: Callable, args: tuple, where: str):
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
                                f"every random choice from `generator`\n  on {where}")
            masks.append(mask)
            tried += 1
        if all(torch.equal(masks[0], m) for m in masks[1:]):
            raise _Mismatch(f"8 generators with different seeds all gave the same mask: the visible members "
                            f"must be drawn at random within each class\n  on {where}")
    return tried


def _g_loss_cases(generator):
    cases = []
    for _ in range(4):
        embeddings, labels, visible, num_classes, sigma, _ = _graph_case(generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, sigma={sigma:.3f}",
                      (embeddings, labels, visible, sigma, num_classes)))
    return cases


def _check_g_loss(student, generator) -> int:
    """Value and gradient with respect to the embeddings."""
    drawn = _g_loss_cases(generator)
    for number, (description, args) in enumerate(drawn, start=1):
        where = f"input {number} of {len(drawn)}: {description}"
        embeddings, *rest = args
        mine = embeddings.clone().requires_grad_()
        expected = g_loss(mine, *rest[:2], sigma=rest[2], num_classes=rest[3], scheme="gloss", target="nll")
        (expected_grad,) = torch.autograd.grad(expected, mine)
        theirs = embeddings.clone().requires_grad_()
        yours = _call(student, (theirs, *rest), where)
        _compare(yours, expected.detach(), where)
        if not isinstance(yours, torch.Tensor) or not yours.requires_grad:
            raise _Mismatch(f"the value is right but carries no gradient: keep every step in torch "
                            f"(no .item(), .numpy() or .detach())\n  on {where}")
        (your_grad,) = torch.autograd.grad(yours, theirs)
        _compare(your_grad, expected_grad, where + " (gradient with respect to the embeddings)")
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
# The exercises
# ---------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {
    "00.1": Exercise(
        "mean pooling", "mean_pooling",
        "divide the masked sum of token vectors by the number of real tokens; "
        "attention_mask[..., None] broadcasts the mask over the d dimensions",
        _same_outputs(_pooling_cases, mean_pool)),
    "00.2": Exercise(
        "the cosine-similarity matrix", "cosine_similarity_matrix",
        "scale every row to length 1 first (torch.nn.functional.normalize(x, dim=1)); "
        "then one matrix product gives every cosine at once, 1 on the diagonal",
        _same_outputs(_cosine_cases, _cosine_reference)),
    "01.1": Exercise(
        "squared distances of normalised embeddings", "pairwise_squared_distances",
        "normalise the rows, then ||u_i - u_j||^2 = |u_i|^2 + |u_j|^2 - 2 u_i.u_j = 2 - 2 cos; "
        "clamp tiny negative values to 0 and make the diagonal exactly 0",
        _same_outputs(_embedding_cases, squared_distances)),
    "01.2": Exercise(
        "the Gaussian kernel", "gaussian_kernel",
        "W_ij = exp(-||u_i - u_j||^2 / (2 sigma^2)) on the L2-normalised rows u, and W_ii = 0: "
        "a document is not its own neighbour",
        _same_outputs(lambda g: _embedding_cases(g, with_sigma=True), gaussian_affinity)),
    "02.1": Exercise(
        "one iteration of label propagation", "lpa_iteration",
        "multiply T by F (every node takes the weighted average of its neighbours' distributions), "
        "then clamp: the visible rows go back to their one-hot labels, e.g. with torch.where",
        _same_outputs(_iteration_cases, lpa_iteration_reference)),
    "02.2": Exercise(
        "the closed form (harmonic solution)", "harmonic_solution",
        "take the blocks T_UU = T[hidden][:, hidden] and T_UL = T[hidden][:, visible], the one-hot "
        "Y_L of the visible labels, and solve (I - T_UU) F_U = T_UL Y_L with torch.linalg.solve",
        _same_outputs(_harmonic_cases, harmonic_reference, atol=1e-8)),
    "03.1": Exercise(
        "the stratified mask", "stratified_mask",
        "loop over the classes; in a class of m members keep min(max(round(gamma * m), 1), m - 1) "
        "visible, chosen with torch.randperm(m, generator=generator)",
        _check_stratified_mask),
    "03.2": Exercise(
        "G-Loss from its parts (the NLL target)", "g_loss_by_hand",
        "gaussian_affinity -> transition_matrix(W, 'gloss') -> propagate (closed form) gives F; "
        "the loss is the mean over hidden nodes of -log F[i, y_i]",
        _check_g_loss),
    "04.1": Exercise(
        "the SQRT estimate of sigma", "sqrt_rule",
        "Euclidean distances (not squared) between the L2-normalised rows, each pair i < j once; "
        "sigma = sqrt(median / 3)",
        _same_outputs(_sigma_cases, sigma_sqrt, atol=1e-7)),
    "04.2": Exercise(
        "the DICM estimate of sigma", "dicm_rule",
        "the smallest Euclidean distance between two L2-normalised documents of different classes, "
        "divided by 3",
        _same_outputs(lambda g: _sigma_cases(g, labelled=True), sigma_dicm, atol=1e-7)),
    "05.1": Exercise(
        "a G-Loss + CE training step", "training_step",
        "one encoder pass; CE of head(embeddings) on all labels; g_loss on the same embeddings; "
        "mix_losses(ce, graph, lam); zero the gradients, backward, step; return the loss as a float",
        _check_training_step),
    "05.2": Exercise(
        "transductive prediction with LPA", "transductive_predict",
        "one graph over train + test documents (train labels visible, test hidden): gaussian_affinity, "
        "transition_matrix(..., 'gloss'), propagate, then argmax over the test rows; float64 helps",
        _same_outputs(_transductive_cases, transductive_reference)),
    "06.1": Exercise(
        "the supervised contrastive loss", "supervised_contrastive_loss",
        "cosine similarities s / temperature; per anchor i and positive p: "
        "-(s_ip / t - logsumexp over all a != i of s_ia / t); average per anchor, then over the anchors",
        _same_outputs(lambda g: _metric_cases(g, "temperature", [0.1, 0.2, 0.5]),
                      lambda e, y, t: SupConLoss(t)(e, y), atol=1e-5, rtol=1e-4)),
    "06.2": Exercise(
        "the batch-all triplet loss", "batch_all_triplet_loss",
        "Euclidean distances between L2-normalised rows; for every (anchor, positive, negative) "
        "max(0, d_ap - d_an + margin); average over the triplets whose loss is > 0",
        _same_outputs(lambda g: _metric_cases(g, "margin", [0.1, 0.3, 0.5]),
                      lambda e, y, m: TripletLoss(m, "all")(e, y), atol=1e-5, rtol=1e-4)),
}


def check(exercise_id: str, function: Callable, *, seed: int | None = None) -> None:
    """Check a student's function against the reference of exercise ``exercise_id`` (e.g. ``"01.2"``).

    Prints one line when it passes. Raises ``ExerciseFailed`` with what differs, on which input,
    a hint and the seed to repeat the inputs; lets ``NotImplementedError`` through unchanged.
    """
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are {', '.join(EXERCISES)}")
    if not callable(function):
        raise TypeError(f"check({exercise_id!r}, ...) needs your function itself, got {_describe(function)}")
    exercise = EXERCISES[exercise_id]
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    try:
        tried = exercise.checker(function, torch.Generator().manual_seed(seed))
    except _Mismatch as mismatch:
        raise ExerciseFailed(
            f"Exercise {exercise_id} ({exercise.title}): not yet. {mismatch}\n"
            f"Hint: {exercise.hint}.\n"
            f"(Random inputs from seed {seed}: check({exercise_id!r}, {exercise.function}, seed={seed}) "
            f"repeats them.)"
        ) from mismatch.__cause__
    print(f"Exercise {exercise_id} ({exercise.title}) passed on {tried} random inputs.")
