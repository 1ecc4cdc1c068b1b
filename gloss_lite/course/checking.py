"""``check(id, function)``: every notebook's auto-check of a coded exercise, with a time limit.

    >>> from gloss_lite.course.checking import check
    >>> check("01.2", gaussian_kernel)         # doctest: +SKIP
    Exercise 01.2 (the Gaussian kernel) passed on 5 random inputs.

``check`` runs the exercise's checker (``gloss_lite.course.exercises``) on fresh random inputs:
the student's function and the reference get the same inputs and their results are compared. A
difference raises ``ExerciseFailed`` (an ``AssertionError``) whose message says what differs, on
which input, and gives a hint (a fuller one after the third failed try); it also names the
random seed, so ``check(id, fn, seed=...)`` repeats the same inputs. A stub that still raises
``NotImplementedError`` is let through as it is, so an unfinished exercise reads as unfinished.
A check that does not finish within ``timeout`` seconds fails with a message that says so.

A solution may not call the package's implementation of what it is asked to write: ``check``
refuses a function that refers to one of the exercise's ``forbidden`` names, under any alias
(``reference_uses`` reads the names its compiled code refers to). This is a courtesy to the
student, who learns at once; the grader does not rely on it (``gloss_lite.course.grading`` runs
the student's code where the reference cannot be imported at all).

``run_checker`` is the part the grader shares: it runs a checker against any caller of the
student's function (here ``LocalStudent``, in this process) and turns what the checker found
into an ``ExerciseFailed`` with the exercise's message and hint.
"""

from __future__ import annotations

import builtins
import random
import signal
import sys
import threading
import types
from collections.abc import Callable

import torch

from .calls import CALLS, decode, encode
from .comparing import Mismatch, StudentRaised, current, describe
from .exercises import EXERCISES

DEFAULT_TIMEOUT = 60.0  # seconds a student's function may take for one whole check


class ExerciseFailed(AssertionError):
    """The student's function disagrees with the reference (the message says where and why).

    ``credit`` is the share of the exercise's points earned anyway (an exercise with parts, one
    of them right), between 0 and 1; ``reason`` is ``"wrong"``, ``"timeout"`` or ``"reference"``.
    """

    def __init__(self, message: str, *, credit: float = 0.0, reason: str = "wrong") -> None:
        super().__init__(message)
        self.credit, self.reason = min(max(float(credit), 0.0), 1.0), reason


class TimeUp(BaseException):
    """The time limit ran out (a BaseException, so a student's ``except Exception`` lets it by)."""


class LocalStudent:
    """Calls the student's function in this process, through the same calls and values as a grading
    worker (``gloss_lite.course.calls``): the function gets copies of the inputs, and the checker
    gets back plain data."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def run(self, call: str, *args):
        try:
            value = CALLS[call](self.function, *decode(encode(args)))
        except NotImplementedError:
            raise
        except Exception as error:  # the student's code broke; the checker says on which input
            raise StudentRaised(f"{type(error).__name__}: {error}") from error
        return decode(encode(value))


# ---------------------------------------------------------------------------------------------
# Calls to the reference
# ---------------------------------------------------------------------------------------------

def _resolve(dotted: str):
    """The object a dotted name such as ``torch.autograd.grad`` names, from the modules already loaded."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            value = module
            for attribute in parts[cut:]:
                value = getattr(value, attribute, None)
            return value
    return None


def forbidden_objects(names: tuple[str, ...]) -> dict[int, str]:
    """``id(object) -> name`` for every forbidden name that names an object loaded in this process.

    A bare name is looked up in every loaded module of the package (a function the student's code
    holds was loaded with its module); a dotted one is resolved from its module.
    """
    found = {}
    package = [module for name, module in list(sys.modules.items())
               if name == "gloss_lite" or name.startswith("gloss_lite.")]
    for name in names:
        if "." in name:
            value = _resolve(name)
            if value is not None:
                found[id(value)] = name
            continue
        for module in package:
            value = getattr(module, name, None)
            if value is not None and not isinstance(value, types.ModuleType):
                found[id(value)] = name
    return found


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _code_names(constant)
    return names


