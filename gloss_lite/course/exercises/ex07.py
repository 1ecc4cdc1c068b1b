"""The exercises of notebook 07 · Reproducing the paper: the authors' per-node term, the gradient share of
the aux term, a verdict from paired differences."""

from __future__ import annotations

import torch

from ..comparing import Exercise, Mismatch, ask, compare, same_outputs
from .inputs import choice, embeddings, randint

METHOD = ("graph", "lpa", "masking", "losses", "sigma", "baselines")


# 07.1 · the authors' per-node term ---------------------------------------------------------

def authors_node_cases(generator):
    """(p, num_classes) pairs, among them a perfect propagation (p = 1) and a uniform one."""
    cases = [("a perfect propagation, p=1, C=2", (1.0, 2)), ("a uniform row, p=1/4, C=4", (0.25, 4))]
    for _ in range(4):
        num_classes = randint(2, 20, generator)
        p = 1 / num_classes + (1 - 1 / num_classes) * float(torch.rand(1, generator=generator))
        cases.append((f"p={p:.4f}, C={num_classes}", (p, num_classes)))
    return cases


def authors_node_reference(p, num_classes):
    """Cross-entropy of the softmax of the row (p, (1-p)/(C-1), ...) at its first class."""
    row = torch.full((1, num_classes), (1 - p) / (num_classes - 1), dtype=torch.float64)
    row[0, 0] = p
    return float(torch.nn.functional.cross_entropy(row, torch.tensor([0])))


# 07.2 · the gradient share of the aux term ---------------------------------------------------

def check_gradient_share(student, generator) -> int:
    """Weighted CE and aux terms with known gradients at one or two embedding tensors."""
    from ...training import gradient_share  # here, not at the top: training loads transformers and pandas
    from ..calls import share_terms

    cases = 0
    for two_passes in (False, True, False, True):
        n, d = randint(3, 9, generator), randint(2, 6, generator)
        a, b = embeddings(n, d, generator), embeddings(n, d, generator)
        lam = choice([0.1, 0.5, 0.9], generator)
        start = embeddings(n, d, generator)
        where = f"input {cases + 1} of 4: n={n}, d={d}, lam={lam}, {'two passes' if two_passes else 'one pass'}"
        expected = gradient_share(*share_terms(start, a, b, lam, two_passes))
        compare(ask(student, where, start, a, b, lam, two_passes, call="gradient_share"), expected, where, atol=1e-9)
        cases += 1
    return cases


# 07.3 · a verdict from paired differences ----------------------------------------------------

def verdict_cases(generator):
    cases = [("three equal differences of 0.02, 'higher'", ([0.02, 0.02, 0.02], "higher")),
             ("one seed only", ([0.05], "higher"))]
    for better in ("higher", "lower", "higher"):
        n = randint(2, 6, generator)
        centre = choice([-0.05, 0.0, 0.05], generator)
        values = (centre + 0.03 * torch.randn(n, generator=generator, dtype=torch.float64)).tolist()
        cases.append((f"{n} differences around {centre}, {better!r}", (values, better)))
    return cases


def verdict_reference(differences, better):
    """The reproduction's own interval and verdict (imported here: they load pandas and scipy)."""
    from ...reproduction.results import paired_interval, verdict

    _, low, high = paired_interval(differences, [0.0] * len(differences))
    return verdict(low, high, better)


def check_verdict(student, generator) -> int:
    drawn = verdict_cases(generator)
    for number, (description, args) in enumerate(drawn, start=1):
        where = f"input {number} of {len(drawn)}: {description}: {[round(v, 4) for v in args[0]]}"
        expected, yours = verdict_reference(*args), ask(student, where, list(args[0]), args[1])
        if yours != expected:
            raise Mismatch(f"yours {yours!r}, expected {expected!r}\n  on {where}")
    return len(drawn)


EXERCISES = {
    "07.1": Exercise(
        "the authors' per-node term", "authors_node_loss",
        "the authors pass the probabilities F_u to cross_entropy as if they were logits: the term is "
        "-log(exp(p) / (exp(p) + (C - 1) exp((1 - p) / (C - 1)))), not -log p",
        same_outputs(authors_node_cases, authors_node_reference, atol=1e-9),
        forbidden=("authors_node_reference", "g_loss", "GLoss", "cross_entropy", "log_softmax"),
        face=(), points=2,
        more_hint="at p = 1 the term is log(1 + (C - 1) / e), about 0.31 for C = 2, not 0"),
    "07.2": Exercise(
        "the gradient share of the aux term", "push_share",
        "take the gradient of each (already weighted) term with respect to the embeddings it was computed "
        "from, keeping the graph (retain_graph=True); the share is ||g_aux|| / (||g_ce|| + ||g_aux||)",
        check_gradient_share,
        forbidden=("gradient_share",), points=2, face=METHOD,
        more_hint="torch.autograd.grad(term, tensor, retain_graph=True)[0].norm() for each term"),
    "07.3": Exercise(
        "a verdict from paired differences", "paired_verdict",
        "mean d, sample standard deviation s (ddof=1), n seeds: the 95% interval is d +- t s / sqrt(n) with "
        "t = scipy.stats.t.ppf(0.975, n - 1); 'supported' when it lies on the claimed side of 0 ('higher': "
        "above, 'lower': below), 'not supported' when on the other side, else 'undecided at this sample size' "
        "(always with one seed)",
        check_verdict,
        forbidden=("paired_interval", "verdict", "verdict_reference", "summarise"), points=3, face=METHOD,
        more_hint="with equal differences s = 0 and the interval is the single value d"),
}
