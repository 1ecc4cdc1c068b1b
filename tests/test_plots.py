import matplotlib

matplotlib.use("Agg")  # this test process draws off-screen; notebooks keep the inline backend
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gloss_lite.plots import sorted_heatmap  # noqa: E402


def test_sorted_heatmap_orders_rows_by_class_and_draws_class_borders():
    labels = torch.tensor([1, 0, 1, 0, 2])
    w = torch.arange(25, dtype=torch.float64).reshape(5, 5)
    fig, ax = plt.subplots()
    sorted_heatmap(ax, w, labels, ["a", "b", "c"], "t")
    drawn = ax.collections[0].get_array().reshape(5, 5)
    order = [1, 3, 0, 2, 4]
    expected = w[order][:, order].numpy()
    assert (drawn.data[~drawn.mask] == expected[~drawn.mask]).all() and drawn.mask.diagonal().all()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert len(ax.lines) == 4  # two class borders, each a horizontal and a vertical line
    plt.close(fig)



def test_class_palette_gives_every_class_its_own_colour_and_two_classes_red_and_blue():
    from gloss_lite.plots import CLASS_COLOURS, class_palette

    palette = class_palette({"topic": list("abcdef"), "sentiment": ["negative", "positive"]})
    assert palette["sentiment"] == ["#d62728", "#1f77b4"]  # the smaller set chooses first
    colours = palette["topic"] + palette["sentiment"]
    assert len(set(colours)) == 8 and set(colours) <= set(CLASS_COLOURS)
    assert list(palette) == ["topic", "sentiment"]  # the caller's order is kept
    many = class_palette({"r52": [str(i) for i in range(52)]})["r52"]
    assert len({tuple(c) for c in many}) == 52


def test_mixed_colours_weights_the_class_colours_by_each_distribution():
    from matplotlib.colors import to_rgb

    from gloss_lite.plots import mixed_colours

    F = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    mixed = mixed_colours(F, ["#ff0000", "#0000ff"])
    assert mixed[0] == to_rgb("#ff0000")
    assert mixed[1] == (0.5, 0.0, 0.5) and mixed[2] == (0.25, 0.0, 0.75)
    with pytest.raises(ValueError, match="one column per colour"):
        mixed_colours(F, ["#ff0000"])


def test_distribution_heatmap_sorts_rows_by_class_or_boxes_the_true_class():
    from gloss_lite.plots import distribution_heatmap

    F = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
    truth = torch.tensor([1, 0, 1])
    fig, (left, right) = plt.subplots(1, 2)
    distribution_heatmap(left, F, truth, ["a", "b"], "sorted", sort=True)
    assert (left.images[0].get_array() == F[[1, 0, 2]].numpy()).all()
    assert len(left.lines) == 1  # one boundary between the two classes
    distribution_heatmap(right, F, truth, ["a", "b"], "boxed")
    boxes = [(p.get_x(), p.get_y()) for p in right.patches]
    assert boxes == [(0.5, -0.5), (-0.5, 0.5), (0.5, 1.5)]  # the true class of each row
    assert [t.get_text() for t in right.texts][:2] == ["0.10", "0.90"]
    plt.close(fig)

