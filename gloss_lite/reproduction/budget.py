"""Fitting a grid into a time budget: measure the first steps, estimate the whole grid, trim epochs.

Used by the ``gpu-10min`` preset of ``python -m gloss_lite.reproduction``; taught in
``notebooks/07_reproducing_the_paper.ipynb``.

**The probe.** Each method trains for two epochs on ``PROBE_BATCHES`` batches of the grid's
dataset with the longest texts (the most padding, so the others cost less), in worker
processes as the grid will run. From the second epoch's seconds ``t`` over ``n_t`` training and
``n_v`` validation documents, the method's cost per training document is

    c = t / (n_t + n_v / 3)        (a forward-only document counted as a third of a training one),

and its fixed cost per run (a process, the model, the data, the small test) is ``o`` = the
probe's wall time minus its epochs' seconds.

**The estimate.** A run with ``E`` epochs on ``N_t``, ``N_v``, ``N_s`` training, validation and
test documents costs about ``o + c (E (N_t + N_v / 3) + (N_t + 2 N_s) / 3)`` (sigma is estimated on
up to every training document; the test set is scored twice), and the grid the sum over its
runs divided by the runs at once.

**The trim.** While the estimate exceeds the budget left after the probe, the recipe with the
most epochs gives up one; datasets and seeds are never dropped. When one epoch per recipe does
not fit either, the grid stops before any run trains and says what it would need. The plan
(measured costs, epochs asked and given, the estimate) is kept beside the results file
(``<name>_budget.json``), so a resumed grid keeps the epochs it started with.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..files import write_atomically
from .one_run import Run, make_config, parse_method
from .store import GridError
from .workers import run_all

__all__ = ["asked_epochs", "estimate", "fit_to_budget", "measure", "plan_path", "PROBE_BATCHES", "PROBE_EPOCHS", "trim"]

PROBE_BATCHES = 4
PROBE_EPOCHS = 2


def plan_path(output: Path) -> Path:
    return output.with_name(output.stem + "_budget.json")


def _recipes(spec: dict) -> list[str]:
    return list(dict.fromkeys(parse_method(method)[1] for method in spec["methods"]))


def asked_epochs(spec: dict, facts: dict) -> dict:
    """Each recipe's epochs before any trim."""
    dataset = next(iter(facts))
    return {recipe: make_config(Run(dataset, "ce", recipe, 0), spec["budget"], num_classes=facts[dataset]["classes"],
                                device="cpu").epochs for recipe in _recipes(spec)}


def measure(spec: dict, facts: dict, *, jobs: int, execute) -> tuple[dict, float]:
    """``({method: {"per_document": c, "overhead": o}}, probe seconds)`` from a probe of each method."""
    dataset = max(facts, key=lambda name: facts[name]["characters"])
    batch = max(make_config(Run(dataset, *parse_method(method), 0), spec["budget"], device="cpu",
                            num_classes=facts[dataset]["classes"]).batch_size for method in spec["methods"])
    sizes = {split: min(count, facts[dataset][split]) for split, count in
             (("train", PROBE_BATCHES * batch), ("val", batch), ("test", batch))}
    budget = {recipe: {**spec["budget"].get(recipe, {}), "epochs": PROBE_EPOCHS, "patience": None}
              for recipe in _recipes(spec)}
    probe = {**spec, "sizes": sizes, "budget": budget, "work_dir": None, "verbose": False}
    runs = [Run(dataset, *parse_method(method), 0) for method in spec["methods"]]
    costs, started = {}, time.perf_counter()
    print(f"Measuring the first steps of {len(runs)} methods on {dataset} ({sizes['train']} training documents, "
          f"{PROBE_EPOCHS} epochs each) ...", flush=True)

    def collect(outcome):
        if outcome.error:
            raise GridError(f"the probe of {outcome.run.method} failed ({outcome.error['type']}: "
                            f"{outcome.error['message']}); nothing of the grid was trained")
        rows = outcome.rows
        per_document = rows[-1]["seconds"] / (sizes["train"] + sizes["val"] / 3)
        overhead = max(0.0, outcome.seconds - sum(row["seconds"] for row in rows))
        costs[outcome.run.method] = {"per_document": per_document, "overhead": overhead}

    run_all(runs, probe, execute, jobs=jobs, on_outcome=collect)
    return costs, time.perf_counter() - started


