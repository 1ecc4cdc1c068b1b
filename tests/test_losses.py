import math

import pytest
import torch
import torch.nn.functional as F

from gloss_lite.graph import gaussian_affinity, transition_matrix
from gloss_lite.losses import GLoss, g_loss, mix_losses
from gloss_lite.lpa import propagate
from gloss_lite.masking import split_mask


def batch(n=18, d=6, num_classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    embeddings = torch.randn(num_classes, d, generator=g, dtype=dtype)[labels] + 0.8 * torch.randn(
        n, d, generator=g, dtype=dtype
    )
    mask = split_mask(labels, 0.5, generator=g)
    return embeddings, labels, mask


def test_nll_target_is_the_log_likelihood_of_the_propagated_labels():
    e, y, mask = batch()
    f = propagate(transition_matrix(gaussian_affinity(e, 0.6), "gloss"), y, mask, 3)
    hidden = ~mask
    by_hand = -torch.log(f[hidden, y[hidden]]).mean()
    torch.testing.assert_close(g_loss(e, y, mask, sigma=0.6, num_classes=3), by_hand)


def test_authors_target_is_cross_entropy_on_probabilities():
    e, y, mask = batch()
    f = propagate(transition_matrix(gaussian_affinity(e, 0.6), "row"), y, mask, 3)
    hidden = ~mask
    by_hand = (-f[hidden].gather(1, y[hidden, None]).squeeze(1) + torch.logsumexp(f[hidden], dim=1)).mean()
    got = g_loss(e, y, mask, sigma=0.6, num_classes=3, scheme="row", target="authors")
    torch.testing.assert_close(got, by_hand)
    # its floor for a perfect prediction is log(1 + (C - 1) / e), not 0
    perfect = F.cross_entropy(torch.eye(3, dtype=torch.float64), torch.arange(3))
    assert float(perfect) == pytest.approx(math.log(1 + 2 / math.e))


def test_class_weights_match_weighted_nll():
    e, y, mask = batch()
    w = torch.tensor([1.0, 3.0, 0.5])
    f = propagate(transition_matrix(gaussian_affinity(e, 0.6)), y, mask, 3)
    hidden = ~mask
    expected = F.nll_loss(f[hidden].log(), y[hidden], weight=w.double())
    torch.testing.assert_close(g_loss(e, y, mask, sigma=0.6, num_classes=3, class_weights=w), expected)


@pytest.mark.parametrize("scheme", ["gloss", "row"])
@pytest.mark.parametrize("target", ["nll", "authors"])
def test_gradcheck_wrt_embeddings(scheme, target):
    e, y, mask = batch(n=10, d=4)
    e.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: g_loss(x, y, mask, sigma=0.7, num_classes=3, scheme=scheme, target=target), (e,)
    )


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scheme", ["gloss", "row"])
def test_loss_and_gradient_stay_finite_over_six_decades_of_sigma(sigma, dtype, scheme):
    e, y, mask = batch(n=32, dtype=dtype)
    e.requires_grad_()
    loss = g_loss(e, y, mask, sigma=sigma, num_classes=3, scheme=scheme)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(e.grad).all()


def test_huge_sigma_gives_the_class_prior_of_the_visible_nodes():
    e, y, mask = batch()
    # every weight ~1: each hidden node's distribution is the visible label mix (row scheme)
    prior = torch.bincount(y[mask], minlength=3).double() / mask.sum()
    expected = -torch.log(prior[y[~mask]]).mean()
    got = g_loss(e, y, mask, sigma=1e4, num_classes=3, scheme="row")
    assert float(got) == pytest.approx(float(expected), rel=1e-3)


def test_gradient_pulls_a_hidden_point_towards_its_class():
    # two visible clusters at (+1, 0) and (-1, 0); a hidden class-0 point sits in between
    e = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1], [0.1, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 0])
    mask = torch.tensor([True, True, True, True, False])
    e.requires_grad_()
    g_loss(e, y, mask, sigma=0.5, num_classes=2, scheme="row").backward()
    assert e.grad[4, 0] < 0  # descending the loss moves it towards +x, its own class


