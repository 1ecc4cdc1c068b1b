"""Reproduce the paper's comparison: datasets x losses x recipes x seeds, one command.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

A *method* is a loss under a recipe, written ``loss/recipe``: ``ce/course``,
``gloss+ce/course`` (the course's G-Loss: NLL target, stratified mask, one pass, sigma SQRT),
``ce/authors``, ``gloss+ce/authors`` (``TrainConfig.authors()``), ``scl+ce/authors``,
``triplet+ce/authors``, ... Within a recipe every loss gets the same epochs, batch and data, and
every method is compared with CE *of its own recipe*, seed by seed.

Each run appends one row per epoch to the results CSV (``RUN_COLUMNS``) when it finishes; a
run whose rows are in the file is skipped, and a killed run resumes from its checkpoint in
``--work-dir`` (deleted once the run's rows are written). Every run restores its best epoch
(validation macro-F1) and is scored on test twice: ``test_*`` for the restored model,
``test_*_last`` for the last epoch's (the authors' code reports the last).

    python -m gloss_lite.reproduction --jobs 2                 # the CPU preset: MR and R8 subsets, 2 cores
    python -m gloss_lite.reproduction --full --device cuda     # all five datasets, full splits, a GPU

**Verdicts.** For each method against CE of the same recipe, over the seeds both finished:

- *higher final accuracy*: the paired differences ``d_s = acc_s(method) - acc_s(CE)`` of test
  accuracy; with mean ``d``, standard deviation ``s`` and ``n`` seeds, the 95% interval is
  ``d +- t_{0.975, n-1} s / sqrt(n)``;
- *faster convergence*: ``e_s(method) - e_s(CE)``, where ``e_s`` is the first epoch whose
  validation accuracy reaches CE's best validation accuracy of that seed (a method that never
  reaches it counts as one epoch past its last), with the same interval.

"supported" when the interval lies entirely on the claimed side of 0, "not supported" when it
lies entirely on the other side, else "undecided at this sample size" (always, with fewer
than 2 seeds). With identical differences on every seed the interval is that single value.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import math
import multiprocessing
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..training import BEST_NAME, CHECKPOINT_NAME
from .results import first_epoch_reaching

__all__ = [
    "append_rows",
    "CPU_PRESET",
    "device_name",
    "epochs_to_reach",
    "execute",
    "finished_runs",
    "FULL_PRESET",
    "load_splits",
    "main",
    "make_config",
    "markdown_table",
    "paired_interval",
    "parse_method",
    "read_runs",
    "ROOT",
    "Run",
    "RUN_COLUMNS",
    "run_folder",
    "run_grid",
    "RUN_KEY",
    "summarise",
    "summary_markdown",
    "verdict",
]

ROOT = Path(__file__).resolve().parents[2]
RUN_KEY = ["dataset", "loss", "recipe", "seed"]
RUN_COLUMNS = RUN_KEY + [
    "epoch", "val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "test_accuracy_last",
    "test_macro_f1_last", "best_epoch", "aux_grad_share", "loss_value", "sigma", "seconds", "peak_memory_mb",
    "device", "torch", "train_size", "epochs", "batch_size", "max_length",
]
CPU_PRESET = {
    "datasets": ["mr", "r8"],
    "methods": ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors"],
    "seeds": [0, 1, 2],
    "sizes": {"train": 320, "val": 160, "test": 320},  # stratified subsets
    "budget": {"course": {"epochs": 4, "batch_size": 32, "max_length": 64},
               "authors": {"epochs": 4, "batch_size": 32, "max_length": 64}},
    "output": "results/reproduction_cpu.csv",
}
FULL_PRESET = {
    "datasets": ["mr", "r8", "r52", "ohsumed", "20ng"],
    "methods": ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors", "scl+ce/authors",
                "triplet+ce/authors"],
    "seeds": [0, 1, 2],
    "sizes": {"train": None, "val": None, "test": None},
    "budget": {"course": {"epochs": 10, "batch_size": 32, "max_length": 128},
               "authors": {}},  # the preset's own: up to 200 epochs, patience 10, batch 128
    "output": "results/reproduction.csv",
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    dataset: str
    loss: str
    recipe: str
    seed: int

    @property
    def method(self) -> str:
        return f"{self.loss}/{self.recipe}"

    def key(self) -> tuple:
        return (self.dataset, self.loss, self.recipe, self.seed)

    def __str__(self) -> str:
        return f"{self.dataset} {self.method} seed {self.seed}"


def parse_method(method: str) -> tuple[str, str]:
    """``"gloss+ce/authors"`` -> ``("gloss+ce", "authors")``; a bare loss means the course's recipe."""
    from ..training import LOSSES, RECIPES

    loss, _, recipe = method.partition("/")
    recipe = recipe or "course"
    if loss not in LOSSES or recipe not in RECIPES:
        raise ValueError(f"method {method!r} must be loss/recipe with a loss in {LOSSES} and a recipe in {RECIPES}")
    return loss, recipe


