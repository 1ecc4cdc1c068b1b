import numpy as np
import pytest
import torch
from sklearn.semi_supervised import LabelPropagation

from gloss_lite.graph import gaussian_affinity, transition_matrix
from gloss_lite.lpa import propagate


def clustered_problem(n=30, num_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    centres = torch.randn(num_classes, 6, generator=g, dtype=torch.float64) * 2
    embeddings = centres[labels] + torch.randn(n, 6, generator=g, dtype=torch.float64)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[: n // 2]] = True
    return embeddings, labels, mask


@pytest.mark.parametrize("scheme", ["row", "gloss"])
def test_closed_form_equals_iterative(scheme):
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5), scheme)
    closed = propagate(t, y, mask, 3)
    iterative = propagate(t, y, mask, 3, method="iterative", max_iter=100_000)
    torch.testing.assert_close(closed, iterative, atol=1e-6, rtol=0)


def test_closed_form_is_the_harmonic_fixed_point():
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5), "row")
    f = propagate(t, y, mask, 3, teleport=0)
    hidden = ~mask
    # every hidden row is the T-weighted average of all rows
    torch.testing.assert_close((t @ f)[hidden], f[hidden], atol=1e-12, rtol=0)
    torch.testing.assert_close(f[mask], torch.nn.functional.one_hot(y[mask], 3).double())
    torch.testing.assert_close(f.sum(dim=1), torch.ones(len(f), dtype=f.dtype))


def test_row_scheme_equals_sklearn_label_propagation():
    e, y, mask = clustered_problem(n=40)
    w = gaussian_affinity(e, 0.5)
    ours = propagate(transition_matrix(w, "row"), y, mask, 3)
    y_sklearn = np.where(mask.numpy(), y.numpy(), -1)
    model = LabelPropagation(kernel=lambda a, b: w.numpy(), max_iter=100_000, tol=1e-12)
    model.fit(e.numpy(), y_sklearn)
    hidden = (~mask).numpy()
    np.testing.assert_allclose(ours.numpy()[hidden], model.label_distributions_[hidden], atol=1e-5)


def test_labels_of_hidden_nodes_are_ignored():
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    y_unknown = torch.where(mask, y, torch.full_like(y, -1))
    torch.testing.assert_close(propagate(t, y, mask, 3), propagate(t, y_unknown, mask, 3))


@pytest.mark.parametrize("method", ["closed_form", "iterative"])
def test_propagation_is_differentiable_in_float32_and_float64(method):
    for dtype in (torch.float32, torch.float64):
        e, y, mask = clustered_problem()
        e = e.to(dtype).requires_grad_()
        f = propagate(transition_matrix(gaussian_affinity(e, 0.5)), y, mask, 3, method=method)
        assert f.dtype == dtype
        f[~mask, 0].sum().backward()
        assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


def test_a_cut_off_hidden_pair_gets_the_visible_label_mix_not_nan():
    # Nodes 2 and 3 point only at each other: I - T_UU is singular without the teleport.
    t = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    y = torch.tensor([0, 1, -1, -1])
    mask = torch.tensor([True, True, False, False])
    f = propagate(t, y, mask, 2)
    torch.testing.assert_close(f[2:], torch.full((2, 2), 0.5, dtype=torch.float64))


def test_iterative_warns_when_it_does_not_converge():
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        propagate(t, y, mask, 3, method="iterative", max_iter=2)


def test_bad_inputs_are_refused():
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    with pytest.raises(ValueError, match="no visible label"):
        propagate(t, y, torch.zeros_like(mask), 3)
    with pytest.raises(ValueError, match=r"visible labels must lie in \[0, 2\)"):
        propagate(t, y, mask, 2)
    with pytest.raises(ValueError, match="shapes disagree"):
        propagate(t, y[:-1], mask[:-1], 3)
    with pytest.raises(ValueError, match="bool tensor"):
        propagate(t, y, mask.long(), 3)
    with pytest.raises(ValueError, match="method must be one of"):
        propagate(t, y, mask, 3, method="magic")
    with pytest.raises(ValueError, match="num_classes"):
        propagate(t, y, mask, 0)


def test_a_transition_with_nan_is_refused():
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    t[3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"transition holds NaN or Inf \(rows \[3\]\)"):
        propagate(t, y, mask, 3)


def test_a_matrix_whose_rows_do_not_sum_to_one_is_refused():
    e, y, mask = clustered_problem()
    w = gaussian_affinity(e, 0.5)  # an affinity, not yet a transition matrix
    with pytest.raises(ValueError, match=r"rows must sum to 1 .* row \d+ sums to .*transition_matrix\(W\)"):
        propagate(w, y, mask, 3)
    t = transition_matrix(w)
    negative = t.clone()
    negative[0, 1], negative[0, 2] = negative[0, 1] + 0.5, negative[0, 2] - 0.5
    with pytest.raises(ValueError, match=r"negative entries \(rows \[0\]\)"):
        propagate(negative, y, mask, 3)
    with pytest.raises(ValueError, match="float tensor"):
        propagate((t > 0.1).long(), y, mask, 3)


@pytest.mark.parametrize("teleport", [-0.1, 1.5, float("nan"), True])
def test_teleport_outside_zero_one_is_refused(teleport):
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    with pytest.raises(ValueError, match=r"teleport .* must lie in \[0, 1\]"):
        propagate(t, y, mask, 3, teleport=teleport)
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        propagate(t, y, mask, 3, method="iterative", max_iter=0)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_labels_of_any_width_give_the_int64_result(dtype):
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    torch.testing.assert_close(propagate(t, y.to(dtype), mask, 3), propagate(t, y, mask, 3))


def test_bool_labels_are_refused_with_a_hint():
    e, y, mask = clustered_problem(num_classes=2)
    t = transition_matrix(gaussian_affinity(e, 0.5))
    with pytest.raises(ValueError, match=r"got a torch.bool tensor .*swap labels and labeled_mask"):
        propagate(t, y.bool(), mask, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_solved_in_float32_and_returned_in_its_dtype(dtype):
    e, y, mask = clustered_problem()
    t = transition_matrix(gaussian_affinity(e, 0.5))
    low = t.to(dtype)
    f = propagate(low, y, mask, 3)
    assert f.dtype == dtype
    torch.testing.assert_close(f.float(), propagate(t, y, mask, 3).float(), atol=0.02, rtol=0)