def test_gloss_module_same_seed_same_mask_same_loss():
    e, y, _ = batch()
    first, second = GLoss(3, 0.6, gamma=0.6, seed=3), GLoss(3, 0.6, gamma=0.6, seed=3)
    for _ in range(3):
        assert torch.equal(first(e, y), second(e, y))
        assert torch.equal(first.last_mask, second.last_mask)
    expected = g_loss(e, y, first.last_mask, sigma=0.6, num_classes=3)
    torch.testing.assert_close(first(e, y).detach(), g_loss(e, y, first.last_mask, sigma=0.6, num_classes=3))
    assert expected.shape == ()


def test_half_precision_embeddings_are_promoted():
    e, y, mask = batch(dtype=torch.float32)
    expected = g_loss(e, y, mask, sigma=0.6, num_classes=3)
    got = g_loss(e.bfloat16(), y, mask, sigma=0.6, num_classes=3)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(expected), rel=5e-2)


def test_mix_losses():
    ce, gl = torch.tensor(2.0), torch.tensor(4.0)
    assert float(mix_losses(ce, gl, 0.25)) == pytest.approx(0.75 * 2 + 0.25 * 4)
    assert float(mix_losses(ce, gl, 0.0)) == 2.0
    for lam in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match=r"lam .* must lie in \[0, 1\]"):
            mix_losses(ce, gl, lam)


