"""Tiers of evidence: every results file present, side by side with the published numbers.

Taught in ``notebooks/07_reproducing_the_paper.ipynb`` (section 6).

A tier is one way of testing the paper's claims, from cheapest to closest to the paper:

======================================  ===========================================================
tier                                    file in ``results/``
======================================  ===========================================================
baselines, no trained encoder           ``baselines_frozen.csv`` (TF-IDF, linear probe, LPA)
frozen encoder + adapter, full data     ``frozen_features.csv`` (not the paper's setting)
fine-tuning, CPU, subsets               ``reproduction_cpu.csv``
fine-tuning, CPU, full MR               ``reproduction_cpu_fullmr.csv``
fine-tuning, GPU, full data             ``reproduction.csv`` (when a GPU run lands)
published                               ``published_references.csv``
======================================  ===========================================================

``tier_scores`` gathers the test accuracies (%) into one long table, ``tier_claims`` the
G-Loss-against-CE verdicts of every tier, ``plot_tiers`` draws the accuracies, one panel per
dataset. A missing file is a missing tier, never an error.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import frozen_summary, results

__all__ = ["tier_scores", "tier_claims", "tier_reading", "mean_gap", "plot_tiers"]

DATASETS = ["mr", "r8", "r52", "ohsumed", "20ng"]
BASELINES = "baselines, no trained encoder"
FROZEN = "frozen encoder + adapter, full data"
FINE_TUNING = {"reproduction_cpu.csv": "fine-tuning, CPU, subsets",
               "reproduction_cpu_fullmr.csv": "fine-tuning, CPU, full MR",
               "reproduction.csv": "fine-tuning, GPU, full data"}
PUBLISHED = "published"
TIERS = [BASELINES, FROZEN, *FINE_TUNING.values(), PUBLISHED]
TIER_KEYS = dict(zip(TIERS, ["baselines", "frozen", "cpu_subsets", "cpu_full_mr", "gpu_full", "published"]))
INTERVAL_COLUMNS = ["seed low", "seed high", "test-document low", "test-document high"]  # 95%, of the difference
SHOWN = {("ce", "course"): "CE", ("gloss+ce", "course"): "G-Loss+CE (course)",
         ("ce", "authors"): "CE (authors)", ("gloss+ce", "authors"): "G-Loss+CE (authors)"}


def _seed_rows(tier: str, last: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max over seeds of each shown method's test accuracy, in %."""
    last = last[[key in SHOWN for key in zip(last["loss"], last["recipe"])]]
    grouped = last.groupby(["dataset", "loss", "recipe"])["test_accuracy"]
    table = grouped.agg(["mean", "min", "max", "count"]).reset_index()
    return pd.DataFrame({"tier": tier, "dataset": table["dataset"],
                         "method": [SHOWN[key] for key in zip(table["loss"], table["recipe"])],
                         "accuracy": table["mean"] * 100, "low": table["min"] * 100, "high": table["max"] * 100,
                         "seeds": table["count"]})


