"""The GPU part of the course in one command, into one folder: notebooks 05-08, the step benchmark, the grid.

    python -m gloss_lite.reproduction.gpu_course --output gpu-run --dry-run   # print the plan, check every input
    python -m gloss_lite.reproduction.gpu_course --output gpu-run             # on the GPU machine

Run it from the course's repository (``--repo``, default: the working directory), which holds
the notebooks and ``benchmarks/``. Three steps, each in its own process, each with its log in
``<output>/logs/``:

1. ``notebooks``: notebooks 05-08 with their GPU parameters (``python -m gloss_lite.course
   ... -p DEVICE cuda``), executed into ``<output>/notebooks/``;
2. ``step_cost``: ``benchmarks/step_cost.py --device cuda`` (the cost of a G-Loss+CE step against
   a CE step), its report in ``<output>/logs/step_cost.log``;
3. ``grid``: the budgeted grid ``python -m gloss_lite.reproduction --preset gpu-10min``, its
   results, summary and budget plan in ``<output>/reproduction_gpu*``.

A failed step is reported and the next one runs; ``<output>/gpu_course.json`` records each
step's command, exit status and seconds. Nothing needs a network: every step runs with
``HF_HUB_OFFLINE=1``, and before the first one starts the command checks that every input is
there (``check_inputs``): the notebooks and the benchmark script, papermill (the ``course``
extra), the offline encoder's files, the five benchmarks under ``GLOSS_LITE_DATA``, a
writable output folder, a visible GPU (not in a dry run), and that every run of the grid is
valid (the grid's own dry run). The README says how to prepare such a machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..files import write_atomically
from .presets import BENCHMARKS
from .store import GridError, check_writable

__all__ = ["BENCHMARK_SCRIPT", "check_inputs", "main", "NOTEBOOKS", "OFFLINE", "plan", "run_steps"]

NOTEBOOKS = ("05_fine_tuning.ipynb", "06_comparing_losses.ipynb", "07_reproducing_the_paper.ipynb",
             "08_the_graph_beyond_one_batch.ipynb")
BENCHMARK_SCRIPT = Path("benchmarks") / "step_cost.py"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def plan(repo: Path, output: Path, device: str, budget_minutes: float) -> list[tuple[str, list[str]]]:
    """The steps, each a name and its command."""
    python = sys.executable
    return [
        ("notebooks", [python, "-m", "gloss_lite.course", "--output", str(output / "notebooks"),
                       "-p", "DEVICE", device, *(str(repo / "notebooks" / name) for name in NOTEBOOKS)]),
        ("step_cost", [python, str(repo / BENCHMARK_SCRIPT), "--device", device]),
        ("grid", [python, "-m", "gloss_lite.reproduction", "--preset", "gpu-10min", "--device", device,
                  "--output", str(output / "reproduction_gpu.csv"), "--work-dir", str(output / "work"),
                  "--budget-minutes", f"{budget_minutes:g}"]),
    ]


def check_inputs(repo: Path, output: Path, *, need_gpu: bool) -> list[str]:
    """Every missing input, as sentences (an empty list when all are there)."""
    from ..data import BENCHMARKS as KNOWN
    from ..encoders import check_model_folder, default_model_path

    problems = [f"{repo / 'notebooks' / name} is missing (give the course's repository as --repo)"
                for name in NOTEBOOKS if not (repo / "notebooks" / name).is_file()]
    if not (repo / BENCHMARK_SCRIPT).is_file():
        problems.append(f"{repo / BENCHMARK_SCRIPT} is missing (give the course's repository as --repo)")
    if importlib.util.find_spec("papermill") is None:
        problems.append("papermill is not installed: install the course extra (pip install 'gloss-lite[course]')")
    else:
        from ..course.run import declared_parameters

        problems += [f"{name} declares no DEVICE parameter" for name in NOTEBOOKS
                     if (repo / "notebooks" / name).is_file()
                     and "DEVICE" not in (declared_parameters(repo / "notebooks" / name) or {})]
    try:
        check_model_folder(default_model_path())
    except (ImportError, ValueError) as error:
        problems.append(f"the offline encoder: {error}")
    data = os.environ.get("GLOSS_LITE_DATA")
    if not data or not Path(data).is_dir():
        problems.append("GLOSS_LITE_DATA must name the folder that holds the five benchmarks (mr, r8, r52, ohsumed, "
                        f"20ng), got {data!r}")
    else:
        for name in BENCHMARKS:
            folders = [Path(data) / name, Path(data) / KNOWN[name]["folder"]]
            if not any(all((folder / f"{split}.csv").is_file() for split in ("train", "val", "test"))
                       for folder in folders):
                problems.append(f"{folders[0]}/ (or {folders[1].name}/) lacks train.csv, val.csv or test.csv")
    try:
        check_writable(output, 100, "the course's GPU outputs")
    except GridError as error:
        problems.append(str(error))
    if need_gpu:
        import torch

        if not torch.cuda.is_available():
            problems.append("no GPU is visible (torch.cuda.is_available() is False); --dry-run checks the rest")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="the folder that receives everything")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the course's repository (default: here)")
    parser.add_argument("--device", default="cuda", help="the GPU (default: cuda)")
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="the grid's time budget")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check every input; run nothing")
    args = parser.parse_args(argv)
    if not args.budget_minutes > 0:
        parser.error("--budget-minutes must be a positive number")
    repo, output = args.repo.resolve(), args.output.resolve()
    steps = plan(repo, output, args.device, args.budget_minutes)
    print("The GPU part of the course, into " + str(output) + ":\n" +
          "\n".join(f"  {number}. {name}: {' '.join(command)}" for number, (name, command) in enumerate(steps, 1)))
    problems = check_inputs(repo, output, need_gpu=not args.dry_run)
    if not problems:
        from .run import main as grid

        if grid([*steps[2][1][3:], "--dry-run"]) != 0:
            problems.append("the grid has invalid runs (its dry run above says which)")
    if problems:
        print("Nothing was run; missing or wrong:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.dry_run:
        print("Every input is there (dry run: nothing was run).")
        return 0
    return run_steps(steps, output)


def run_steps(steps: list[tuple[str, list[str]]], output: Path) -> int:
    """Run each step with its log in ``output/logs``; record them in ``output/gpu_course.json``."""
    (output / "logs").mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **OFFLINE}
    record = []
    for name, command in steps:
        started = time.perf_counter()
        print(f"{name} ...", flush=True)
        with open(output / "logs" / f"{name}.log", "w", encoding="utf-8") as log:
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment).returncode
        seconds = time.perf_counter() - started
        print(f"  {'ok' if status == 0 else f'FAILED (exit status {status})'} after {seconds:.0f} s; "
              f"log: {output / 'logs' / f'{name}.log'}", flush=True)
        record.append({"step": name, "command": command, "exit_status": status, "seconds": round(seconds, 1)})
        write_atomically(output / "gpu_course.json", json.dumps(record, indent=1) + "\n")
    return 0 if all(step["exit_status"] == 0 for step in record) else 1


if __name__ == "__main__":
    sys.exit(main())
