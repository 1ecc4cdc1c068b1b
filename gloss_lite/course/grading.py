"""Grade submitted notebooks: every exercise on its own, each submission in a process of its own.

    python -m gloss_lite.course.classroom grade SUBMISSION... --output grades --seed 20251 [--exercises 01.1,01.2]

A submission is a student copy of a course notebook (or a folder of them). The student is the
file name's stem, or the ``STUDENT_ID`` the notebook's parameters cell sets, or, for a file named
like a course notebook (``01_similarity_graph.ipynb``), the name of the folder it sits in.

**What is graded.** Exercises are found by the ids in the cells' metadata (``{"gloss_lite":
{"exercise": "01.2", "role": "solution" | "check"}}``, which the student copies carry), not by
position, so a moved cell is found and a deleted, duplicated or edited one gets a verdict of its
own: "solution cell missing", "check cell missing", "solution cell edited outside its markers"
(anything but the lines between ``### YOUR CODE BELOW`` and ``### YOUR CODE ABOVE`` changed), or
"uses the reference implementation" (the solution's syntax tree names one of the exercise's
forbidden functions, under any alias or ``import ... as``; ``gloss_lite.course.exercises.check`` refuses
it at run time too). Of duplicated solution cells the last is graded, as a rerun notebook would
hold it. The notebook's top-level ``import`` lines run first, then every solution cell in the
notebook's order (a later solution may call an earlier one, as in the notebook; a cell that fails
fails its own exercise only), and each exercise is checked with ``gloss_lite.course.exercises.check``
on inputs drawn from the teacher's ``--seed`` (not the fresh random inputs a student sees), so a
grade is reproducible and cannot be tuned to. An exercise with parts earns partial points (``Exercise.parts``).

**Isolation, and its limits.** Every submission runs in a new Python process, in a scratch folder
that holds a copy of the submission and is deleted afterwards, with a time limit per exercise
(``--exercise-timeout``), one per notebook (``--notebook-timeout``) and a memory limit
(``--memory-mb``, the address-space limit of the process, on Linux and macOS). Results come back
on a private channel, so printing does not forge them. A submission that writes with a relative
path therefore writes into its scratch folder, not over the grader's files, the course or another
submission. This is *not* a security sandbox: the code runs as you, can read and write any file
you can (an absolute path reaches anything), can open network connections and can start
processes. Grade untrusted code in a container, for example::

    docker run --rm --network none --memory 4g -v "$PWD/submissions:/in:ro" -v "$PWD/grades:/out" \\
        gloss-course python -m gloss_lite.course.classroom grade /in --output /out --seed 20251

**Output.** ``DIR/grades.csv`` (one row per student: ``student``, one column per exercise id with
its points, ``total``) and ``DIR/feedback/<student>.md`` (per exercise: passed or not, the message
and the hint). One progress line per submission, a summary at the end. The grader writes only
those files and its list of them (``DIR/.gloss-lite-grades.json``); it refuses a non-empty
``DIR`` that it did not write.
"""

from __future__ import annotations

import argparse
import ast
import collections
import csv
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .notebooks import (
    NotebookError,
    cell_metadata,
    cell_source,
    cell_tags,
    cells,
    exercise_role,
    frame_digest,
    read_notebook,
)

MANIFEST = ".gloss-lite-grades.json"
DEFAULT_EXERCISE_TIMEOUT = 60.0
DEFAULT_NOTEBOOK_TIMEOUT = 900.0
DEFAULT_MEMORY_MB = 8192
COURSE_NOTEBOOK_NAME = re.compile(r"^(\d\d)_\w+$")


@dataclass
class Verdict:
    """The grade of one exercise of one submission."""

    exercise: str
    points: float
    out_of: int
    status: str  # "passed", "not yet", "not attempted", "time limit", "uses the reference implementation", ...
    message: str = ""
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Graded:
    """One submitted notebook, graded."""

    path: Path
    student: str
    notebook: str  # the notebook's number, "01"
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def points(self) -> float:
        return round(sum(v.points for v in self.verdicts), 2)

    @property
    def out_of(self) -> int:
        return sum(v.out_of for v in self.verdicts)


# ---------------------------------------------------------------------------------------------
# Reading a submission
# ---------------------------------------------------------------------------------------------

