"""gloss_lite.course.checking and the exercises: correct functions pass, plausible mistakes fail with a helpful message.

The correct functions are written here independently of the package's implementations (which a
solution may not call); each mistake is one a student could make. The notebooks' solutions are
checked by the notebooks' own smoke runs.
"""

import json
import math
import re
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from scipy import optimize as scipy_optimize
from scipy import stats as scipy_stats

import gloss_lite.sigma
from gloss_lite.course import checking
from gloss_lite.course.checking import ExerciseFailed, check, reference_uses
from gloss_lite.course.exercises import EXERCISES
from gloss_lite.course.run import notebook_paths
from gloss_lite.graph import gaussian_affinity, transition_matrix
from gloss_lite.losses import g_loss, mix_losses
from gloss_lite.lpa import propagate
from gloss_lite.sigma import sigma_sqrt


def unit_rows(e):
    return e / e.norm(dim=1, keepdim=True)


def squared(e):
    u = unit_rows(e)
    return ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)  # by broadcasting, not the 2 - 2 cos identity


def distances_upper(e):
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    return squared(e)[i, j].sqrt(), i, j


def max_pooling(h, m):
    return torch.stack([h[b, : int(m[b].sum())].max(0).values for b in range(len(h))])  # a loop over the texts


def knn_graph(w, k):
    keep = torch.zeros_like(w, dtype=torch.bool)
    for i in range(len(w)):
        others = [j for j in sorted(range(len(w)), key=lambda j: -w[i, j].item()) if j != i]
        keep[i, others[:k]] = True
    return torch.where(keep | keep.T, w, torch.zeros_like(w))


def absorption_steps(T, mask):
    u = (~mask).nonzero().flatten()
    return torch.linalg.inv(torch.eye(len(u), dtype=T.dtype) - T[u][:, u]).sum(dim=1)  # N 1


def kernel(e, s):
    w = torch.exp(-squared(e) / (2 * s**2))
    return w * (1 - torch.eye(len(e), dtype=e.dtype))


def harmonic(T, labels, mask, C):
    u, v = (~mask).nonzero().flatten(), mask.nonzero().flatten()
    A = torch.eye(len(u), dtype=T.dtype) - T[u][:, u]
    return torch.linalg.inv(A) @ T[u][:, v] @ F.one_hot(labels[v], C).to(T.dtype)


def stratified(labels, gamma, generator):
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for cls in labels.unique():
        members = (labels == cls).nonzero().flatten()
        keep = min(max(round(gamma * len(members)), 1), len(members) - 1)
        mask[members[torch.randperm(len(members), generator=generator)[:keep]]] = True
    return mask


def broken_step(counts, gamma):  # by counting the k-subsets that keep every class visible
    n = sum(counts)
    k = math.ceil(gamma * n)
    ways = [1] + [0] * k  # ways[j]: subsets of j nodes, at least one from every class so far
    for m in counts:
        ways = [sum(ways[j - t] * math.comb(m, t) for t in range(1, min(m, j) + 1)) for j in range(k + 1)]
    return 1 - ways[k] / math.comb(n, k)


def one_class_at_a_time(counts, gamma):  # adds the classes' chances as if they never coincided
    n = sum(counts)
    k = math.ceil(gamma * n)
    return sum(math.comb(n - m, k) / math.comb(n, k) for m in counts)


def propagated(e, y, m, s, C):
    return propagate(transition_matrix(gaussian_affinity(e, s), "gloss"), y, m, C)


def g_loss_parts(e, y, m, s, C):
    return -propagated(e, y, m, s, C)[~m, y[~m]].log().mean()


def authors_range(C):  # the authors' loss at every one-hot row, true class 0
    losses = F.cross_entropy(torch.eye(C, dtype=torch.float64), torch.zeros(C, dtype=torch.long),
                             reduction="none")
    return losses.min().item(), losses.max().item()


def sqrt_rule(e):
    d, _, _ = distances_upper(e)
    return float((d.median() / 3).sqrt())


