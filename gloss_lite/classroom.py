"""Classroom tools: student copies of the notebooks, and the Colab badge and set-up cell.

**Student copies.** The notebooks in ``notebooks/`` are the instructor's: their exercise cells
hold the solutions between two marker lines, in the style of nbgrader and otter-grader::

    def gaussian_affinity(embeddings, sigma):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

``make_student_copies`` writes a copy of every notebook in which each such block is replaced by
a stub, indented like the block, that raises ``NotImplementedError`` with the exercise's hint
(from ``gloss_lite.exercises``, matched by the name of the enclosing function). Outputs are
cleared and the Colab badge is dropped (it points at the instructor's copy). The output is a
pure function of the notebooks: running it twice writes the same bytes.

**Colab.** The README names the repository once, as the link definition ``[repository]: URL``.
``sync_colab`` derives everything else from it: the first cell of every notebook (installs the
course in Colab, does nothing elsewhere), the badge under every notebook's title, and the badges
in the README. ``colab_problems`` lists what is out of step (the tests call it).

    python -m gloss_lite.classroom student [--output student]   # the student copies
    python -m gloss_lite.classroom colab [--check]              # write (or check) badges and set-up cells
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

from .course import NOTEBOOK_DIR, ROOT, notebook_paths

README = ROOT / "README.md"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_DIR = ROOT / "student"
SETUP_CELL_ID = "colab-setup"
SETUP_MARKER = "# Colab set-up"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")
COLAB_LINK_PATTERN = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/main/")
REPOSITORY_PATTERN = re.compile(r"^\[repository\]:\s*(https://github\.com/([^/\s]+)/([^/\s]+?))/?\s*$", re.M)


# ---------------------------------------------------------------------------------------------
# Notebook files
# ---------------------------------------------------------------------------------------------

def read_notebook(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_notebook(notebook: dict, path: Path) -> None:
    """Write in the layout Jupyter uses (one-space indent, UTF-8, final newline)."""
    Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def source_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def cell_source(cell: dict) -> str:
    return "".join(cell["source"])


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


def strip_solutions(source: str, *, where: str = "cell") -> str:
    """Replace every ``BEGIN``/``END SOLUTION`` block of ``source`` by a ``NotImplementedError`` stub.

    Raises:
        ValueError: an unmatched or nested marker (``where`` names the cell in the message).
    """
    lines = source.split("\n")
    functions = _enclosing_functions(source)
    kept, start = [], None
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if marker == BEGIN:
            if start is not None:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution block; "
                                 f"close the first one with {END}")
            start = number
            indent = line[: len(line) - len(line.lstrip())]
            kept += [f"{indent}# YOUR CODE HERE",
                     f"{indent}raise NotImplementedError({_stub_message(functions.get(number))!r})"]
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


def student_notebook(notebook: dict, *, name: str = "notebook") -> dict:
    """The student copy of an instructor notebook (a new dict; the input is left as it was)."""
    copy = json.loads(json.dumps(notebook))
    for index, cell in enumerate(copy["cells"]):
        source = cell_source(cell)
        if cell["cell_type"] == "code":
            if has_solutions(source) or END in source:
                cell["source"] = source_lines(strip_solutions(source, where=f"{name}, cell {index}"))
            cell["outputs"], cell["execution_count"] = [], None
        elif BADGE_PATTERN.search(source):
            without = re.sub(r"\n*" + BADGE_PATTERN.pattern + r"\n*", "\n\n", source, count=1)
            cell["source"] = source_lines(without.rstrip("\n") if without.endswith("\n\n") else without)
    return copy


def make_student_copies(output: Path = STUDENT_DIR, notebooks: list[Path] | None = None) -> list[Path]:
    """Write the student copy of every course notebook into ``output``; returns the paths written.

    Earlier student copies in ``output`` (``NN_*.ipynb``) whose notebook no longer exists are removed.
    """
    output = Path(output)
    notebooks = notebook_paths() if notebooks is None else notebooks
    if output.resolve() == NOTEBOOK_DIR.resolve():
        raise ValueError("the student copies need a folder of their own, not notebooks/")
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        target = output / path.name
        write_notebook(student_notebook(read_notebook(path), name=path.name), target)
        written.append(target)
    for stale in set(output.glob("[0-9][0-9]_*.ipynb")) - set(written):
        stale.unlink()
    return written


# ---------------------------------------------------------------------------------------------
# Colab
# ---------------------------------------------------------------------------------------------

def repository_url(readme: Path = README) -> str:
    """The repository's URL, from the README's link definition ``[repository]: https://github.com/OWNER/NAME``."""
    found = REPOSITORY_PATTERN.findall(Path(readme).read_text(encoding="utf-8"))
    if len(found) != 1:
        raise ValueError(f"{readme} must define the repository once, as a line "
                         f"'[repository]: https://github.com/OWNER/NAME' (found {len(found)})")
    return found[0][0]