def submission_files(paths: list[Path]) -> list[Path]:
    """The notebooks among ``paths`` (files as given; folders searched, checkpoints skipped)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no submission at {path}: give notebook files or folders that hold them")
    return found


def _python(source: str) -> ast.Module | None:
    """A cell's syntax tree, with IPython's ``%magic`` and ``!shell`` lines blanked; None if it is not Python."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def student_id(path: Path, notebook: dict) -> str:
    """``STUDENT_ID`` from the parameters cell if it sets one, else the file's stem (for a file named
    like a course notebook, the folder's name)."""
    for cell in cells(notebook):
        if cell.get("cell_type") != "code" or not {"parameters", "injected-parameters"} & set(cell_tags(cell)):
            continue
        tree = _python(cell_source(cell))
        for node in tree.body if tree else []:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "STUDENT_ID"):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                if value not in (None, ""):
                    found = str(value)
                    return found
    stem = path.stem
    return path.parent.name if COURSE_NOTEBOOK_NAME.match(stem) and path.parent.name else stem


def notebook_number(path: Path, notebook: dict) -> str | None:
    """Which course notebook this is: from its exercise cells' ids, else its file name."""
    prefixes = collections.Counter(role[0][:2] for role in map(exercise_role, cells(notebook)) if role)
    if prefixes:
        return prefixes.most_common(1)[0][0]
    match = COURSE_NOTEBOOK_NAME.match(path.stem)
    return match.group(1) if match else None


