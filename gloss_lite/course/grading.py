"""Grade submitted notebooks: every exercise on its own, in a worker process that cannot reach what decides the grade.

    python -m gloss_lite.course.classroom grade SUBMISSION... --output grades --seed 20251 [--exercises 01.1,01.2]

A submission is a student copy of a course notebook (or a folder of them). Who handed it in,
which exercises it holds and what can be decided by reading it: ``gloss_lite.course.submissions``
(a student is named by the file or its folder, never by what the notebook says).

**How an exercise is graded.** Each exercise of each submission gets a fresh worker process
(``gloss_lite.course.worker``) that holds nothing of the grader: no seed, no expected value, no
other submission, no reference. It can import torch, Python's libraries and the exercise's
*face* of the package (``Exercise.face``: the method modules a solution may use, such as
``graph`` and ``lpa`` for G-Loss by hand), and nothing else of the package, by any route; it
reads no file but Python's own and writes none outside its scratch folder; it starts no
process. It runs the notebook's imports and solution cells, then the grader calls the student's
function there with inputs drawn from the teacher's ``--seed`` (not the random inputs a student
sees, so a grade is reproducible and cannot be tuned to) and compares the results here, with the
same checkers as the notebooks' ``check`` (``gloss_lite.course.checking.run_checker``). So
nothing a submission does (replacing ``check``, printing or forging a result, returning an
object with a clever ``__float__``, reading classmates' files, a process left behind) can change
a grade: at worst it fails its own exercise. The worker's process group, and every process
below it, is ended when its exercise is graded. An exercise with parts earns partial points
(``Exercise.parts``), never more than its points. Limits: ``--exercise-timeout`` seconds for an
exercise's solution cells and check together, ``--notebook-timeout`` for a whole submission,
``--memory-mb`` of address space per worker.

**Its limits.** The grader runs on Linux (it forks its workers from a zygote and hands them Unix
sockets); elsewhere, grade in a Linux container. This is *not* a security sandbox. The worker runs
as you; where Landlock is not available (a kernel before 5.13, some containers) its file rules are
Python's audit hooks only, which native code (a C library reading a file) does not pass through.
Grade untrusted code in a container without network, for example::

    docker run --rm --network none --memory 4g -v "$PWD/submissions:/in:ro" -v "$PWD/grades:/out" \\
        gloss-course python -m gloss_lite.course.classroom grade /in --output /out --seed 20251

The seed is on the command line: keep it from the students' view of your machine.

**Output.** A gradebook in ``--output`` (``gloss_lite.course.gradebook``): ``grades.csv`` and
``feedback/<student>.md`` accumulate over runs, a regrade replaces that student's row only (and
says so), a teacher's edits are kept, and every file is written atomically. Everything that can
be checked (the arguments, the output folder, two submissions of one notebook for one student,
a teacher's edits in the way) is checked before any submission runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from .checking import ExerciseFailed, TimeUp, run_checker
from .exercises import EXERCISES
from .gradebook import Gradebook, Graded, Verdict
from .notebooks import NotebookError, read_notebook
from .submissions import imports, notebook_number, plan, solution_cells, student_of, submission_files

DEFAULT_EXERCISE_TIMEOUT = 60.0
DEFAULT_NOTEBOOK_TIMEOUT = 900.0
DEFAULT_MEMORY_MB = 8192
MIN_MEMORY_MB = 1024  # a worker holds torch: about 600 MiB of address space before any student code


@dataclass(frozen=True)
class Settings:
    """A grading run's arguments, checked (``Settings.checked``)."""

    seed: int
    exercise_ids: tuple[str, ...] | None
    exercise_timeout: float
    notebook_timeout: float
    memory_mb: int | None

    @classmethod
    def checked(cls, seed, exercise_ids, exercise_timeout, notebook_timeout, memory_mb) -> Settings:
        """The settings, or ``ValueError`` naming the first argument that is not what it must be."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"--seed must be a whole number (keep it to yourself), got {seed!r}")
        for name, value in (("--exercise-timeout", exercise_timeout), ("--notebook-timeout", notebook_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if memory_mb is not None and (isinstance(memory_mb, bool) or not isinstance(memory_mb, int)
                                      or memory_mb < MIN_MEMORY_MB):
            raise ValueError(f"--memory-mb must be a whole number of MiB of at least {MIN_MEMORY_MB} (a worker "
                             f"holds torch), or none for no limit; got {memory_mb!r}")
        if exercise_ids is not None:
            unknown = [i for i in exercise_ids if i not in EXERCISES]
            if unknown or not exercise_ids:
                raise ValueError(f"no exercise {', '.join(map(repr, unknown)) or '(none given)'}; the exercises are "
                                 f"{', '.join(EXERCISES)}")
            exercise_ids = tuple(exercise_ids)
        return cls(seed, exercise_ids, float(exercise_timeout), float(notebook_timeout), memory_mb)

    def exercises_of(self, number: str) -> dict:
        return {i: e for i, e in EXERCISES.items() if i.startswith(number + ".")
                and (self.exercise_ids is None or i in self.exercise_ids)}


def exercise_seed(seed: int, exercise_id: str) -> int:
    return zlib.crc32(f"{seed}:{exercise_id}".encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------
# One exercise, one notebook
# ---------------------------------------------------------------------------------------------

def _worker_job(exercise_id: str, cells: list, imported: dict) -> dict:
    exercise = EXERCISES[exercise_id]
    return {"exercise": exercise_id, "function": exercise.function, "face": list(exercise.face),
            "withheld": list(exercise.withheld), "imports": list(imported), "import_names": imported, "cells": cells}


def _checked_in_worker(exercise_id: str, worker, settings: Settings, budget: float) -> tuple[str, str, float]:
    """``(status, message, credit)`` of an exercise whose worker has run the solution cells."""
    from .workers import WorkerStopped

    try:
        first = worker.expect()
    except TimeUp:
        return "time limit", f"the solution cells did not finish within {budget:g} s", 0.0
    if "cell_failed" in first:
        return "error", str(first["cell_failed"])[:2000], 0.0
    if "missing" in first:
        return "not yet", str(first["missing"])[:2000], 0.0
    if first.get("defined") is not True:
        raise WorkerStopped("the grading process sent back what is not an answer")
    try:
        run_checker(exercise_id, worker, exercise_seed(settings.seed, exercise_id), timeout=budget)
    except ExerciseFailed as failure:
        return ("time limit" if failure.reason == "timeout" else "not yet"), str(failure), failure.credit
    except NotImplementedError:
        return "not attempted", "the stub still raises NotImplementedError", 0.0
    return "passed", "passed on the grading inputs", 1.0


def grade_exercise(item: dict, cells: list, imported: dict, settings: Settings, workers,
                   notebook_deadline: float) -> Verdict:
    """The verdict of one exercise, checked in a worker of its own (``gloss_lite.course.workers``)."""
    from .workers import SETUP_SECONDS, WorkerStopped

    exercise_id = item["exercise"]
    exercise = EXERCISES[exercise_id]
    left = notebook_deadline - time.monotonic()
    status, message, credit = "not graded", (f"the notebook's time limit of {settings.notebook_timeout:g} s ran "
                                             f"out before this exercise was graded"), 0.0
    if left > 0:
        worker = workers.start(_worker_job(exercise_id, cells, imported), memory_mb=settings.memory_mb,
                               cpu_seconds=math.ceil(min(settings.exercise_timeout, left)) + 30)
        try:
            ready = worker.expect(time.monotonic() + SETUP_SECONDS)
            if ready.get("ready") is not True:
                raise WorkerStopped("the grading process did not start")
            budget = min(settings.exercise_timeout, notebook_deadline - time.monotonic())
            worker.deadline = time.monotonic() + budget
            status, message, credit = _checked_in_worker(exercise_id, worker, settings, budget)
        except WorkerStopped as stopped:
            status, message, credit = "error", str(stopped), 0.0
        except TimeUp:
            status, message = "not graded", "the grading process did not start in time"
        finally:
            worker.end()
    points = round(exercise.points * min(max(float(credit), 0.0), 1.0), 2)
    return Verdict(exercise_id, points, exercise.points, status, message + item["note"], exercise.hint)


@dataclass
class Submission:
    path: Path
    student: str
    number: str
    notebook: dict


def grade_notebook(submission: Submission, settings: Settings, workers) -> Graded:
    """Grade one submitted notebook; ``workers()`` gives the running ``Workers`` when one is needed."""
    start = time.monotonic()
    decided, to_run = plan(submission.notebook, settings.exercises_of(submission.number))
    cells = solution_cells(submission.notebook)
    imported = imports(submission.notebook, [source for _, source in cells]) if to_run else {}
    for item in to_run:
        decided.append(grade_exercise(item, cells, imported, settings, workers(), start + settings.notebook_timeout))
    order = list(EXERCISES)
    return Graded(submission.path, submission.student, submission.number,
                  sorted(decided, key=lambda v: order.index(v.exercise)), time.monotonic() - start)


# ---------------------------------------------------------------------------------------------
# A whole class
# ---------------------------------------------------------------------------------------------

def read_submissions(files: list[Path], settings: Settings, log) -> list[Submission]:
    """The gradable submissions among ``files`` (the others are logged and skipped); ``ValueError`` when
    two of them are one student's copy of one notebook."""
    found, seen = [], {}
    for path in files:
        try:
            notebook = read_notebook(path)
        except NotebookError as error:
            log(f"skipped: {path}: not a readable notebook ({error})")
            continue
        number = notebook_number(path, notebook)
        if number is None:
            log(f"skipped: {path}: not a course notebook (no exercise cells, and no NN_ file name)")
            continue
        if not settings.exercises_of(number):
            log(f"skipped: {path}: notebook {number} has none of the exercises to grade")
            continue
        submission = Submission(path, student_of(path), number, notebook)
        key = (submission.student, number)
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} are both {submission.student}'s notebook {number}; nothing was "
                             f"graded: grade them in separate runs, or rename one")
        seen[key] = path
        found.append(submission)
    return found


