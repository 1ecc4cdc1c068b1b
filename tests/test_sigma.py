import itertools
import math
import statistics

import pytest
import torch

from gloss_lite.sigma import sigma_dicm, sigma_sqrt


def unit_rows(e):
    return [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in e.tolist()]


def test_sigma_sqrt_by_hand():
    e = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    rows = unit_rows(e)
    distances = [math.dist(a, b) for a, b in itertools.combinations(rows, 2)]
    # torch.median takes the lower middle of an even count; 36 pairs here
    lower_median = sorted(distances)[(len(distances) - 1) // 2]
    assert sigma_sqrt(e) == pytest.approx(math.sqrt(lower_median / 3), rel=1e-6)
    odd = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))  # 15 pairs: a true middle
    distances = [math.dist(a, b) for a, b in itertools.combinations(unit_rows(odd), 2)]
    assert sigma_sqrt(odd) == pytest.approx(math.sqrt(statistics.median(distances) / 3), rel=1e-6)


def test_sigma_sqrt_is_scale_invariant_because_rows_are_normalised():
    e = torch.randn(10, 5, generator=torch.Generator().manual_seed(2))
    assert sigma_sqrt(e) == pytest.approx(sigma_sqrt(7.5 * e), rel=1e-9)


def test_sigma_dicm_by_hand_and_skips_zero_distances():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])  # rows 0 and 1 coincide with different labels
    rows = unit_rows(e)
    between = [math.dist(rows[i], rows[j]) for i in range(4) for j in range(4) if labels[i] != labels[j]]
    expected = min(d for d in between if d > 0) / 3
    assert sigma_dicm(e, labels) == pytest.approx(expected, rel=1e-9)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="different classes"):
        sigma_dicm(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="shapes disagree"):
        sigma_dicm(torch.randn(5, 3), torch.arange(4))
    with pytest.raises(ValueError, match="median distance 0"):
        sigma_sqrt(torch.ones(5, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        sigma_sqrt(torch.tensor([[1.0, float("inf")], [0.0, 1.0]]))


def test_class_names_and_other_non_ids_are_refused_by_sigma_dicm():
    e = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="integer class ids, got strings; map each class name to an id"):
        sigma_dicm(e, ["pos", "neg", "pos", "neg"])
    with pytest.raises(ValueError, match="integer tensor of class ids, got a torch.float32 tensor"):
        sigma_dicm(e, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="integer tensor of class ids, got a torch.bool tensor"):
        sigma_dicm(e, torch.tensor([True, False, True, False]))
    assert sigma_dicm(e, [0, 1, 0, 1]) == sigma_dicm(e, torch.tensor([0, 1, 0, 1], dtype=torch.int32))


def test_authors_sqrt_takes_the_median_of_the_full_matrix_with_its_zero_diagonal():
    e = torch.randn(7, 4, generator=torch.Generator().manual_seed(3))
    rows = unit_rows(e)
    entries = [math.dist(a, b) for a in rows for b in rows]  # 49 entries, 7 of them 0
    assert sum(d == 0 for d in entries) == 7
    expected = math.sqrt(statistics.median(entries) / 3)  # odd count: a true middle
    assert sigma_sqrt(e, include_diagonal=True) == pytest.approx(expected, rel=1e-6)
    assert sigma_sqrt(e, include_diagonal=True) < sigma_sqrt(e)


def test_authors_dicm_fallback_is_the_median_over_three():
    e = torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    one_class = torch.zeros(6, dtype=torch.long)
    distances = [math.dist(a, b) for a, b in itertools.combinations(unit_rows(e), 2)]  # 15 pairs
    expected = statistics.median(distances) / 3
    assert sigma_dicm(e, one_class, fallback=True) == pytest.approx(expected, rel=1e-6)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    assert sigma_dicm(e, labels, fallback=True) == sigma_dicm(e, labels)  # no fallback needed