def test_mask_rows_fills_visible_labels_and_keeps_one_colour_per_class():
    from matplotlib.colors import to_rgb

    from gloss_lite.plots import class_palette, mask_rows

    labels = torch.tensor([0, 0, 1, 1, 1])
    masks = {"random": torch.tensor([True, False, True, True, False]),
             "stratified": torch.tensor([True, False, False, True, True])}
    fig, ax = plt.subplots()
    colours = class_palette({"x": ["a", "b"]})["x"]
    mask_rows(ax, labels, masks, ["a", "b"], colours)
    dots = ax.collections
    assert len(dots) == 10  # one dot per document and mask
    white = (1.0, 1.0, 1.0, 1.0)
    filled = [tuple(d.get_facecolor()[0]) != white for d in dots]
    assert filled == masks["random"].tolist() + masks["stratified"].tolist()
    edges = [tuple(d.get_edgecolor()[0][:3]) for d in dots]
    assert edges == [to_rgb(colours[c]) for c in labels.tolist()] * 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["random", "stratified"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close(fig)


def test_rate_panels_leave_out_settings_that_cannot_be_drawn():
    import numpy as np

    from gloss_lite.plots import rate_panels

    rates = {"x": np.array([[0.5, 0.2], [np.nan, 0.1]]), "y": np.zeros((2, 2))}
    fig = rate_panels(rates, [8, 16], [0.5, 0.9])
    ax = fig.axes[0]
    lines = [line for line in ax.lines if line.get_label() in ("0.5", "0.9")]
    assert [list(line.get_xdata()) for line in lines] == [[8, 16], [8, 16]]
    assert np.isnan(lines[1].get_ydata()[0]) and lines[1].get_ydata()[1] == 0.1
    assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == ["x", "y"]
    plt.close(fig)


def test_circle_snapshots_puts_every_point_on_the_unit_circle():
    import numpy as np

    from gloss_lite.plots import circle_snapshots

    angles = torch.tensor([0.0, np.pi / 2, np.pi])
    fig = circle_snapshots({0: angles, 5: angles + 1}, torch.tensor([0, 1, 1]), ["red", "blue"])
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 5"]
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert np.allclose((points ** 2).sum(axis=1), 1.0)
    plt.close(fig)


def test_loss_curve_draws_the_reference_level():
    from gloss_lite.plots import loss_curve

    fig, ax = plt.subplots()
    loss_curve(ax, [1.0, 0.5, 0.2], [0, 2], [1.1, 0.3], 0.7, "guess")
    assert list(ax.lines[-1].get_ydata()) == [0.7, 0.7]
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "guess"
    plt.close(fig)


def test_score_curves_draw_each_form_and_the_floors():
    import numpy as np

    from gloss_lite.plots import score_curves

    p = np.linspace(0.1, 1, 5)
    curves = {("NLL", 2): (-np.log(p), -1 / p), ("authors", 2): (1 - p, -np.ones_like(p))}
    fig = score_curves(p, curves, {2: 0.31})
    left, right = fig.axes
    assert [line.get_label() for line in left.lines[:2]] == ["NLL, C = 2", "authors, C = 2"]
    assert list(left.lines[2].get_ydata()) == [0.31, 0.31]
    assert np.allclose(right.lines[0].get_ydata(), 1 / p)  # the size of the slope
    plt.close(fig)


def test_mixed_gradient_runs_from_one_gradient_to_the_other():
    import numpy as np

    from gloss_lite.plots import mixed_gradient

    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    fig = mixed_gradient(np.linspace(0, 1, 3), a, b, marks={"half": 0.5})
    norms, directions = fig.axes
    assert np.allclose(norms.lines[0].get_ydata(), [3.0, np.hypot(1.5, 0.5), 1.0])
    assert np.allclose(directions.lines[0].get_ydata()[[0, -1]], [1.0, 0.0])  # with grad a
    assert np.allclose(directions.lines[1].get_ydata()[[0, -1]], [0.0, 1.0])  # with grad b
    assert directions.lines[2].get_xdata()[0] == 0.5
    plt.close(fig)


def test_plain_log_axis_writes_ticks_as_plain_numbers():
    from gloss_lite.plots import plain_log_axis

    fig, ax = plt.subplots()
    ax.plot([1, 2], [0.5, 20])
    plain_log_axis(ax, "y")
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert {"0.5", "1", "2", "5", "10", "20"} <= set(shown)
    plt.close(fig)


def test_sigma_panels_mark_the_estimates_in_every_panel_with_one_legend():
    import numpy as np

    from gloss_lite.plots import sigma_panels

    sigmas = np.logspace(-2, 1, 4)
    marks = {"SQRT": (0.65, "--"), "DICM": (0.1, ":")}
    panels = [{"title": "a", "ylabel": "k", "lines": {"k": [1, 2, 3, 4]}, "levels": {"top": 4},
               "log_y": True},
              {"title": "b", "ylabel": "c", "lines": {"c": [1, 0.5, 0, 0]}, "ylim": (0, 1)}]
    fig = sigma_panels(sigmas, panels, marks, ncols=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a", "b"] and len(fig.axes) == 3
    for ax in visible:
        assert ax.get_xscale() == "log"
        assert sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() in ("--", ":")) \
            == [0.1, 0.65]
    assert visible[0].get_yscale() == "log" and visible[1].get_ylim() == (0, 1)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["SQRT (0.65)", "DICM (0.1)"]
    plt.close(fig)


def test_trial_scatter_colours_trials_by_gamma():
    import numpy as np

    from gloss_lite.plots import trial_scatter

    fig, ax = plt.subplots()
    trial_scatter(ax, [0.1, 1.0], [0.5, 0.9], [0.2, 0.8], {"SQRT": (0.65, "--")})
    points = ax.collections[0]
    assert np.allclose(points.get_array(), [0.2, 0.8]) and points.get_clim() == (0.1, 0.9)
    assert ax.lines[0].get_xdata()[0] == 0.65 and ax.get_xscale() == "log"
    plt.close(fig)
