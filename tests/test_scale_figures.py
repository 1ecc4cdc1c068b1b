"""The saved-tensor meter, the trend verdict and the two scale diagrams of notebook 08."""

import math

import matplotlib
import numpy as np
import pytest
import torch
from scipy import stats

from gloss_lite.memory import SavedTensorMeter
from gloss_lite.trends import trend

matplotlib.use("Agg")


def test_meter_counts_saved_activations_not_weights():
    layer = torch.nn.Linear(50, 40, bias=False).double()
    x = torch.randn(30, 50, dtype=torch.float64, requires_grad=True)
    with SavedTensorMeter(layer.parameters()) as meter:
        hidden = torch.tanh(layer(x))  # saves x (for the weight's gradient) and tanh's output
        hidden.sum().backward()
    # x: 30 x 50 float64, tanh output: 30 x 40 float64; the weight is not counted
    assert meter.peak == (30 * 50 + 30 * 40) * 8
    assert meter.live == 0  # every saved tensor was freed with the graph
    assert meter.peak_mib == pytest.approx(meter.peak / 2**20)


def test_meter_peak_grows_with_the_batch():
    layer = torch.nn.Linear(8, 8)
    peaks = []
    for n in (10, 20):
        with SavedTensorMeter(layer.parameters()) as meter:
            torch.relu(layer(torch.randn(n, 8, requires_grad=True))).sum().backward()
        peaks.append(meter.peak)
    assert peaks[1] == 2 * peaks[0]


def test_trend_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    x = np.arange(8.0)
    y = 2.0 - 0.5 * x + rng.normal(0, 0.3, 8)
    fitted, reference = trend(x, y), stats.linregress(x, y)
    half = stats.t.ppf(0.975, 6) * reference.stderr
    assert fitted.slope == pytest.approx(reference.slope)
    assert (fitted.low, fitted.high) == pytest.approx((reference.slope - half, reference.slope + half))
    assert fitted.verdict == "falls" and fitted.contains(-0.5)


def test_trend_does_not_call_noise_a_fall():
    # the sentence-transformers log of one run: first > last, yet no trend
    series = [1.545, 1.578, 1.629, 1.503]
    assert series[-1] < series[0]
    assert trend(range(4), series).verdict == "no clear trend"
    assert trend([0, 1], [1.0, 0.0]).verdict == "no clear trend"  # two points decide nothing
    assert math.isinf(trend([0, 1], [1.0, 0.0]).high)
    sentence = trend(range(4), series).describe("G-Loss", "step")
    assert sentence == "G-Loss shows no clear trend: slope -0.0075 per step (95% interval -0.131 to +0.116)."
    assert trend(range(4), [3.0, 2.1, 0.9, 0.0]).describe("x", "step").startswith("x falls: slope -1.02")


def test_trend_rejects_bad_input():
    with pytest.raises(ValueError, match="one length"):
        trend([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="two distinct x"):
        trend([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="level"):
        trend([1, 2, 3], [1, 2, 3], level=95)


def test_diagrams_draw_and_check_their_arguments():
    import matplotlib.pyplot as plt

    from gloss_lite.scale_diagrams import draw_cached_backward, draw_gather

    fig, axes = plt.subplots(1, 2)
    draw_cached_backward(axes[0], chunks=4)
    draw_gather(axes[1], world_size=3)
    texts = [t.get_text() for t in axes[0].texts]
    assert sum("encoder\nno gradient" == t for t in texts) == 4
    assert sum(t.startswith("3: $G_") for t in texts) == 4
    assert sum(t.startswith("rank ") for t in (x.get_text() for x in axes[1].texts)) == 3
    with pytest.raises(ValueError, match="chunks"):
        draw_cached_backward(axes[0], chunks=0)
    with pytest.raises(ValueError, match="two ranks"):
        draw_gather(axes[1], world_size=1)
    plt.close(fig)
