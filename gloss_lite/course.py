"""Run the course's notebooks with papermill: the whole course, or each one with smoke parameters.

``python -m gloss_lite.course`` executes every notebook in ``notebooks/`` in order, with its
default parameters, into ``outputs/course/``. The tests call ``run_notebook`` with the smoke
parameters each notebook declares in its metadata::

    "metadata": {"gloss_lite": {
        "smoke_parameters": {"MAX_TRAIN": 120},
        "checks": {"frozen_lr_accuracy": {"min": 0.8}, "affinity_asymmetry": {"max": 1e-6}}
    }}

Each check names a value the notebook stores with ``gloss_lite.records.record`` and bounds it
(``min``, ``max``, or ``equals``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import papermill

from .records import read_records

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
# The inline backend records figures as PNG outputs; Agg (a common MPLBACKEND) would record none.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The course notebooks, in teaching order (``00_*.ipynb``, ``01_*.ipynb``, ...)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def course_metadata(path: Path) -> dict:
    """The ``gloss_lite`` block of a notebook's metadata (smoke parameters and checks)."""
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    return notebook.get("metadata", {}).get("gloss_lite", {})


def run_notebook(
    path: Path, output_dir: Path, *, parameters: dict | None = None, cell_timeout: int = 600
) -> Path:
    """Execute one notebook with papermill, from its own folder; return the executed copy's path."""
    path = Path(path).resolve()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / path.name
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    papermill.execute_notebook(
        str(path),
        str(output),
        parameters=parameters or {},
        cwd=str(path.parent),
        kernel_name="python3",
        execution_timeout=cell_timeout,
        progress_bar=False,
    )
    return output


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "course")
    parser.add_argument("--smoke", action="store_true", help="use each notebook's smoke parameters")
    parser.add_argument("--cell-timeout", type=int, default=1800,
                        help="seconds allowed for one cell (training cells on a slow CPU need minutes)")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every course notebook")
    args = parser.parse_args(argv)
    failed = []
    for path in args.notebooks or notebook_paths():
        meta = course_metadata(path)
        parameters = meta.get("smoke_parameters", {}) if args.smoke else {}
        start = time.perf_counter()
        print(f"running {path.name} ...", flush=True)
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
