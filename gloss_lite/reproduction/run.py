"""Reproduce the paper's comparison: the grid of datasets x methods x seeds, one command.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

    python -m gloss_lite.reproduction --jobs 2                                  # the cpu preset
    python -m gloss_lite.reproduction --full --device cpu --dry-run             # list and check the 90 runs
    python -m gloss_lite.reproduction --preset gpu-10min --device cuda          # the full grid in ~10 GPU minutes
    python -m gloss_lite.reproduction --summary-only --output results/reproduction_cpu.csv

The presets are ``gloss_lite.reproduction.presets``; a method and its configuration,
``one_run``; the results file and its verdicts, ``results``.

**Checked before any run trains** (``GridError``, exit status 2): the arguments (a positive
``--epochs`` and ``--train-size``, seeds >= 0, a seed given twice runs once), every dataset (loaded:
an unknown or missing one is named), every run's ``TrainConfig`` against its dataset's class
count, the results file (readable by ``results.read_results``; a last line cut short by a full
disk is dropped first), and the output and work folders (writable, with room).

**Running.** The runs go to worker processes (``workers``: a fresh process per run, GPUs in
turn, a thread budget each; ``--jobs 0`` runs them in this process). Each finished run's rows
are added to the results file under its own header (``store.append_rows``), one row per epoch;
a run whose rows are in the file is skipped, and a killed run resumes from its checkpoint in
``--work-dir`` (deleted once the run's rows are written). A run that fails is written to
``<name>_failures.csv`` with its error, and the grid goes on; a fatal error (Ctrl-C, a full
disk) cancels what is queued. Two invocations on one results file share its runs
(``store.RunClaims``). At the end ``<name>_summary.md`` holds the verdicts
(``results.summary_markdown``) and any failed runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..files import write_atomically
from .one_run import Run, execute, make_config, parse_method, run_folder
from .presets import OUTPUT_FOLDER, PRESETS, default_output, preset
from .results import RESULT_COLUMNS, RUN_KEY, finished_runs, read_results, summary_markdown
from .store import GridError, RunClaims, append_rows, check_writable, repair_cut_row
from .workers import FatalGridError, cpu_cores, default_jobs, run_all, visible_gpus

if TYPE_CHECKING:  # for annotations only
    from ..training import TrainConfig

__all__ = [
    "build_spec",
    "check_grid",
    "CHECKPOINT_MB",
    "dataset_facts",
    "dry_run",
    "FAILURE_COLUMNS",
    "failure_notes",
    "failures_path",
    "finished_keys",
    "grid_runs",
    "GridReport",
    "main",
    "planned_configs",
    "run_grid",
    "summary_path",
    "write_summary",
]

FAILURE_COLUMNS = RUN_KEY + ["error", "message", "seconds"]
CHECKPOINT_MB = 700  # room a run's checkpoints need in the work folder (MiniLM: about 300 MB each, two files)


@dataclasses.dataclass
class GridReport:
    """What ``run_grid`` did with each run."""

    finished: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)  # claimed by another invocation, or done meanwhile


def grid_runs(spec: dict) -> list[Run]:
    """Every run of ``spec``, each once, in the order datasets x methods x seeds."""
    runs = [Run(dataset, *parse_method(method), int(seed))
            for dataset in spec["datasets"] for method in spec["methods"] for seed in spec["seeds"]]
    return list(dict.fromkeys(runs))


def failures_path(output: Path) -> Path:
    return output.with_name(output.stem + "_failures.csv")


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + "_summary.md")


def dataset_facts(spec: dict) -> dict:
    """Per dataset: its class count, the documents each split gives the grid, their mean length in characters."""
    from ..data import load_dataset

    facts = {}
    for name in dict.fromkeys(spec["datasets"]):
        try:
            data = load_dataset(name, spec.get("data_dir"))
        except (ValueError, FileNotFoundError) as error:
            raise GridError(f"dataset {name!r}: {error}") from None
        sizes = {split: len(part) if spec["sizes"].get(split) is None else min(spec["sizes"][split], len(part))
                 for split, part in zip(("train", "val", "test"), data)}
        characters = sum(len(text) for text in data.train.texts) / max(1, len(data.train))
        facts[name] = {"classes": data.num_classes, **sizes, "characters": characters}
    return facts


def planned_configs(spec: dict, facts: dict) -> list[tuple[Run, TrainConfig | None, str | None]]:
    """Each run with its validated ``TrainConfig``, or None and the reason it is invalid."""
    planned: list[tuple[Run, TrainConfig | None, str | None]] = []
    for run in grid_runs(spec):
        try:
            config = make_config(run, spec["budget"], num_classes=facts[run.dataset]["classes"], device=spec["device"])
            planned.append((run, config, None))
        except ValueError as error:
            planned.append((run, None, str(error)))
    return planned


def finished_keys(output: Path) -> set[tuple]:
    """Keys of the runs whose last row (with test scores) is in the results file."""
    if not output.exists() or output.stat().st_size == 0:
        return set()
    return {tuple(key) for key in finished_runs(read_results(output))[RUN_KEY].itertuples(index=False)}


def check_grid(spec: dict, output: Path, *, jobs: int, facts: dict | None = None) -> dict:
    """Check everything a grid needs before it trains (see the module docstring); returns the dataset facts."""
    output = Path(output)
    if output.is_dir():
        raise GridError(f"--output {output} is a folder; give a results file name such as {output / 'grid.csv'}")
    facts = facts or dataset_facts(spec)
    problems = [f"{run}: {problem}" for run, _, problem in planned_configs(spec, facts) if problem]
    if problems:
        raise GridError("some runs cannot train:\n  " + "\n  ".join(problems))
    check_writable(output.parent, 10, "the results files")
    if spec.get("work_dir") is not None:
        check_writable(Path(spec["work_dir"]), CHECKPOINT_MB * max(1, jobs), "the checkpoints of the running runs")
    if output.exists():
        repair_cut_row(output)
        try:
            finished_keys(output)
        except ValueError as error:
            raise GridError(f"{error}\n(the grid adds to {output}: fix that file or give another --output)") from None
    return facts


def run_grid(spec: dict, output: Path, *, jobs: int = 1, execute=execute, facts: dict | None = None) -> GridReport:
    """Run every unfinished run of ``spec``'s grid, ``jobs`` at a time, adding its rows to ``output``.

    ``jobs=0`` runs them one after another in this process (no memory isolation: the peak RSS is
    then the process's so far). Raises ``GridError`` before anything trains when a check fails,
    and ``FatalGridError`` or ``KeyboardInterrupt`` after cancelling the queue.
    """
    output = Path(output)
    spec = {"work_dir": None, "data_dir": None, **spec}
    if facts is None:
        facts = check_grid(spec, output, jobs=jobs)
    if jobs > 0 and "gpus" not in spec:
        spec["gpus"] = visible_gpus(spec["device"])
    runs = grid_runs(spec)
    done = finished_keys(output)
    todo = [run for run in runs if run.key() not in done]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already in {output}, {len(todo)} to go", flush=True)
    report, claims, started = GridReport(), RunClaims(output), time.perf_counter()

    def ready(run):  # claimed first, then checked: another invocation may have finished it meanwhile
        claimed = claims.claim(run.key())
        if not claimed or run.key() in finished_keys(output):
            if claimed:
                claims.release(run.key())
            print(f"{run}: finished or running in another invocation; skipped", flush=True)
            report.skipped.append(run)
            return False
        return True

    def record(outcome):
        run = outcome.run
        try:
            if outcome.error:
                append_rows(failures_path(output), [{
                    **dict(zip(RUN_KEY, run.key())), "error": outcome.error["type"],
                    "message": outcome.error["message"][:2000], "seconds": round(outcome.seconds, 1)}],
                    FAILURE_COLUMNS)
                report.failed.append(run)
                print(f"{run}: FAILED ({outcome.error['type']}: {outcome.error['message']}); recorded in "
                      f"{failures_path(output).name}, the grid goes on", flush=True)
                return
            append_rows(output, outcome.rows, RESULT_COLUMNS)
        finally:
            claims.release(run.key())
        _delete_checkpoints(run, spec)
        report.finished.append(run)
        count = len(report.finished) + len(report.failed)
        left = (time.perf_counter() - started) / count * (len(todo) - count - len(report.skipped))
        last = outcome.rows[-1]
        print(f"[{count}/{len(todo)}] {run}: test accuracy {last['test_accuracy']:.3f} (best epoch "
              f"{last['best_epoch']}), {outcome.seconds:.0f} s; about {left / 60:.0f} min left", flush=True)

    try:
        run_all(todo, spec, execute, jobs=jobs, on_outcome=record, ready=ready)
    finally:
        claims.close()
    return report


def _delete_checkpoints(run: Run, spec: dict) -> None:
    """The run's rows are in the results file: its checkpoints (hundreds of MB) are spent."""
    from ..training import BEST_NAME, CHECKPOINT_NAME

    folder = run_folder(run, spec)
    if folder is not None:
        for name in (CHECKPOINT_NAME, BEST_NAME):
            (folder / name).unlink(missing_ok=True)


def failure_notes(output: Path) -> list[str]:
    """One line per failed run that has not finished since."""
    path = failures_path(output)
    if not path.exists():
        return []
    failures = pd.read_csv(path, dtype=str).drop_duplicates(RUN_KEY, keep="last")
    done = {tuple(map(str, key)) for key in finished_keys(output)}
    return [f"Failed, not finished since: {row.dataset} {row.loss}/{row.recipe} seed {row.seed} "
            f"({row.error}: {row.message})" for row in failures.itertuples()
            if (row.dataset, row.recipe, row.loss, row.seed) not in done]


def write_summary(output: Path, notes=()) -> str | None:
    """Write ``<name>_summary.md`` beside ``output`` (never over a file it did not write); returns its text."""
    if not output.exists():
        print(f"no results at {output}")
        return None
    summary = summary_markdown(read_results(output), output.name, [*notes, *failure_notes(output)])
    path = summary_path(output)
    if path.exists() and not path.read_text(encoding="utf-8").startswith("# Summary of "):
        print(f"{path} exists and was not written by this command: the summary is printed only")
    else:
        write_atomically(path, summary)
    return summary


def dry_run(spec: dict, output: Path, facts: dict) -> int:
    """List every run with its settings and whether its configuration is valid; write the plan; train nothing."""
    planned = planned_configs(spec, facts)
    lines = [f"# Plan of {output.name} (dry run: nothing trained)", "",
             f"Preset {spec.get('preset', '-')}, device {spec['device']}; {len(planned)} runs, "
             f"{sum(problem is None for _, _, problem in planned)} valid.", ""]
    lines += [f"- {note}" for note in spec.get("notes", [])]
    if "budget_seconds" in spec:
        lines.append(f"- Budget {spec['budget_seconds'] / 60:g} min: when it runs, it measures the first steps of "
                     "each method and trims epochs to fit (not in a dry run); the epochs below are those asked.")
    for run, config, problem in planned:
        if problem:
            lines.append(f"- INVALID {run}: {problem}")
            continue
        assert config is not None  # a run without a problem has its config
        asked = spec["budget"].get(run.recipe, {}).get("batch_size", config.batch_size)
        raised = f" (raised from {asked}: {facts[run.dataset]['classes']} classes + 1)" if config.batch_size > asked \
            else ""
        precision = f"amp={config.amp!r} (bf16 where the GPU has it, fp16 on older GPUs, fp32 on a CPU)" \
            if spec["device"] != "cpu" else "fp32"
        lines.append(f"- valid {run}: {config.epochs} epochs, batch {config.batch_size}{raised}, "
                     f"{config.max_length} tokens, {precision}, {facts[run.dataset]['train']} training documents")
    text = "\n".join(lines) + "\n"
    print(text)
    check_writable(output.parent, 1, "the plan")
    write_atomically(output.with_name(output.stem + "_plan.md"), text)
    return 0 if all(problem is None for _, _, problem in planned) else 2


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu", help="the grid (default: cpu)")
    parser.add_argument("--full", action="store_true", help="the same as --preset full")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--datasets", nargs="+", help="override the preset's datasets")
    parser.add_argument("--methods", nargs="+", help="override the preset's methods (loss/recipe)")
    parser.add_argument("--seeds", nargs="+", type=_count(0), help="override the preset's seeds")
    parser.add_argument("--train-size", type=_count(1), help="stratified training subset (default: the preset's)")
    parser.add_argument("--epochs", type=_count(1), help="the epochs of every recipe")
    parser.add_argument("--budget-minutes", type=float, help="the time budget of a budgeted preset (gpu-10min)")
    parser.add_argument("--output", type=Path, help="results CSV (default: outputs/reproduction/<preset>.csv here); "
                                                    "the committed files in results/ are written only when named")
    parser.add_argument("--work-dir", type=Path, help="checkpoints of unfinished runs (default: beside --output)")
    parser.add_argument("--jobs", type=_count(0), help="runs at once, each in its own process (0: in this one); "
                                                       "default: 4 per visible GPU (at most cores / 2), else 1")
    parser.add_argument("--data-dir", help="folder with the datasets (default: GLOSS_LITE_DATA, then a download)")
    parser.add_argument("--dry-run", action="store_true", help="list and check every run, train nothing")
    parser.add_argument("--summary-only", action="store_true", help="summarise the results file, train nothing")
    return parser


def build_spec(args, parser) -> dict:
    """The grid of the command line: the preset, overridden by the arguments."""
    spec = preset("full" if args.full else args.preset)
    for name in ("datasets", "methods", "seeds"):
        given = getattr(args, name)
        if given:
            repeated = sorted({str(value) for value in given if given.count(value) > 1})
            if repeated:
                print(f"--{name} names {', '.join(repeated)} more than once: each runs once", flush=True)
            spec[name] = list(dict.fromkeys(given))
    for method in spec["methods"]:
        try:
            parse_method(method)
        except ValueError as error:
            parser.error(str(error))
    if args.train_size:
        spec["sizes"]["train"] = args.train_size
    if args.epochs:
        for recipe in ("course", "authors"):
            spec["budget"].setdefault(recipe, {})["epochs"] = args.epochs
    if args.budget_minutes is not None:
        if "budget_seconds" not in spec or not args.budget_minutes > 0:
            parser.error("--budget-minutes takes a positive number, with a budgeted preset (--preset gpu-10min)")
        spec["budget_seconds"] = 60 * args.budget_minutes
    output = args.output or default_output(spec["preset"])
    work_dir = args.work_dir or OUTPUT_FOLDER / "work" / output.stem
    return {**spec, "device": args.device, "work_dir": str(work_dir), "data_dir": args.data_dir, "verbose": True,
            "output": output}


def _check_device(device: str) -> None:
    """``GridError`` for a device torch does not know, or a GPU asked for where none is visible."""
    from ..runtime import pick_device

    try:
        pick_device(device)
    except (RuntimeError, ValueError) as error:
        raise GridError(f"--device {device}: {error}") from None


def main(argv: list[str] | None = None, *, execute=execute) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    spec = build_spec(args, parser)
    output = spec.pop("output")
    try:
        if args.summary_only:
            summary = write_summary(output)
            print(summary or "", end="")
            return 0 if summary is not None else 1
        facts = dataset_facts(spec)
        if args.dry_run:
            return dry_run(spec, output, facts)
        gpus = visible_gpus(spec["device"])
        jobs = default_jobs(gpus, cpu_cores()) if args.jobs is None else args.jobs
        spec.update(gpus=gpus, threads=max(1, cpu_cores() // max(1, jobs)))
        _check_device(spec["device"])
        check_grid(spec, output, jobs=jobs, facts=facts)
        notes = []
        if "budget_seconds" in spec:
            from .budget import fit_to_budget

            notes = fit_to_budget(spec, output, facts, jobs=jobs, execute=execute)
        report = run_grid(spec, output, jobs=jobs, execute=execute, facts=facts)
    except GridError as error:
        print(f"Nothing was trained: {error}", file=sys.stderr)
        return 2
    except (FatalGridError, KeyboardInterrupt) as error:
        print(f"Stopped: {str(error) or 'interrupted'}; rerun the same command to resume", file=sys.stderr)
        with contextlib.suppress(OSError, ValueError):  # the disk may still be full
            write_summary(output)
        return 130 if isinstance(error, KeyboardInterrupt) else 3
    summary = write_summary(output, notes)
    if summary:
        print(summary)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
