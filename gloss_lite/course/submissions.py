"""Reading a submitted notebook: whose it is, which notebook, and what the grader can decide without running it.

**Who.** A student is named by the grader, never by the submission: by the file's name (its
stem), or, for a file named like a course notebook (``01_similarity_graph.ipynb``), by the name
of the folder it sits in. What a notebook says about itself (a ``STUDENT_ID`` parameter) is not
read.

**Which exercises.** Exercises are found by the ids in the cells' metadata (``{"gloss_lite":
{"exercise": "01.2", "role": "solution" | "check"}}``, which the student copies carry), not by
position. ``plan`` gives a verdict of its own to a deleted, duplicated or edited cell: "solution
cell missing", "check cell missing", "solution cell edited outside its markers" (anything but the
lines between ``### YOUR CODE BELOW`` and ``### YOUR CODE ABOVE`` changed; blank lines do not
count), and "uses the reference implementation" (the cell names one of the exercise's forbidden
functions, under any alias or ``import ... as``, and does not define it itself in any solution
cell). That last verdict is a courtesy that says what went wrong; what keeps a solution from the
reference is where it runs (``gloss_lite.course.worker``). Of duplicated solution cells the last
is graded, as a rerun notebook would hold it.

**What a worker runs.** Every solution cell in the notebook's order (a later solution may call
an earlier one), after the notebook's top-level ``import`` lines that bind a name the solution
cells use (``imports``): a notebook that imports pandas for its figures does not load pandas to
grade a kernel.
"""

from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

from .gradebook import Verdict
from .notebooks import cell_metadata, cell_source, cells, exercise_role, frame_digest

COURSE_NOTEBOOK_NAME = re.compile(r"^(\d\d)_\w+$")


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


def student_of(path: Path) -> str:
    """The student a submission belongs to: the file's stem, or for a file named like a course
    notebook, its folder's name."""
    path = Path(path)
    return path.parent.name if COURSE_NOTEBOOK_NAME.match(path.stem) and path.parent.name else path.stem


def notebook_number(path: Path, notebook: dict) -> str | None:
    """Which course notebook this is: from its exercise cells' ids, else its file name."""
    prefixes = collections.Counter(role[0][:2] for role in map(exercise_role, cells(notebook)) if role)
    if prefixes:
        return prefixes.most_common(1)[0][0]
    match = COURSE_NOTEBOOK_NAME.match(Path(path).stem)
    return match.group(1) if match else None


def python_source(source: str) -> str:
    """A cell's source with IPython's ``%magic`` and ``!shell`` lines blanked."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))


def _tree(source: str) -> ast.Module | None:
    try:
        return ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        return None


def defined_names(sources: list[str]) -> set[str]:
    """Every name the cells define themselves: functions, classes, assignments, arguments."""
    defined = set()
    for tree in filter(None, map(_tree, sources)):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
    return defined


def reference_names(source: str, forbidden: tuple[str, ...], defined: set[str] = frozenset()) -> list[str]:
    """The forbidden names a solution's syntax tree refers to, aliases and ``import ... as`` resolved.

    A name the solution cells define themselves (``defined``, and this cell's own) is the
    student's, not the package's.
    """
    tree = _tree(source)
    if tree is None:
        return []
    short = {name.rpartition(".")[2] for name in forbidden}
    own = set(defined) | defined_names([source])
    aliases, used = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                real = alias.name.rpartition(".")[2]
                aliases[alias.asname or alias.name.partition(".")[0]] = real
                if real in short:
                    used.add(real)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            real = aliases.get(node.id, None if node.id in own else node.id)
            if real in short:
                used.add(real)
        elif isinstance(node, ast.Attribute) and node.attr in short:
            used.add(node.attr)
    return sorted(used)


def solution_cells(notebook: dict) -> list[tuple[str, str]]:
    """``(exercise id, source)`` of every solution cell in the notebook's order, magics blanked; of a
    duplicated cell only the last copy counts, where it stands."""
    solutions = [(role[0], python_source(cell_source(cell))) for cell in cells(notebook)
                 if (role := exercise_role(cell)) and role[1] == "solution"]
    last = {exercise_id: index for index, (exercise_id, _) in enumerate(solutions)}
    return [cell for index, cell in enumerate(solutions) if last[cell[0]] == index]


def _loaded_names(sources: list[str]) -> set[str]:
    return {node.id for tree in filter(None, map(_tree, sources)) for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def imports(notebook: dict, sources: list[str]) -> dict[str, list[str]]:
    """The notebook's top-level import statements (outside solution cells) that bind a name ``sources``
    use, each cut down to those names: ``{statement: [names it binds]}``, in the notebook's order."""
    used = _loaded_names(sources)
    found = {}
    for cell in cells(notebook):
        if cell.get("cell_type") != "code" or (exercise_role(cell) or ("", ""))[1] == "solution":
            continue
        tree = _tree(cell_source(cell))
        for node in tree.body if tree else []:
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or any(a.name == "*" for a in node.names):
                continue
            kept = [a for a in node.names if (a.asname or a.name.partition(".")[0]) in used]
            if kept:
                statement = ast.unparse(type(node)(**{**vars(node), "names": kept}))
                found[statement] = [a.asname or a.name.partition(".")[0] for a in kept]
    return found


def plan(notebook: dict, exercises: dict) -> tuple[list[Verdict], list[dict]]:
    """Verdicts decided by reading the notebook, and the exercises left to run (``{"exercise", "note"}``).

    ``exercises``: the ``Exercise`` entries to grade, by id.
    """
    found = collections.defaultdict(lambda: {"solution": [], "check": []})
    for cell in cells(notebook):
        role = exercise_role(cell)
        if role and role[0] in exercises:
            found[role[0]][role[1]].append(cell)
    defined = defined_names([source for _, source in solution_cells(notebook)])
    decided, to_run = [], []
    for exercise_id, exercise in exercises.items():
        def verdict(status, message):
            return Verdict(exercise_id, 0.0, exercise.points, status, message, exercise.hint)

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
        source = cell_source(solutions[-1])
        note = f" (the solution cell appears {len(solutions)} times; the last one was graded)" \
            if len(solutions) > 1 else ""
        meta = cell_metadata(solutions[-1]).get("gloss_lite")
        expected = meta.get("frame") if isinstance(meta, dict) else None
        if expected and frame_digest(source) != expected:
            decided.append(verdict("solution cell edited outside its markers",
                                   "only the lines between '### YOUR CODE BELOW' and '### YOUR CODE ABOVE' may "
                                   "change (the function's name, arguments and docstring stay as given)" + note))
            continue
        used = reference_names(source, exercise.forbidden, defined)
        if used:
            decided.append(verdict("uses the reference implementation",
                                   f"the solution calls {', '.join(used)}, the package's implementation of what "
                                   f"the exercise asks you to write" + note))
            continue
        to_run.append({"exercise": exercise_id, "note": note})
    return decided, to_run