def neighbours_sigma(e, k):  # Brent's method on log sigma
    from gloss_lite.explorer import effective_neighbours

    def gap(log_sigma):
        T = transition_matrix(gaussian_affinity(e, math.exp(log_sigma), log=True), "gloss", log=True)
        return effective_neighbours(T).mean().item() - k

    return math.exp(scipy_optimize.brentq(gap, math.log(1e-3), math.log(1e3), xtol=1e-12))


def training_step(encoder, head, optimizer, x, y, mask, sigma, lam, C):
    optimizer.zero_grad()
    e = encoder(x)
    loss = mix_losses(F.cross_entropy(head(e), y), g_loss(e, y, mask, sigma=sigma, num_classes=C), lam)
    loss.backward()
    optimizer.step()
    return loss.item()


def silhouette(e, y, *, count_itself=False):
    u = unit_rows(e)
    d = 1 - u @ u.T
    scores = []
    for i in range(len(y)):  # a loop over the documents, by the definition
        own = [j for j in range(len(y)) if y[j] == y[i] and (j != i or count_itself)]
        a = sum(d[i, j] for j in own) / len(own)
        b = min(d[i, y == c].mean() for c in y.unique() if c != y[i])
        scores.append((b - a) / max(a, b))
    return float(sum(scores) / len(scores))


def supcon(e, y, t, *, keep_self=False):
    u = unit_rows(e)
    logits = u @ u.T / t
    eye = torch.eye(len(y), dtype=torch.bool)
    positives = (y[:, None] == y[None, :]) & ~eye
    denominator = torch.logsumexp(logits if keep_self else logits.masked_fill(eye, float("-inf")), dim=1)
    return ((-(logits - denominator[:, None]) * positives).sum(1) / positives.sum(1)).mean()


def batch_hard(e, y, margin, *, over_all=False):
    d = squared(e).clamp_min(0).sqrt().tolist()
    costs = []
    for a in range(len(y)):  # one triplet per anchor: its farthest positive, its nearest negative
        positive = max(d[a][p] for p in range(len(y)) if p != a and y[p] == y[a])
        negative = min(d[a][q] for q in range(len(y)) if y[q] != y[a])
        costs.append(max(0.0, positive - negative + margin))
    paying = costs if over_all else [c for c in costs if c > 0]
    return torch.tensor(sum(paying) / len(paying) if paying else 0.0)


def wide_kernel(labels, mask, C):  # the answer: the visible labels' class shares, for every hidden node
    return F.one_hot(labels[mask], C).double().mean(0).expand(int((~mask).sum()), C)


def narrow_kernel(e):
    d = squared(e).fill_diagonal_(float("inf"))
    return F.one_hot(d.argmin(1), len(e)).to(e.dtype)


def soft_clamp(T, Y, alpha):
    return (1 - alpha) * torch.linalg.inv(torch.eye(len(T), dtype=T.dtype) - alpha * T) @ Y


def median_weight_sigma(e, w):
    d, _, _ = distances_upper(e)
    return float(d.median() / math.sqrt(-2 * math.log(w)))


def solve_gradient(A, B, G):
    grad_B = torch.linalg.inv(A).T @ G
    return -grad_B @ torch.linalg.solve(A, B).T, grad_B


def collapse(y, t):
    m = torch.bincount(y)[y].double()
    return (-1 / t + torch.log((m - 1) * math.exp(1 / t) + (len(y) - m))).mean()


def authors_node_loss(p, num_classes):  # the closed form, derived by hand
    rest = (1 - p) / (num_classes - 1)
    return math.log(math.exp(p) + (num_classes - 1) * math.exp(rest)) - p


def push_share(ce_term, ce_input, aux_term, aux_input):
    grad_ce = torch.autograd.grad(ce_term, ce_input, retain_graph=True)[0]
    grad_aux = torch.autograd.grad(aux_term, aux_input, retain_graph=True)[0]
    return float(grad_aux.norm() / (grad_ce.norm() + grad_aux.norm()))


def paired_verdict(differences, better, *, z_instead_of_t=False):
    n = len(differences)
    if n < 2:
        return "undecided at this sample size"
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    factor = 1.959964 if z_instead_of_t else scipy_stats.t.ppf(0.975, n - 1)
    low, high = mean - factor * sd / math.sqrt(n), mean + factor * sd / math.sqrt(n)
    if better == "lower":
        low, high = -high, -low
    return "supported" if low > 0 else "not supported" if high < 0 else "undecided at this sample size"


