"""gloss_lite.exercises: correct functions pass, plausible mistakes fail with a helpful message.

The correct functions are the package's own (or written independently here); each mistake is one
a student could make. The notebooks' solutions are checked by the notebooks' own smoke runs.
"""

import json
import re

import pytest
import torch
import torch.nn.functional as F

from gloss_lite.course import notebook_paths
from gloss_lite.encoders import mean_pool
from gloss_lite.evaluate import lpa_predict
from gloss_lite.exercises import EXERCISES, ExerciseFailed, check
from gloss_lite.graph import gaussian_affinity, squared_distances
from gloss_lite.losses import SupConLoss, TripletLoss, g_loss, mix_losses
from gloss_lite.lpa import propagate
from gloss_lite.masking import split_mask
from gloss_lite.sigma import sigma_dicm, sigma_sqrt


def lpa_iteration(T, F_, Y, mask):
    out = T @ F_
    out[mask] = Y[mask]
    return out


def harmonic(T, labels, mask, C):
    return propagate(T, labels, mask, C, method="iterative", teleport=0.0, tol=1e-14, max_iter=100_000)[~mask]


def training_step(encoder, head, optimizer, x, y, mask, sigma, lam, C):
    optimizer.zero_grad()
    e = encoder(x)
    loss = mix_losses(F.cross_entropy(head(e), y), g_loss(e, y, mask, sigma=sigma, num_classes=C), lam)
    loss.backward()
    optimizer.step()
    return loss.item()


CORRECT = {
    "00.1": mean_pool,
    "00.2": lambda e: F.cosine_similarity(e[:, None, :], e[None, :, :], dim=-1),
    "01.1": squared_distances,
    "01.2": gaussian_affinity,
    "02.1": lpa_iteration,
    "02.2": harmonic,
    "03.1": lambda y, gamma, gen: split_mask(y, gamma, generator=gen),
    "03.2": lambda e, y, m, s, C: g_loss(e, y, m, sigma=s, num_classes=C),
    "04.1": sigma_sqrt,
    "04.2": sigma_dicm,
    "05.1": training_step,
    "05.2": lambda tr, y, te, C, s: lpa_predict(tr, y, te, C, sigma=s),
    "06.1": lambda e, y, t: SupConLoss(t)(e, y),
    "06.2": lambda e, y, m: TripletLoss(m, "all")(e, y),
}


def first_k_mask(labels, gamma, generator):  # the right counts, but never random
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for cls in labels.unique():
        members = (labels == cls).nonzero().flatten()
        mask[members[: min(max(round(gamma * len(members)), 1), len(members) - 1)]] = True
    return mask


def step_without_zero_grad(encoder, head, optimizer, x, y, mask, sigma, lam, C):
    e = encoder(x)
    loss = mix_losses(F.cross_entropy(head(e), y), g_loss(e, y, mask, sigma=sigma, num_classes=C), lam)
    loss.backward()  # gradients pile up across steps
    optimizer.step()
    return loss.item()


def supcon_with_self(e, y, t):  # the anchor's own similarity left in the denominator
    u = F.normalize(e, dim=1)
    logits = u @ u.T / t
    positives = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return (-(log_prob * positives).sum(1) / positives.sum(1)).mean()


def triplet_mean_over_all(e, y, margin):  # averages the zero-cost triplets too
    u = F.normalize(e, dim=1)
    d = torch.cdist(u, u)
    same = y[:, None] == y[None, :]
    valid = (same & ~torch.eye(len(y), dtype=torch.bool))[:, :, None] & ~same[:, None, :]
    return (d[:, :, None] - d[:, None, :] + margin).clamp_min(0)[valid].mean()


MISTAKES = {
    "00.1": (lambda h, m: h.mean(dim=1), "largest difference"),  # padding counted
    "00.2": (lambda e: e @ e.T, "largest difference"),  # not normalised
    "01.1": (lambda e: squared_distances(e, normalize=False), "largest difference"),
    "01.2": (lambda e, s: torch.exp(-squared_distances(e) / (2 * s**2)), r"index \[(\d+), \1\]"),  # W_ii = 1
    "02.1": (lambda T, F_, Y, m: T @ F_, "largest difference"),  # not clamped
    "02.2": (lambda T, y, m, C: propagate(T, y, m, C)[:, :], "expected shape"),  # every row, not F_U
    "03.1": (first_k_mask, "all gave the same mask"),
    "03.2": (lambda e, y, m, s, C: g_loss(e, y, m, sigma=s, num_classes=C).detach(), "carries no gradient"),
    "04.1": (lambda e: sigma_sqrt(e) ** 2, "yours"),
    "04.2": (lambda e, y: float(torch.cdist(F.normalize(e, dim=1), F.normalize(e, dim=1)).triu(1)
                                [torch.ones(len(e), len(e)).triu(1).bool()].min() / 3), "yours"),  # any pair
    "05.1": (step_without_zero_grad, "step 2"),
    "05.2": (lambda tr, y, te, C, s: F.one_hot(lpa_predict(tr, y, te, C, sigma=s), C), "expected shape"),
    "06.1": (supcon_with_self, "largest difference"),
    "06.2": (triplet_mean_over_all, "largest difference"),
}


