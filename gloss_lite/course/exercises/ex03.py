"""The exercises of notebook 03 · Masking and the loss: the stratified mask, G-Loss from its parts, the
authors' target."""

from __future__ import annotations

import torch

from ...losses import g_loss
from ...masking import split_mask
from ..comparing import Exercise, Mismatch, ask, compare, describe
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


# 03.2 and 03.3 · G-Loss from its parts -------------------------------------------------------

def g_loss_cases(generator):
    cases = []
    for _ in range(4):
        points, labels, visible, num_classes, sigma, _ = graph_case(generator)
        cases.append((f"n={len(labels)}, C={num_classes}, {int(visible.sum())} visible, sigma={sigma:.3f}",
                      (points, labels, visible, sigma, num_classes)))
    return cases


def random_mask_cases(generator):
    """G-Loss inputs under the authors' mask: ``gamma * n`` visible drawn over the whole batch."""
    cases = []
    while len(cases) < 4:
        points, labels, _, num_classes, sigma, _ = graph_case(generator)
        gamma = choice([0.3, 0.5, 0.7], generator)
        visible = split_mask(labels, gamma, generator=generator, stratified=False)
        if set(labels[~visible].tolist()) <= set(labels[visible].tolist()):  # every hidden class seen
            cases.append((f"n={len(labels)}, C={num_classes}, a random mask of gamma={gamma} "
                          f"({int(visible.sum())} visible), sigma={sigma:.3f}",
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


def check_authors_g_loss(student, generator) -> int:
    return check_g_loss(student, generator, target="authors", cases=random_mask_cases)


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
        "G-Loss with the authors' target and a random mask", "authors_g_loss",
        "the same F_U as in 03.2, scored the way the authors' code scores it: F_U is handed to "
        "cross_entropy as if it were logits, so a softmax is applied to the probabilities",
        check_authors_g_loss,
        forbidden=("g_loss", "GLoss"), points=3, parts=("the value", "the gradient"),
        face=("graph", "lpa", "masking", "sigma"),
        more_hint="torch.nn.functional.cross_entropy(F[hidden], labels[hidden]); F from propagate on "
                  "transition_matrix(gaussian_affinity(embeddings, sigma), 'gloss')"),
}