def make_config(run: Run, budget: dict, *, device: str, checkpoint_dir: Path | None):
    """The ``TrainConfig`` of ``run``: its recipe, the grid's budget, best-epoch restore, no LPA scoring."""
    from ..training import TrainConfig

    base = TrainConfig.authors(run.loss) if run.recipe == "authors" else TrainConfig(loss=run.loss, sigma="sqrt")
    return dataclasses.replace(
        base, seed=run.seed, device=device, lpa_eval=False, restore_best=True, progress=False,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir), **budget.get(run.recipe, {}))


def device_name(device) -> str:
    """The GPU's name, or the CPU's model and core count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def load_splits(dataset: str, sizes: dict, data_dir=None):
    """Train, val and test of ``dataset``, each a stratified subset of ``sizes[split]`` (None: all)."""
    from ..data import load_dataset

    data = load_dataset(dataset, data_dir)
    return tuple(split.sample(sizes.get(name), seed=0) for name, split in zip(("train", "val", "test"), data))


def execute(run: Run, spec: dict) -> list[dict]:
    """Train and score one run; returns its rows (one per epoch). Runs in a worker process."""
    import torch

    from ..encoders import load_encoder
    from ..runtime import pick_device
    from ..training import fit

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = pick_device(spec["device"])
    train, val, test = load_splits(run.dataset, spec["sizes"], spec.get("data_dir"))
    config = make_config(run, spec["budget"], device=spec["device"], checkpoint_dir=run_folder(run, spec))
    encoder = spec.get("make_encoder")
    encoder = encoder() if encoder else load_encoder(config.model, pooling=config.pooling,
                                                     max_length=config.max_length, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def report(row):
        print(f"  {run}: epoch {row['epoch']}/{config.epochs}, val accuracy {row['val_accuracy']:.3f}, "
              f"{row['seconds']:.0f} s", flush=True)

    result = fit(train, val, config, encoder=encoder, test=test, on_epoch=report if spec.get("verbose") else None)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    best = result.test_best or result.test_last
    rows = []
    for row in result.history:
        last = row is result.history[-1]
        rows.append({
            "dataset": run.dataset, "loss": run.loss, "recipe": run.recipe, "seed": run.seed,
            "epoch": row["epoch"], "val_accuracy": row["val_accuracy"], "val_macro_f1": row["val_macro_f1"],
            "test_accuracy": best["accuracy"] if last else None, "test_macro_f1": best["macro_f1"] if last else None,
            "test_accuracy_last": result.test_last["accuracy"] if last else None,
            "test_macro_f1_last": result.test_last["macro_f1"] if last else None,
            "best_epoch": result.best_epoch if last else None, "aux_grad_share": row["aux_grad_share"],
            "loss_value": row["loss"], "sigma": row["sigma"], "seconds": row["seconds"], "peak_memory_mb": peak,
            "device": device_name(device), "torch": torch.__version__, "train_size": len(train),
            "epochs": config.epochs, "batch_size": config.batch_size, "max_length": config.max_length,
        })
    return rows


def run_folder(run: Run, spec: dict) -> Path | None:
    """Where ``run`` keeps its checkpoints (None: ``spec["work_dir"]`` is None, no checkpoints)."""
    if spec.get("work_dir") is None:
        return None
    return Path(spec["work_dir"]) / run.dataset / run.recipe / run.loss.replace("+", "_") / f"seed{run.seed}"


def finished_runs(path: Path) -> set[tuple]:
    """Keys of the runs whose last row (with test scores) is in the results file."""
    if not path.exists():
        return set()
    frame = pd.read_csv(path)
    done = frame.dropna(subset=["test_accuracy"])
    return {(r.dataset, r.loss, r.recipe, int(r.seed)) for r in done.itertuples()}


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to the results CSV, writing the header if the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_grid(spec: dict, output: Path, *, jobs: int = 1) -> None:
    """Run every unfinished run of ``spec``'s grid, ``jobs`` at a time, appending to ``output``.

    ``jobs=0`` runs them one after another in this process (no memory isolation: peak memory
    is then the process's so far). Otherwise each run has a fresh worker process.
    """
    runs = [Run(d, *parse_method(m), s) for d in spec["datasets"] for m in spec["methods"] for s in spec["seeds"]]
    done = finished_runs(output)
    todo = [run for run in runs if run.key() not in done]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already in {output}, {len(todo)} to go", flush=True)
    started, finished = time.perf_counter(), 0

    def record(run, rows):
        nonlocal finished
        append_rows(output, rows)
        folder = run_folder(run, spec)
        if folder is not None:  # the run is in the results file: its checkpoints (hundreds of MB) are spent
            for name in (CHECKPOINT_NAME, BEST_NAME):
                (folder / name).unlink(missing_ok=True)
        finished += 1
        elapsed = time.perf_counter() - started
        left = elapsed / finished * (len(todo) - finished)
        last = rows[-1]
        print(f"[{finished}/{len(todo)}] {run}: test accuracy {last['test_accuracy']:.3f} (best epoch "
              f"{last['best_epoch']}), {sum(r['seconds'] for r in rows):.0f} s; about {left / 60:.0f} min left",
              flush=True)

    if jobs == 0:
        for run in todo:
            record(run, execute(run, spec))
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(execute, run, spec): run for run in todo}
        for future in concurrent.futures.as_completed(futures):
            record(futures[future], future.result())


# ---------------------------------------------------------------------------------------------
# Summary and verdicts


def read_runs(path: str | Path) -> pd.DataFrame:
    """A results CSV of ``run_grid`` (later rows win for a repeated run and epoch)."""
    frame = pd.read_csv(path)
    missing = [c for c in RUN_KEY + ["epoch", "val_accuracy"] if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; a reproduction file has {RUN_COLUMNS}")
    return frame.drop_duplicates(RUN_KEY + ["epoch"], keep="last").sort_values(RUN_KEY + ["epoch"])


def paired_interval(differences, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval of paired differences: ``d +- t s / sqrt(n)``."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan, -math.inf, math.inf)
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def verdict(low: float, high: float, better: str) -> str:
    """'supported' if the interval lies on the claimed side of 0 (``better``: "higher" or "lower")."""
    if better == "lower":
        low, high = -high, -low
    if low > 0:
        return "supported"
    if high < 0:
        return "not supported"
    return "undecided at this sample size"


def epochs_to_reach(curve: list[float], target: float) -> int:
    """First epoch reaching ``target``; one past the last if never (a censored count)."""
    reached = first_epoch_reaching(curve, target)
    return len(curve) + 1 if reached is None else reached


def summarise(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, claims)``: per dataset and method, test scores over seeds; per method against CE
    of its recipe, the paired differences with 95% intervals and the verdict on each claim."""
    last = frame.dropna(subset=["test_accuracy"]).groupby(RUN_KEY).last().reset_index()
    scores = last.groupby(["dataset", "recipe", "loss"]).agg(
        seeds=("seed", "nunique"), test_accuracy=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
        test_macro_f1=("test_macro_f1", "mean"), test_macro_f1_std=("test_macro_f1", "std"),
        test_accuracy_last=("test_accuracy_last", "mean"), best_epoch=("best_epoch", "mean"),
        epochs=("epoch", "max"), peak_memory_mb=("peak_memory_mb", "max"))
    by_method = frame.groupby(["dataset", "recipe", "loss"])
    scores["aux_grad_share"] = by_method["aux_grad_share"].mean()  # over every epoch, not the last only
    scores["seconds_per_epoch"] = by_method["seconds"].mean()
    curves = {key: group.sort_values("epoch")["val_accuracy"].tolist() for key, group in frame.groupby(RUN_KEY)}
    claims = []
    for (dataset, recipe, loss), group in last.groupby(["dataset", "recipe", "loss"]):
        if loss == "ce":
            continue
        reference = last[(last.dataset == dataset) & (last.recipe == recipe) & (last.loss == "ce")]
        seeds = sorted(set(group.seed) & set(reference.seed))
        if not seeds:
            continue
        acc = {s: float(group[group.seed == s].test_accuracy.iloc[0]) for s in seeds}
        ref_acc = {s: float(reference[reference.seed == s].test_accuracy.iloc[0]) for s in seeds}
        mean_acc, low_acc, high_acc = paired_interval([acc[s] - ref_acc[s] for s in seeds])
        epoch_gaps = []
        for s in seeds:
            ce_curve = curves[(dataset, "ce", recipe, s)]
            epoch_gaps.append(epochs_to_reach(curves[(dataset, loss, recipe, s)], max(ce_curve))
                              - epochs_to_reach(ce_curve, max(ce_curve)))
        mean_ep, low_ep, high_ep = paired_interval(epoch_gaps)
        claims.append({
            "dataset": dataset, "recipe": recipe, "loss": loss, "seeds": len(seeds),
            "test accuracy - CE": mean_acc, "95% CI low": low_acc, "95% CI high": high_acc,
            "higher final accuracy": verdict(low_acc, high_acc, "higher"),
            "epochs to CE's best - CE's": mean_ep, "epochs 95% CI low": low_ep, "epochs 95% CI high": high_ep,
            "faster convergence": verdict(low_ep, high_ep, "lower"),
        })
    return scores, pd.DataFrame(claims)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (its index as leading columns), numbers to 4 decimals."""
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame

    def cell(value):
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    rows = [[str(c) for c in frame.columns]] + [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(" --- " for _ in frame.columns) + "|")
    return "\n".join(lines)


def summary_markdown(frame: pd.DataFrame, source: str) -> str:
    """The summary tables as Markdown, with what the file was measured on."""
    scores, claims = summarise(frame)
    devices = ", ".join(sorted(frame["device"].dropna().unique())) if "device" in frame else "-"
    torches = ", ".join(sorted(frame["torch"].dropna().astype(str).unique())) if "torch" in frame else "-"
    lines = [f"# Summary of {source}", "", f"Measured on: {devices}; torch {torches}.", "",
             "## Test scores (best validation epoch restored), mean and std over seeds", "",
             markdown_table(scores), "", "## Each method against CE of its recipe, paired by seed", ""]
    lines.append(markdown_table(claims) if len(claims) else "No method has a finished CE to compare with.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all five datasets, full splits (a GPU run)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--datasets", nargs="+", help="override the preset's datasets")
    parser.add_argument("--methods", nargs="+", help="override the preset's methods (loss/recipe)")
    parser.add_argument("--seeds", nargs="+", type=int, help="override the preset's seeds")
    parser.add_argument("--train-size", type=int, help="stratified training subset (default: the preset's)")
    parser.add_argument("--epochs", type=int, help="override the epochs of every recipe")
    parser.add_argument("--output", type=Path, help="results CSV (default: the preset's, under the repository)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "reproduce",
                        help="checkpoints of unfinished runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (0: in this one)")
    parser.add_argument("--data-dir", help="folder with the datasets (default: GLOSS_LITE_DATA, then a download)")
    parser.add_argument("--summary-only", action="store_true", help="summarise the results file, train nothing")
    args = parser.parse_args(argv)
    preset = json.loads(json.dumps(FULL_PRESET if args.full else CPU_PRESET))  # a deep copy
    spec = {**preset, "device": args.device, "work_dir": str(args.work_dir), "data_dir": args.data_dir,
            "verbose": True}
    for name in ("datasets", "methods", "seeds"):
        if getattr(args, name):
            spec[name] = getattr(args, name)
    if args.train_size:
        spec["sizes"]["train"] = args.train_size
    if args.epochs:
        for recipe in ("course", "authors"):
            spec["budget"].setdefault(recipe, {})["epochs"] = args.epochs
    if args.jobs < 0:
        parser.error("--jobs must be 0 or more")
    for method in spec["methods"]:
        try:
            parse_method(method)
        except ValueError as error:
            parser.error(str(error))
    if args.jobs > 1:
        spec["threads"] = max(1, (multiprocessing.cpu_count() or 1) // args.jobs)
    output = args.output or ROOT / spec["output"]
    if not args.summary_only:
        run_grid(spec, output, jobs=args.jobs)
    if not output.exists():
        print(f"no results at {output}")
        return 1
    summary = summary_markdown(read_runs(output), output.name)
    summary_path = output.with_name(output.stem + "_summary.md")
    if summary_path.exists() and not summary_path.read_text(encoding="utf-8").startswith("# Summary of "):
        print(f"{summary_path} exists and was not written by this command: the summary is printed only")
    else:
        summary_path.write_text(summary, encoding="utf-8")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
