"""The exercises of notebook 05 · Fine-tuning: a G-Loss + CE training step, the silhouette of an
embedding space by hand, the gradient of the closed-form solve by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...losses import g_loss, mix_losses
from ..calls import parameters, small_model
from ..comparing import Exercise, Mismatch, ask, compare, describe, same_outputs
from .inputs import embeddings, graph_case, labels_with_every_class, randint

AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
            "torch.autograd.functional.jacobian", "torch.autograd.functional.vjp", "torch.func.vjp", "torch.func.grad")


# 05.1 · a G-Loss + CE training step ----------------------------------------------------------

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


def check_training_step(student, generator) -> int:
    """Three steps on a small model: the returned loss and every parameter after each update."""
    steps = 3
    for case in range(1, 4):
        _, labels, visible, num_classes, sigma, _ = graph_case(generator, sizes=(8, 14))
        inputs = torch.randn(len(labels), 6, generator=generator, dtype=torch.float64)
        lam = [0.0, 0.5, 0.9][case - 1]
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
        encoder = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()).double()
        head = torch.nn.Linear(5, num_classes).double()
        model = {"encoder": {name: value.clone() for name, value in encoder.state_dict().items()},
                 "head": {name: value.clone() for name, value in head.state_dict().items()}, "lr": 0.5}
        batch = (inputs, labels, visible, sigma, lam, num_classes)
        where = (f"input {case} of 3: a small encoder (Linear 6->5 + tanh) and head, n={len(labels)}, "
                 f"C={num_classes}, sigma={sigma:.3f}, lam={lam}, SGD lr=0.5")
        yours = ask(student, where, model, batch, steps, call="training_steps")
        if not isinstance(yours, list) or len(yours) != steps:
            raise Mismatch(f"expected {steps} steps to be taken, got {describe(yours)}\n  on {where}")
        expected_model = small_model(model["encoder"], model["head"], model["lr"])
        for step, taken in enumerate(yours, start=1):
            expected = training_step_reference(*expected_model, *batch)
            compare(taken["loss"], expected, f"{where}, step {step} (the returned loss)")
            for name, value in parameters(*expected_model[:2]).items():
                compare(taken["parameters"][name], value, f"{where}, step {step} (parameter {name} after the update)")
    return 3


# 05.2 · the silhouette of an embedding space, by hand -----------------------------------------

def silhouette_reference(points, labels):
    """scikit-learn's mean silhouette with cosine distance (imported here: it loads scikit-learn)."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points.numpy(), labels.numpy(), metric="cosine"))


def silhouette_cases(generator):
    """Clustered embeddings, every class with two members or more (a lone member's score is a
    convention, not part of the formula)."""
    cases = []
    for _ in range(4):
        num_classes = randint(2, 4, generator)
        labels = labels_with_every_class(randint(2 * num_classes + 1, 16, generator), num_classes, generator,
                                         at_least=2)
        centres = embeddings(num_classes, 6, generator)
        spread = 0.3 + torch.rand((), generator=generator).item()
        points = centres[labels] + spread * embeddings(len(labels), 6, generator)
        cases.append((f"{len(labels)} x 6 embeddings, labels {labels.tolist()}", (points, labels)))
    return cases


# 05.3 · the gradient of the closed-form solve, by hand ---------------------------------------

def check_solve_gradient(student, generator) -> int:
    """Both gradients of ``X = A^-1 B`` against autograd: half the points each."""
    drawn = 0
    for number in range(1, 5):
        m, c = randint(2, 6, generator), randint(1, 4, generator)
        a = torch.eye(m, dtype=torch.float64) - 0.8 * torch.softmax(
            torch.randn(m, m, generator=generator, dtype=torch.float64), dim=1)  # like I - T_UU
        b = torch.randn(m, c, generator=generator, dtype=torch.float64)
        upstream = torch.randn(m, c, generator=generator, dtype=torch.float64)
        where = f"input {number} of 4: A = I - 0.8 P ({m} x {m}, P row-stochastic), B {m} x {c}"
        a_leaf, b_leaf = a.clone().requires_grad_(), b.clone().requires_grad_()
        expected_a, expected_b = torch.autograd.grad(torch.linalg.solve(a_leaf, b_leaf), (a_leaf, b_leaf), upstream)
        yours = ask(student, where, a, b, upstream)
        if not isinstance(yours, tuple) or len(yours) != 2:
            raise Mismatch(f"expected a pair (grad_A, grad_B), got {describe(yours)}\n  on {where}")
        compare(yours[1], expected_b, where + " (grad_B)")
        try:
            compare(yours[0], expected_a, where + " (grad_A)")
        except Mismatch as mismatch:
            raise Mismatch(f"grad_B is right, grad_A is not: {mismatch}", credit=0.5) from None
        drawn += 1
    return drawn


EXERCISES = {
    "05.1": Exercise(
        "a G-Loss + CE training step", "training_step",
        "one encoder pass; CE of head(embeddings) on all labels; g_loss on the same embeddings; "
        "mix_losses(ce, graph, lam); zero the gradients, backward, step; return the loss as a float",
        check_training_step,
        forbidden=("training_step_reference", "train_model", "train_one_epoch", "fit"),
        face=("graph", "lpa", "masking", "losses", "sigma", "baselines")),
    "05.2": Exercise(
        "the silhouette of an embedding space", "cosine_silhouette",
        "cosine distance 1 - cos(e_i, e_j); a_i: the mean distance from i to the other members of its "
        "class; b_i: the smallest mean distance from i to another class; s_i = (b_i - a_i) / max(a_i, b_i); "
        "return the mean of s_i",
        same_outputs(silhouette_cases, silhouette_reference, atol=1e-6),
        forbidden=("silhouette_score", "silhouette_samples", "silhouette_reference"),
        face=("graph", "lpa", "masking", "losses", "sigma", "baselines"), withheld=("sklearn",),
        more_hint="a_i divides by (size of i's class - 1): the distance of i to itself is not a neighbour"),
    "05.3": Exercise(
        "the gradient of the closed-form solve, by hand", "solve_gradient",
        "differentiate A X = B: dA X + A dX = dB. With G = dL/dX, dL = <G, dX> = <G, A^-1 (dB - dA X)>; "
        "move A^-1 to the other side of the inner product",
        check_solve_gradient,
        forbidden=(*AUTOGRAD, "backward", "grad", "jacobian", "vjp"), withheld=AUTOGRAD,
        points=3, parts=("grad_B", "grad_A"), face=("graph", "masking", "sigma"),
        more_hint="grad_B = A^-T G (torch.linalg.solve(A.T, G)) and grad_A = -grad_B X^T"),
}
