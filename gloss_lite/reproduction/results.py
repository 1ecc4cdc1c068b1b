"""Results files of training runs: the one reader, the run key, paired intervals, verdicts, summaries.

Taught in ``notebooks/06_comparing_losses.ipynb`` (the convergence measure, a GPU run's file)
and ``07_reproducing_the_paper.ipynb`` (the verdicts).

**The file.** One row per run and epoch. A run is identified by ``RUN_KEY`` = (dataset,
recipe, loss, seed); ``RESULT_COLUMNS`` are the columns ``python -m gloss_lite.reproduction``
writes, of which ``REQUIRED_COLUMNS`` must be present. ``recipe`` is ``"course"`` or
``"authors"`` (a file without it holds course runs); ``device`` names the GPU or CPU (older
files call it ``gpu``); ``test_*`` sit on a run's last epoch; ``seconds`` is the epoch's time;
``peak_cuda_allocated_mb`` is the most memory CUDA tensors held (empty on a CPU) and
``peak_rss_mb`` the process's peak resident memory, two different things.

``read_results`` refuses what cannot be right, naming the file, the line and the column: a
renamed or missing required column, a row with too few or too many values (a row cut by a
full disk), a word where a number belongs, a score outside [0, 1] (85 is a percentage, not an
accuracy), a fractional seed or epoch, a negative time or memory. Nothing is dropped silently.

**Convergence.** For a reference loss (CE) whose best validation accuracy is a*, a loss
converges faster if its validation accuracy first reaches a* at an earlier epoch,

    first_epoch_reaching(curve, a*) = min { t : curve[t] >= a* }   (1-based; None if never).

**Verdicts.** For each method against CE of the same recipe, over the seeds both finished:
the paired differences ``d_s = acc_s(method) - acc_s(CE)`` of test accuracy have mean ``d``,
standard deviation ``s`` and ``n`` seeds, and the 95% interval ``d +- t_{0.975, n-1} s / sqrt(n)``
(scipy's paired t-test, ``scipy.stats.ttest_rel``). Convergence uses ``e_s(method) - e_s(CE)``,
``e_s`` the first epoch whose validation accuracy reaches CE's best of that seed (a method that
never reaches it counts as one epoch past its last). "supported" when the interval lies entirely
on the claimed side of 0, "not supported" when entirely on the other, else "undecided at this
sample size" (always with fewer than 2 seeds). Equal differences give the single value ``d``.

**Where the committed files are.** ``results_files()`` finds them in ``results/`` of a clone, or
in the copy a pip install ships inside the package (``gloss_lite.results_data``), so a notebook
in Colab reads the same files as one in a clone.
"""

from __future__ import annotations

import csv
import difflib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "AMOUNT",
    "epochs_to_reach",
    "finished_runs",
    "first_epoch_reaching",
    "FRACTION",
    "LEGACY_NAMES",
    "markdown_table",
    "NUMBER_RULES",
    "PACKAGE",
    "paired_interval",
    "read_results",
    "REQUIRED_COLUMNS",
    "RESULT_COLUMNS",
    "results_files",
    "results_folder",
    "RUN_KEY",
    "SCORES",
    "summarise",
    "summarise_results",
    "summary_markdown",
    "TEXT_COLUMNS",
    "TOLERANCE",
    "verdict",
    "WHOLE",
]

RUN_KEY = ["dataset", "recipe", "loss", "seed"]
RESULT_COLUMNS = RUN_KEY + [
    "epoch", "val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "test_accuracy_last",
    "test_macro_f1_last", "best_epoch", "aux_grad_share", "loss_value", "sigma", "seconds",
    "peak_cuda_allocated_mb", "peak_rss_mb", "device", "precision", "torch", "train_size", "epochs", "batch_size",
    "max_length",
]
REQUIRED_COLUMNS = ["dataset", "loss", "seed", "epoch", "val_accuracy"]
TEXT_COLUMNS = ["dataset", "recipe", "loss", "device", "precision", "torch"]
SCORES = ["val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "test_accuracy_last",
          "test_macro_f1_last", "aux_grad_share"]
