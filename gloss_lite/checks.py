"""The checks every public function runs on its arguments, written once.

Each check raises ``ValueError`` with a sentence that names the argument, what it must be and
what it got, before any work is done. A bool is never a number here (``True`` is an ``int`` to
Python, but ``epochs=True`` is a mistake). ``class_ids`` is the one check of labels: every
function that takes class labels (graph, propagation, masks, losses, sigma rules, samplers,
integrations) goes through it.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

__all__ = [
    "check_bool",
    "check_choice",
    "check_class_range",
    "check_in_range",
    "check_int",
    "check_non_negative",
    "check_positive",
    "class_ids",
]


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_bool(name: str, value) -> None:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    """``value`` must be one of ``choices``."""
    if isinstance(value, (list, dict, set)) or value not in tuple(choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_int(name: str, value, *, minimum: int = 1, allow_none: bool = False, what: str = "") -> None:
    """``value`` must be an int of at least ``minimum`` (or None with ``allow_none``); ``what`` says what it is."""
    if value is None and allow_none:
        return
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got the bool {value!r}")
    if not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}{what} must be {'None or ' if allow_none else ''}{kind}, got {value!r}")


def check_positive(name: str, value, *, allow_none: bool = False, what: str = "") -> None:
    """``value`` must be a finite number > 0 (or None with ``allow_none``); ``what`` says what it is for."""
    if value is None and allow_none:
        return
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got the bool {value!r}")
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}{what} must be {'None or ' if allow_none else ''}a positive number, got {value!r}")


def check_non_negative(name: str, value, *, what: str = "") -> None:
    """``value`` must be a finite number >= 0."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got the bool {value!r}")
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}{what} must be a finite number >= 0, got {value!r}")


def check_in_range(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False,
                   meaning: str = "") -> None:
    """``value`` must lie between ``low`` and ``high`` (each end open or closed).

    ``meaning`` is inserted after the name ("gamma is the fraction of visible labels and").
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not _is_number(value) or math.isnan(value) or (value <= low if low_open else value < low) \
            or (value >= high if high_open else value > high):
        got = f"the bool {value!r}" if isinstance(value, bool) else repr(value)
        raise ValueError(f"{name}{' ' + meaning if meaning else ''} must lie in {interval}, got {got}")


def class_ids(labels, *, name: str = "labels") -> torch.Tensor:
    """``labels`` as a 1-D int64 tensor on its own device: the one check of class labels.

    Accepts a tensor or a sequence of ints. Refuses strings (class names: map them to ids first),
    floats, bools (a bool tensor is a mask, not labels), and anything that is not 1-D, each with
    a message that says what to do.
    """
    if isinstance(labels, str) or (not isinstance(labels, torch.Tensor) and isinstance(labels, (list, tuple))
                                   and any(isinstance(x, str) for x in labels)):
        raise ValueError(
            f"{name} must be integer class ids, got strings; map each class name to an id first, "
            "e.g. ids = {name: i for i, name in enumerate(sorted(set(labels)))}"
        )
    if labels is None:
        raise ValueError(f"{name} are missing (None): give one integer class id per document")
    try:
        tensor = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be integer class ids, got {type(labels).__name__} ({error})") from None
    if tensor.dim() == 1 and tensor.numel() == 0:
        return tensor.long()  # no documents: torch reads [] as float; the caller says why empty is wrong
    bad_type = tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex()
    if bad_type or tensor.dim() != 1:
        hint = ""
        if tensor.dtype == torch.bool:
            hint = " (a bool tensor is a mask, not labels: did you swap labels and labeled_mask?)"
        elif tensor.is_floating_point():
            hint = "; use .long() on whole numbers"
        raise ValueError(f"{name} must be a 1-D integer tensor of class ids, got a {tensor.dtype} tensor of shape "
                         f"{tuple(tensor.shape)}{hint}")
    return tensor.long()


def check_class_range(labels: torch.Tensor, num_classes: int, *, name: str = "labels") -> None:
    """Every id in ``labels`` must lie in ``[0, num_classes)``; an empty tensor passes."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values from {int(labels.min())} "
                         f"to {int(labels.max())}")
