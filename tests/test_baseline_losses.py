"""The baseline losses against the formulas written out by hand, pair by pair and triplet by triplet."""

import itertools
import math

import pytest
import torch

from gloss_lite.baselines import ContrastiveLoss, CosineMSELoss, SupConLoss, TripletLoss


def batch():
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(9, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 1])
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    return embeddings, labels, unit


def mean_of_positive(values):
    positive = [v for v in values if v > 0]
    return sum(positive) / len(positive) if positive else 0.0


def mean_log_prob_of_positives(u, y, tau):
    """Per anchor: the mean over its positives p of log(exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau));
    None for an anchor without a positive."""
    sim = (u @ u.T).tolist()
    result = []
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        log_norm = math.log(sum(math.exp(sim[i][a] / tau) for a in others))
        positives = [p for p in others if y[p] == y[i]]
        result.append(sum(sim[i][p] / tau - log_norm for p in positives) / len(positives) if positives else None)
    return result


def test_supcon_by_hand():
    e, y, u = batch()
    tau = 0.2
    expected = mean_of_positive([-m for m in mean_log_prob_of_positives(u, y, tau)])
    assert float(SupConLoss(tau)(e, y)) == pytest.approx(expected, rel=1e-5)


def test_supcon_averages_over_anchors_with_a_nonzero_loss_not_over_anchors_with_a_positive():
    # Anchors 0 and 1 are one point with one positive (each other) whose softmax term is 1 in
    # float32 (every other logit is 20 or 40 lower): their loss is exactly 0, and the
    # reduction drops them. Anchors 2 and 3 have a positive and a loss above 0.
    e = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.3, 0.954],
                      [-1.0, 0.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1, 2])
    tau = 0.05
    unit = torch.nn.functional.normalize(e.double(), dim=1)
    per_anchor = [None if m is None else -m
                  for m in mean_log_prob_of_positives(unit, y, tau)]
    assert per_anchor[0] < 1e-7 and per_anchor[1] < 1e-7 and per_anchor[4] is None
    loss = float(SupConLoss(tau)(e, y))
    with_a_positive = sum(per_anchor[:4]) / 4  # the mean over the anchors that have a positive
    assert loss == pytest.approx(mean_of_positive(per_anchor[2:4]), rel=1e-4)
    assert loss == pytest.approx(2 * with_a_positive, rel=1e-4)


def test_an_anchor_with_k_positives_pays_at_least_log_k():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0] * 5 + [1] * 4 + [2] * 3)
    unit = torch.nn.functional.normalize(e, dim=1)
    for tau in (0.05, 0.1, 1.0):
        per_anchor = [-m for m in mean_log_prob_of_positives(unit, y, tau)]
        positives = torch.bincount(y)[y] - 1
        assert all(loss >= math.log(k) - 1e-12 for loss, k in zip(per_anchor, positives.tolist()))


def test_batch_all_triplet_by_hand():
    e, y, u = batch()
    d = torch.cdist(u, u).tolist()
    losses = [
        max(0.0, d[a][p] - d[a][n] + 0.1)
        for a, p, n in itertools.permutations(range(len(y)), 3)
        if y[a] == y[p] and y[a] != y[n]
    ]
    assert float(TripletLoss(0.1, "all")(e, y)) == pytest.approx(mean_of_positive(losses), rel=1e-5)


def test_batch_hard_triplet_by_hand():
    e, y, u = batch()
    d = torch.cdist(u, u).tolist()
    losses = []
    for a in range(len(y)):
        hardest_positive = max(d[a][p] for p in range(len(y)) if p != a and y[p] == y[a])
        hardest_negative = min(d[a][n] for n in range(len(y)) if y[n] != y[a])
        losses.append(max(0.0, hardest_positive - hardest_negative + 0.5))
    assert float(TripletLoss(0.5, "hard")(e, y)) == pytest.approx(mean_of_positive(losses), rel=1e-5)


def test_contrastive_by_hand():
    e, y, u = batch()
    d = torch.cdist(u, u).tolist()
    pairs = [(i, j) for i, j in itertools.permutations(range(len(y)), 2)]
    positive = [d[i][j] for i, j in pairs if y[i] == y[j]]
    negative = [max(0.0, 0.8 - d[i][j]) for i, j in pairs if y[i] != y[j]]
    expected = mean_of_positive(positive) + mean_of_positive(negative)
    assert float(ContrastiveLoss(0.8)(e, y)) == pytest.approx(expected, rel=1e-5)


def test_authors_supcon_by_hand_scaled_and_averaged_over_all_anchors():
    e, y, u = batch()
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # the last anchor has no positive: it counts as 0
    tau = 0.1
    per_anchor = [-(tau / 0.07) * (m or 0.0) for m in mean_log_prob_of_positives(u, y, tau)]
    expected = sum(per_anchor) / len(per_anchor)
    assert float(SupConLoss(tau, base_temperature=0.07)(e, y)) == pytest.approx(expected, rel=1e-5)


def test_authors_triplet_on_raw_embeddings_by_hand():
    e, y, _ = batch()
    d = torch.cdist(e, e).tolist()  # raw, not normalised
    losses = [
        max(0.0, d[a][p] - d[a][n] + 5.0)
        for a, p, n in itertools.permutations(range(len(y)), 3)
        if y[a] == y[p] and y[a] != y[n]
    ]
    got = TripletLoss(5.0, "all", normalize=False)(e, y)
    assert float(got) == pytest.approx(mean_of_positive(losses), rel=1e-5)
    assert float(got) != pytest.approx(float(TripletLoss(5.0, "all")(e, y)), rel=1e-3)


def test_cosine_mse_by_hand():
    e, y, u = batch()
    sim = (u @ u.T).tolist()
    pairs = list(itertools.combinations(range(len(y)), 2))
    expected = sum((sim[i][j] - float(y[i] == y[j])) ** 2 for i, j in pairs) / len(pairs)
    assert float(CosineMSELoss()(e, y)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", [SupConLoss(), TripletLoss(), TripletLoss(mining="hard"), ContrastiveLoss(),
                                  SupConLoss(0.1, base_temperature=0.07), TripletLoss(5.0, normalize=False),
                                  CosineMSELoss()])
def test_baselines_have_gradients_and_accept_bfloat16(loss):
    e, y, _ = batch()
    e = e.float().requires_grad_()
    loss(e, y).backward()
    assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0
    assert torch.isfinite(loss(e.detach().bfloat16(), y))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mining must be one of"):
        TripletLoss(mining="semi")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SupConLoss(0.0)
    with pytest.raises(ValueError, match="base_temperature must be > 0"):
        SupConLoss(0.1, base_temperature=0.0)
    with pytest.raises(ValueError, match="margin must be > 0"):
        ContrastiveLoss(-1.0)