FRACTION = "a score between 0 and 1 (a fraction, not a percentage)"
WHOLE = "a whole number >= 0"
AMOUNT = "a finite number >= 0"
NUMBER_RULES = {  # column -> what a value must be
    **{column: FRACTION for column in SCORES},
    **{column: WHOLE for column in ("seed", "epoch", "best_epoch", "train_size", "epochs", "batch_size",
                                    "max_length")},
    **{column: AMOUNT for column in ("seconds", "peak_cuda_allocated_mb", "peak_rss_mb", "sigma")},
    "loss_value": "a finite number",
}
LEGACY_NAMES = {"gpu": "device"}
TOLERANCE = 1e-9  # "reaches" allows for float noise in a mean of accuracies
PACKAGE = Path(__file__).resolve().parents[1]


def results_folder() -> Path:
    """The committed results files: the installed copy (``gloss_lite/results_data``), else ``results/``
    beside the package in a clone."""
    installed = PACKAGE / "results_data"
    return installed if installed.is_dir() else PACKAGE.parent / "results"


def results_files(folder: str | Path | None = None, pattern: str = "reproduction*.csv") -> list[Path]:
    """The results files in ``folder`` (default: ``results_folder()``) whose names match ``pattern``."""
    folder = Path(folder) if folder is not None else results_folder()
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def first_epoch_reaching(curve: Sequence[float], target: float) -> int | None:
    """The 1-based epoch of the first value in ``curve`` that is >= ``target``; None if none is."""
    return next((epoch for epoch, value in enumerate(curve, start=1) if value >= target - TOLERANCE), None)


# ---------------------------------------------------------------------------------------------
# Reading


def read_results(path: str | Path) -> pd.DataFrame:
    """A results CSV as a checked DataFrame: ``RESULT_COLUMNS`` first (missing ones empty), then the
    file's other columns; one row per (dataset, recipe, loss, seed, epoch), the last row winning.

    Column names match case-insensitively and without surrounding spaces.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty or not UTF-8, a required column is missing, a row has the
            wrong number of values, or a value is missing or impossible; the message names the
            file, the line and the column, and what the value must be.
    """
    path = Path(path)
    header, lines, rows = _read_rows(path)
    frame = pd.DataFrame(rows, columns=header, index=lines, dtype=object)
    for column in frame.columns:
        if column in NUMBER_RULES:
            frame[column] = _numbers(frame[column], column, path)
    for column in (c for c in TEXT_COLUMNS if c in frame.columns):
        frame[column] = frame[column].astype("string").str.strip().replace("", pd.NA)
    for column in REQUIRED_COLUMNS:
        empty = frame[column].isna()
        if empty.any():
            raise ValueError(f"{path}, line {empty.idxmax()}: {column} is empty; every row needs "
                             f"{', '.join(REQUIRED_COLUMNS)} (fix or delete that row)")
    if "recipe" not in frame.columns:
        frame["recipe"] = "course"
    frame["recipe"] = frame["recipe"].fillna("course")
    for column in RESULT_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    frame = frame.astype({"seed": int, "epoch": int}).drop_duplicates(RUN_KEY + ["epoch"], keep="last")
    columns = RESULT_COLUMNS + [c for c in frame.columns if c not in RESULT_COLUMNS]
    return frame[columns].sort_values(RUN_KEY + ["epoch"]).reset_index(drop=True)