def cached_gradient(W, X, loss_of_embeddings, chunk_size):
    starts = range(0, len(X), chunk_size)
    with torch.no_grad():
        cached = torch.cat([X[s:s + chunk_size] @ W for s in starts])
    cached.requires_grad_()
    (upstream,) = torch.autograd.grad(loss_of_embeddings(cached), cached)
    return sum(X[s:s + chunk_size].T @ upstream[s:s + chunk_size] for s in starts)  # d(X_k W)/dW by hand


def ce_scales(sizes):
    return [len(sizes) * n / sum(sizes) for n in sizes]


def balanced_batch(labels, batch_size, generator):
    order = torch.randperm(len(labels), generator=generator).tolist()
    chosen = []
    for cls in sorted(set(labels.tolist())):
        chosen += [i for i in order if labels[i] == cls][:2]
    return chosen + [i for i in order if i not in chosen][: batch_size - len(chosen)]


def plain_gradient(W, X, loss_of_embeddings, chunk_size):  # right value, but every chunk's graph held at once
    leaf = W.clone().requires_grad_()
    return torch.autograd.grad(loss_of_embeddings(X @ leaf), leaf)[0]


CORRECT = {
    "00.1": max_pooling,
    "00.2": lambda e: F.cosine_similarity(e[:, None, :], e[None, :, :], dim=-1),
    "00.3": wide_kernel,
    "01.1": knn_graph,
    "01.2": kernel,
    "01.3": narrow_kernel,
    "02.1": absorption_steps,
    "02.2": harmonic,
    "02.3": soft_clamp,
    "03.1": stratified,
    "03.2": g_loss_parts,
    "03.3": broken_step,
    "03.4": authors_range,
    "04.1": sqrt_rule,
    "04.2": neighbours_sigma,
    "04.3": median_weight_sigma,
    "05.1": training_step,
    "05.2": silhouette,
    "05.3": solve_gradient,
    "06.1": supcon,
    "06.2": batch_hard,
    "06.3": collapse,
    "07.1": authors_node_loss,
    "07.2": push_share,
    "07.3": paired_verdict,
    "08.1": cached_gradient,
    "08.2": ce_scales,
    "08.3": balanced_batch,
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


MISTAKES = {
    "00.1": (lambda h, m: (h * m[..., None]).max(dim=1).values, "largest difference"),  # padding's zeros win
    "00.2": (lambda e: e @ e.T, "largest difference"),  # not normalised
    "00.3": (lambda y, m, C: torch.full((int((~m).sum()), C), 1.0 / C, dtype=torch.float64),
             "largest difference"),  # uniform, not the visible shares
    "01.1": (lambda w, k: w * torch.zeros_like(w).scatter_(1, w.topk(k, dim=1).indices, 1.0),
             "largest difference"),  # each row's own choice only, not symmetric
    "01.2": (lambda e, s: torch.exp(-squared(e) / (2 * s**2)), r"index \[(\d+), \1\]"),  # W_ii = 1
    "01.3": (lambda e: F.one_hot(squared(e).argmin(1), len(e)).double(), "index"),  # itself the nearest
    "02.1": (lambda T, m: torch.linalg.solve(torch.eye(int((~m).sum()), dtype=T.dtype) - T[~m][:, ~m],
                                             T[~m][:, m].sum(dim=1)), "largest difference"),  # P(absorbed)
    "02.2": (lambda T, y, m, C: harmonic(T, y, m, C).repeat(2, 1), "expected shape"),
    "02.3": (lambda T, Y, a: torch.linalg.solve(torch.eye(len(T), dtype=T.dtype) - a * T, Y),
             "largest difference"),  # the (1 - alpha) forgotten
    "03.1": (first_k_mask, "all gave the same mask"),
    "03.2": (lambda e, y, m, s, C: g_loss_parts(e, y, m, s, C).detach(), "carries no gradient"),
    "03.3": (one_class_at_a_time, "yours"),
    "03.4": (lambda C: (math.log(1 + (C - 1) / math.e), math.log(C)), "the highest is not"),  # log C
    "04.1": (lambda e: sqrt_rule(e) ** 2, "yours"),
    "04.2": (lambda e, k: sqrt_rule(e), "mean effective number of neighbours is"),  # SQRT
    "04.3": (lambda e, w: float(distances_upper(e)[0].median() / math.sqrt(-math.log(w))),
             "the median weight of the graph is"),  # the 2 forgotten
    "05.1": (step_without_zero_grad, "step 2"),
    "05.2": (lambda e, y: silhouette(e, y, count_itself=True), "yours"),  # itself among its class
    "05.3": (lambda A, B, G: (torch.linalg.inv(A) @ G @ torch.linalg.solve(A, B).T, torch.linalg.inv(A) @ G),
             r"grad_B"),  # A^-1 where A^-T belongs
    "06.1": (lambda e, y, t: supcon(e, y, t, keep_self=True), "largest difference"),
    "06.2": (lambda e, y, m: batch_hard(e, y, m, over_all=True), "largest difference"),
    "06.3": (lambda y, t: torch.log((torch.bincount(y)[y] - 1).double()).mean(), "largest difference"),
    "07.1": (lambda p, num_classes: -math.log(p), "yours"),  # NLL, not the softmax of F_u
    "07.2": (lambda c, e, a, f: float(torch.autograd.grad(a, f, retain_graph=True)[0].norm()
                                      / torch.autograd.grad(c, e, retain_graph=True)[0].norm()),
             "yours"),  # a ratio of the two norms, not a share
    "07.3": (lambda d, better: paired_verdict(d, better, z_instead_of_t=True), "expected"),
    "08.1": (plain_gradient, "carry the encoder's graph"),
    "08.2": (lambda sizes: [1.0] * len(sizes), "DDP's average"),  # uneven shares weighed equally
    "08.3": (lambda y, b, g: torch.randperm(len(y), generator=g)[:b].tolist(), "every class needs at least two"),
}


@pytest.fixture(autouse=True)
def fresh_failure_counts(monkeypatch):
    monkeypatch.setattr(checking, "failures", {})


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


import gloss_lite.sigma as sigma_module  # noqa: E402  (an alias under another name, for the test below)
from gloss_lite.sigma import sigma_sqrt as my_sqrt  # noqa: E402

alias = sigma_sqrt


@pytest.mark.parametrize("function", [
    sigma_sqrt,                                    # the reference itself
    lambda e: sigma_sqrt(e),                       # called by name
    lambda e: my_sqrt(e),                          # imported under another name
    lambda e: alias(e),                            # assigned to another name
    lambda e: sigma_module.sigma_sqrt(e),          # through the module
    lambda e: gloss_lite.sigma.pairwise_distances(e).median(),  # a helper it is built from
], ids=["itself", "by-name", "import-as", "alias", "module-attribute", "helper"])
def test_a_function_that_uses_the_reference_is_refused(function):
    with pytest.raises(ExerciseFailed, match=r"^Exercise 04.1 .*: not yet. Your function uses the reference "
                                             r"implementation \((sigma_sqrt|pairwise_distances)\)") as failure:
        check("04.1", function, seed=0)
    assert failure.value.reason == "reference"


def test_reference_uses_sees_closures_and_ignores_a_students_own_function_of_the_same_name():
    def make(reference):
        return lambda e: reference(e)

    assert reference_uses(make(sigma_sqrt), ("sigma_sqrt",)) == ["sigma_sqrt"]
    namespace = {}
    exec("import torch\ndef sigma_sqrt(e):\n    return 1.0\nf = lambda e: sigma_sqrt(e)", namespace)
    assert reference_uses(namespace["f"], ("sigma_sqrt",)) == []
    assert reference_uses(CORRECT["04.1"], EXERCISES["04.1"].forbidden) == []


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_no_correct_function_here_uses_a_forbidden_name(exercise_id):
    assert reference_uses(CORRECT[exercise_id], EXERCISES[exercise_id].forbidden) == []


def never_returns(embeddings, sigma):
    while True:
        try:
            time.sleep(0.01)
        except Exception:  # a student's broad except must not swallow the time limit
            pass


def test_a_function_that_never_returns_fails_after_the_time_limit():
    start = time.perf_counter()
    with pytest.raises(ExerciseFailed, match=r"did not finish within 0.5 s \(stopped at input 1 of 5: \d+ x \d+") \
            as failure:
        check("01.2", never_returns, seed=0, timeout=0.5)
    assert failure.value.reason == "timeout"
    assert time.perf_counter() - start < 5


def test_the_time_limit_holds_off_the_main_thread_too():
    failures = []

    def run():
        try:
            check("01.2", lambda e, s: time.sleep(30), seed=0, timeout=0.5)
        except ExerciseFailed as failure:
            failures.append(str(failure))

    thread = threading.Thread(target=run)
    start = time.perf_counter()
    thread.start()
    thread.join(10)
    assert time.perf_counter() - start < 5
    assert len(failures) == 1 and "did not finish within 0.5 s" in failures[0]


def test_an_exercise_with_parts_gives_partial_credit():
    with pytest.raises(ExerciseFailed, match="carries no gradient") as value_only:
        check("03.2", MISTAKES["03.2"][0], seed=0)
    assert value_only.value.credit == 0.5
    with pytest.raises(ExerciseFailed, match="grad_B is right, grad_A is not") as half:
        check("05.3", lambda A, B, G: (torch.zeros_like(A), solve_gradient(A, B, G)[1]), seed=0)
    assert half.value.credit == 0.5
    with pytest.raises(ExerciseFailed) as nothing:
        check("05.3", MISTAKES["05.3"][0], seed=0)
    assert nothing.value.credit == 0.0


def test_a_fuller_hint_appears_from_the_third_failed_try():
    wrong = MISTAKES["04.3"][0]
    messages = []
    for _ in range(3):
        with pytest.raises(ExerciseFailed) as failure:
            check("04.3", wrong, seed=0)
        messages.append(str(failure.value))
    assert "fuller hint" not in messages[0] and "fuller hint" not in messages[1]
    assert f"A fuller hint (after 3 tries): {EXERCISES['04.3'].more_hint}." in messages[2]


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
def test_every_notebook_has_three_coded_exercises_and_open_questions(path):
    sources, checks = exercise_cells(path)
    ids = [exercise_id for exercise_id, _ in checks]
    assert len(ids) >= 3 and all(i.startswith(path.name[:2] + ".") for i in ids), ids
    assert set(ids) == {i for i in EXERCISES if i.startswith(path.name[:2] + ".")}
    for exercise_id, function in checks:
        assert function == EXERCISES[exercise_id].function
        (definition,) = [s for s in sources if s.startswith(f"def {function}(")]
        assert "### BEGIN SOLUTION" in definition and "### END SOLUTION" in definition
    roles = [c["metadata"].get("gloss_lite") for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]
    for exercise_id in ids:  # the grader finds the cells by these, not by position
        assert roles.count({"exercise": exercise_id, "role": "solution"}) == 1
        assert roles.count({"exercise": exercise_id, "role": "check"}) == 1
    questions = [s for s in sources if s.startswith("### Questions to explore")]
    assert len(questions) == 1 and re.search(r"^1\. \*\*", questions[0], re.M), "one list of open questions"


def test_importing_check_loads_neither_training_nor_data_nor_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; from gloss_lite.course.checking import check; "
            "heavy = ('transformers', 'pandas', 'sklearn', 'scipy', 'papermill', 'matplotlib', 'optuna', "
            "'gloss_lite.training', 'gloss_lite.data', 'gloss_lite.encoders', 'gloss_lite.reproduction'); "
            "print([m for m in heavy if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_every_exercise_sits_in_the_module_of_its_notebook():
    from gloss_lite.course.exercises import NOTEBOOK_MODULES

    for module in NOTEBOOK_MODULES:
        number = module.__name__.rpartition(".ex")[2]
        assert module.EXERCISES and all(i.startswith(number + ".") for i in module.EXERCISES), module.__name__
