"""G-Loss against CE on frozen features at full data: one command, on a CPU.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

**Not the paper's setting.** The paper fine-tunes the whole encoder. Here the encoder
(all-MiniLM-L6-v2) embeds every document once (``gloss_lite.reproduction.features``) and never
moves; each loss trains the same small model on top, a residual adapter and a linear head
(``gloss_lite.reproduction.adapter``), with the course's own training loop
(``gloss_lite.training.fit``). So the grid can afford what fine-tuning on a CPU cannot: every
training document of all five benchmarks, early stopping on validation, ten seeds per cell. It
tells whether G-Loss's objective helps a model *shape the geometry of given features*; it cannot
tell how G-Loss moves a transformer's own weights.

A method is ``loss/recipe`` as in ``gloss_lite.reproduction.one_run``. ``course`` is ``TrainConfig()``
(NLL target, stratified mask, one pass, sigma SQRT on 2000 training documents, lam 0.5,
gamma 0.7, AdamW); ``authors`` is ``TrainConfig.authors()`` (their target divided by ``|U|``,
uniform mask, balanced class weights, G-Loss on a second pass, lam 0.1, gamma 0.7, sigma by
their SQRT over all training documents, Adam at one learning rate, gradients clipped at 1).
Every method gets the grid's budget (``BUDGET``): the adapter starts from scratch, so the
learning rate is the adapter's (1e-3), not a pretrained encoder's (the authors' 1e-5);
their CLS pooling is replaced by the mean pooling MiniLM was trained with; their learning-rate
drop after epoch 30 lies beyond a 30-epoch budget. Each method is compared with CE of its own
recipe, seed by seed (``gloss_lite.reproduction.frozen_summary``).

Outputs (each written only by this command, atomically; a run or baseline already in its file
is skipped, so an interrupted command resumes):

- ``--output`` (default ``outputs/reproduction/frozen_features.csv`` under the working directory;
  the committed ``results/frozen_features.csv`` only when named): one row per run (``COLUMNS``),
  with the validation curve, the epochs' seconds and which test documents the run got right;
- ``baselines_frozen.csv`` beside it: TF-IDF + logistic regression, a linear probe and
  transductive LPA (``gloss_lite.reproduction.frozen_baselines``), one row per dataset and method;
- ``frozen_features_summary.md`` beside it.

    python -m gloss_lite.reproduction.frozen --jobs 2 --output results/frozen_features.csv   # 5 datasets, 10 seeds
    python -m gloss_lite.reproduction.frozen --tiny        # the course's reviews, 2 seeds: a smoke run
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch

from .. import sigma
from ..benchmark_files import SPLITS
from ..encoders import Encoder
from ..files import write_atomically
from ..training import TrainConfig, fit
from . import one_run
from .adapter import FeatureAdapter
from .features import MAX_LENGTH, FrozenFeatures, frozen_features
from .frozen_baselines import LPA_REFERENCE_SIZE, baseline_methods
from .frozen_summary import SUMMARY_TITLE, summary_markdown
from .presets import OUTPUT_FOLDER
from .significance import pack_correct, wilson_interval
from .store import append_rows

__all__ = [
    "check_owned",
    "finished_keys",
    "make_config",
    "authors_sigma",
    "train_run",
    "run_baselines",
    "plan",
    "run_grid",
    "build_spec",
    "baselines_path",
    "summary_path",
    "main",
]

DATASETS = ["mr", "r8", "r52", "ohsumed", "20ng"]
METHODS = ["ce/course", "gloss/course", "gloss+ce/course", "scl+ce/course", "triplet+ce/course",
           "ce/authors", "gloss+ce/authors"]
BUDGET = {"epochs": 30, "patience": 3, "batch_size": 128, "lr": 1e-3, "hidden": 128, "dropout": 0.1}
TINY = {"datasets": ["reviews_topic"], "seeds": [0, 1],
        "methods": ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors"],
        "budget": dict(BUDGET, epochs=3, patience=2, batch_size=32), "lpa_reference": 200}
RUN_KEY = ["dataset", "loss", "recipe", "seed"]
COLUMNS = RUN_KEY + [
    "epochs_run", "best_epoch", "best_val_accuracy", "test_accuracy", "test_macro_f1", "test_accuracy_last",
    "val_accuracy_curve", "epoch_seconds", "seconds", "sigma", "lam", "gamma", "batch_size", "lr", "max_epochs",
    "patience", "adapter_hidden", "train_size", "test_size", "correct_bits", "feature_key", "feature_seconds",
    "max_length", "device", "torch", "precision",
]
BASELINE_KEY = ["dataset", "method"]
BASELINE_COLUMNS = BASELINE_KEY + [
    "test_accuracy", "test_accuracy_low", "test_accuracy_high", "test_macro_f1", "settings", "seconds",
    "correct_bits", "test_size", "feature_key", "device", "torch",
]


def check_owned(path: Path, columns: list[str] | None = None) -> None:
    """Raise ``ValueError`` when ``path`` exists and was not written by this command: a CSV whose
    header is not ``columns``, or a Markdown file that does not start with ``SUMMARY_TITLE``."""
    if not path.exists():
        return
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip()
    owned = first.startswith(SUMMARY_TITLE) if path.suffix == ".md" else first.split(",") == columns
    if not owned:
        raise ValueError(f"{path} exists and was not written by this command (its first line is {first[:60]!r}); "
                         "move it away or give another --output")


def finished_keys(path: Path, key: list[str]) -> set[tuple]:
    """The ``key`` values of the rows already in ``path`` (empty when there is no file)."""
    return set(pd.read_csv(path)[key].itertuples(index=False, name=None)) if path.exists() else set()


def make_config(loss: str, recipe: str, seed: int, budget: dict, width: float | None) -> TrainConfig:
    """The recipe's ``TrainConfig`` under the grid's budget; ``width``: sigma as a number (None: the recipe's rule)."""
    base = TrainConfig.authors(loss) if recipe == "authors" else TrainConfig(loss=loss)
    rates = {"lr": budget["lr"], "head_lr": None if base.head_lr is None else budget["lr"]}
    return dataclasses.replace(
        base, seed=seed, epochs=budget["epochs"], patience=budget["patience"], batch_size=budget["batch_size"],
        restore_best=True, lpa_eval=False, progress=False, device="cpu", pooling="mean", amp="fp32",
        sigma=base.sigma if width is None else width, **rates)


def authors_sigma(features) -> float:
    """The authors' sigma: their SQRT over every training document, as ``fit`` would estimate it at the
    start (the untrained adapter is the identity, so its embeddings are the frozen features)."""
    return sigma.estimate("sqrt", features["train"], variant="authors")


def train_run(task: dict) -> dict:
    """Train and score one run (``task``: dataset, loss, recipe, seed, sigma, budget, cache...); its row.

    On one thread: the adapter's matrices are small, and a second thread only waits on the first.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(task)
    finally:
        torch.set_num_threads(threads)


def _train(task: dict) -> dict:
    features = _features(task["dataset"], task["data_dir"], task["cache"])
    train, val, test = features.dataset
    texts = [text for split in features.dataset for text in split.texts]
    vectors = torch.cat([features[name] for name in SPLITS])
    budget = task["budget"]
    adapter = FeatureAdapter(texts, vectors, seed=task["seed"], hidden=budget["hidden"], dropout=budget["dropout"])
    config = make_config(task["loss"], task["recipe"], task["seed"], budget, task["sigma"])
    # the adapter answers for every Encoder attribute fit uses (dim, device, embed, pretokenized)
    result = fit(train, val, config, encoder=cast(Encoder, adapter), test=test)
    assert result.test_best is not None and result.test_last is not None  # fit was given the test split
    with torch.no_grad():
        predicted = result.head(result.encoder.embed(test.texts)).argmax(dim=1)
    correct = (predicted == test.labels).numpy()
    curve = [row["val_accuracy"] for row in result.history]
    seconds = [row["seconds"] for row in result.history]
    return {
        "dataset": task["dataset"], "loss": task["loss"], "recipe": task["recipe"], "seed": task["seed"],
        "epochs_run": len(curve), "best_epoch": result.best_epoch, "best_val_accuracy": max(curve),
        "test_accuracy": float(correct.mean()), "test_macro_f1": result.test_best["macro_f1"],
        "test_accuracy_last": result.test_last["accuracy"],
        "val_accuracy_curve": " ".join(f"{value:.6f}" for value in curve),
        "epoch_seconds": " ".join(f"{value:.3f}" for value in seconds), "seconds": sum(seconds),
        "sigma": result.sigma, "lam": config.lam, "gamma": config.gamma, "batch_size": config.batch_size,
        "lr": config.lr, "max_epochs": config.epochs, "patience": config.patience, "adapter_hidden": budget["hidden"],
        "train_size": len(train), "test_size": len(test), "correct_bits": pack_correct(correct),
        "feature_key": features.key[:16], "feature_seconds": round(features.seconds, 1),
        "max_length": features.settings["max_length"], "device": one_run.device_name(torch.device("cpu")),
        "torch": str(torch.__version__), "precision": "float32",
    }


_LOADED: dict[tuple, FrozenFeatures] = {}  # a process's features, by dataset and source: read once per process


def _features(dataset: str, data_dir, cache):
    key = (dataset, data_dir, str(cache))
    if key not in _LOADED:
        _LOADED[key] = frozen_features(dataset, data_dir=data_dir, cache=cache, max_length=MAX_LENGTH)
    return _LOADED[key]


def run_baselines(features, output: Path, lpa_reference: int) -> None:
    """Append the rows of the baselines of ``features``' dataset that ``output`` lacks."""
    from ..evaluate import classification_metrics

    name = features.dataset.name
    done = finished_keys(output, BASELINE_KEY)
    train, val, test = features.dataset
    methods = baseline_methods(features.features, train, val, test, reference_size=lpa_reference)
    for method, compute in methods.items():
        if (name, method) in done:
            continue
        started = time.perf_counter()
        with torch.no_grad():
            predicted, settings = compute()
        seconds = time.perf_counter() - started
        correct = predicted == test.labels.numpy()
        low, high = wilson_interval(int(correct.sum()), len(correct))
        scores = classification_metrics(test.labels, torch.as_tensor(predicted))
        append_rows(output, [{
            "dataset": name, "method": method, "test_accuracy": scores["accuracy"], "test_accuracy_low": low,
            "test_accuracy_high": high, "test_macro_f1": scores["macro_f1"], "settings": json.dumps(settings),
            "seconds": round(seconds, 2), "correct_bits": pack_correct(correct), "test_size": len(correct),
            "feature_key": features.key[:16], "device": one_run.device_name(torch.device("cpu")),
            "torch": str(torch.__version__)}], BASELINE_COLUMNS)
        print(f"  {name} {method}: test accuracy {scores['accuracy']:.4f} ({seconds:.0f} s)", flush=True)


def plan(spec: dict, done: set) -> list[dict]:
    """The runs of ``spec`` not in ``done``, the authors' G-Loss last (their sigma is computed here first)."""
    tasks = [{"dataset": dataset, "loss": loss, "recipe": recipe, "seed": seed, "sigma": None,
              "budget": spec["budget"], "data_dir": spec["data_dir"], "cache": spec["cache"]}
             for dataset in spec["datasets"] for loss, recipe in map(one_run.parse_method, spec["methods"])
             for seed in spec["seeds"] if (dataset, loss, recipe, seed) not in done]
    return sorted(tasks, key=_needs_authors_sigma)  # a stable sort: the grid's order otherwise


def _needs_authors_sigma(task: dict) -> bool:
    return task["recipe"] == "authors" and task["loss"].startswith("gloss")


def _with_sigmas(tasks: list[dict], features: dict):
    """``tasks`` one by one, the authors' sigma of a dataset computed when its first run needs it.

    The course's sigma (SQRT on 2000 training documents, seeded) is left to ``fit``, in the worker.
    """
    sigmas = {}
    for task in tasks:
        if _needs_authors_sigma(task):
            if task["dataset"] not in sigmas:
                sigmas[task["dataset"]] = authors_sigma(features[task["dataset"]])
            task = dict(task, sigma=sigmas[task["dataset"]])
        yield task


def run_grid(spec: dict, output: Path, baselines: Path, *, jobs: int = 1) -> None:
    """Embed (or read) each dataset's features, then run every unfinished run and baseline.

    With ``jobs`` > 1 the runs go to worker processes at once, and the baselines are computed
    here while the workers train; each run's row is appended as soon as it finishes.
    """
    done = finished_keys(output, RUN_KEY)
    features = {}
    for dataset in spec["datasets"]:
        features[dataset] = _features(dataset, spec["data_dir"], spec["cache"])
        origin = "read from the cache" if features[dataset].from_cache else "computed"
        print(f"{dataset}: features {origin} (embedding took {features[dataset].seconds:.0f} s)", flush=True)
    tasks = plan(spec, done)
    print(f"{len(tasks)} runs to go ({len(done)} already in {output.name})", flush=True)
    started, finished, lock = time.perf_counter(), [0], threading.Lock()

    def record(row):
        with lock:
            append_rows(output, [row], COLUMNS)
            finished[0] += 1
            left = (time.perf_counter() - started) / finished[0] * (len(tasks) - finished[0]) / 60
            print(f"[{finished[0]}/{len(tasks)}] {row['dataset']} {row['loss']}/{row['recipe']} seed {row['seed']}: "
                  f"test accuracy {row['test_accuracy']:.4f}, best epoch {row['best_epoch']}/{row['epochs_run']}, "
                  f"{row['seconds']:.0f} s; about {left:.0f} min left", flush=True)

    def all_baselines():
        for dataset in spec["datasets"]:
            run_baselines(features[dataset], baselines, spec["lpa_reference"])

    if jobs <= 1:
        all_baselines()
        for task in _with_sigmas(tasks, features):
            record(train_run(task))
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = []
        for task in _with_sigmas(tasks, features):
            futures.append(pool.submit(train_run, task))
            futures[-1].add_done_callback(lambda future: future.exception() or record(future.result()))
        all_baselines()
        for future in futures:
            future.result()  # a worker's error, raised here


def build_spec(args, parser) -> dict:
    """The grid of the parsed arguments, every value checked before any work."""
    spec: dict[str, Any] = json.loads(json.dumps(TINY)) if args.tiny else {
        "datasets": list(DATASETS), "seeds": list(range(10)), "methods": list(METHODS), "budget": dict(BUDGET),
        "lpa_reference": LPA_REFERENCE_SIZE}
    for name in ("datasets", "seeds", "methods"):
        if getattr(args, name):
            spec[name] = getattr(args, name)
    for name in ("epochs", "patience"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be 1 or more, got {value}")
            spec["budget"][name] = value
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    if any(seed < 0 for seed in spec["seeds"]) or len(set(spec["seeds"])) != len(spec["seeds"]):
        parser.error(f"--seeds must be distinct integers >= 0, got {spec['seeds']}")
    for method in spec["methods"]:
        try:
            one_run.parse_method(method)
        except ValueError as error:
            parser.error(str(error))
    if not any(one_run.parse_method(m)[0] == "ce" for m in spec["methods"]):
        parser.error("--methods needs a CE method (ce/course or ce/authors): every method is compared with CE")
    for path, columns in ((args.output, COLUMNS), (baselines_path(args.output), BASELINE_COLUMNS),
                          (summary_path(args.output), None)):
        try:
            check_owned(path, columns)
        except ValueError as error:
            parser.error(str(error))
    return {**spec, "data_dir": args.data_dir, "cache": args.cache}


def baselines_path(output: Path) -> Path:
    """``baselines_frozen.csv`` beside the default results name, else ``<stem>_baselines.csv``."""
    name = "baselines_frozen.csv" if output.stem == "frozen_features" else output.stem + "_baselines.csv"
    return output.with_name(name)


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + "_summary.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", help=f"datasets (default: {' '.join(DATASETS)})")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0 to 9)")
    parser.add_argument("--methods", nargs="+", help="loss/recipe methods (default: the seven of METHODS)")
    parser.add_argument("--epochs", type=int, help=f"most epochs of a run (default {BUDGET['epochs']})")
    parser.add_argument("--patience", type=int,
                        help=f"epochs without a better validation macro-F1 (default {BUDGET['patience']})")
    parser.add_argument("--tiny", action="store_true", help="the course's reviews, 2 seeds, 3 epochs: a smoke run")
    parser.add_argument("--output", type=Path, help=f"results CSV (default: {OUTPUT_FOLDER}/frozen_features.csv here; "
                                                    "the committed files in results/ are written only when named)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in a worker process on one thread")
    parser.add_argument("--data-dir", help="folder with the datasets (default: GLOSS_LITE_DATA, then a download)")
    parser.add_argument("--cache",
                        help="feature cache folder (default: GLOSS_LITE_CACHE, then ~/.cache/gloss-lite/features)")
    parser.add_argument("--summary-only", action="store_true", help="summarise the results files, train nothing")
    args = parser.parse_args(argv)
    args.output = args.output or OUTPUT_FOLDER / "frozen_features.csv"
    if args.output.suffix != ".csv":
        parser.error(f"--output must be a .csv file, got {args.output}")
    spec = build_spec(args, parser)
    if not args.summary_only:
        run_grid(spec, args.output, baselines_path(args.output), jobs=args.jobs)
    if not args.output.exists():
        print(f"no results at {args.output}")
        return 1
    summary = summary_markdown(args.output, baselines_path(args.output))
    write_atomically(summary_path(args.output), summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
