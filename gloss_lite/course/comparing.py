"""Comparing a student's function with a reference: what an exercise is, and how a checker reports a difference.

An exercise (``Exercise``) names the function the student writes, a hint, its points, and a
*checker*: ``checker(student, generator)`` draws random inputs from ``generator``, asks the
student's function for its results (``ask``), computes the reference's, compares them
(``compare``) and raises ``Mismatch`` at the first difference, with what differs and on which
input; it returns how many inputs it tried. ``same_outputs(cases, reference)`` builds the
checker of an exercise whose function only maps inputs to an output.

``student`` is not the function itself but a caller (``gloss_lite.course.checking`` calls it in
the notebook's process, ``gloss_lite.course.grading`` in a worker process): ``student.run(name,
*args)`` runs one of the calls of ``gloss_lite.course.calls`` and returns plain data, so the
same checker grades in both places and the comparison always happens on the checker's side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .calls import Opaque


@dataclass(frozen=True)
class Exercise:
    """One coded exercise: what it asks for, how to check it, a hint, its points, what it may use.

    ``forbidden`` names the package's implementations of the exercise (a bare name such as
    ``"sigma_sqrt"``, or a dotted one such as ``"torch.autograd.grad"``): a notebook's ``check``
    and the grader refuse a solution that names one, with a message that says so. ``face`` lists
    the package's method modules (``"graph"``, ``"lpa"``, ``"masking"``, ``"losses"``, ``"sigma"``,
    ``"baselines"``) that a solution may call when it is graded; nothing else of the package can
    be imported there, so the reference cannot be reached by any route. ``withheld`` names other
    libraries' implementations that the grading worker removes too: a module (``"sklearn"``,
    ``"pytorch_metric_learning"``) or a torch function (``"torch.autograd.grad"``). ``more_hint`` is shown
    from the third failed try on; ``parts`` name the parts that earn partial credit, in order.
    """

    title: str
    function: str  # the name of the function the student writes
    hint: str
    checker: Callable  # checker(student, generator) -> inputs tried; raises Mismatch
    forbidden: tuple[str, ...] = ()
    face: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()
    points: int = 2
    more_hint: str = ""
    parts: tuple[str, ...] = field(default=())


class Mismatch(Exception):
    """Raised by a checker at the first difference; ``credit`` is the share of the points that the
    parts checked before it are worth."""

    def __init__(self, message: str, *, credit: float = 0.0) -> None:
        super().__init__(message)
        self.credit = credit


class StudentRaised(Exception):
    """The student's function raised; the message is ``"ValueError: what it said"``."""


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, {value.dtype}"
    if isinstance(value, Opaque):
        return value.type_name
    return type(value).__name__


current = {"where": "before the first input"}  # the input being tried, for a time-limit message


def ask(student, where: str, *args, call: str = "call"):
    """``student.run(call, *args)``: the student's result on one input, described by ``where``.

    A function that raised becomes a ``Mismatch`` naming the error and the input; a stub's
    ``NotImplementedError`` goes through unchanged, so an unfinished exercise reads as unfinished.
    """
    current["where"] = where
    try:
        return student.run(call, *args)
    except StudentRaised as error:
        raise Mismatch(f"your function raised {error}\n  on {where}") from error.__cause__


def _compare_exact(yours: torch.Tensor, expected: torch.Tensor, where: str) -> None:
    if not torch.equal(yours.to(expected.dtype), expected):
        first = (yours.to(expected.dtype) != expected).nonzero()[0].tolist()
        raise Mismatch(f"values differ first at index {first}: yours {yours[tuple(first)].item()}, "
                       f"expected {expected[tuple(first)].item()}\n  on {where}")


def compare(yours, expected, where: str, *, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Raise ``Mismatch`` unless ``yours`` equals ``expected`` (tensors and numbers: within
    ``atol + rtol * |expected|``; integer and bool tensors: exactly)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(yours, torch.Tensor):
            raise Mismatch(f"expected a tensor, got {describe(yours)}\n  on {where}")
        if yours.shape != expected.shape:
            raise Mismatch(f"expected shape {tuple(expected.shape)}, got {tuple(yours.shape)}\n  on {where}")
        if expected.dtype == torch.bool or not expected.is_floating_point():
            return _compare_exact(yours, expected, where)
        yours = yours.detach().to(torch.float64).cpu()
        expected = expected.detach().to(torch.float64).cpu()
        if not torch.isfinite(yours).all():
            raise Mismatch(f"your result holds NaN or inf\n  on {where}")
        gap = (yours - expected).abs()
        if not (gap <= atol + rtol * expected.abs()).all():
            index = tuple(torch.unravel_index(gap.argmax(), gap.shape)) if gap.dim() else ()
            shown = f" at index {[int(i) for i in index]}" if index else ""
            raise Mismatch(f"largest difference {gap.max().item():.3g}{shown}: yours {yours[index].item():.6g}, "
                           f"expected {expected[index].item():.6g}\n  on {where}")
        return
    try:
        yours = float(yours)
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"expected a number, got {describe(yours)}\n  on {where}") from None
    if not abs(yours - float(expected)) <= atol + rtol * abs(float(expected)):
        raise Mismatch(f"yours {yours:.6g}, expected {float(expected):.6g}\n  on {where}")


def same_outputs(cases: Callable[[torch.Generator], list[tuple[str, tuple]]], reference: Callable, **tolerance):
    """A checker that calls the student's function and ``reference`` on the same inputs.

    ``cases(generator)`` draws ``(description, args)`` pairs; the student's function gets a copy
    of ``args``, so neither side sees what the other did to them.
    """

    def checker(student, generator: torch.Generator) -> int:
        drawn = cases(generator)
        for number, (description, args) in enumerate(drawn, start=1):
            where = f"input {number} of {len(drawn)}: {description}"
            expected = reference(*args)
            compare(ask(student, where, *args), expected, where, **tolerance)
        return len(drawn)

    return checker
