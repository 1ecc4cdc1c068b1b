"""The small-graph pictures of notebooks 00 and 02 draw exactly the numbers they are given."""

import math

import matplotlib

matplotlib.use("Agg")  # this test process draws off-screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gloss_lite.diagrams import draw_graph, draw_pipeline, draw_propagation_steps, draw_transition_blocks  # noqa: E402
from gloss_lite.graph import gaussian_affinity, transition_matrix  # noqa: E402
from gloss_lite.losses import g_loss  # noqa: E402
from gloss_lite.lpa import propagate  # noqa: E402

COLOURS = ["#d62728", "#1f77b4", "#2ca02c"]


def toy_batch():
    angles = torch.tensor([0.1, 0.4, 0.7, 2.0, 2.3, 2.6, 4.0, 4.3, 4.6], dtype=torch.float64)
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    visible = torch.tensor([True, False, True, True, False, True, True, True, False])
    return points, labels, visible


def test_draw_graph_draws_the_edges_above_the_threshold_with_widths_in_proportion():
    W = torch.tensor([[0, 1.0, 0.5, 0.001], [1.0, 0, 0, 0], [0.5, 0, 0, 0], [0.001, 0, 0, 0]])
    positions = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fig, ax = plt.subplots()
    draw_graph(ax, positions, W, ["red"] * 4, edge_width=4.0, min_weight=0.01)
    edges = ax.collections[0]
    assert sorted(edges.get_linewidths()) == [2.0, 4.0]  # 0.001 is below 1% of the largest weight
    with pytest.raises(ValueError, match="n x 2"):
        draw_graph(ax, positions[:, :1], W, ["red"] * 4)
    plt.close(fig)


def test_the_pipeline_scores_the_hidden_nodes_as_g_loss_does():
    points, labels, visible = toy_batch()
    sigma = 0.8
    W = gaussian_affinity(points, sigma)
    F = propagate(transition_matrix(W, "gloss"), labels, visible, 3)
    fig, axes = plt.subplots(1, 5)
    drawn = draw_pipeline(axes, points, W, labels, visible, F, COLOURS)
    expected = g_loss(points, labels, visible, sigma=sigma, num_classes=3).item()
    assert math.isclose(drawn, expected, rel_tol=1e-9)
    heights = [bar.get_height() for bar in axes[4].patches]
    hidden = (~visible).nonzero().flatten()
    assert np.allclose(heights, -F[hidden, labels[hidden]].log().numpy())
    assert [t.get_text() for t in axes[2].texts] == ["?"] * len(hidden)
    with pytest.raises(ValueError, match="five axes"):
        draw_pipeline(axes[:4], points, W, labels, visible, F, COLOURS)
    plt.close(fig)


def test_propagation_steps_colour_each_node_by_its_distribution():
    points, labels, visible = toy_batch()
    F = torch.softmax(torch.randn(9, 3, generator=torch.Generator().manual_seed(0)), dim=1).double()
    fig, axes = plt.subplots(1, 2)
    draw_propagation_steps(axes, points, gaussian_affinity(points, 0.8), [F, F], visible, COLOURS)
    faces = axes[0].collections[1].get_facecolors()[:, :3]
    rgb = np.array([matplotlib.colors.to_rgb(c) for c in COLOURS])
    assert np.allclose(faces, F.numpy() @ rgb)
    assert [t.get_text() for t in axes[1].texts] == [f"{p:.2f}" for p in F[:, 0].tolist()]
    with pytest.raises(ValueError, match="one axis per step"):
        draw_propagation_steps(axes[:1], points, gaussian_affinity(points, 0.8), [F, F], visible, COLOURS)
    plt.close(fig)


def test_transition_blocks_put_the_visible_nodes_first():
    points, labels, visible = toy_batch()
    T = transition_matrix(gaussian_affinity(points, 0.8), "row")
    fig, ax = plt.subplots()
    draw_transition_blocks(ax, T, visible)
    order = torch.cat([visible.nonzero().flatten(), (~visible).nonzero().flatten()])
    assert np.allclose(ax.images[0].get_array(), T[order][:, order].numpy())
    split = int(visible.sum()) - 0.5
    assert [line.get_ydata()[0] for line in ax.lines[:1]] == [split]
    assert sorted(t.get_text() for t in ax.texts) == ["$T_{LL}$", "$T_{LU}$", "$T_{UL}$", "$T_{UU}$"]
    plt.close(fig)