def colab_url(repository: str, relative_path: str) -> str:
    """The Colab link that opens ``relative_path`` from the repository's main branch."""
    return repository.replace("https://github.com/", "https://colab.research.google.com/github/") \
        + f"/blob/main/{relative_path}"


def badge(repository: str, relative_path: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repository, relative_path)})"


def setup_source(repository: str) -> str:
    """The first cell of every notebook: in Colab, fetch and install the course; elsewhere nothing."""
    return f"""{SETUP_MARKER}: in Google Colab this cell fetches the course and installs it (Colab's own
# torch is kept). For a GPU, first choose Runtime > Change runtime type > GPU. In JupyterLab or
# papermill this cell does nothing: the course is already installed there (see the README).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    COURSE = "/content/gloss-course"
    if not os.path.isdir(COURSE):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "{repository}", COURSE], check=True)
    %pip install --quiet --editable {{COURSE}}
    sys.path.insert(0, COURSE)  # importable at once, without restarting the runtime
    os.chdir(f"{{COURSE}}/notebooks")"""


def _title_with_badge(source: str, repository: str, relative_path: str) -> str:
    wanted = badge(repository, relative_path)
    if BADGE_PATTERN.search(source):
        return BADGE_PATTERN.sub(lambda _: wanted, source, count=1)
    title, _, rest = source.partition("\n")
    return f"{title}\n\n{wanted}\n{rest}" if rest else f"{title}\n\n{wanted}"


def colab_notebook(notebook: dict, repository: str, relative_path: str) -> dict:
    """``notebook`` with its set-up cell first and the badge under its title (a new dict)."""
    copy = json.loads(json.dumps(notebook))
    cells = copy["cells"]
    if cells and cell_source(cells[0]).startswith(SETUP_MARKER):
        cells.pop(0)
    setup = {"cell_type": "code", "execution_count": None, "id": SETUP_CELL_ID, "metadata": {},
             "outputs": [], "source": source_lines(setup_source(repository))}
    cells.insert(0, setup)
    title = next(cell for cell in cells if cell["cell_type"] == "markdown")
    title["source"] = source_lines(_title_with_badge(cell_source(title), repository, relative_path))
    return copy


def _readme_with_links(text: str, repository: str) -> str:
    return COLAB_LINK_PATTERN.sub(colab_url(repository, ""), text)


def colab_problems(readme: Path = README, notebooks: list[Path] | None = None) -> list[str]:
    """What is out of step with the README's repository URL (empty when all is in order)."""
    repository = repository_url(readme)
    problems = []
    text = Path(readme).read_text(encoding="utf-8")
    if _readme_with_links(text, repository) != text:
        problems.append(f"{Path(readme).name}: a Colab link points at another repository than {repository}")
    for path in notebook_paths() if notebooks is None else notebooks:
        relative = f"notebooks/{path.name}"
        if f"]({colab_url(repository, relative)})" not in text:
            problems.append(f"{Path(readme).name}: no Colab badge for {relative}")
        notebook = read_notebook(path)
        if notebook != colab_notebook(notebook, repository, relative):
            problems.append(f"{path.name}: the set-up cell or the Colab badge is missing or out of date")
    return problems


def sync_colab(readme: Path = README, notebooks: list[Path] | None = None) -> list[Path]:
    """Rewrite the set-up cells and badges from the README's repository URL; returns the files changed."""
    repository = repository_url(readme)
    changed = []
    text = Path(readme).read_text(encoding="utf-8")
    if _readme_with_links(text, repository) != text:
        Path(readme).write_text(_readme_with_links(text, repository), encoding="utf-8")
        changed.append(Path(readme))
    for path in notebook_paths() if notebooks is None else notebooks:
        notebook = read_notebook(path)
        updated = colab_notebook(notebook, repository, f"notebooks/{path.name}")
        if updated != notebook:
            write_notebook(updated, path)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.classroom", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student copies of the notebooks")
    student.add_argument("--output", type=Path, default=STUDENT_DIR, help="folder for the copies (default: student/)")
    colab = commands.add_parser("colab", help="write the Colab set-up cells and badges from the README's URL")
    colab.add_argument("--check", action="store_true", help="only report what is out of step; exit 1 if anything is")
    args = parser.parse_args(argv)
    if args.command == "student":
        for path in make_student_copies(args.output):
            print(path)
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