def _read_rows(path: Path) -> tuple[list[str], list[int], list[list[str]]]:
    """The normalised header, each row's line number and its values (strings); every row complete."""
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}; python -m gloss_lite.reproduction writes one")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {error.start}: "
                         f"{error.reason}); save the file as a UTF-8 CSV") from None
    reader = csv.reader(text.splitlines(keepends=True))
    header = next(reader, None)
    if not header or not any(cell.strip() for cell in header):
        raise ValueError(f"{path} is empty; a results file starts with the header line {','.join(RESULT_COLUMNS)}")
    header = [LEGACY_NAMES.get(name.strip().lower(), name.strip().lower()) for name in header]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}, line 1 (the header): the column(s) {repeated} appear more than once")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        hints = [f"{close[0]!r} for {name!r}" for name in missing
                 if (close := difflib.get_close_matches(name, header, n=1, cutoff=0.6))]
        raise ValueError(f"{path}, line 1 (the header): no column {missing}"
                         + (f" (renamed? the file has {', '.join(hints)})" if hints else "")
                         + f"; a results file needs {', '.join(REQUIRED_COLUMNS)}")
    lines, rows = [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            cut = " (cut short by a full disk or a killed write?)" if len(row) < len(header) else ""
            raise ValueError(f"{path}, line {reader.line_num}: {len(row)} values for the {len(header)} columns"
                             f"{cut}; fix or delete that line")
        lines.append(reader.line_num)
        rows.append(row)
    return header, lines, rows


def _numbers(values: pd.Series, column: str, path: Path) -> pd.Series:
    """``values`` (text) as floats; ValueError at the first one that is not ``NUMBER_RULES[column]``."""
    text = values.astype("string").str.strip()
    numbers = pd.to_numeric(text.where(text.str.lower().ne("nan") & text.ne(""), None), errors="coerce")
    finite = np.isfinite(numbers.to_numpy(dtype=float, na_value=np.nan))
    rule = NUMBER_RULES[column]
    valid = {FRACTION: (numbers >= 0) & (numbers <= 1), WHOLE: (numbers >= 0) & (numbers == numbers.round()),
             AMOUNT: numbers >= 0}.get(rule, numbers == numbers)
    given = text.notna() & text.ne("") & text.str.lower().ne("nan")
    bad = given & ~(numbers.notna() & finite & valid)
    if bad.any():
        line = bad.idxmax()
        raise ValueError(f"{path}, line {line}: {column} = {values[line]!r} is not {rule}; "
                         f"fix that value (line {line}, column {column}) or delete the row")
    return numbers.astype(float)


# ---------------------------------------------------------------------------------------------
# Paired intervals and verdicts


def paired_interval(scores, reference, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences ``scores - reference`` and its t-interval ``d +- t s / sqrt(n)``.

    scipy's ``ttest_rel(...).confidence_interval``; with fewer than 2 pairs the interval is
    ``(-inf, inf)``, and with equal differences it is the single value ``d``.
    """
    from scipy import stats

    scores, reference = np.asarray(scores, dtype=float), np.asarray(reference, dtype=float)
    if scores.shape != reference.shape:
        raise ValueError(f"paired scores need one reference each, got {scores.shape} and {reference.shape}")
    differences = scores - reference
    mean = float(differences.mean()) if len(differences) else math.nan
    if len(differences) < 2:
        return mean, -math.inf, math.inf
    if np.allclose(differences, differences[0], rtol=0, atol=1e-12):
        return mean, mean, mean  # no spread: scipy warns about precision and divides 0 by 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_rel(scores, reference).confidence_interval(confidence)
    return mean, float(interval.low), float(interval.high)


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


# ---------------------------------------------------------------------------------------------
# Summaries


def finished_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: its last row with test scores, sorted by ``RUN_KEY``."""
    done = frame.dropna(subset=["test_accuracy"]).sort_values(RUN_KEY + ["epoch"])
    return done.drop_duplicates(RUN_KEY, keep="last").reset_index(drop=True)


def summarise(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, claims)``: per dataset and method, test scores over seeds; per method against CE
    of its recipe, the paired differences with 95% intervals and the verdict on each claim."""
    methods = ["dataset", "recipe", "loss"]
    last = finished_runs(frame)
    scores = last.groupby(methods).agg(
        seeds=("seed", "nunique"), test_accuracy=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
        test_macro_f1=("test_macro_f1", "mean"), test_macro_f1_std=("test_macro_f1", "std"),
        test_accuracy_last=("test_accuracy_last", "mean"), best_epoch=("best_epoch", "mean"),
        epochs=("epoch", "max"), peak_cuda_allocated_mb=("peak_cuda_allocated_mb", "max"),
        peak_rss_mb=("peak_rss_mb", "max"))
    by_method = frame.groupby(methods)
    scores["aux_grad_share"] = by_method["aux_grad_share"].mean()  # over every epoch, not the last only
    scores["seconds_per_epoch"] = by_method["seconds"].mean()
    curves = {key: group.sort_values("epoch")["val_accuracy"].tolist() for key, group in frame.groupby(RUN_KEY)}
    claims = []
    for (dataset, recipe, loss), group in last.groupby(methods):
        reference = last[(last.dataset == dataset) & (last.recipe == recipe) & (last.loss == "ce")]
        seeds = sorted(set(group.seed) & set(reference.seed))
        if loss == "ce" or not seeds:
            continue
        accuracy = group.set_index("seed").loc[seeds, "test_accuracy"]
        ce_accuracy = reference.set_index("seed").loc[seeds, "test_accuracy"]
        mean_acc, low_acc, high_acc = paired_interval(accuracy, ce_accuracy)
        reach, ce_reach = [], []
        for seed in seeds:
            ce_curve = curves[(dataset, recipe, "ce", seed)]
            reach.append(epochs_to_reach(curves[(dataset, recipe, loss, seed)], max(ce_curve)))
            ce_reach.append(epochs_to_reach(ce_curve, max(ce_curve)))
        mean_ep, low_ep, high_ep = paired_interval(reach, ce_reach)
        claims.append({
            "dataset": dataset, "recipe": recipe, "loss": loss, "seeds": len(seeds),
            "test accuracy - CE": mean_acc, "95% CI low": low_acc, "95% CI high": high_acc,
            "higher final accuracy": verdict(low_acc, high_acc, "higher"),
            "epochs to CE's best - CE's": mean_ep, "epochs 95% CI low": low_ep, "epochs 95% CI high": high_ep,
            "faster convergence": verdict(low_ep, high_ep, "lower"),
        })
    return scores, pd.DataFrame(claims)


def summarise_results(frame: pd.DataFrame, reference: str = "ce") -> pd.DataFrame:
    """One row per (dataset, recipe, loss): seeds, epochs, final test scores (mean and std over
    seeds), the best mean validation accuracy, and the first epoch at which the loss's mean
    validation curve reaches the best of the ``reference`` loss *of the same recipe* (NaN when it
    never does, or there is no reference).
    """
    groups = ["dataset", "recipe", "loss"]
    runs = frame.sort_values("epoch").groupby(groups + ["seed"]).agg(
        epochs=("epoch", "max"), test_accuracy=("test_accuracy", "last"), test_macro_f1=("test_macro_f1", "last"),
        seconds=("seconds", lambda s: s.sum(min_count=1)), device=("device", "last"))
    mean_curves = frame.groupby(groups + ["epoch"])["val_accuracy"].mean()
    methods = set(mean_curves.index.droplevel("epoch"))
    rows = []
    for (name, recipe, loss), group in runs.groupby(level=groups):
        curve = mean_curves.loc[(name, recipe, loss)].sort_index()
        has_reference = (name, recipe, reference) in methods
        target = mean_curves.loc[(name, recipe, reference)].max() if has_reference else np.nan
        position = first_epoch_reaching(curve.tolist(), target) if has_reference else None
        reached = None if position is None else int(curve.index[position - 1])  # epochs need not start at 1
        rows.append({
            "dataset": name, "recipe": recipe, "loss": loss, "seeds": len(group), "epochs": int(group["epochs"].max()),
            "test accuracy": group["test_accuracy"].mean(), "test accuracy std": group["test_accuracy"].std(),
            "test macro-F1": group["test_macro_f1"].mean(), "test macro-F1 std": group["test_macro_f1"].std(),
            "best mean val accuracy": curve.max(),
            f"first epoch >= {reference}'s best val": np.nan if reached is None else reached,
            "seconds per run": group["seconds"].mean(),
            "device": ", ".join(sorted(group["device"].dropna().unique())) or "-",
        })
    return pd.DataFrame(rows).set_index(groups)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (its index as leading columns), numbers to 4 decimals, "-" for none."""
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="-")


def summary_markdown(frame: pd.DataFrame, source: str, notes: Sequence[str] = ()) -> str:
    """The summary tables as Markdown, with what the file was measured on and ``notes`` (the budget,
    failed runs) under the title."""
    scores, claims = summarise(frame)

    def listed(column):
        values = frame[column].dropna().astype(str).unique() if column in frame else []
        return ", ".join(sorted(values)) or "-"

    lines = [f"# Summary of {source}", "",
             f"Measured on: {listed('device')}; torch {listed('torch')}; precision {listed('precision')}.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    lines += ["## Test scores (best validation epoch restored), mean and std over seeds", "",
              markdown_table(scores) if len(scores) else "No finished runs yet.", "",
              "## Each method against CE of its recipe, paired by seed", "",
              markdown_table(claims) if len(claims) else "No method has a finished CE to compare with."]
    return "\n".join(lines) + "\n"
