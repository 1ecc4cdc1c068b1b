"""The exercises of notebook 07 · Reproducing the paper: the authors' random mask, the gradient share of the
aux term, a verdict from paired differences."""

from __future__ import annotations

import torch

from ...masking import split_mask
from ..comparing import Exercise, Mismatch, ask, compare, same_outputs
from .inputs import choice, embeddings, randint

ALL_BUT_MASKING = ("graph", "lpa", "sigma", "baselines")  # losses imports masking
METHOD = ("graph", "lpa", "masking", "losses", "sigma", "baselines")


# 07.1 · the authors' random mask -------------------------------------------------------------

def authors_mask_cases(generator):
    """(n, gamma, seed) triples, among them sizes where gamma * n is a whole number."""
    cases = [("n=10, gamma=0.7 (gamma * n is whole)", (10, 0.7, 3)), ("n=128, gamma=0.7", (128, 0.7, 5))]
    for _ in range(3):
        gamma = choice([0.3, 0.5, 0.6, 0.7, 0.9], generator)
        n = randint(12, 60, generator)  # large enough that one node stays hidden
        cases.append((f"n={n}, gamma={gamma}", (n, gamma, randint(0, 10_000, generator))))
    return cases


def authors_mask_reference(n, gamma, seed):
    labels = torch.arange(n) % 2
    return split_mask(labels, gamma, generator=torch.Generator().manual_seed(seed), stratified=False)


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
        "the authors' random mask", "authors_mask",
        "draw one random permutation of 0..n-1 from a generator seeded with seed; node i is visible when "
        "its entry is below gamma * n (compare in floating point, as the authors' code does)",
        same_outputs(authors_mask_cases, authors_mask_reference),
        forbidden=("split_mask", "GLoss", "authors_mask_reference"), face=ALL_BUT_MASKING,
        more_hint="torch.randperm(n, generator=torch.Generator().manual_seed(seed)) < gamma * n"),
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
