"""The figures of notebooks 05 and 06 draw the numbers they are given, in one colour per loss and class."""

import matplotlib

matplotlib.use("Agg")  # this test process draws off-screen; notebooks keep the inline backend
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def test_gradient_messages_puts_hidden_documents_first_with_both_bars():
    from gloss_lite.training_plots import gradient_messages

    ce, graph = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([5.0, 6.0, 7.0, 8.0])
    visible = torch.tensor([True, False, True, False])
    fig = gradient_messages(ce, graph, visible)
    ce_bars, graph_bars = fig.axes[0].containers
    assert [bar.get_height() for bar in ce_bars] == [2.0, 4.0, 1.0, 3.0]
    assert [bar.get_height() for bar in graph_bars] == [6.0, 8.0, 5.0, 7.0]
    assert fig.axes[0].lines[0].get_xdata()[0] == 1.5  # the hidden | visible border
    plt.close(fig)


def test_seed_band_draws_the_mean_over_seeds_and_a_min_max_band():
    import pandas as pd

    from gloss_lite.training_plots import seed_band

    frame = pd.DataFrame({"loss": ["ce"] * 4 + ["gloss"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                          "epoch": [1, 2, 1, 2, 1, 2], "acc": [0.5, 0.7, 0.6, 0.9, 0.4, 0.8]})
    fig, ax = plt.subplots()
    seed_band(ax, frame, "acc", ["ce", "gloss"])
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.55, 0.8])
    assert list(ax.lines[1].get_ydata()) == pytest.approx([0.4, 0.8])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.5) and band.max() == pytest.approx(0.9)
    assert ax.lines[0].get_label() == "CE" and ax.lines[1].get_label() == "G-Loss"
    plt.close(fig)


def test_embedding_maps_give_a_class_one_colour_in_every_panel_and_none_twice():
    import numpy as np
    from matplotlib.colors import to_rgba

    from gloss_lite.plots import class_palette
    from gloss_lite.training_plots import embedding_maps

    xy = np.arange(12.0).reshape(6, 2)
    labels = np.array([0, 1, 2, 0, 1, 2])
    topics, verdicts = ["x", "y", "z"], ["no", "yes", "maybe"]
    panels = [("a", xy, labels, topics), ("b", xy[::-1], labels, topics),
              ("c", xy, labels[::-1], verdicts)]
    fig = embedding_maps(panels, columns=3)
    palette = class_palette({tuple(topics): topics, tuple(verdicts): verdicts})
    drawn = [[to_rgba(s.get_facecolor()[0], 1) for s in ax.collections] for ax in fig.axes[:3]]
    assert drawn[0] == drawn[1] == [to_rgba(c) for c in palette[tuple(topics)]]
    assert drawn[2] == [to_rgba(c) for c in palette[tuple(verdicts)]]
    assert not set(drawn[0]) & set(drawn[2])
    assert fig.axes[0].get_legend() is None and fig.axes[1].get_legend() is not None
    plt.close(fig)


def test_graph_before_after_uses_one_colour_scale_for_every_panel():
    from gloss_lite.training_plots import graph_before_after

    labels = torch.tensor([0, 1, 0, 1])
    low = torch.full((4, 4), 0.2) + 0.1 * torch.eye(4)
    high = torch.full((4, 4), 0.9)
    labellings = {"class": (labels, ["a", "b"])}
    fig = graph_before_after({"before": low, "after": high}, labellings, 0.5)
    limits = [ax.collections[0].get_clim() for ax in fig.axes if ax.get_title()]
    assert len(limits) == 2 and all(clim == pytest.approx((0.2, 0.9)) for clim in limits)
    plt.close(fig)


def test_score_bars_and_relative_curves_draw_the_values_given():
    from gloss_lite.training_plots import relative_curves, score_bars

    fig = score_bars({"m1": {"accuracy": 0.5, "macro-F1": 0.4},
                      "m2": {"accuracy": 0.9, "macro-F1": 0.8}}, chance=0.5, title="t")
    heights = [[bar.get_height() for bar in c] for c in fig.axes[0].containers]
    assert heights == [[0.5, 0.4], [0.9, 0.8]]
    plt.close(fig)
    fig = relative_curves({"L": ([0, 1, 2], [2.0, 1.0, 0.5])}, xlabel="x", title="t")
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.5, 0.25]
    plt.close(fig)


def test_every_loss_keeps_one_colour_of_its_own():
    from gloss_lite.training_plots import LOSS_NAMES, loss_colour

    assert loss_colour("ce") == loss_colour("ce") != loss_colour("gloss+ce")
    assert len({loss_colour(name) for name in LOSS_NAMES}) == len(LOSS_NAMES)