def tier_scores(folder: str | Path | None = None) -> pd.DataFrame:
    """One row per tier, dataset and method: test accuracy (%) with its range (seeds' min and max,
    Wilson's 95% interval for a single-run baseline, none for a published number). ``folder``:
    the committed results (``results.results_folder()``) by default."""
    folder = Path(folder) if folder is not None else results.results_folder()
    parts = []
    if (folder / "baselines_frozen.csv").exists():
        base = pd.read_csv(folder / "baselines_frozen.csv")
        parts.append(pd.DataFrame({"tier": BASELINES, "dataset": base["dataset"], "method": base["method"],
                                   "accuracy": base["test_accuracy"] * 100, "low": base["test_accuracy_low"] * 100,
                                   "high": base["test_accuracy_high"] * 100, "seeds": 1}))
    if (folder / "frozen_features.csv").exists():
        parts.append(_seed_rows(FROZEN, frozen_summary.read_frozen(folder / "frozen_features.csv")))
    for name, tier in FINE_TUNING.items():
        if (folder / name).exists():
            parts.append(_seed_rows(tier, results.finished_runs(results.read_results(folder / name))))
    if (folder / "published_references.csv").exists():
        published = pd.read_csv(folder / "published_references.csv").melt(
            id_vars="model", value_vars=DATASETS, var_name="dataset", value_name="accuracy")
        parts.append(published.rename(columns={"model": "method"}).assign(
            tier=PUBLISHED, low=published["accuracy"], high=published["accuracy"], seeds=1))
    columns = ["tier", "dataset", "method", "accuracy", "low", "high", "seeds"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def tier_claims(folder: str | Path | None = None) -> pd.DataFrame:
    """Each G-Loss method against CE of its recipe, per tier and dataset: difference, intervals, verdict."""
    folder = Path(folder) if folder is not None else results.results_folder()
    parts = []
    if (folder / "frozen_features.csv").exists():
        claims = frozen_summary.claims(frozen_summary.read_frozen(folder / "frozen_features.csv"))
        claims = claims[claims["loss"].str.startswith("gloss")].reset_index(drop=True)
        intervals = pd.DataFrame([[*seed, *document] for seed, document in
                                  zip(claims["seed 95% CI"], claims["test-document 95% CI"])], columns=INTERVAL_COLUMNS)
        parts.append(pd.concat([pd.DataFrame({
            "tier": FROZEN, "dataset": claims["dataset"], "method": claims["loss"] + "/" + claims["recipe"],
            "seeds": claims["seeds"], "difference": claims["accuracy - CE"]}), intervals, pd.DataFrame({
                "higher final accuracy": claims["higher final accuracy"],
                "faster convergence": claims["faster convergence"]})], axis=1))
    for name, tier in FINE_TUNING.items():
        if (folder / name).exists():
            _, claims = results.summarise(results.read_results(folder / name))
            if len(claims):
                parts.append(pd.DataFrame({
                    "tier": tier, "dataset": claims["dataset"], "method": claims["loss"] + "/" + claims["recipe"],
                    "seeds": claims["seeds"], "difference": claims["test accuracy - CE"],
                    "seed low": claims["95% CI low"], "seed high": claims["95% CI high"],
                    "higher final accuracy": claims["higher final accuracy"],
                    "faster convergence": claims["faster convergence"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def tier_reading(claims: pd.DataFrame) -> pd.DataFrame:
    """Per tier and G-Loss method: on how many datasets each claim is supported, and the mean difference.

    ``key`` names the row for ``record`` (e.g. ``frozen_gloss_ce_course``).
    """
    rows = []
    for (tier, method), group in claims.groupby(["tier", "method"], sort=False):
        accuracy, speed = group["higher final accuracy"], group["faster convergence"]
        rows.append({
            "tier": tier, "method": method,
            "key": f"{TIER_KEYS[tier]}_{method.replace('+', '_').replace('/', '_')}", "datasets": len(group),
            "supported": int((accuracy == "supported").sum()),
            "not_supported": int((accuracy == "not supported").sum()),
            "undecided": int(accuracy.str.startswith("undecided").sum()), "mean_difference": group["difference"].mean(),
            "faster_supported": int((speed == "supported").sum())})
    return pd.DataFrame(rows)


def mean_gap(scores: pd.DataFrame, first: tuple[str, str], second: tuple[str, str]) -> tuple[float, int]:
    """Mean over the datasets both have of ``first``'s accuracy minus ``second``'s ((tier, method) each), in
    points, and how many datasets that is (NaN and 0 when none)."""
    def accuracy(tier, method):
        part = scores[(scores["tier"] == tier) & (scores["method"] == method)]
        return part.set_index("dataset")["accuracy"]

    gaps = (accuracy(*first) - accuracy(*second)).dropna()
    return (float(gaps.mean()) if len(gaps) else float("nan")), len(gaps)


def plot_tiers(scores: pd.DataFrame, datasets=None):
    """Test accuracy (%) of every tier, one panel per dataset: a dot and its range per method."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    datasets = [d for d in (datasets or DATASETS) if d in set(scores["dataset"])]
    scores = scores[scores["dataset"].isin(datasets)].copy()
    scores["row"] = scores["tier"] + " | " + scores["method"]
    order = [row for tier in TIERS for row in dict.fromkeys(scores.loc[scores["tier"] == tier, "row"])]
    colours = dict(zip(TIERS, sns.color_palette("colorblind", len(TIERS))))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets) + 3, 0.28 * len(order) + 1.5),
                             sharey=True, squeeze=False)
    position = {row: i for i, row in enumerate(order)}
    for ax, dataset in zip(axes[0], datasets):
        part = scores[scores["dataset"] == dataset]
        for item in part.itertuples():
            y = position[item.row]
            ax.plot([item.low, item.high], [y, y], color=colours[item.tier], lw=2)
            ax.plot(item.accuracy, y, "o", color=colours[item.tier], ms=5)
        ax.set(title=dataset, xlabel="test accuracy (%)")
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(range(len(order)), order, fontsize="small")
    axes[0][0].invert_yaxis()
    fig.suptitle("Tiers of evidence (ranges: seeds' min to max; Wilson 95% for a single baseline run). "
                 "The frozen tier is not the paper's setting: its encoder never trains", y=1.0)
    fig.tight_layout()
    return fig
