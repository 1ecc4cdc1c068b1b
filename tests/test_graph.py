import math

import pytest
import torch

from gloss_lite.graph import gaussian_affinity, knn_sparsify, squared_distances, transition_matrix


def random_embeddings(n=12, d=5, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def hand_affinity(embeddings, sigma):
    """Loop-by-loop Gaussian kernel on L2-normalised rows, the definition written out."""
    unit = [row / row.norm() for row in embeddings]
    n = len(unit)
    w = torch.zeros(n, n, dtype=embeddings.dtype)
    for i in range(n):
        for j in range(n):
            if i != j:
                w[i, j] = math.exp(-float(((unit[i] - unit[j]) ** 2).sum()) / (2 * sigma**2))
    return w


def test_affinity_matches_the_definition_and_is_symmetric_with_zero_diagonal():
    e = random_embeddings()
    w = gaussian_affinity(e, 0.7)
    torch.testing.assert_close(w, hand_affinity(e, 0.7), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w, w.T)
    assert torch.all(w.diagonal() == 0)


def test_normalize_false_uses_raw_distances():
    e = random_embeddings()
    w = gaussian_affinity(e, 2.0, normalize=False)
    d2 = torch.cdist(e, e) ** 2
    expected = torch.exp(-d2 / 8.0) * (1 - torch.eye(len(e), dtype=e.dtype))
    torch.testing.assert_close(w, expected, rtol=1e-9, atol=1e-12)


def test_log_affinity_is_log_of_affinity():
    e = random_embeddings()
    log_w = gaussian_affinity(e, 0.5, log=True)
    assert torch.all(torch.isneginf(log_w.diagonal()))
    off = ~torch.eye(len(e), dtype=torch.bool)
    torch.testing.assert_close(log_w[off].exp(), gaussian_affinity(e, 0.5)[off])


def test_squared_distances_of_unit_vectors_are_two_minus_two_cosine():
    e = random_embeddings()
    d2 = squared_distances(e)
    unit = torch.nn.functional.normalize(e, dim=1)
    expected = (2 - 2 * unit @ unit.T) * (1 - torch.eye(len(e), dtype=e.dtype))
    torch.testing.assert_close(d2, expected)


def test_row_transition_is_degree_normalised():
    w = gaussian_affinity(random_embeddings(), 0.6)
    t = transition_matrix(w, "row")
    torch.testing.assert_close(t, w / w.sum(dim=1, keepdim=True))


def test_gloss_transition_follows_symmetric_column_row_steps():
    w = gaussian_affinity(random_embeddings(), 0.6)
    d = w.sum(dim=1)
    s = w / torch.sqrt(d[:, None] * d[None, :])
    c = s / s.sum(dim=0, keepdim=True)
    expected = c / c.sum(dim=1, keepdim=True)
    t = transition_matrix(w, "gloss")
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(len(t), dtype=t.dtype))


def test_gloss_propagation_is_zhu_ghahramanis_loop_run_on_the_symmetric_graph():
    """Their loop: F <- T F with T the column-normalised graph, rows of F renormalised, labels
    clamped. Run on S = D^-1/2 W D^-1/2 it reaches the closed form of the `gloss` transition."""
    from gloss_lite.lpa import propagate

    w = gaussian_affinity(random_embeddings(), 0.6)
    d = w.sum(dim=1)
    s = w / torch.sqrt(d[:, None] * d[None, :])
    column_normalised = s / s.sum(dim=0, keepdim=True)
    labels = torch.arange(len(w)) % 3
    visible = torch.arange(len(w)) < 6
    y = torch.nn.functional.one_hot(labels, 3).to(w.dtype)
    f = torch.where(visible[:, None], y, torch.full_like(y, 1 / 3))
    for _ in range(2000):
        f = column_normalised @ f
        f = f / f.sum(dim=1, keepdim=True)
        f = torch.where(visible[:, None], y, f)
    closed = propagate(transition_matrix(w, "gloss"), labels, visible, 3, teleport=0)
    torch.testing.assert_close(f, closed, atol=1e-9, rtol=0)


@pytest.mark.parametrize("scheme", ["gloss", "row"])
def test_log_path_survives_a_sigma_where_every_weight_underflows(scheme):
    e = random_embeddings()
    assert torch.all(gaussian_affinity(e, 1e-3) == 0)  # exp(-d^2 / 2e-6) is 0 in float64
    t = transition_matrix(gaussian_affinity(e, 1e-3, log=True), scheme, log=True)
    assert torch.isfinite(t).all()
    torch.testing.assert_close(t.sum(dim=1), torch.ones(len(t), dtype=t.dtype))
    if scheme == "row":  # each row puts (almost) all its mass on the nearest neighbour
        d2 = squared_distances(e) + torch.eye(len(e), dtype=e.dtype) * 10
        assert torch.equal(t.argmax(dim=1), d2.argmin(dim=1))
        assert torch.all(t.max(dim=1).values > 0.999)