def reference_names(source: str, forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden names a solution's syntax tree refers to, aliases and ``import ... as`` resolved.

    A name the cell defines itself (``def propagate(...)``) is its own, not the package's.
    """
    tree = _python(source)
    if tree is None:
        return []
    short = {name.rpartition(".")[2] for name in forbidden}
    aliases, defined, used = {}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                real = alias.name.rpartition(".")[2]
                aliases[alias.asname or alias.name.partition(".")[0]] = real
                if real in short:
                    used.add(real)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            real = aliases.get(node.id, None if node.id in defined else node.id)
            if real in short:
                used.add(real)
        elif isinstance(node, ast.Attribute) and node.attr in short:
            used.add(node.attr)
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Name)
              and aliases.get(node.value.id, node.value.id) in short):
            used.add(aliases.get(node.value.id, node.value.id))  # f = sigma_sqrt
    return sorted(used)


def _imports(notebook: dict) -> str:
    """The top-level ``import`` lines of every code cell that is not a solution."""
    lines = []
    for cell in cells(notebook):
        if cell.get("cell_type") != "code" or (exercise_role(cell) or ("", ""))[1] == "solution":
            continue
        tree = _python(cell_source(cell))
        lines += [ast.unparse(node) for node in (tree.body if tree else [])
                  if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(lines))


def definitions(notebook: dict) -> list[tuple[str, str]]:
    """``(exercise id, source)`` of every solution cell, in the notebook's order (later solutions may
    call earlier ones, as in the notebook; a duplicated cell counts where its last copy stands)."""
    solutions = [(role[0], cell_source(cell)) for cell in cells(notebook)
                 if (role := exercise_role(cell)) and role[1] == "solution"]
    last = {exercise_id: index for index, (exercise_id, _) in enumerate(solutions)}
    return [cell for index, cell in enumerate(solutions) if last[cell[0]] == index]


def plan(notebook: dict, number: str, exercise_ids: list[str]) -> tuple[list[Verdict], list[dict]]:
    """Verdicts decided by reading the notebook, and the exercises left to run (with their sources)."""
    from .exercises import EXERCISES

    found = collections.defaultdict(lambda: {"solution": [], "check": []})
    for cell in cells(notebook):
        role = exercise_role(cell)
        if role and role[0] in exercise_ids:
            found[role[0]][role[1]].append(cell)
    decided, to_run = [], []
    for exercise_id in exercise_ids:
        exercise = EXERCISES[exercise_id]
        verdict = lambda status, message: Verdict(exercise_id, 0.0, exercise.points, status, message,  # noqa: E731
                                                  exercise.hint)
        solutions, checks = found[exercise_id]["solution"], found[exercise_id]["check"]
        if not solutions:
            decided.append(verdict("solution cell missing", f"no cell defines the exercise's {exercise.function}: the "
                                   f"solution cell was deleted (or its metadata removed); copy it back from a "
                                   f"fresh student copy"))
            continue
        if not checks:
            decided.append(verdict("check cell missing", f"the cell check({exercise_id!r}, {exercise.function}) was "
                                   f"deleted; copy it back from a fresh student copy"))
            continue
        cell = solutions[-1]
        source = cell_source(cell)
        note = f" (the solution cell appears {len(solutions)} times; the last one was graded)" \
            if len(solutions) > 1 else ""
        meta = cell_metadata(cell).get("gloss_lite")
        expected = meta.get("frame") if isinstance(meta, dict) else None
        if expected and frame_digest(source) != expected:
            decided.append(verdict("solution cell edited outside its markers",
                                   "only the lines between '### YOUR CODE BELOW' and '### YOUR CODE ABOVE' may "
                                   "change (the function's name, arguments and docstring stay as given)" + note))
            continue
        used = reference_names(source, exercise.forbidden)
        if used:
            decided.append(verdict("uses the reference implementation",
                                   f"the solution calls {', '.join(used)}, the package's implementation of what "
                                   f"the exercise asks you to write" + note))
            continue
        to_run.append({"exercise": exercise_id, "source": source, "note": note})
    return decided, to_run


# ---------------------------------------------------------------------------------------------
# Running one submission (the worker process)
# ---------------------------------------------------------------------------------------------

def exercise_seed(seed: int, exercise_id: str) -> int:
    return zlib.crc32(f"{seed}:{exercise_id}".encode()) & 0x7FFFFFFF


def _worker() -> int:
    """Read a job from stdin, grade its exercises, write one result line per exercise to fd 1."""
    job = json.loads(sys.stdin.read())
    results = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # the student's prints go nowhere; the results keep their own channel
    sys.stdout = open(1, "w", closefd=False)

    from . import checking

    def report(exercise_id, status, message="", credit=0.0):
        results.write(job["nonce"] + json.dumps({"exercise": exercise_id, "status": status, "message": message,
                                                 "credit": credit}) + "\n")
        results.flush()

    timeout = job["timeout"]
    namespace = {"__name__": "__main__"}
    failed = {}  # exercise id -> what went wrong while its cell ran
    try:
        exec(compile(job["imports"], "<imports>", "exec"), namespace)  # bounded by the notebook's time limit
    except BaseException as error:
        failed = {item["exercise"]: f"the notebook's imports raised {type(error).__name__}: {error}"
                  for item in job["exercises"]}
    for exercise_id, source in job["definitions"]:  # every solution cell, in the notebook's order
        if exercise_id in failed:
            continue
        try:
            checking.run_with_time_limit(
                lambda: exec(compile(source, f"<solution {exercise_id}>", "exec"), namespace), timeout)
        except checking.TimeUp:
            failed[exercise_id] = f"the solution cell did not finish within {timeout:g} s"
        except BaseException as error:  # SyntaxError, NameError, SystemExit, ...: this exercise only
            failed[exercise_id] = f"the solution cell raised {type(error).__name__}: {error}"
    for item in job["exercises"]:
        exercise_id, exercise = item["exercise"], checking.EXERCISES[item["exercise"]]
        if exercise_id in failed:
            report(exercise_id, "time limit" if "did not finish" in failed[exercise_id] else "error",
                   failed[exercise_id])
            continue
        function = namespace.get(exercise.function)
        if not callable(function):
            report(exercise_id, "not yet", f"the solution cell does not define {exercise.function}(...)")
            continue
        try:
            checking.check(exercise_id, function, seed=exercise_seed(job["seed"], exercise_id), timeout=timeout)
            report(exercise_id, "passed", "passed on the grading inputs", 1.0)
        except checking.ExerciseFailed as failure:
            status = {"timeout": "time limit", "reference": "uses the reference implementation"}.get(
                failure.reason, "not yet")
            message = re.sub(r"\n\(Random inputs from seed \d+: .*\)$", "", str(failure), flags=re.S)
            report(exercise_id, status, message, failure.credit)
        except NotImplementedError:
            report(exercise_id, "not attempted", "the stub still raises NotImplementedError")
        except BaseException as error:  # whatever else the student's code raised
            report(exercise_id, "error", f"the check stopped with {type(error).__name__}: {error}")
    results.close()
    os._exit(0)  # do not wait for a thread that a time limit left running


def _limit_memory(megabytes: int):
    def limit():
        try:
            import resource
        except ImportError:
            return
        if megabytes:
            size = megabytes * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return limit if os.name == "posix" else None


def grade_notebook(path: Path, *, seed: int, exercise_ids: list[str] | None = None,
                   exercise_timeout: float = DEFAULT_EXERCISE_TIMEOUT,
                   notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT,
                   memory_mb: int = DEFAULT_MEMORY_MB) -> Graded:
    """Grade one submitted notebook (``exercise_ids``: only these, among the notebook's exercises)."""
    from .exercises import EXERCISES

    start = time.perf_counter()
    path = Path(path)
    try:
        notebook = read_notebook(path)
    except NotebookError as error:
        raise ValueError(f"{path}: not a readable notebook ({error})") from None
    number = notebook_number(path, notebook)
    if number is None:
        raise ValueError(f"{path}: not a course notebook (no exercise cells, and no NN_ file name)")
    wanted = [i for i in EXERCISES if i.startswith(number + ".") and (exercise_ids is None or i in exercise_ids)]
    graded = Graded(path, student_id(path, notebook), number)
    decided, to_run = plan(notebook, number, wanted)
    ran = {}
    if to_run:
        nonce = secrets.token_hex(16)
        job = {"nonce": nonce, "seed": seed, "timeout": exercise_timeout, "imports": _imports(notebook),
               "definitions": definitions(notebook),
               "exercises": [{"exercise": item["exercise"]} for item in to_run]}
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent,
                                                                          os.environ.get("PYTHONPATH")]))}
        env.setdefault("MPLBACKEND", "Agg")
        with tempfile.TemporaryDirectory(prefix="gloss-grade-") as scratch:
            folder = Path(scratch) / "submission"
            folder.mkdir()
            shutil.copy(path, folder / path.name)
            try:
                finished = subprocess.run([sys.executable, "-m", "gloss_lite.course.grading", "--worker"], cwd=folder,
                                          input=json.dumps(job), capture_output=True, text=True, env=env,
                                          timeout=notebook_timeout, preexec_fn=_limit_memory(memory_mb))
                out, stopped = finished.stdout, (None if finished.returncode == 0 else
                                                 f"the grading process stopped (exit code {finished.returncode}"
                                                 f"{'; out of memory?' if finished.returncode < 0 else ''}): "
                                                 + (finished.stderr.strip().splitlines() or [''])[-1][:300])
            except subprocess.TimeoutExpired as expired:
                out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                stopped = f"the notebook's time limit of {notebook_timeout:g} s ran out before this exercise was graded"
        for line in out.splitlines():
            if line.startswith(nonce):
                result = json.loads(line[len(nonce):])
                ran[result["exercise"]] = result
        for item in to_run:
            exercise = EXERCISES[item["exercise"]]
            result = ran.get(item["exercise"], {"status": "not graded", "message": stopped or "no result came back",
                                                "credit": 0.0})
            points = round(exercise.points * float(result["credit"]), 2)
            decided.append(Verdict(item["exercise"], points, exercise.points, result["status"],
                                   result["message"] + item["note"], exercise.hint))
    graded.verdicts = sorted(decided, key=lambda v: list(EXERCISES).index(v.exercise))
    graded.seconds = time.perf_counter() - start
    return graded


