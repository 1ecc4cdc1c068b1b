"""Classroom tools: student copies of the notebooks, and the command line of the class's tools.

**Student copies.** The notebooks in ``notebooks/`` are the instructor's: their exercise cells
hold the solutions between two marker lines, in the style of nbgrader and otter-grader::

    def gaussian_affinity(embeddings, sigma):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

``make_student_copies`` writes a copy of every notebook in which each such block is replaced by
a stub, indented like the block, that raises ``NotImplementedError`` with the exercise's hint
(from ``gloss_lite.course.exercises``, matched by the name of the enclosing function), between the lines
``### YOUR CODE BELOW`` and ``### YOUR CODE ABOVE`` (a long hint is split over several lines, so
that every line fits ``LINE_LIMIT`` characters, like the course's cells). A line that is almost a marker
(``## BEGIN SOLUTION``) is an error, not a solution shipped. Markdown cells tagged
``model-answers`` (the answers to the questions to explore) are dropped, outputs are cleared and
the Colab badge is dropped (it points at the instructor's copy). The output is a pure function of
the notebooks: running it twice writes the same bytes. It never writes into the notebooks' folder
and never replaces or deletes a file it did not write.

**Notebook files.** Every notebook this module writes (``write_notebook``, the student copies) is
in the form JupyterLab 4.6 saves (``notebook_text``), so opening one there and saving it changes
nothing; the course's notebooks are committed in that form too (``tests/test_notebook_format.py``).

**Grading.** ``python -m gloss_lite.course.classroom grade`` is ``gloss_lite.course.grading``: it finds each
exercise by the ids in the cells' metadata (``{"gloss_lite": {"exercise": "01.2", "role":
"solution"}}`` or ``"check"``).

**Colab.** The badges and set-up cells are ``gloss_lite.course.colab``'s; this module's command
line writes, checks and releases them.

    python -m gloss_lite.course.classroom student [--output student]   # the student copies
    python -m gloss_lite.course.classroom colab [--check]              # write (or check) badges and set-up cells
    python -m gloss_lite.course.classroom release                      # check the cells, tag v<version> for them
    python -m gloss_lite.course.classroom grade SUBMISSION... --output grades --seed N   # grade submissions
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

from ..files import write_atomically
from .colab import BADGE_PATTERN, colab_problems, release, sync_colab
from .notebooks import (
    BEGIN,
    END,
    STUDENT_BEGIN,
    STUDENT_END,
    cell_source,
    exercise_role,
    frame_digest,
    is_model_answer,
    notebook_text,
    read_notebook,
    source_lines,
)
from .run import NOTEBOOK_DIR, ROOT, notebook_paths

NEAR_MISS_PATTERN = re.compile(r"#+\s*(begin|end)[\s_-]*solution\b", re.I)
LINE_LIMIT = 88  # characters per line of a stub, as in every code cell of the course
MANIFEST = ".gloss-lite-student-copies.json"
STUDENT_DIR = ROOT / "student"


# ---------------------------------------------------------------------------------------------
# Student copies
# ---------------------------------------------------------------------------------------------

def _enclosing_functions(source: str) -> dict[int, str]:
    """Line number (1-based) -> name of the innermost function defined around it."""
    names: dict[int, str] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return names
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for line in range(node.lineno, node.end_lineno + 1):
                if line not in names or node.lineno > names[line][0]:
                    names[line] = (node.lineno, node.name)
    return {line: name for line, (_, name) in names.items()}


def _stub_message(function: str | None) -> str:
    from .exercises import EXERCISES

    for exercise_id, exercise in EXERCISES.items():
        if exercise.function == function:
            return (f"Exercise {exercise_id} ({exercise.title}): write this part, then run the check below. "
                    f"Hint: {exercise.hint}.")
    return "write this part of the exercise, then run the check below"


def _stub(indent: str, message: str) -> list[str]:
    """The lines of ``raise NotImplementedError(message)``, none longer than ``LINE_LIMIT``.

    A message too long for one line is split after spaces into adjacent string literals, which
    Python joins back into the same message.
    """
    line = f"{indent}raise NotImplementedError({message!r})"
    if len(line) <= LINE_LIMIT:
        return [line]
    inner = indent + "    "
    width = LINE_LIMIT - len(inner) - 2  # the two quotes
    pieces = [""]
    for word in re.findall(r"\S+\s*", message):
        if pieces[-1] and len(pieces[-1] + word) > width:
            pieces.append("")
        pieces[-1] += word
    return [f"{indent}raise NotImplementedError(", *(f"{inner}{piece!r}" for piece in pieces),
            f"{indent})"]


def _near_miss(line: str) -> bool:
    """A line that looks like a solution marker but is not exactly one (it would ship the solution)."""
    return bool(NEAR_MISS_PATTERN.match(line.strip())) and line.strip() not in (BEGIN, END)


def strip_solutions(source: str, *, where: str = "cell") -> str:
    """Replace every ``BEGIN``/``END SOLUTION`` block of ``source`` by a ``NotImplementedError`` stub
    between the two lines ``STUDENT_BEGIN`` and ``STUDENT_END`` (the student writes between them).

    Raises:
        ValueError: an unmatched or nested marker, or a line that is almost a marker
            (``## BEGIN SOLUTION``, ``### begin solution``); ``where`` names the cell in the message.
    """
    lines = source.split("\n")
    functions = _enclosing_functions(source)
    kept, start = [], None
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if _near_miss(line):
            raise ValueError(f"{where}, line {number}: {marker!r} is not a solution marker, so the solution "
                             f"would reach the student copy; write it exactly as {BEGIN!r} or {END!r}")
        if marker == BEGIN:
            if start is not None:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution block; "
                                 f"close the first one with {END}")
            start = number
            indent = line[: len(line) - len(line.lstrip())]
            kept += [f"{indent}{STUDENT_BEGIN}",
                     *_stub(indent, _stub_message(functions.get(number))),
                     f"{indent}{STUDENT_END}"]
        elif marker == END:
            if start is None:
                raise ValueError(f"{where}, line {number}: {END} without a {BEGIN} before it")
            start = None
        elif start is None:
            kept.append(line)
    if start is not None:
        raise ValueError(f"{where}, line {start}: {BEGIN} is never closed; add a line {END}")
    return "\n".join(kept)


def has_solutions(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.split("\n"))


def student_notebook(notebook: dict, *, name: str = "notebook", keep_outputs: bool = False) -> dict:
    """The student copy of an instructor notebook (a new dict; the input is left as it was).

    Solutions become stubs, model answers are dropped, outputs cleared, the Colab badge removed; a
    solution cell's metadata gets the digest of its frame, for the grader. ``keep_outputs=True``
    (the student build of the website, from executed notebooks) keeps the outputs of every cell
    but the exercises' solution and check cells.
    """
    student = copy.deepcopy(notebook)
    cells = []
    for index, cell in enumerate(student["cells"]):
        if is_model_answer(cell):
            continue
        source = cell_source(cell)
        if cell["cell_type"] == "code":
            stripped = strip_solutions(source, where=f"{name}, cell {index}")
            if stripped != source:
                cell["source"] = source_lines(stripped)
            if (exercise_role(cell) or ("", ""))[1] == "solution":
                cell["metadata"]["gloss_lite"]["frame"] = frame_digest(stripped)
            if not keep_outputs or stripped != source or exercise_role(cell):
                cell["outputs"], cell["execution_count"] = [], None
        elif BADGE_PATTERN.search(source):
            without = re.sub(r"\n*" + BADGE_PATTERN.pattern + r"\n*", "\n\n", source, count=1)
            cell["source"] = source_lines(without.rstrip("\n") if without.endswith("\n\n") else without)
        cells.append(cell)
    student["cells"] = cells
    return student


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(output: Path) -> dict[str, str]:
    path = output / MANIFEST
    if not path.exists():
        return {}
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {name: digest for name, digest in files.items() if isinstance(digest, str) and "/" not in name}


def make_student_copies(output: Path = STUDENT_DIR, notebooks: list[Path] | None = None) -> list[Path]:
    """Write the student copies (see ``write_student_copies``); returns the paths written."""
    return write_student_copies(output, notebooks)[0]


def write_student_copies(output: Path = STUDENT_DIR,
                         notebooks: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """Write the student copy of every course notebook into ``output``; returns the paths written
    and the earlier copies removed.

    Writes only files of its own: ``output/.gloss-lite-student-copies.json`` lists what it wrote,
    with a digest of each file. It replaces one of those files only while it is unchanged, removes
    an earlier copy whose notebook is gone only while it is unchanged, and leaves every other file
    alone. Nothing is written unless every copy can be.

    Raises:
        ValueError: ``output`` is the folder of the notebooks being read, or a notebook's solution
            markers are broken (the message names notebook, cell and line).
        FileExistsError: a file it would replace is not one it wrote (or was edited since); the
            message lists them.
    """
    output = Path(output)
    notebooks = notebook_paths() if notebooks is None else [Path(p) for p in notebooks]
    sources = {path.resolve().parent for path in notebooks} | {NOTEBOOK_DIR.resolve()}
    if output.resolve() in sources:
        raise ValueError(f"{output} holds the instructor notebooks being read; the student copies need a "
                         f"folder of their own (e.g. --output student)")
    copies = {}
    for path in notebooks:
        copies[path.name] = notebook_text(student_notebook(read_notebook(path), name=path.name)).encode("utf-8")
    manifest = _read_manifest(output)
    blocked = []
    for name, data in copies.items():
        target = output / name
        if target.exists() or target.is_symlink():
            current = _digest(target.read_bytes()) if target.is_file() else None
            if current != _digest(data) and (name not in manifest or manifest[name] != current):
                blocked.append(str(target))
    if blocked:
        raise FileExistsError("the student copies would overwrite files that this command did not write (or that "
                              "were edited since): " + ", ".join(blocked)
                              + "; move them away or choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    removed = []
    for name, digest in manifest.items():
        stale = output / name
        if name not in copies and stale.is_file() and _digest(stale.read_bytes()) == digest:
            stale.unlink()
            removed.append(stale)
    written = []
    for name, data in copies.items():
        target = output / name
        write_atomically(target, data)
        written.append(target)
    write_atomically(output / MANIFEST, (json.dumps(
        {"written by": "python -m gloss_lite.course.classroom student",
         "files": {name: _digest(data) for name, data in copies.items()}}, indent=1) + "\n").encode("utf-8"))
    return written, removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.course.classroom", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student copies of the notebooks")
    student.add_argument("--output", type=Path, default=STUDENT_DIR, help="folder for the copies (default: student/)")
    colab = commands.add_parser("colab", help="write the Colab set-up cells and badges from the README's URL")
    colab.add_argument("--check", action="store_true", help="only report what is out of step; exit 1 if anything is")
    commands.add_parser("release", help="check the set-up cells and tag this version (v<version>) for them")
    from .grading import add_arguments, run_from_arguments

    add_arguments(commands.add_parser("grade", help="grade submitted notebooks into grades.csv and feedback files"))
    args = parser.parse_args(argv)
    if args.command == "grade":
        return run_from_arguments(args)
    if args.command == "release":
        try:
            tag = release()
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"tagged {tag}; publish it for the Colab set-up cells with: git push origin {tag}")
        return 0
    if args.command == "student":
        try:
            written, removed = write_student_copies(args.output)
        except (ValueError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for path in written:
            print(path)
        for path in removed:
            print("removed the earlier copy", path)
        return 0
    if args.check:
        problems = colab_problems()
        print("\n".join(problems) or "Colab set-up cells and badges are in step with the README.")
        return 1 if problems else 0
    for path in sync_colab():
        print("updated", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
