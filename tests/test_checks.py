"""The shared argument checks (gloss_lite/checks.py): what passes, and each refusal's message."""

import math

import pytest
import torch

from gloss_lite.checks import (
    check_bool,
    check_choice,
    check_class_range,
    check_in_range,
    check_int,
    check_non_negative,
    check_positive,
    class_ids,
)


@pytest.mark.parametrize("value, minimum, allow_none, message", [
    (0, 1, False, "epochs must be a positive int, got 0"),
    (1.5, 1, False, "epochs must be a positive int, got 1.5"),
    (True, 1, False, "epochs must be a number, got the bool True"),
    (-1, 0, False, r"epochs must be an int >= 0, got -1"),
    ("3", 1, True, "epochs must be None or a positive int, got '3'"),
])
def test_check_int_refuses(value, minimum, allow_none, message):
    with pytest.raises(ValueError, match=message):
        check_int("epochs", value, minimum=minimum, allow_none=allow_none)


def test_check_int_accepts():
    check_int("epochs", 3)
    check_int("seed", 0, minimum=0)
    check_int("patience", None, allow_none=True)


@pytest.mark.parametrize("value", [0, -1e-3, math.inf, math.nan, "1", None, False])
def test_check_positive_refuses(value):
    with pytest.raises(ValueError, match="lr must be a"):
        check_positive("lr", value)


def test_check_positive_and_non_negative_accept_and_say_what_for():
    check_positive("lr", 1e-5)
    check_positive("grad_clip", None, allow_none=True)
    check_non_negative("weight_decay", 0)
    with pytest.raises(ValueError, match=r"margin \(used by the triplet losses\) must be a positive number"):
        check_positive("margin", -0.1, what=" (used by the triplet losses)")
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0, got -0.1"):
        check_non_negative("weight_decay", -0.1)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2, 1.5, math.nan, True, "0.5", None])
def test_open_interval(value):
    with pytest.raises(ValueError, match=r"gamma is the fraction of visible labels and must lie in \(0, 1\)"):
        check_in_range("gamma", value, 0.0, 1.0, low_open=True, high_open=True,
                       meaning="is the fraction of visible labels and")


def test_closed_interval_keeps_its_ends():
    for value in (0.0, 0.5, 1.0):
        check_in_range("lam", value, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\], got 1.01"):
        check_in_range("lam", 1.01, 0.0, 1.0)


def test_bool_and_choice():
    check_bool("amp", False)
    with pytest.raises(ValueError, match="amp must be True or False, got 'no'"):
        check_bool("amp", "no")
    check_choice("scheme", "row", ("gloss", "row"))
    with pytest.raises(ValueError, match=r"scheme must be one of \('gloss', 'row'\), got 'sym'"):
        check_choice("scheme", "sym", ("gloss", "row"))
    with pytest.raises(ValueError, match="scheme must be one of"):
        check_choice("scheme", ["gloss"], ("gloss", "row"))  # unhashable: refused, not a TypeError


def test_class_ids_accepts_tensors_and_sequences_of_ints():
    ids = class_ids([2, 0, 1])
    assert ids.dtype == torch.int64 and ids.tolist() == [2, 0, 1]
    small = torch.tensor([1, 0], dtype=torch.uint8)
    assert class_ids(small).dtype == torch.int64
    for empty in ([], (), torch.tensor([])):  # torch reads [] as float32: still no documents, not floats
        assert class_ids(empty).dtype == torch.int64 and class_ids(empty).shape == (0,)


def test_an_empty_label_list_gets_the_callers_message_not_a_dtype_complaint():
    from gloss_lite.training.sampling import ClassBalancedBatchSampler

    with pytest.raises(ValueError, match="need documents, got none: the training set is empty"):
        ClassBalancedBatchSampler([], 4, seed=0)


@pytest.mark.parametrize("labels, message", [
    (["pos", "neg"], "got strings; map each class name to an id first"),
    ("0101", "got strings"),
    (torch.tensor([0.0, 1.0]), r"got a torch.float32 tensor of shape \(2,\); use .long\(\)"),
    (torch.tensor([True, False]), "a bool tensor is a mask, not labels: did you swap labels and labeled_mask"),
    (torch.zeros(2, 2, dtype=torch.long), r"1-D integer tensor of class ids, got a torch.int64 tensor of shape \(2, 2"),
    (None, r"labels are missing \(None\)"),
    ([[0], [1, 2]], "labels must be integer class ids, got list"),
])
def test_class_ids_refuses_with_a_message_that_says_what_to_do(labels, message):
    with pytest.raises(ValueError, match=message):
        class_ids(labels)


def test_class_range():
    check_class_range(torch.tensor([0, 2]), 3)
    check_class_range(torch.tensor([], dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"visible labels must lie in \[0, 2\), got values from 0 to 2"):
        check_class_range(torch.tensor([0, 2]), 2, name="visible labels")
