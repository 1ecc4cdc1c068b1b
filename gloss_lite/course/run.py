"""Run the course's notebooks with papermill: the whole course, or each one with smoke parameters.

``python -m gloss_lite.course`` executes every notebook in ``notebooks/`` in order, with its
default parameters, into ``outputs/course/``. The tests call ``run_notebook`` with the smoke
parameters each notebook declares in its metadata::

    "metadata": {"gloss_lite": {
        "smoke_parameters": {"MAX_TRAIN": 120},
        "checks": {"frozen_lr_accuracy": {"min": 0.8}, "affinity_asymmetry": {"max": 1e-6}}
    }}

Each check names a value the notebook stores with ``gloss_lite.course.records.record`` and bounds it
(``min``, ``max``, or ``equals``).

What the runner refuses, before it runs anything (``CourseError``, a ``ValueError``):

- a path that is not a notebook (missing, a folder, another file type, not notebook JSON);
- a parameter the notebook does not declare in its cell tagged ``parameters`` (papermill would
  run with the default and say nothing): the error lists the declared ones;
- an output folder that holds the source notebook (``--output notebooks`` would overwrite the
  instructor notebooks with outputs and pinned parameters), and any existing file it would
  overwrite that an earlier run of papermill did not write to that same path;
- a cell time limit that is not a positive number of seconds (papermill reads 0 as no limit;
  pass ``cell_timeout=None`` to ``run_notebook`` for that, on purpose);
- two notebooks of one name (from two folders) for one output folder.

A notebook runs into a hidden ``.NAME.partial.ipynb`` file and becomes ``NAME.ipynb`` only once
papermill has finished it (every cell run, or stopped at a failing cell, which it records), so a
run killed part-way never leaves a copy that looks executed.

The command line checks every notebook first and stops before starting if any is refused, so a
run never stops half-way for a typo.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import sys
import time
from pathlib import Path

from ..files import write_atomically
from . import notebooks
from .notebooks import NotebookError, cell_source, cell_tags
from .records import read_records

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
# The inline backend records figures as PNG outputs; Agg (a common MPLBACKEND) would record none.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The course notebooks, in teaching order (``00_*.ipynb``, ``01_*.ipynb``, ...)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


class CourseError(ValueError):
    """A notebook, parameter, output folder or setting that the course runner refuses."""


def read_notebook(path: Path) -> dict:
    """The notebook at ``path`` as a dict; ``CourseError`` naming the path if it is not a notebook."""
    path = Path(path)
    available = ", ".join(p.name for p in notebook_paths()) or "none"
    if not path.exists():
        raise CourseError(f"{path}: no such notebook (the course notebooks: {available})")
    if not path.is_file() or path.suffix != ".ipynb":
        raise CourseError(f"{path}: not a notebook (.ipynb file); the course notebooks: {available}")
    try:
        return notebooks.read_notebook(path)
    except NotebookError as error:
        raise CourseError(str(error)) from None


def course_metadata(path: Path) -> dict:
    """The ``gloss_lite`` block of a notebook's metadata (smoke parameters and checks)."""
    metadata = read_notebook(path).get("metadata")
    found = metadata.get("gloss_lite") if isinstance(metadata, dict) else None
    return found if isinstance(found, dict) else {}