def reference_uses(function: Callable, forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden names ``function`` refers to: itself, its globals (under any alias), its closure
    and the attributes it reads (``module.sigma_sqrt``). Empty when it uses none.

    This reads what the compiled code names; a call assembled at run time (``getattr(m, "si" + "gma")``)
    is not seen here (the grader does not need to see it: the reference cannot be imported there).
    """
    objects = forbidden_objects(forbidden)
    short = {name.rpartition(".")[2] for name in forbidden}
    if id(function) in objects:
        return [objects[id(function)]]
    target = getattr(function, "func", function)  # functools.partial
    code = getattr(target, "__code__", None)
    if code is None:
        return []
    used = set()
    scope = getattr(target, "__globals__", {})
    for name in _code_names(code):
        value = scope[name] if name in scope else getattr(builtins, name, None)
        if value is not None and id(value) in objects:
            used.add(objects[id(value)])
        elif name not in scope and name in short:
            used.add(name)
    for cell in getattr(target, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if id(value) in objects:
            used.add(objects[id(value)])
    return sorted(used)


# ---------------------------------------------------------------------------------------------
# Running a checker
# ---------------------------------------------------------------------------------------------

failures: dict[str, int] = {}  # failed tries per exercise in this Python session, for the fuller hint


def exercise(exercise_id: str):
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are {', '.join(EXERCISES)}")
    return EXERCISES[exercise_id]


def _title(exercise_id: str) -> str:
    return f"Exercise {exercise_id} ({EXERCISES[exercise_id].title})"


def timed_out(exercise_id: str, timeout: float, repeat: str = "") -> ExerciseFailed:
    return ExerciseFailed(
        f"{_title(exercise_id)}: not yet. The check did not finish within {timeout:g} s "
        f"(stopped {current['where'].replace('input', 'at input', 1)}): look for a loop that never ends "
        f"or work that grows too fast.{repeat}", reason="timeout")


def run_checker(exercise_id: str, student, seed: int, *, timeout: float | None = None, repeat: str = "",
                tries: dict[str, int] | None = None) -> int:
    """Run the checker of ``exercise_id`` against ``student`` on the inputs of ``seed``; returns how
    many inputs it tried.

    Raises ``ExerciseFailed`` with the message, the hint (the fuller one from the third failure
    counted in ``tries``) and ``repeat`` appended; ``NotImplementedError`` unchanged.
    """
    entry = exercise(exercise_id)
    current["where"] = "before the first input"
    try:
        return entry.checker(student, torch.Generator().manual_seed(seed))
    except TimeUp:
        raise timed_out(exercise_id, timeout or 0, repeat) from None
    except Mismatch as mismatch:
        problem, credit, cause = str(mismatch), mismatch.credit, mismatch.__cause__
    except (NotImplementedError, ExerciseFailed):
        raise
    except Exception as error:  # a result the checker could not read (a worker that sent garbage)
        problem, credit, cause = f"the check could not read your function's result ({type(error).__name__}: " \
                                 f"{error})\n  on {current['where']}", 0.0, None
    more = ""
    if tries is not None:
        tries[exercise_id] = tries.get(exercise_id, 0) + 1
        if entry.more_hint and tries[exercise_id] >= 3:
            more = f"\nA fuller hint (after {tries[exercise_id]} tries): {entry.more_hint}."
    raise ExerciseFailed(f"{_title(exercise_id)}: not yet. {problem}\nHint: {entry.hint}.{more}{repeat}",
                         credit=credit) from cause


def run_with_time_limit(run: Callable[[], int], timeout: float | None) -> int:
    """``run()``, stopped after ``timeout`` seconds: by an alarm on the main thread (it interrupts the
    student's code), elsewhere by waiting for a worker thread (which is then left to finish alone)."""
    if timeout is None:
        return run()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def alarm(signum, frame):
            raise TimeUp

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return run()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome = {}

    def worker():
        try:
            outcome["tried"] = run()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeUp
    if "error" in outcome:
        raise outcome["error"]
    return outcome["tried"]


def check(exercise_id: str, function: Callable, *, seed: int | None = None,
          timeout: float | None = DEFAULT_TIMEOUT) -> None:
    """Check a student's function against the reference of exercise ``exercise_id`` (e.g. ``"01.2"``).

    Prints one line when it passes. Raises ``ExerciseFailed`` with what differs, on which input,
    a hint and the seed to repeat the inputs; when ``function`` uses the package's implementation
    (``reason="reference"``); or when the whole check takes more than ``timeout`` seconds
    (``reason="timeout"``; ``None``: no limit). Lets ``NotImplementedError`` through unchanged.
    """
    entry = exercise(exercise_id)
    if not callable(function):
        raise TypeError(f"check({exercise_id!r}, ...) needs your function itself, got {describe(function)}")
    used = reference_uses(function, entry.forbidden)
    if used:
        raise ExerciseFailed(
            f"{_title(exercise_id)}: not yet. Your function uses the reference implementation "
            f"({', '.join(used)}); the exercise is to write it yourself.\nHint: {entry.hint}.", reason="reference")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    repeat = (f"\n(Random inputs from seed {seed}: check({exercise_id!r}, {entry.function}, seed={seed}) "
              f"repeats them.)")
    student = LocalStudent(function)
    try:
        tried = run_with_time_limit(
            lambda: run_checker(exercise_id, student, seed, timeout=timeout, repeat=repeat, tries=failures), timeout)
    except TimeUp:
        raise timed_out(exercise_id, timeout, repeat) from None
    print(f"{_title(exercise_id)} passed on {tried} random inputs.")
