"""The explorer's numbers against hand computations (numpy, finite differences), and its widget."""

import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gloss_lite import explorer  # noqa: E402
from gloss_lite.masking import split_mask  # noqa: E402


def test_effective_neighbours_is_the_perplexity_of_each_row():
    rows = [[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [1 / 3, 1 / 3, 0.0, 1 / 3], [0.1, 0.2, 0.7, 0.0]]
    by_hand = [math.exp(-sum(p * math.log(p) for p in row if p > 0)) for row in rows]
    assert by_hand[:3] == pytest.approx([1.0, 2.0, 3.0])
    got = explorer.effective_neighbours(torch.tensor(rows, dtype=torch.float64))
    assert got.tolist() == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        explorer.effective_neighbours(torch.tensor([[1.5, -0.5], [0.5, 0.5]]))


def toy_batch(n=10, d=4, seed=0):
    draw = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.randn(3, d, generator=draw, dtype=torch.float64)
    return centres[labels] + 0.8 * torch.randn(n, d, generator=draw, dtype=torch.float64), labels


def hand_loss_and_accuracy(embeddings, labels, mask, sigma, num_classes):
    """The row-scheme pipeline in numpy: kernel, D^-1 W, the harmonic solve, NLL and accuracy."""
    e = np.asarray(embeddings, dtype=np.float64)
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    d2 = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma**2))
    np.fill_diagonal(w, 0.0)
    t = w / w.sum(axis=1, keepdims=True)
    visible, hidden = np.flatnonzero(mask), np.flatnonzero(~np.asarray(mask))
    y = np.eye(num_classes)[np.asarray(labels)[visible]]
    f = np.linalg.solve(np.eye(len(hidden)) - t[np.ix_(hidden, hidden)], t[np.ix_(hidden, visible)] @ y)
    truth = np.asarray(labels)[hidden]
    loss = -np.log(f[np.arange(len(hidden)), truth]).mean()
    return loss, (f.argmax(axis=1) == truth).mean(), t


@pytest.mark.parametrize("sigma, gamma", [(0.3, 0.5), (1.2, 0.3)])
def test_explore_matches_a_hand_computation(sigma, gamma):
    embeddings, labels = toy_batch()
    view = explorer.explore(embeddings, labels, 3, sigma=sigma, gamma=gamma, scheme="row", seed=4)
    mask = split_mask(labels, gamma, generator=torch.Generator().manual_seed(4))
    assert torch.equal(view.labeled_mask, mask)
    loss, accuracy, transition = hand_loss_and_accuracy(embeddings, labels, mask.numpy(), sigma, 3)
    assert view.lpa_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert view.g_loss == pytest.approx(loss, rel=1e-7)
    assert np.allclose(view.transition.numpy(), transition, atol=1e-12)
    perplexity = np.exp(-(transition * np.log(np.where(transition > 0, transition, 1.0))).sum(axis=1)).mean()
    assert view.effective_neighbours == pytest.approx(perplexity, rel=1e-10)
    # the update: the gradient of the hand loss with respect to the unit embeddings, by central differences
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    gradient, step = np.zeros(tuple(unit.shape)), 1e-6
    for index in np.ndindex(*gradient.shape):
        plus, minus = unit.numpy().copy(), unit.numpy().copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (hand_loss_and_accuracy(plus, labels, mask.numpy(), sigma, 3)[0]
                           - hand_loss_and_accuracy(minus, labels, mask.numpy(), sigma, 3)[0]) / (2 * step)
    assert view.update_norm == pytest.approx(np.linalg.norm(gradient), rel=1e-5)


def test_the_sweep_holds_one_explore_per_pair_and_the_mask_ignores_sigma():
    embeddings, labels = toy_batch()
    table = explorer.sweep(embeddings, labels, 3, [0.2, 0.5, 2.0], [0.3, 0.6], seed=1)
    assert list(table.columns) == ["sigma", "gamma", "hidden", *explorer.NUMBERS] and len(table) == 6
    for row in table.itertuples():
        view = explorer.explore(embeddings, labels, 3, sigma=row.sigma, gamma=row.gamma, seed=1)
        assert row.g_loss == view.g_loss and row.lpa_accuracy == view.lpa_accuracy
    masks = [explorer.explore(embeddings, labels, 3, sigma=s, gamma=0.6, seed=1).labeled_mask for s in (0.2, 2.0)]
    assert torch.equal(*masks)