def test_underflowed_affinity_is_refused_with_a_hint():
    w = gaussian_affinity(random_embeddings(), 1e-3)
    with pytest.raises(ValueError, match="no edge of positive weight.*log=True"):
        transition_matrix(w)


@pytest.mark.parametrize(
    "sigma, message",
    [(0.0, "finite and > 0"), (-1.0, "finite and > 0"), (float("nan"), "finite and > 0"),
     (float("inf"), "finite and > 0"), ("wide", "positive number")],
)
def test_bad_sigma_is_refused(sigma, message):
    with pytest.raises(ValueError, match=message):
        gaussian_affinity(random_embeddings(), sigma)


def test_bad_embeddings_are_refused():
    e = random_embeddings()
    e[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf \(rows \[3\]\)"):
        gaussian_affinity(e, 1.0)
    with pytest.raises(ValueError, match="at least 2 nodes"):
        gaussian_affinity(random_embeddings(n=1), 1.0)
    with pytest.raises(ValueError, match="must be 2-D"):
        gaussian_affinity(torch.randn(4), 1.0)
    with pytest.raises(ValueError, match="floating point"):
        gaussian_affinity(torch.ones(4, 3, dtype=torch.long), 1.0)


def test_bad_transition_inputs_are_refused():
    w = gaussian_affinity(random_embeddings(), 1.0)
    with pytest.raises(ValueError, match="scheme must be one of"):
        transition_matrix(w, "sym")
    with pytest.raises(ValueError, match="square"):
        transition_matrix(w[:, :5])
    with pytest.raises(ValueError, match="non-negative"):
        transition_matrix(-w)


def test_knn_sparsify_keeps_each_nodes_k_strongest_edges_symmetrically():
    w = gaussian_affinity(random_embeddings(n=10), 0.5)
    neighbours = {i: sorted((j for j in range(10) if j != i), key=lambda j: -float(w[i, j]))[:3] for i in range(10)}
    expected = torch.zeros_like(w)
    for i, chosen in neighbours.items():
        for j in chosen:  # an edge stays if either end chose it
            expected[i, j] = expected[j, i] = w[i, j]
    torch.testing.assert_close(knn_sparsify(w, 3), expected)
    with pytest.raises(ValueError, match="k must be an int between 1 and n - 1 = 9"):
        knn_sparsify(w, 10)


def test_class_structure_measures_by_hand():
    from gloss_lite.graph import block_contrast, chance_share, within_class_share

    w = torch.tensor([[0, 4, 1, 1], [4, 0, 1, 1], [1, 1, 0, 2], [1, 1, 2, 0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    # within-class edges (both directions): 4, 4, 2, 2 = 12 of a total 12 + 8 = 20
    assert within_class_share(w, labels) == pytest.approx(12 / 20)
    assert chance_share(labels) == pytest.approx(4 / 12)
    assert block_contrast(w, labels) == pytest.approx((12 / 4) / (8 / 8))
    with pytest.raises(ValueError, match="at least two classes"):
        block_contrast(w, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "sigma, dtype, message",
    [
        (1e200, torch.float64, r"sigma = 1e\+200 is too large for torch.float64: every weight .* rounds to 1"),
        (1e5, torch.float32, r"sigma = 100000 is too large for torch.float32"),
        (1e-200, torch.float64, r"sigma = 1e-200 is too small for torch.float64"),
        (1e-25, torch.float32, r"sigma = 1e-25 is too small for torch.float32"),
    ],
)
def test_sigma_for_which_the_kernel_is_degenerate_is_refused(sigma, dtype, message):
    with pytest.raises(ValueError, match=message):
        gaussian_affinity(random_embeddings(dtype=dtype), sigma)


def test_the_degenerate_bounds_are_where_the_kernel_really_degenerates():
    e = random_embeddings(dtype=torch.float32)
    w = gaussian_affinity(e, 5e3)  # below the bound: the weights still differ
    assert len(torch.unique(w[~torch.eye(len(w), dtype=torch.bool)])) > 1
    unit = torch.nn.functional.normalize(e, dim=1)
    exponent = (unit @ unit.T - 1.0) / 1e5**2  # above it: every off-diagonal weight is exactly 1
    assert torch.all(exponent.exp() == 1.0)


def test_sigma_tensors_must_be_0d_floats():
    e = random_embeddings()
    with pytest.raises(ValueError, match=r"0-d float tensor, got a torch.float32 tensor of shape \(2,\)"):
        gaussian_affinity(e, torch.tensor([0.5, 0.7]))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        gaussian_affinity(e, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="torch.int64 tensor"):
        gaussian_affinity(e, torch.tensor(1))
    torch.testing.assert_close(gaussian_affinity(e, torch.tensor(0.7, dtype=torch.float64)), gaussian_affinity(e, 0.7))


def test_a_log_affinity_with_nan_or_plus_inf_is_refused():
    log_w = gaussian_affinity(random_embeddings(), 0.5, log=True)
    log_w[2, 3] = float("nan")
    with pytest.raises(ValueError, match="log affinity must be free of NaN and \\+inf"):
        transition_matrix(log_w, log=True)
