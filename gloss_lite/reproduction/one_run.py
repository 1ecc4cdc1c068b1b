"""One run of the grid: its method, its configuration, its data, its training and the rows it records.

Taught in ``notebooks/07_reproducing_the_paper.ipynb``.

A *method* is a loss under a recipe, written ``loss/recipe``: ``ce/course``, ``gloss+ce/course``
(the course's G-Loss), ``ce/authors``, ``gloss+ce/authors`` (``TrainConfig.authors()``),
``scl+ce/authors``, ... Within a recipe every loss gets the same epochs, batch and data. A batch
must hold every class plus one document (G-Loss hides one of a class that has two), so each
recipe's batch is ``max(batch_size, C + 1)`` on a dataset of ``C`` classes (R52: 53), the same
for CE, and the rows record the batch used.

Each run restores its best epoch (validation macro-F1) and is scored on test twice: ``test_*``
for the restored model, ``test_*_last`` for the last epoch's (the authors' code reports the
last). Its rows record where it ran: the device's name, torch's version, the precision
(``precision_name``), and memory in its two meanings, ``peak_cuda_allocated_mb`` (the most
memory CUDA tensors held; empty on a CPU) and ``peak_rss_mb`` (the process's peak resident
memory; in a fresh worker process, the run's own).
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only; make_config imports it when called
    from ..training import TrainConfig

__all__ = [
    "device_name",
    "execute",
    "load_splits",
    "make_config",
    "parse_method",
    "peak_memory_mb",
    "precision_name",
    "Run",
    "run_folder",
]


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
        """The run key, in the order of ``results.RUN_KEY``."""
        return (self.dataset, self.recipe, self.loss, self.seed)

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


def make_config(run: Run, budget: dict, *, num_classes: int, device: str, checkpoint_dir: Path | None = None
                ) -> TrainConfig:
    """The ``TrainConfig`` of ``run``, validated for ``num_classes``: its recipe, the grid's budget for that
    recipe, a batch of at least ``num_classes + 1``, best-epoch restore, no LPA scoring."""
    from ..training import TrainConfig

    base = TrainConfig.authors(run.loss) if run.recipe == "authors" else TrainConfig(loss=run.loss, sigma="sqrt")
    settings = dict(budget.get(run.recipe, {}))
    settings["batch_size"] = max(settings.get("batch_size", base.batch_size), num_classes + 1)
    config = dataclasses.replace(
        base, seed=run.seed, device=device, lpa_eval=False, restore_best=True, progress=False,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir), **settings)
    config.validate(num_classes)
    return config


def run_folder(run: Run, spec: dict) -> Path | None:
    """Where ``run`` keeps its checkpoints (None: ``spec["work_dir"]`` is None, no checkpoints)."""
    if spec.get("work_dir") is None:
        return None
    return Path(spec["work_dir"]) / run.dataset / run.recipe / run.loss.replace("+", "_") / f"seed{run.seed}"


def load_splits(dataset: str, sizes: dict, data_dir=None):
    """Train, val and test of ``dataset``, each a stratified subset of ``sizes[split]`` (None: all)."""
    from ..data import load_dataset

    data = load_dataset(dataset, data_dir)
    return tuple(split.sample(sizes.get(name), seed=0) for name, split in zip(("train", "val", "test"), data))


def device_name(device) -> str:
    """The GPU's name, or the CPU's model and torch's thread count."""
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


def precision_name(amp, device) -> str:
    """What the run computes in, by the training's precision policy (``gloss_lite.runtime.precision_for``):
    "bf16", "fp16" (with a loss scaler, on GPUs without bf16 tensor cores such as the T4), "tf32" or "fp32"."""
    from ..runtime import precision_for

    return precision_for(device, amp).name


def peak_memory_mb(device) -> tuple[float | None, float | None]:
    """``(peak CUDA allocated, peak process RSS)`` in MiB; None where it does not apply or is unknown."""
    import torch

    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    try:
        import resource
    except ImportError:  # not a POSIX system
        return cuda, None
    unit = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss: bytes on macOS, kilobytes on Linux
    return cuda, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20


def execute(run: Run, spec: dict) -> list[dict]:
    """Train and score one run; returns its rows (one per epoch, ``results.RESULT_COLUMNS``)."""
    import torch

    from ..encoders import load_encoder
    from ..runtime import pick_device
    from ..training import fit

    device = pick_device(spec["device"])
    train, val, test = load_splits(run.dataset, spec["sizes"], spec.get("data_dir"))
    config = make_config(run, spec["budget"], num_classes=len(train.class_names), device=spec["device"],
                         checkpoint_dir=run_folder(run, spec))
    encoder = spec.get("make_encoder")
    encoder = encoder() if encoder else load_encoder(config.model, pooling=config.pooling,
                                                     max_length=config.max_length, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def report(row):
        print(f"  {run}: epoch {row['epoch']}/{config.epochs}, val accuracy {row['val_accuracy']:.3f}, "
              f"{row['seconds']:.0f} s", flush=True)

    result = fit(train, val, config, encoder=encoder, test=test, on_epoch=report if spec.get("verbose") else None)
    cuda_peak, rss_peak = peak_memory_mb(device)
    scores_last = result.test_last
    assert scores_last is not None  # fit was given the test split
    best = result.test_best or scores_last
    last = result.history[-1]
    where = {"device": device_name(device), "precision": precision_name(config.amp, device),
             "torch": torch.__version__, "train_size": len(train), "epochs": config.epochs,
             "batch_size": config.batch_size, "max_length": config.max_length}
    return [{
        "dataset": run.dataset, "recipe": run.recipe, "loss": run.loss, "seed": run.seed,
        "epoch": row["epoch"], "val_accuracy": row["val_accuracy"], "val_macro_f1": row["val_macro_f1"],
        "test_accuracy": best["accuracy"] if row is last else None,
        "test_macro_f1": best["macro_f1"] if row is last else None,
        "test_accuracy_last": scores_last["accuracy"] if row is last else None,
        "test_macro_f1_last": scores_last["macro_f1"] if row is last else None,
        "best_epoch": result.best_epoch if row is last else None, "aux_grad_share": row["aux_grad_share"],
        "loss_value": row["loss"], "sigma": row["sigma"], "seconds": row["seconds"],
        "peak_cuda_allocated_mb": cuda_peak, "peak_rss_mb": rss_peak, **where,
    } for row in result.history]