def test_every_exercise_has_a_correct_and_a_wrong_function_here():
    assert set(CORRECT) == set(EXERCISES) == set(MISTAKES)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_a_correct_function_passes_on_several_draws(exercise_id, capsys):
    for seed in range(5):
        check(exercise_id, CORRECT[exercise_id], seed=seed)
    check(exercise_id, CORRECT[exercise_id])  # and on a fresh random seed
    assert capsys.readouterr().out.count(f"Exercise {exercise_id} (") == 6


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_a_mistake_fails_with_what_where_and_a_hint(exercise_id):
    wrong, expected_detail = MISTAKES[exercise_id]
    with pytest.raises(ExerciseFailed) as failure:
        check(exercise_id, wrong, seed=1)
    message = str(failure.value)
    assert message.startswith(f"Exercise {exercise_id} ({EXERCISES[exercise_id].title}): not yet.")
    assert re.search(expected_detail, message), message
    assert "\n  on input " in message  # which input
    assert f"Hint: {EXERCISES[exercise_id].hint}." in message
    assert f"check('{exercise_id}', {EXERCISES[exercise_id].function}, seed=1)" in message
    assert isinstance(failure.value, AssertionError)
    with pytest.raises(ExerciseFailed) as again:  # the seed repeats the inputs, hence the message
        check(exercise_id, wrong, seed=1)
    assert str(again.value) == message


def test_an_unfinished_exercise_reads_as_unfinished():
    def stub(embeddings, sigma):
        raise NotImplementedError("Exercise 01.2: write it")

    with pytest.raises(NotImplementedError, match="Exercise 01.2: write it"):
        check("01.2", stub)


def test_a_crash_in_the_student_function_is_reported_with_its_input():
    def crashes(embeddings, sigma):
        return embeddings @ embeddings  # n x d @ n x d: a shape error

    with pytest.raises(ExerciseFailed, match=r"your function raised RuntimeError: .*\n  on input 1 of 5: \d+ x \d+"):
        check("01.2", crashes, seed=0)


def test_a_wrong_return_type_is_named():
    with pytest.raises(ExerciseFailed, match="expected a tensor, got list"):
        check("00.2", lambda e: e.tolist(), seed=0)
    with pytest.raises(ExerciseFailed, match="expected a number, got str"):
        check("04.1", lambda e: "half", seed=0)


def test_bad_calls_are_refused_clearly():
    with pytest.raises(KeyError, match=r"no exercise '9.9'; the exercises are 00.1, 00.2"):
        check("9.9", sigma_sqrt)
    with pytest.raises(TypeError, match=r"needs your function itself, got tensor"):
        check("04.1", torch.zeros(3))


def exercise_cells(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    checks = [re.fullmatch(r'check\("(\d\d\.\d)", (\w+)\)\s*', s) for s in sources]
    return sources, [m.groups() for m in checks if m]


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_every_notebook_has_two_coded_exercises_and_an_open_question(path):
    sources, checks = exercise_cells(path)
    ids = [exercise_id for exercise_id, _ in checks]
    assert len(ids) >= 2 and all(i.startswith(path.name[:2] + ".") for i in ids), ids
    assert set(ids) == {i for i in EXERCISES if i.startswith(path.name[:2] + ".")}
    for exercise_id, function in checks:
        assert function == EXERCISES[exercise_id].function
        (definition,) = [s for s in sources if s.startswith(f"def {function}(")]
        assert "### BEGIN SOLUTION" in definition and "### END SOLUTION" in definition
    questions = [s for s in sources if s.startswith("### Questions to explore")]
    assert len(questions) == 1 and re.search(r"^1\. \*\*", questions[0], re.M), "one list of open questions"
