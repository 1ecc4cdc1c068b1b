import math

import pytest
import torch

from gloss_lite.masking import split_mask


def test_same_seed_same_mask_and_different_seed_different_mask():
    labels = torch.arange(40) % 4
    first = split_mask(labels, 0.5, generator=torch.Generator().manual_seed(7))
    again = split_mask(labels, 0.5, generator=torch.Generator().manual_seed(7))
    other = split_mask(labels, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("gamma", [0.1, 0.3, 0.7, 0.9])
def test_stratified_keeps_a_visible_and_a_hidden_node_in_every_class(gamma):
    labels = torch.tensor([0] * 2 + [1] * 5 + [2] * 13 + [3] * 1)
    for seed in range(20):
        mask = split_mask(labels, gamma, generator=torch.Generator().manual_seed(seed))
        for cls in range(4):
            members = mask[labels == cls]
            assert members.any(), f"class {cls} has no visible node"
            if len(members) > 1:
                assert not members.all(), f"class {cls} has no hidden node"
        # about gamma of each class of 13 stays visible
        assert int(mask[labels == 2].sum()) == min(max(round(gamma * 13), 1), 12)


@pytest.mark.parametrize("n, gamma, visible", [(50, 0.3, 15), (10, 0.7, 7), (11, 0.7, 8), (128, 0.7, 90), (5, 0.5, 3)])
def test_unstratified_mask_is_the_authors_draw_with_ceil_gamma_n_visible(n, gamma, visible):
    labels = torch.arange(n) % 5
    mask = split_mask(labels, gamma, stratified=False, generator=torch.Generator().manual_seed(0))
    assert int(mask.sum()) == visible == math.ceil(gamma * n)
    # node i is visible when the permutation puts it below gamma * n, as in the authors' code
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(0)) < n * gamma
    assert torch.equal(mask, expected)


def test_unstratified_mask_that_would_hide_nothing_is_refused():
    with pytest.raises(ValueError, match="no hidden node after masking: ceil.*at least 4 documents"):
        split_mask(torch.tensor([0, 1, 0]), 0.7, stratified=False)


def test_unstratified_mask_can_leave_a_class_without_visible_nodes():
    labels = torch.tensor([0] * 30 + [1])
    seen = {bool(split_mask(labels, 0.5, stratified=False, generator=torch.Generator().manual_seed(s))[-1])
            for s in range(30)}
    assert seen == {True, False}  # the lone class-1 node is sometimes hidden


@pytest.mark.parametrize("gamma", [0, 1, -0.2, 1.5, float("nan"), True])
def test_gamma_outside_the_open_interval_is_refused(gamma):
    with pytest.raises(ValueError, match=r"gamma .* must lie in \(0, 1\)"):
        split_mask(torch.arange(10) % 2, gamma)


def test_too_few_nodes_and_no_hidden_node_are_refused():
    with pytest.raises(ValueError, match="at least 2 labels"):
        split_mask(torch.tensor([0]), 0.5)
    with pytest.raises(ValueError, match="no hidden node after masking"):
        split_mask(torch.tensor([0, 1, 2]), 0.5)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        split_mask(torch.tensor([0.0, 1.0]), 0.5)


def test_bool_labels_are_refused_as_a_mask_not_labels():
    with pytest.raises(ValueError, match="a bool tensor is a mask, not labels"):
        split_mask(torch.tensor([True, False, True, False]), 0.5)