def test_bad_input_is_refused_with_a_clear_message():
    embeddings, labels = toy_batch()
    with pytest.raises(ValueError, match="10 embeddings and 9 labels"):
        explorer.explore(embeddings, labels[:9], 3, sigma=0.5, gamma=0.5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        explorer.explore(embeddings, labels, 2, sigma=0.5, gamma=0.5)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        explorer.explore(embeddings, labels, 3, sigma=-1.0, gamma=0.5)
    with pytest.raises(ValueError, match="gamma is the fraction"):
        explorer.explore(embeddings, labels, 3, sigma=0.5, gamma=1.5)
    view = explorer.explore(embeddings, labels, 3, sigma=0.5, gamma=0.5)
    with pytest.raises(ValueError, match="matrix must be one of"):
        explorer.draw_view(view, labels, ["a", "b", "c"], matrix="laplacian")
    with pytest.raises(ValueError, match="sigma_range must satisfy"):
        explorer.explorer_widget(embeddings, labels, ["a", "b", "c"], sigma=0.5, sigma_range=(1.0, 2.0))


def test_the_figures_draw_the_heatmap_and_one_line_per_gamma():
    embeddings, labels = toy_batch()
    view = explorer.explore(embeddings, labels, 3, sigma=0.5, gamma=0.5)
    fig = explorer.draw_view(view, labels, ["a", "b", "c"], matrix="transition")
    heat = fig.axes[0].collections[0].get_array()
    assert heat.shape == (10, 10) and "T sorted by class" in fig.axes[0].get_title()
    assert "LPA accuracy" in fig.axes[1].texts[0].get_text()
    plt.close(fig)
    narrow = explorer.explore(embeddings, labels, 3, sigma=0.005, gamma=0.5)
    assert not (narrow.affinity > 0).any(), "at this sigma every weight underflows"
    fig = explorer.draw_view(narrow, labels, ["a", "b", "c"])
    relative = (narrow.log_affinity - narrow.log_affinity.max()).exp()
    drawn = fig.axes[0].collections[0].get_array()
    order = torch.argsort(labels, stable=True)
    assert np.allclose(drawn.data[~drawn.mask], relative[order][:, order].numpy()[~drawn.mask])
    assert fig.axes[0].get_title().startswith("W / max W")
    plt.close(fig)
    table = explorer.sweep(embeddings, labels, 3, [0.2, 0.5, 2.0], [0.3, 0.6])
    fig = explorer.draw_sweep(table, reference_sigma=0.5)
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 3, 3, 3]  # two gammas and the reference line
    plt.close(fig)


def test_the_widget_redraws_on_release_and_degrades_without_ipywidgets(monkeypatch, capsys):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv(explorer.NO_WIDGETS_ENV, raising=False)
    embeddings, labels = toy_batch()
    box = explorer.explorer_widget(embeddings, labels, ["a", "b", "c"], sigma=0.5, sigma_range=(0.05, 5.0))
    sigma_slider, gamma_slider = box.children[0].children
    assert isinstance(sigma_slider, ipywidgets.FloatLogSlider) and isinstance(gamma_slider, ipywidgets.FloatSlider)
    assert not sigma_slider.continuous_update and not gamma_slider.continuous_update
    assert box.view.sigma == 0.5
    bundle = box._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["text/plain"] == explorer.WIDGET_TEXT  # a static copy shows a sentence, not "VBox(...)"
    assert "application/vnd.jupyter.widget-view+json" in data
    sigma_slider.value = 2.0
    gamma_slider.value = 0.3
    expected = explorer.explore(embeddings, labels, 3, sigma=2.0, gamma=0.3)
    assert (box.view.sigma, box.view.gamma, box.view.g_loss) == (2.0, 0.3, expected.g_loss)
    plt.close("all")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert explorer.explorer_widget(embeddings, labels, ["a", "b", "c"], sigma=0.5, sigma_range=(0.05, 5.0)) is None
    assert "ipywidgets is not installed" in capsys.readouterr().out


def test_without_widgets_it_draws_the_starting_view_once_and_shows_one_sentence(monkeypatch):
    embeddings, labels = toy_batch()
    monkeypatch.setenv(explorer.NO_WIDGETS_ENV, "1")
    plt.close("all")
    shown = explorer.explorer_widget(embeddings, labels, ["a", "b", "c"], sigma=0.5, sigma_range=(0.05, 5.0),
                                     gamma=0.6)
    expected = explorer.explore(embeddings, labels, 3, sigma=0.5, gamma=0.6)
    assert (shown.view.sigma, shown.view.gamma, shown.view.g_loss) == (0.5, 0.6, expected.g_loss)
    assert repr(shown) == explorer.WIDGET_TEXT and "ipywidgets" not in type(shown).__module__
    assert len(plt.get_fignums()) == 1  # the starting view, drawn once
    plt.close("all")