def declared_parameters(path: Path) -> dict | None:
    """The names assigned in the notebook's cell tagged ``parameters``, with their default values.

    ``None`` when the notebook has no such cell. A value that is not a plain literal is ``...``.
    """
    tagged = [cell for cell in notebooks.cells(read_notebook(path)) if "parameters" in cell_tags(cell)]
    if not tagged:
        return None
    source = cell_source(tagged[0])
    try:
        body = ast.parse(source).body
    except SyntaxError as error:
        raise CourseError(f"{path}: the parameters cell is not valid Python ({error})") from None
    declared = {}
    for node in body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    declared[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    declared[target.id] = ...
    return declared


def check_parameters(path: Path, parameters: dict) -> None:
    """``CourseError`` unless every name in ``parameters`` is declared in the parameters cell."""
    if not parameters:
        return
    declared = declared_parameters(path)
    if declared is None:
        raise CourseError(f"{Path(path).name} has no cell tagged 'parameters', so it takes no parameters; "
                          f"got {sorted(parameters)}")
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        hints = [f"{close[0]!r} for {name!r}" for name in unknown
                 if (close := difflib.get_close_matches(name, declared, n=1, cutoff=0.6))]
        raise CourseError(
            f"{Path(path).name} declares no parameter(s) {unknown}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; its parameters are {', '.join(sorted(declared))}"
        )


def _written_by_papermill_to(path: Path) -> bool:
    """Whether ``path`` is an executed notebook that papermill wrote to this very path."""
    try:
        written_to = notebooks.read_notebook(path)["metadata"]["papermill"]["output_path"]
        return Path(written_to).resolve() == path.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def output_path(path: Path, output_dir: Path) -> Path:
    """Where the executed copy of ``path`` goes, after checking that nothing is lost by writing it.

    ``CourseError`` if ``output_dir`` is the notebook's own folder (it holds the sources) or is
    a file, or if the copy would overwrite a file that papermill did not write there itself.
    """
    path, output_dir = Path(path).resolve(), Path(output_dir).resolve()
    if output_dir == path.parent or output_dir == NOTEBOOK_DIR.resolve():
        raise CourseError(
            f"refusing to write into {output_dir}: it holds the source notebooks, which executed copies "
            f"(outputs, injected parameters) would overwrite; choose another output folder, "
            f"e.g. {ROOT / 'outputs' / 'course'}"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise CourseError(f"output folder {output_dir} is a file; choose a folder")
    output = output_dir / path.name
    if output.exists() and not _written_by_papermill_to(output):
        raise CourseError(
            f"refusing to overwrite {output}: it is not an executed copy that this runner wrote there "
            f"(a source notebook, a student's work, or another file). Move it away, or choose another output folder"
        )
    return output


def check_cell_timeout(cell_timeout) -> None:
    """``CourseError`` unless ``cell_timeout`` is a positive number of seconds or None (no limit)."""
    if cell_timeout is None:
        return
    if isinstance(cell_timeout, bool) or not isinstance(cell_timeout, (int, float)) or not cell_timeout > 0:
        raise CourseError(
            f"cell_timeout must be a positive number of seconds, got {cell_timeout!r}; papermill reads 0 "
            "as no limit, so pass None for that on purpose"
        )


def run_notebook(
    path: Path, output_dir: Path, *, parameters: dict | None = None, cell_timeout: float | None = 600
) -> Path:
    """Execute one notebook with papermill, from its own folder; return the executed copy's path.

    Checks first (``CourseError``, nothing run or written): ``path`` is a notebook, every
    parameter is declared in its parameters cell, the output is safe to write (``output_path``),
    and ``cell_timeout`` is a positive number of seconds per cell (``None``: no limit).
    """
    read_notebook(path)
    check_parameters(path, parameters or {})
    check_cell_timeout(cell_timeout)
    path = Path(path).resolve()
    output = output_path(path, output_dir)
    import papermill  # here, not at the top: the course's other tools work without it

    from ..explorer import NO_WIDGETS_ENV

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")  # what a run stopped part-way leaves: hidden
    partial.unlink(missing_ok=True)
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    os.environ[NO_WIDGETS_ENV] = "1"  # no one moves a slider here, and widgets can stall papermill
    try:
        papermill.execute_notebook(
            str(path),
            str(partial),
            parameters=parameters or {},
            cwd=str(path.parent),
            kernel_name="python3",
            execution_timeout=cell_timeout,
            progress_bar=False,
        )
    except papermill.PapermillExecutionError:  # a cell failed: the copy records it, and the site refuses it
        _publish_finished_run(partial, output)
        raise
    _publish_finished_run(partial, output)
    return output


def _publish_finished_run(partial: Path, output: Path) -> None:
    """Move a run that papermill finished (every cell run, or stopped at a failing cell) from ``partial``
    to ``output``. A run interrupted or killed part-way never gets here: it stays in the hidden
    ``partial`` file, never taken for an executed copy."""
    try:
        notebook = notebooks.read_notebook(partial)
        run = notebook["metadata"]["papermill"]
    except (NotebookError, KeyError, TypeError):
        return
    if not run.get("end_time"):
        return
    run["output_path"] = str(output)
    write_atomically(output, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    partial.unlink()


def check_records(records: dict, checks: dict) -> list[str]:
    """The failed checks, as readable sentences (an empty list when all pass)."""
    failures = []
    for name, bounds in checks.items():
        if name not in records:
            failures.append(f"{name}: not recorded (recorded: {sorted(records)})")
            continue
        value = records[name]
        if "equals" in bounds and value != bounds["equals"]:
            failures.append(f"{name} = {value!r}, expected {bounds['equals']!r}")
        if "min" in bounds and not (isinstance(value, (int, float)) and value >= bounds["min"]):
            failures.append(f"{name} = {value!r}, expected >= {bounds['min']}")
        if "max" in bounds and not (isinstance(value, (int, float)) and value <= bounds["max"]):
            failures.append(f"{name} = {value!r}, expected <= {bounds['max']}")
    return failures


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the limit must be a positive number of seconds (papermill would read 0 as no limit)")
    return value


def _literal(text: str):
    """A command-line parameter value: a Python literal (50, 0.5, 'mr', True), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "course")
    parser.add_argument("--smoke", action="store_true", help="use each notebook's smoke parameters")
    parser.add_argument("--cell-timeout", type=_positive_seconds, default=1800,
                        help="seconds allowed for one cell (training cells on a slow CPU need minutes)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a parameter (over the smoke ones) in the notebooks that declare it; "
                             "a name that no notebook run declares is an error")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every course notebook")
    args = parser.parse_args(argv)
    given = {name: _literal(value) for name, value in args.parameter}
    plan, problems, used, targets = [], [], set(), {}
    for path in args.notebooks or notebook_paths():  # check everything before running anything
        target = Path(args.output).resolve() / Path(path).name
        if target in targets:
            problems.append(f"{targets[target]} and {path} would both be written to {target}; run them into "
                            f"separate --output folders")
            continue
        targets[target] = path
        try:
            meta = course_metadata(path)
            declared = declared_parameters(path) or {}
            parameters = {**(meta.get("smoke_parameters", {}) if args.smoke else {}),
                          **{name: value for name, value in given.items() if name in declared}}
            used.update(name for name in given if name in declared)
            check_parameters(path, parameters)
            output_path(path, args.output)
            plan.append((path, meta, parameters))
        except CourseError as error:
            problems.append(str(error))
    for name in given:
        if name not in used and plan:
            declared = sorted({n for path, _, _ in plan for n in declared_parameters(path) or {}})
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            problems.append(f"no notebook run declares the parameter {name!r}"
                            + (f" (did you mean {close[0]!r}?)" if close else "")
                            + f"; their parameters are {', '.join(declared)}")
    if problems:
        print("Nothing was run:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    failed = []
    for path, meta, parameters in plan:
        start = time.perf_counter()
        shown = ", ".join(f"{name}={value!r}" for name, value in parameters.items())
        print(f"running {path.name}{f' with {shown}' if shown else ''} ...", flush=True)
        try:
            output = run_notebook(path, args.output, parameters=parameters, cell_timeout=args.cell_timeout)
        except Exception as error:  # report every notebook, then fail
            print(f"  FAILED after {time.perf_counter() - start:.0f} s: {error}", flush=True)
            failed.append(path.name)
            continue
        failures = check_records(read_records(output), meta.get("checks", {}))
        status = "ok" if not failures else "checks failed: " + "; ".join(failures)
        print(f"  {status} ({time.perf_counter() - start:.0f} s) -> {output}", flush=True)
        if failures:
            failed.append(path.name)
    print(f"\nExecuted notebooks are in {args.output}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
