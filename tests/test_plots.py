import matplotlib

matplotlib.use("Agg")  # this test process draws off-screen; notebooks keep the inline backend
import matplotlib.pyplot as plt  # noqa: E402
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