def feedback_text(student: str, notebooks: dict) -> str:
    """A student's feedback file: per notebook, per exercise, the points, the verdict and the hint."""
    lines = [f"# Feedback for {student}", ""]
    order = list(EXERCISES)
    for _, entry in sorted(notebooks.items()):
        verdicts = sorted((Verdict(**v) for v in entry["verdicts"]),
                          key=lambda v: order.index(v.exercise) if v.exercise in order else len(order))
        points = round(sum(v.points for v in verdicts), 2)
        lines += [f"**{entry['file']}**: {points:g} of {sum(v.out_of for v in verdicts)} points.", ""]
        for verdict in verdicts:
            title = EXERCISES[verdict.exercise].title if verdict.exercise in EXERCISES else verdict.exercise
            lines += [f"## Exercise {verdict.exercise} · {title}: {verdict.points:g} / {verdict.out_of}", "",
                      f"**{'Passed' if verdict.passed else verdict.status.capitalize()}.** "
                      + verdict.message.replace("\n", "  \n"), ""]
            if not verdict.passed and verdict.hint and "Hint:" not in verdict.message:
                lines += [f"Hint: {verdict.hint}.", ""]
    return "\n".join(lines).rstrip() + "\n"


class _LazyWorkers:
    """The run's ``Workers``, started when the first exercise needs one (after every other check)."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.workers = settings, None

    def __call__(self):
        if self.workers is None:
            from .workers import Workers

            self.workers = Workers()
            needed = self.workers.memory_mb + 256
            if self.settings.memory_mb is not None and self.settings.memory_mb < needed:
                self.close()
                raise ValueError(f"--memory-mb {self.settings.memory_mb} is below what a grading worker needs to "
                                 f"start here ({needed} MiB); nothing was graded: give at least {needed}")
        return self.workers

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None


def grade(submissions: list[Path], output: Path, *, seed: int, exercise_ids: list[str] | None = None,
          exercise_timeout: float = DEFAULT_EXERCISE_TIMEOUT, notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT,
          memory_mb: int | None = DEFAULT_MEMORY_MB, log=print) -> dict[str, list[Graded]]:
    """Grade every submission into the gradebook ``output`` (``grades.csv``, ``feedback/<student>.md``).

    Returns this run's graded notebooks by student. Raises ``ValueError`` (a ``GradebookError`` for
    the output folder), ``FileNotFoundError`` or ``FileExistsError`` before any submission runs.
    """
    from .run import NOTEBOOK_DIR

    settings = Settings.checked(seed, exercise_ids, exercise_timeout, notebook_timeout, memory_mb)
    files = submission_files(submissions)
    book = Gradebook.open(Path(output), [NOTEBOOK_DIR, *{path.parent for path in files}])
    workers = _LazyWorkers(settings)
    try:
        entries = read_submissions(files, settings, log)
        book.refuse_edited({entry.student for entry in entries})
        graded_now: dict[str, list[Graded]] = {}
        for number, entry in enumerate(entries, start=1):
            graded = grade_notebook(entry, settings, workers)
            graded_now.setdefault(graded.student, []).append(graded)
            note = book.add(graded)
            passed = sum(v.passed for v in graded.verdicts)
            log(f"[{number}/{len(entries)}] {graded.student} ({entry.path.name}): {graded.points:g}/{graded.out_of} "
                f"points, {passed}/{len(graded.verdicts)} exercises passed ({graded.seconds:.1f} s)")
            if note:
                log(f"  {note}")
    except BaseException:
        book.discard()
        raise
    finally:
        workers.close()
    if graded_now:
        book.write(feedback_text, list(EXERCISES))
    _summary(book, graded_now, output, log)
    return graded_now


def _summary(book: Gradebook, graded_now: dict, output: Path, log) -> None:
    totals = [sum(g.points for g in gs) for gs in graded_now.values()]
    log(f"\n{len(graded_now)} students graded into {Path(output) / 'grades.csv'}"
        + (f"; total points from {min(totals):g} to {max(totals):g}, mean {sum(totals) / len(totals):.2f}"
           if totals else "") + f" ({len(book.record['students'])} students in the gradebook)")
    for exercise_id in EXERCISES:
        verdicts = [v for gs in graded_now.values() for g in gs for v in g.verdicts if v.exercise == exercise_id]
        if verdicts:
            log(f"  {exercise_id}: {sum(v.passed for v in verdicts)} of {len(verdicts)} passed")


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def _memory(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB (or none)") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", type=Path, help="submitted notebooks, or folders of them")
    parser.add_argument("--output", type=Path, required=True, help="folder of the gradebook (grades.csv, feedback/)")
    parser.add_argument("--seed", type=int, required=True,
                        help="the grading seed: the random inputs of every check (keep it to yourself)")
    parser.add_argument("--exercises", default=None, help="only these exercise ids, comma-separated (default: all)")
    parser.add_argument("--exercise-timeout", type=_seconds, default=DEFAULT_EXERCISE_TIMEOUT,
                        help=f"seconds per exercise: its solution cells and its check (default "
                             f"{DEFAULT_EXERCISE_TIMEOUT:g})")
    parser.add_argument("--notebook-timeout", type=_seconds, default=DEFAULT_NOTEBOOK_TIMEOUT,
                        help=f"seconds per submitted notebook (default {DEFAULT_NOTEBOOK_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=_memory, default=DEFAULT_MEMORY_MB,
                        help=f"address-space limit of each grading worker in MiB, at least {MIN_MEMORY_MB}, or none "
                             f"(default {DEFAULT_MEMORY_MB})")


def run_from_arguments(args: argparse.Namespace) -> int:
    exercise_ids = None if args.exercises is None else [i.strip() for i in args.exercises.split(",") if i.strip()]
    try:
        grade(args.submissions, args.output, seed=args.seed, exercise_ids=exercise_ids,
              exercise_timeout=args.exercise_timeout, notebook_timeout=args.notebook_timeout,
              memory_mb=args.memory_mb)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.course.grading", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run_from_arguments(parser.parse_args()))