def test_bad_inputs_are_refused():
    e, y, mask = batch()
    with pytest.raises(ValueError, match="no hidden node"):
        g_loss(e, y, torch.ones_like(mask), sigma=1.0, num_classes=3)
    with pytest.raises(ValueError, match="no visible label"):
        g_loss(e, y, torch.zeros_like(mask), sigma=1.0, num_classes=3)
    with pytest.raises(ValueError, match="shapes disagree"):
        g_loss(e[:-1], y, mask, sigma=1.0, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        g_loss(e, torch.where(mask, y, torch.full_like(y, 5)), mask, sigma=1.0, num_classes=3)
    with pytest.raises(ValueError, match="finite and > 0"):
        g_loss(e, y, mask, sigma=0.0, num_classes=3)
    bad = e.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        g_loss(bad, y, mask, sigma=1.0, num_classes=3)
    with pytest.raises(ValueError, match="at least 2 nodes"):
        g_loss(e[:1], y[:1], mask[:1], sigma=1.0, num_classes=3)
    hidden_only_class = (y != 2) & mask  # class 2 is hidden everywhere
    with pytest.raises(ValueError, match=r"hidden classes \[2\] have no visible node"):
        g_loss(e, y, hidden_only_class, sigma=1.0, num_classes=3)
    with pytest.raises(ValueError, match="target must be one of"):
        g_loss(e, y, mask, sigma=1.0, num_classes=3, target="mse")
    with pytest.raises(ValueError, match="class_weights must hold 3"):
        g_loss(e, y, mask, sigma=1.0, num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"gamma .* must lie in \(0, 1\)"):
        GLoss(3, 1.0, gamma=1.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        GLoss(3, -1.0)


def test_class_weights_that_are_all_zero_are_refused():
    e, y, mask = batch()
    with pytest.raises(ValueError, match="class_weights are all 0"):
        g_loss(e, y, mask, sigma=1.0, num_classes=3, class_weights=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="class_weights are all 0"):
        GLoss(3, 1.0, class_weights=torch.zeros(3))


def test_class_weights_zero_on_every_hidden_class_are_refused():
    e, y, _ = batch()
    mask = y != 2  # classes 0 and 1 all visible; class 2 hidden, but also needs a visible node
    mask[2] = True  # one visible node of class 2 (y[2] == 2)
    weights = torch.tensor([1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"class_weights are 0 for every hidden class \(\[2\]\)"):
        g_loss(e, y, mask, sigma=1.0, num_classes=3, class_weights=weights)
    loss = g_loss(e, y, mask, sigma=1.0, num_classes=3, class_weights=torch.tensor([0.0, 0.0, 1.0]))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_labels_of_any_integer_width_give_the_int64_loss(dtype):
    e, y, mask = batch()
    torch.testing.assert_close(g_loss(e, y.to(dtype), mask, sigma=0.6, num_classes=3),
                               g_loss(e, y, mask, sigma=0.6, num_classes=3))
    module = GLoss(3, 0.6, seed=0)
    assert torch.isfinite(module(e, y.to(dtype)))


def test_bool_labels_are_refused():
    e, y, mask = batch(num_classes=2)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor of class ids, got a torch.bool"):
        g_loss(e, y.bool(), mask, sigma=1.0, num_classes=2)


def test_float16_embeddings_reach_the_solve_as_float32():
    e, y, mask = batch(dtype=torch.float32)
    half = e.half().requires_grad_()
    loss = g_loss(half, y, mask, sigma=0.6, num_classes=3)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, g_loss(half.detach().float(), y, mask, sigma=0.6, num_classes=3))
    loss.backward()
    assert half.grad.dtype == torch.float16 and torch.isfinite(half.grad).all()


def test_gloss_refuses_a_sigma_tensor_of_more_than_one_value():
    with pytest.raises(ValueError, match=r"0-d float tensor, got a torch.float32 tensor of shape \(2,\)"):
        GLoss(3, torch.tensor([0.5, 0.7]))
    with pytest.raises(ValueError, match=r"sigma = 1e\+200 is too large"):
        g_loss(*batch(), sigma=1e200, num_classes=3)


def test_gloss_keeps_a_0d_sigma_tensor_so_its_gradient_flows():
    e, y, _ = batch()
    sigma = torch.nn.Parameter(torch.tensor(0.6, dtype=torch.float64))
    module = GLoss(3, sigma, seed=0)
    assert module.sigma is sigma and any(p is sigma for p in module.parameters())
    loss = module(e, y)
    torch.testing.assert_close(loss, g_loss(e, y, module.last_mask, sigma=0.6, num_classes=3))
    loss.backward()
    assert sigma.grad is not None and torch.isfinite(sigma.grad) and sigma.grad != 0
    assert "sigma=0.6" in repr(module)


def test_divide_by_hidden_is_the_authors_extra_division_by_the_hidden_count():
    e, y, mask = batch()
    hidden = int((~mask).sum())
    for target in ("nll", "authors"):
        plain = g_loss(e, y, mask, sigma=0.6, num_classes=3, target=target)
        divided = g_loss(e, y, mask, sigma=0.6, num_classes=3, target=target, divide_by_hidden=True)
        torch.testing.assert_close(divided, plain / hidden)


def test_authors_loss_by_hand_with_balanced_weights_random_mask_and_division():
    """Their Combined-with-CE term: weighted CE on F_U (softmax of probabilities), divided by |U|."""
    e, y, _ = batch(n=20)
    y = torch.tensor([0] * 12 + [1] * 5 + [2] * 3)
    mask = split_mask(y, 0.7, stratified=False, generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(y, minlength=3).double()
    w = len(y) / (3 * counts)  # scikit-learn's "balanced" weights
    f = propagate(transition_matrix(gaussian_affinity(e, 0.4), "gloss"), y, mask, 3)
    hidden = (~mask).nonzero().flatten().tolist()
    terms = [w[y[u]] * (torch.logsumexp(f[u], 0) - f[u, y[u]]) for u in hidden]
    expected = sum(terms) / sum(w[y[u]] for u in hidden) / len(hidden)
    got = g_loss(e, y, mask, sigma=0.4, num_classes=3, class_weights=w, target="authors", divide_by_hidden=True)
    torch.testing.assert_close(got, expected)


def test_authors_target_allows_a_hidden_class_without_visible_node_but_nll_refuses():
    e, y, _ = batch(n=9)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    mask = torch.tensor([True, True, False, True, True, False, False, False, False])  # class 2 all hidden
    loss = g_loss(e, y, mask, sigma=0.6, num_classes=3, target="authors")
    assert torch.isfinite(loss)
    f = propagate(transition_matrix(gaussian_affinity(e, 0.6), "gloss"), y, mask, 3)
    assert torch.all(f[~mask][:, 2] == 0)  # propagation never predicts class 2
    with pytest.raises(ValueError, match=r"hidden classes \[2\] have no visible node"):
        g_loss(e, y, mask, sigma=0.6, num_classes=3, target="nll")


def test_gloss_module_passes_the_authors_options_through():
    e, y, _ = batch()
    module = GLoss(3, 0.6, 0.7, target="authors", stratified=False, divide_by_hidden=True, seed=5)
    loss = module(e, y)
    expected_mask = split_mask(y, 0.7, stratified=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(module.last_mask, expected_mask)
    expected = g_loss(e, y, expected_mask, sigma=0.6, num_classes=3, target="authors", divide_by_hidden=True)
    torch.testing.assert_close(loss, expected)
