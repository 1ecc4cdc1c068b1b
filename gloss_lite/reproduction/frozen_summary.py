"""The frozen-feature results, summarised: scores, paired differences with two intervals, verdicts.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

For each method against CE of its recipe, over the seeds both finished (``d_s`` the test-accuracy
difference of seed ``s``):

- the **seed interval**: ``gloss_lite.reproduction.results.paired_interval`` of the ``d_s`` (training noise,
  one test sample);
- the **test-document interval**: ``significance.bootstrap_interval`` of the seed-mean difference
  (test-set sampling noise, the seeds held fixed), and how many seeds' McNemar tests reject
  "equally accurate" at 5% in each direction;
- the verdict: ``gloss_lite.reproduction.results.verdict`` of each interval; "supported" (or "not
  supported") only when both intervals say so, else "undecided at this sample size";
- **convergence** as the paper claims it: per seed, the epochs (and training seconds) the method
  needs to first reach CE's best validation accuracy of that seed, minus CE's own; a method that
  never reaches it counts one epoch past its last (and all its seconds): a censored count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .results import epochs_to_reach, markdown_table, paired_interval, verdict
from .significance import bootstrap_interval, discordant_counts, mcnemar_exact, seconds_to_reach, unpack_correct

__all__ = [
    "read_frozen",
    "combined_verdict",
    "method_scores",
    "compare",
    "claims",
    "claims_table",
    "context_table",
    "summary_markdown",
]

SUMMARY_TITLE = "# Frozen features:"
REFERENCES = Path(__file__).resolve().parents[2] / "results" / "published_references.csv"
SETTING = ("Not the paper's setting: the encoder (all-MiniLM-L6-v2) is frozen and only a small adapter and a "
           "linear head train. These numbers say whether each loss helps a model reshape given features; they "
           "cannot say how the loss moves a transformer's weights in full fine-tuning.")


def read_frozen(path: str | Path) -> pd.DataFrame:
    """The frozen-feature results file, one row per run (a repeated run: its last row)."""
    frame = pd.read_csv(path)
    frame = frame.drop_duplicates(["dataset", "loss", "recipe", "seed"], keep="last")
    frame["curve"] = frame["val_accuracy_curve"].astype(str).str.split().apply(lambda v: [float(x) for x in v])
    frame["epoch_times"] = frame["epoch_seconds"].astype(str).str.split().apply(lambda v: [float(x) for x in v])
    frame["correct"] = [unpack_correct(bits, int(n)) for bits, n in zip(frame["correct_bits"], frame["test_size"])]
    return frame


def combined_verdict(seed_verdict: str, document_verdict: str) -> str:
    """The verdict both intervals agree on; "undecided at this sample size" when they do not."""
    return seed_verdict if seed_verdict == document_verdict else "undecided at this sample size"


def method_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method: seeds, test accuracy mean, std, min and max, macro-F1, epochs, seconds."""
    return frame.groupby(["dataset", "recipe", "loss"]).agg(
        seeds=("seed", "nunique"), test_accuracy=("test_accuracy", "mean"), std=("test_accuracy", "std"),
        min=("test_accuracy", "min"), max=("test_accuracy", "max"), test_macro_f1=("test_macro_f1", "mean"),
        best_epoch=("best_epoch", "mean"), epochs_run=("epochs_run", "mean"), seconds=("seconds", "mean"))