def estimate(spec: dict, facts: dict, costs: dict, epochs: dict, *, jobs: int) -> float:
    """Seconds the whole grid needs with ``epochs`` per recipe, ``jobs`` runs at once (see the docstring)."""
    total, runs = 0.0, 0
    for dataset in spec["datasets"]:
        size = facts[dataset]
        for method in spec["methods"]:
            cost, recipe = costs[method], parse_method(method)[1]
            documents = epochs[recipe] * (size["train"] + size["val"] / 3) + (size["train"] + 2 * size["test"]) / 3
            total += len(spec["seeds"]) * (cost["overhead"] + cost["per_document"] * documents)
            runs += len(spec["seeds"])
    return total / max(1, min(jobs, runs))


def trim(spec: dict, facts: dict, costs: dict, available: float, *, jobs: int) -> tuple[dict, float]:
    """The most epochs per recipe (at most those asked) whose estimate fits ``available`` seconds."""
    epochs = asked_epochs(spec, facts)
    seconds = estimate(spec, facts, costs, epochs, jobs=jobs)
    while seconds > available and max(epochs.values()) > 1:
        longest = max(epochs, key=lambda recipe: epochs[recipe])
        epochs[longest] -= 1
        seconds = estimate(spec, facts, costs, epochs, jobs=jobs)
    if seconds > available:
        raise GridError(f"the grid needs about {seconds / 60:.1f} min even at 1 epoch per recipe, and "
                        f"{available / 60:.1f} min of the budget are left; give a larger --budget-minutes "
                        "(this preset trims epochs, never datasets). Nothing was trained.")
    return epochs, seconds


def fit_to_budget(spec: dict, output: Path, facts: dict, *, jobs: int, execute) -> list[str]:
    """Set each recipe's epochs in ``spec`` to fit ``spec["budget_seconds"]``; returns notes for the summary.

    A plan kept beside ``output`` by an earlier invocation is reused as it is.
    """
    path = plan_path(output)
    if path.exists():
        plan = json.loads(path.read_text(encoding="utf-8"))
        print(f"Using the budget plan of {path} (epochs {plan['epochs']}).", flush=True)
    else:
        costs, probe_seconds = measure(spec, facts, jobs=jobs, execute=execute)
        available = spec["budget_seconds"] - probe_seconds
        asked = asked_epochs(spec, facts)
        print(f"The whole grid as asked ({', '.join(f'{r} {e} epochs' for r, e in asked.items())}) would take "
              f"about {estimate(spec, facts, costs, asked, jobs=jobs) / 60:.1f} min; "
              f"{available / 60:.1f} min of the budget are left.", flush=True)
        epochs, seconds = trim(spec, facts, costs, available, jobs=jobs)
        plan = {"budget_seconds": spec["budget_seconds"], "probe_seconds": probe_seconds, "costs": costs,
                "epochs_asked": asked, "epochs": epochs, "estimate_seconds": seconds, "jobs": jobs}
        write_atomically(path, json.dumps(plan, indent=1) + "\n")
    for recipe, epochs in plan["epochs"].items():
        spec["budget"].setdefault(recipe, {})["epochs"] = epochs
    notes = [f"Budget {plan['budget_seconds'] / 60:g} min: the first steps took {plan['probe_seconds']:.0f} s to "
             f"measure; the grid was estimated at {plan['estimate_seconds'] / 60:.1f} min with "
             + ", ".join(f"{recipe} {given} epoch(s) of {plan['epochs_asked'][recipe]} asked"
                         for recipe, given in plan["epochs"].items()) + "."]
    trimmed = {recipe: (plan["epochs_asked"][recipe], given) for recipe, given in plan["epochs"].items()
               if given < plan["epochs_asked"][recipe]}
    notes.append("Trimmed to fit: " + ", ".join(f"{recipe} from {asked} to {given} epochs" for recipe, (asked, given)
                                               in trimmed.items()) if trimmed else "Nothing was trimmed.")
    for line in notes:
        print(line, flush=True)
    return notes + list(spec.get("notes", []))