# ---------------------------------------------------------------------------------------------
# A whole class
# ---------------------------------------------------------------------------------------------

def _safe_name(student: str) -> str:
    return re.sub(r"[^\w.-]", "_", student).strip(".") or "student"


def _prepare_output(output: Path, submissions: list[Path]) -> list[str]:
    """Check that ``output`` is the grader's to write; returns the files it wrote there before."""
    from .run import NOTEBOOK_DIR

    resolved = output.resolve()
    if resolved == NOTEBOOK_DIR.resolve() or any(p.resolve().parent == resolved for p in submissions):
        raise ValueError(f"{output} holds notebooks (the course's or the submissions'); write the grades "
                         f"into a folder of their own, e.g. --output grades")
    manifest = output / MANIFEST
    if manifest.exists():
        return [name for name in json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
                if ".." not in Path(name).parts]
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty and was not written by the grader; choose an empty or new "
                              f"folder for --output")
    return []


def feedback_text(student: str, graded: list[Graded]) -> str:
    lines = [f"# Feedback for {student}", ""]
    for submission in graded:
        lines += [f"**{submission.path.name}**: {submission.points:g} of {submission.out_of} points.", ""]
        for verdict in submission.verdicts:
            from .exercises import EXERCISES

            title = EXERCISES[verdict.exercise].title
            lines += [f"## Exercise {verdict.exercise} · {title}: {verdict.points:g} / {verdict.out_of}", "",
                      f"**{'Passed' if verdict.passed else verdict.status.capitalize()}.** "
                      + verdict.message.replace("\n", "  \n"), ""]
            if not verdict.passed and verdict.hint and "Hint:" not in verdict.message:
                lines += [f"Hint: {verdict.hint}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def grade(submissions: list[Path], output: Path, *, seed: int, exercise_ids: list[str] | None = None,
          exercise_timeout: float = DEFAULT_EXERCISE_TIMEOUT, notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT,
          memory_mb: int = DEFAULT_MEMORY_MB, log=print) -> dict[str, list[Graded]]:
    """Grade every submission; write ``output/grades.csv`` and ``output/feedback/<student>.md``.

    Returns the graded notebooks by student. Raises ``ValueError``/``FileExistsError`` before
    grading anything when ``output`` is not the grader's to write.
    """
    from .exercises import EXERCISES

    output = Path(output)
    files = submission_files(submissions)
    earlier = _prepare_output(output, files)
    by_student: dict[str, list[Graded]] = collections.defaultdict(list)
    for number, path in enumerate(files, start=1):
        try:
            graded = grade_notebook(path, seed=seed, exercise_ids=exercise_ids, exercise_timeout=exercise_timeout,
                                    notebook_timeout=notebook_timeout, memory_mb=memory_mb)
        except ValueError as error:
            log(f"[{number}/{len(files)}] skipped: {error}")
            continue
        earlier_copy = [g for g in by_student[graded.student] if g.notebook == graded.notebook]
        if earlier_copy:
            log(f"  {graded.student} handed in notebook {graded.notebook} twice; {path} replaces "
                f"{earlier_copy[0].path}")
            by_student[graded.student].remove(earlier_copy[0])
        by_student[graded.student].append(graded)
        passed = sum(v.passed for v in graded.verdicts)
        log(f"[{number}/{len(files)}] {graded.student} ({path.name}): {graded.points:g}/{graded.out_of} points, "
            f"{passed}/{len(graded.verdicts)} exercises passed ({graded.seconds:.1f} s)")
    columns = [i for i in EXERCISES if any(v.exercise == i for gs in by_student.values() for g in gs
                                           for v in g.verdicts)]
    output.mkdir(parents=True, exist_ok=True)
    for name in earlier:  # the grader's own files from an earlier run
        (output / name).unlink(missing_ok=True)
    written = ["grades.csv"]
    with open(output / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *columns, "total"])
        for student in sorted(by_student):
            points = {v.exercise: v.points for g in by_student[student] for v in g.verdicts}
            writer.writerow([student, *(f"{points.get(i, 0):g}" for i in columns),
                             f"{round(sum(points.values()), 2):g}"])
    (output / "feedback").mkdir(exist_ok=True)
    for student, graded in sorted(by_student.items()):
        name = f"feedback/{_safe_name(student)}.md"
        (output / name).write_text(feedback_text(student, graded), encoding="utf-8")
        written.append(name)
    (output / MANIFEST).write_text(json.dumps({"written by": "python -m gloss_lite.course.classroom grade",
                                               "files": written}, indent=1) + "\n", encoding="utf-8")
    totals = [sum(g.points for g in gs) for gs in by_student.values()]
    log(f"\n{len(by_student)} students graded into {output / 'grades.csv'}"
        + (f"; total points from {min(totals):g} to {max(totals):g}, mean {sum(totals) / len(totals):.2f}"
           if totals else ""))
    for exercise_id in columns:
        verdicts = [v for gs in by_student.values() for g in gs for v in g.verdicts if v.exercise == exercise_id]
        log(f"  {exercise_id}: {sum(v.passed for v in verdicts)} of {len(verdicts)} passed")
    return dict(by_student)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", type=Path, help="submitted notebooks, or folders of them")
    parser.add_argument("--output", type=Path, required=True, help="folder for grades.csv and feedback/")
    parser.add_argument("--seed", type=int, required=True,
                        help="the grading seed: the random inputs of every check (keep it to yourself)")
    parser.add_argument("--exercises", default=None, help="only these exercise ids, comma-separated (default: all)")
    parser.add_argument("--exercise-timeout", type=float, default=DEFAULT_EXERCISE_TIMEOUT,
                        help=f"seconds per exercise (default {DEFAULT_EXERCISE_TIMEOUT:g})")
    parser.add_argument("--notebook-timeout", type=float, default=DEFAULT_NOTEBOOK_TIMEOUT,
                        help=f"seconds per submitted notebook (default {DEFAULT_NOTEBOOK_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                        help=f"address-space limit of each grading process in MiB, 0 for none "
                             f"(default {DEFAULT_MEMORY_MB})")


def run_from_arguments(args: argparse.Namespace) -> int:
    from .exercises import EXERCISES

    exercise_ids = None
    if args.exercises:
        exercise_ids = [i.strip() for i in args.exercises.split(",") if i.strip()]
        unknown = [i for i in exercise_ids if i not in EXERCISES]
        if unknown:
            print(f"error: no exercise {', '.join(unknown)}; the exercises are {', '.join(EXERCISES)}",
                  file=sys.stderr)
            return 2
    try:
        grade(args.submissions, args.output, seed=args.seed, exercise_ids=exercise_ids,
              exercise_timeout=args.exercise_timeout, notebook_timeout=args.notebook_timeout,
              memory_mb=args.memory_mb)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker())
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.course.grading", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run_from_arguments(parser.parse_args()))