def compare(method: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """The paired comparison of two methods' runs (one row per seed each, the same seeds)."""
    method, reference = method.set_index("seed").sort_index(), reference.set_index("seed").sort_index()
    seeds = method.index.intersection(reference.index)
    method, reference = method.loc[seeds], reference.loc[seeds]
    mean, low, high = paired_interval(method.test_accuracy, reference.test_accuracy)
    _, doc_low, doc_high = bootstrap_interval(np.stack(method.correct), np.stack(reference.correct))
    counts = [discordant_counts(m, r) for m, r in zip(method.correct, reference.correct)]
    p_values = [mcnemar_exact(b, c) for b, c in counts]
    seed_says, document_says = verdict(low, high, "higher"), verdict(doc_low, doc_high, "higher")
    reach, ce_reach, seconds, censored = [], [], [], 0
    for seed in seeds:
        target = max(reference.curve[seed])
        reach.append(epochs_to_reach(method.curve[seed], target))
        ce_reach.append(epochs_to_reach(reference.curve[seed], target))
        taken, reached = seconds_to_reach(method.curve[seed], method.epoch_times[seed], target)
        own, _ = seconds_to_reach(reference.curve[seed], reference.epoch_times[seed], target)
        seconds.append((taken, own))
        censored += not reached
    epoch_mean, epoch_low, epoch_high = paired_interval(reach, ce_reach)
    return {
        "seeds": len(seeds), "accuracy - CE": mean, "seed 95% CI": (low, high),
        "test-document 95% CI": (doc_low, doc_high),
        "McNemar p<0.05 for / against": (sum(p < 0.05 and b > c for p, (b, c) in zip(p_values, counts)),
                                         sum(p < 0.05 and b < c for p, (b, c) in zip(p_values, counts))),
        "median McNemar p": float(np.median(p_values)),
        "seed verdict": seed_says, "test-document verdict": document_says,
        "higher final accuracy": combined_verdict(seed_says, document_says),
        "epochs to CE's best - CE's": epoch_mean, "epochs 95% CI": (epoch_low, epoch_high),
        "faster convergence": verdict(epoch_low, epoch_high, "lower"),
        "seconds to CE's best (method / CE)": (float(np.mean([s[0] for s in seconds])),
                                               float(np.mean([s[1] for s in seconds]))),
        "never reached CE's best": censored,
    }


def claims(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and method other than CE: ``compare`` against CE of the same recipe."""
    rows = []
    for (dataset, recipe, loss), group in frame.groupby(["dataset", "recipe", "loss"]):
        reference = frame[(frame.dataset == dataset) & (frame.recipe == recipe) & (frame.loss == "ce")]
        if loss == "ce" or reference.empty or not set(group.seed) & set(reference.seed):
            continue
        rows.append({"dataset": dataset, "recipe": recipe, "loss": loss, **compare(group, reference)})
    return pd.DataFrame(rows)


def _interval(pair) -> str:
    return f"[{pair[0]:+.4f}, {pair[1]:+.4f}]"


def claims_table(table: pd.DataFrame) -> pd.DataFrame:
    """``claims`` with its pairs written out for Markdown."""
    shown = table.copy()
    for column in ("seed 95% CI", "test-document 95% CI", "epochs 95% CI"):
        shown[column] = shown[column].apply(_interval)
    shown["McNemar p<0.05 for / against"] = shown["McNemar p<0.05 for / against"].apply(lambda p: f"{p[0]} / {p[1]}")
    shown["seconds to CE's best (method / CE)"] = shown["seconds to CE's best (method / CE)"].apply(
        lambda p: f"{p[0]:.1f} / {p[1]:.1f}")
    return shown.drop(columns=["seed verdict", "test-document verdict"])


def context_table(baselines: pd.DataFrame, scores: pd.DataFrame, references: pd.DataFrame | None) -> pd.DataFrame:
    """Test accuracy (%) per dataset: the baselines, the frozen CE and G-Loss+CE, published numbers."""
    table = baselines.pivot(index="method", columns="dataset", values="test_accuracy") * 100
    for recipe, loss in (("course", "ce"), ("course", "gloss+ce"), ("authors", "gloss+ce")):
        if (recipe, loss) in scores.index.droplevel("dataset"):
            mean = scores.xs((recipe, loss), level=("recipe", "loss"))["test_accuracy"]
            table.loc[f"adapter {loss}/{recipe} (mean of seeds)"] = mean * 100
    for row in [] if references is None else references.to_dict("records"):
        shown = {dataset: row[dataset] for dataset in table.columns if dataset in row}
        if shown:
            table.loc[f"published: {row['model']}"] = pd.Series(shown)
    return table


def summary_markdown(results: str | Path, baselines: str | Path | None = None,
                     references: str | Path | None = REFERENCES) -> str:
    """The summary of a frozen-feature results file (and its baselines), as Markdown."""
    frame = read_frozen(results)
    scores, table = method_scores(frame), claims(frame)
    devices = ", ".join(sorted(frame["device"].dropna().unique()))
    lines = [f"{SUMMARY_TITLE} G-Loss against CE at full data ({Path(results).name})", "", SETTING, "",
             f"Measured on: {devices}; torch {', '.join(sorted(frame['torch'].astype(str).unique()))}; "
             f"{', '.join(sorted(frame['precision'].unique()))}.", "", "## Features", "",
             markdown_table(frame.groupby("dataset").agg(train=("train_size", "first"), test=("test_size", "first"),
                                                         max_length=("max_length", "first"),
                                                         embedding_seconds=("feature_seconds", "first"))),
             "", "## Test accuracy over seeds (best validation epoch restored)", "", markdown_table(scores), "",
             "## Each method against CE of its recipe, paired by seed", ""]
    lines.append(markdown_table(claims_table(table)) if len(table) else "No method has a finished CE to compare with.")
    if baselines is not None and Path(baselines).exists():
        refs = pd.read_csv(references) if references is not None and Path(references).exists() else None
        lines += ["", "## In context: baselines and published numbers, test accuracy (%)", "",
                  markdown_table(context_table(pd.read_csv(baselines), scores, refs))]
    return "\n".join(lines) + "\n"
