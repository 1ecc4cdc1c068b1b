"""Results of training runs: the reproduction file and the convergence measure.

A results file (``results/reproduction.csv`` for the GPU reproduction) holds one row per run
and epoch, with the columns

    dataset, loss, seed, epoch, val_accuracy                                (required)
    recipe, val_macro_f1, test_accuracy, test_macro_f1, seconds, device, torch   (optional)

``recipe`` is ``"course"`` or ``"authors"`` (``gloss_lite.reproduction``; a file without it holds
course runs); ``device`` names the GPU or CPU (older files call it ``gpu``). Other columns, such
as those ``gloss_lite.reproduction`` adds, are kept.

``test_*`` are filled on a run's last epoch (earlier rows may leave them empty); ``seconds`` is
the epoch's training time.

**Convergence.** The paper's speed claim is about epochs: for a reference loss (CE) with best
mean validation accuracy a* over its epochs, a loss converges faster if its mean validation
accuracy first reaches a* at an earlier epoch,

    first_epoch_reaching(curve, a*) = min { t : curve[t] >= a* }   (1-based; None if never).

Taught in ``06_comparing_losses``; ``benchmarks/convergence.py`` measures the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "first_epoch_reaching",
    "OPTIONAL_COLUMNS",
    "read_results",
    "REQUIRED_COLUMNS",
    "RESULT_COLUMNS",
    "RUN_KEY",
    "SCORES",
    "summarise_results",
    "TOLERANCE",
]

REQUIRED_COLUMNS = ["dataset", "loss", "seed", "epoch", "val_accuracy"]
OPTIONAL_COLUMNS = ["recipe", "val_macro_f1", "test_accuracy", "test_macro_f1", "seconds", "device", "torch"]
RESULT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
RUN_KEY = ["dataset", "recipe", "loss", "seed"]
_NUMERIC = ["seed", "epoch", "val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "seconds"]
_TEXT = ["dataset", "recipe", "loss", "device", "torch"]
TOLERANCE = 1e-9  # "reaches" allows for float noise in a mean of accuracies


def first_epoch_reaching(curve: Sequence[float], target: float) -> int | None:
    """The 1-based epoch of the first value in ``curve`` that is >= ``target``; None if none is."""
    return next((epoch for epoch, value in enumerate(curve, start=1) if value >= target - TOLERANCE), None)


def read_results(path: str | Path) -> pd.DataFrame:
    """A results CSV as a clean DataFrame with ``RESULT_COLUMNS`` first, one row per
    (dataset, recipe, loss, seed, epoch).

    Column names match case-insensitively and without surrounding spaces; missing optional
    columns are added empty. Rows whose required values are missing or not numeric are dropped,
    with a printed count; for a repeated (dataset, loss, seed, epoch) the last row wins.

    Values that are numbers but cannot be right are errors, not dropped (see ``_check_values``):
    accuracies and F1 scores must be finite and lie in [0, 1] (a percentage such as 70 is
    refused), ``seed`` and ``epoch`` must be whole numbers (``epoch >= 0``; seeds 0.5 and 0.7
    are not rounded into one run), ``seconds`` finite and >= 0.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a required column is missing, or a value is out of range (the message names
            the file, the column and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}; a GPU run writes it (see the README)")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; a results file has a header line {','.join(RESULT_COLUMNS)}") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ValueError(f"{path} is not a readable CSV ({type(error).__name__}: {error}); "
                         "save it as UTF-8 CSV with one row per line and quoted texts") from None
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; a results file has the columns {RESULT_COLUMNS}")
    if "device" not in frame.columns and "gpu" in frame.columns:
        frame = frame.rename(columns={"gpu": "device"})
    for column in OPTIONAL_COLUMNS:
        if column not in frame.columns:
            frame[column] = "course" if column == "recipe" else np.nan
    frame[_NUMERIC] = frame[_NUMERIC].apply(pd.to_numeric, errors="coerce")
    for column in _TEXT:
        frame[column] = frame[column].astype("string").str.strip()
    blank = frame["dataset"].fillna("").eq("") | frame["loss"].fillna("").eq("")
    bad = frame[REQUIRED_COLUMNS].isna().any(axis=1) | blank.astype(bool)
    if bad.any():
        print(f"{path}: skipped {int(bad.sum())} row(s) with a missing or non-numeric {', '.join(REQUIRED_COLUMNS)}")
    frame = frame[~bad]
    _check_values(frame, path)
    frame = frame.astype({"seed": int, "epoch": int})
    frame["recipe"] = frame["recipe"].fillna("course")
    frame = frame.drop_duplicates(RUN_KEY + ["epoch"], keep="last")
    columns = RESULT_COLUMNS + [c for c in frame.columns if c not in RESULT_COLUMNS]
    return frame[columns].sort_values(RUN_KEY + ["epoch"]).reset_index(drop=True)


SCORES = ["val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1"]


def _check_values(frame: pd.DataFrame, path: Path) -> None:
    """Raise ValueError at the first impossible value, naming the file, column and line."""
    rules = [(column, lambda v: np.isfinite(v) & (v >= 0) & (v <= 1),
              "a score between 0 and 1 (a fraction, not a percentage)") for column in SCORES]
    rules += [("seed", lambda v: np.isfinite(v) & (v == np.round(v)), "a whole number"),
              ("epoch", lambda v: np.isfinite(v) & (v == np.round(v)) & (v >= 0), "a whole number >= 0"),
              ("seconds", lambda v: np.isfinite(v) & (v >= 0), "a finite number >= 0")]
    for column, valid, expected in rules:
        values = frame[column]
        bad = values.notna() & ~valid(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            index = bad.to_numpy().argmax()
            line = int(frame.index[index]) + 2  # the header is line 1
            raise ValueError(
                f"{path}, line {line}: {column} = {values.iloc[index]:g} is not {expected}; "
                f"fix that row (line {line}) or delete it"
            )


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
