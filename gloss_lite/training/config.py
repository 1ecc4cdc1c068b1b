"""What defines a training run: ``TrainConfig``, the authors' preset, and its validation.

Taught in ``notebooks/05_fine_tuning.ipynb`` (the course's recipe) and
``07_reproducing_the_paper.ipynb`` (the authors' recipe).

**Two recipes.** ``TrainConfig()`` is the course's recipe (G-Loss with the NLL target, a
stratified mask, one encoder pass, mean pooling, AdamW). ``TrainConfig.authors()`` is the
recipe of the authors' public code, field by field: the ``"authors"`` target divided once more
by ``|U|``, a uniformly random mask, balanced class weights in CE and G-Loss, G-Loss on a second
encoder pass, CLS pooling, Adam at one learning rate of 1e-5, the rate divided by 10 after epoch
30, gradients clipped at norm 1, batch 128, up to 200 epochs with early stopping (patience 10 on
validation macro-F1), sigma by their SQRT. Their code tests the last model; ``restore_best``
puts back the best one, and ``fit(..., test=)`` scores both.

``validate`` checks every field before any work is done and names the first bad one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..baselines import TripletLoss
from ..checks import check_bool, check_choice, check_in_range, check_int, check_non_negative, check_positive
from ..encoders import POOLINGS
from ..graph import SCHEMES
from ..losses import TARGETS
from ..masking import check_gamma
from ..runtime import PRECISIONS
from ..sigma import check_sigma_setting
from .cached import check_chunk_size

__all__ = [
    "AUTHORS_MODEL",
    "AUTHORS_SEARCH_SPACE",
    "AUTHORS_TUNING",
    "BATCH_SAMPLERS",
    "CONTRASTIVE_FORMS",
    "LOSSES",
    "OPTIMIZERS",
    "RECIPES",
    "TrainConfig",
    "parse_loss",
]

LOSSES = (
    "ce", "gloss", "gloss+ce", "scl", "scl+ce", "triplet", "triplet+ce", "contrastive", "contrastive+ce",
)


def parse_loss(loss: str) -> tuple[str, bool]:
    """A loss name as ``(kind, with_ce)``: what trains the encoder besides CE, and whether CE does too.

    ``"gloss+ce"`` is ``("gloss", True)``: ``(1 - lam) CE + lam G-Loss``; ``"gloss"`` is
    ``("gloss", False)``: G-Loss alone moves the encoder (the head learns on detached
    embeddings); ``"ce"`` is ``("ce", True)``. The kinds are ``"ce"``, ``"gloss"``, ``"scl"``,
    ``"triplet"`` and ``"contrastive"``. Raises ``ValueError`` for a name not in ``LOSSES``.
    """
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "ce":
        return "ce", True
    kind, plus, _ = loss.partition("+")
    return kind, bool(plus)


OPTIMIZERS = ("adamw", "adam")


RECIPES = ("course", "authors")


CONTRASTIVE_FORMS = ("margin", "cosine_mse")


BATCH_SAMPLERS = ("shuffle", "balanced")


AUTHORS_MODEL = "bert-base-uncased"  # the authors' encoder, where a hub is reachable


# The authors' Optuna space (their optuna_tuning.py): name -> choices, or (low, high, log[, step]).
AUTHORS_SEARCH_SPACE = {
    "lr": [1e-5, 2e-5, 3e-5, 4e-5, 5e-5],
    "sigma": (0.1, 10.0, False),
    "lam": (0.5, 0.9, False, 0.1),
    "gamma": (0.5, 0.9, False, 0.1),
}


AUTHORS_TUNING = {"n_trials": 15, "search_space": AUTHORS_SEARCH_SPACE, "sampler_seed": 42}


@dataclass
class TrainConfig:
    """Everything that defines a run. ``validate`` checks it before any work is done."""

    loss: str = "gloss+ce"
    epochs: int = 3
    batch_size: int = 32
    batch_sampler: str = "shuffle"  # or "balanced": two documents of every class in each batch (sampling.py)
    lr: float = 2e-5  # encoder learning rate
    head_lr: float | None = 1e-3  # None: the same as lr
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # or "adam" (torch.optim.Adam, weight_decay as given)
    lr_milestones: tuple[int, ...] = ()  # epochs after which the learning rates are multiplied by lr_decay
    lr_decay: float = 0.1
    grad_clip: float | None = None  # clip the gradient's total norm (encoder and head) to this
    patience: int | None = None  # stop after this many epochs without a better validation macro-F1
    restore_best: bool = False  # end with the weights of the best validation macro-F1
    class_weights: str | None = None  # None, or "balanced" (scikit-learn's) in CE and G-Loss
    encoder_passes: int = 1  # 2: the graph/metric term on a second pass of the batch (new dropout)
    chunk_size: int | None = None  # embed the batch (the graph) this many documents at a time (cached.py)
    lam: float = 0.5  # weight of the graph/metric term in "X+ce"
    sigma: float | str = "sqrt"  # a number, "sqrt" or "dicm"
    gamma: float = 0.7  # fraction of a batch's labels visible to G-Loss
    scheme: str = "gloss"
    target: str = "nll"
    stratified_mask: bool = True  # False: the authors' uniformly random mask
    divide_by_hidden: bool = False  # the authors' extra division of G-Loss by |U|
    sigma_variant: str = "course"  # "authors": SQRT over the full matrix, DICM's median fallback
    sigma_sample_size: int | None = 2000  # training texts sigma is estimated on (None: all)
    sigma_fallback: float | None = None  # used when an estimated sigma is below 0.01 (authors' rule)
    temperature: float = 0.1  # scl
    scl_base_temperature: float | None = None  # the authors' SupCon scales by temperature / 0.07
    margin: float = 0.1  # triplet margin (cosine geometry); the contrastive loss keeps its margin of 1
    triplet_mining: str = "all"
    triplet_normalize: bool = True  # False: distances between raw embeddings (the authors')
    contrastive_form: str = "margin"  # or "cosine_mse", the authors' "contrastive" baseline
    model: str | None = None  # None: the offline all-MiniLM-L6-v2
    pooling: str = "mean"
    max_length: int = 128
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # precision: "auto", "bf16", "fp16", "fp32" or "tf32" (runtime.choose_precision)
    deterministic: bool = False  # torch's deterministic algorithms (a resumed CUDA run then equals an unbroken one)
    lpa_eval: bool = True
    lpa_reference_size: int = 2000
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always written)
    progress: bool = True
    log_grad_share: bool = True  # measure the aux term's share of the push on the embeddings
    recipe: str = "course"  # a label for results files: "course" or "authors"

    @classmethod
    def authors(cls, loss: str = "gloss+ce", **overrides) -> "TrainConfig":
        """The authors' recipe (their ``Combined with CE`` code), every field overridable.

        ``lam`` is 0.1 for G-Loss and 0.9 for SCL, as in their code. The offline default model
        stays all-MiniLM-L6-v2; ``model=AUTHORS_MODEL`` ("bert-base-uncased") is theirs.
        """
        kind, with_ce = parse_loss(loss)
        settings: dict[str, Any] = dict(  # TrainConfig's keyword arguments
            loss=loss, recipe="authors", epochs=200, batch_size=128, lr=1e-5, head_lr=None, weight_decay=0.0,
            optimizer="adam", lr_milestones=(30,), lr_decay=0.1, grad_clip=1.0, patience=10, restore_best=True,
            class_weights="balanced", encoder_passes=2, pooling="cls", max_length=128, amp="fp32",
            lam=0.9 if kind == "scl" else 0.1, gamma=0.7, sigma="sqrt", sigma_variant="authors",
            sigma_sample_size=None, target="authors", divide_by_hidden=kind == "gloss" and with_ce,
            stratified_mask=False,
            scl_base_temperature=0.07, margin=5.0, triplet_normalize=False, contrastive_form="cosine_mse",
            lpa_eval=False,
        )
        settings.update(overrides)
        return cls(**settings)

    def validate(self, num_classes: int | None = None) -> None:
        """Raise ``ValueError`` naming the first bad setting and what would be valid.

        Every field is checked (``gloss_lite.checks``): its type (``True`` is not a number here),
        its range and, for names, the valid choices.
        """
        parse_loss(self.loss)
        _check_numbers(self)
        _check_names(self)
        _check_paths_and_device(self)
        if self.chunk_size is not None and self.chunk_size >= self.batch_size:
            raise ValueError(
                f"chunk_size {self.chunk_size} >= batch_size {self.batch_size}: every batch would be one chunk, "
                f"and caching would only add a second encoder pass; use chunk_size=None for the plain step, or "
                f"a chunk_size below batch_size (the graph stays batch_size documents)"
            )
        if num_classes is not None and self.batch_sampler == "balanced" and self.batch_size < 2 * num_classes:
            raise ValueError(
                f"batch_sampler='balanced' puts 2 documents of each of the {num_classes} classes into every batch: "
                f"use batch_size >= {2 * num_classes}, or batch_sampler='shuffle'"
            )
        if num_classes is not None and self.loss != "ce" and self.batch_size <= num_classes:
            raise ValueError(
                f"batch_size {self.batch_size} cannot hold the {num_classes} classes plus one more document; "
                f"the {self.loss!r} loss compares documents within a batch: use batch_size > {num_classes}"
            )


def _check_numbers(config: TrainConfig) -> None:
    """Every numeric field: its type (a bool is no number), and its range."""
    for name in ("epochs", "max_length", "lpa_reference_size", "checkpoint_every"):
        check_int(name, getattr(config, name))
    check_int("batch_size", config.batch_size, minimum=2)
    check_chunk_size(config.chunk_size, allow_none=True)
    for name in ("patience", "sigma_sample_size"):
        check_int(name, getattr(config, name), allow_none=True)
    check_int("seed", config.seed, minimum=0)
    if config.seed >= 2**53:
        raise ValueError(f"seed must be an int >= 0 below 2**53, got {config.seed!r}")
    check_positive("lr", config.lr)
    for name in ("head_lr", "grad_clip", "sigma_fallback"):
        check_positive(name, getattr(config, name), allow_none=True)
    check_non_negative("weight_decay", config.weight_decay)
    check_positive("temperature", config.temperature, what=" (used by the scl losses)")
    check_positive("margin", config.margin, what=" (used by the triplet losses)")
    check_in_range("lam", config.lam, 0.0, 1.0, meaning="weighs the auxiliary loss against CE and")
    check_gamma(config.gamma)
    check_in_range("lr_decay", config.lr_decay, 0.0, 1.0, low_open=True, meaning="multiplies the learning rate and")
    milestones = config.lr_milestones
    if not isinstance(milestones, (tuple, list)) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones):
        raise ValueError(f"lr_milestones must be a tuple of positive ints (epochs), got {milestones!r}")
    check_sigma_setting(config.sigma)


def _check_names(config: TrainConfig) -> None:
    """Every field that names a choice, and the switches."""
    for name in ("lpa_eval", "progress", "deterministic"):
        check_bool(name, getattr(config, name))
    check_choice("amp", config.amp, PRECISIONS)
    check_int("encoder_passes", config.encoder_passes)
    for name, choices in (("encoder_passes", (1, 2)), ("batch_sampler", BATCH_SAMPLERS), ("optimizer", OPTIMIZERS),
                          ("recipe", RECIPES), ("class_weights", (None, "balanced")), ("sigma_variant", RECIPES),
                          ("contrastive_form", CONTRASTIVE_FORMS), ("scheme", SCHEMES), ("target", TARGETS),
                          ("triplet_mining", TripletLoss.MININGS), ("pooling", POOLINGS)):
        check_choice(name, getattr(config, name), choices)


def _check_paths_and_device(config: TrainConfig) -> None:
    """The model and checkpoint paths (None or non-empty) and the device (a torch device, or "auto")."""
    for name in ("model", "checkpoint_dir"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip()):
            raise ValueError(f"{name} must be None or a non-empty path or name, got {value!r}")
    device = config.device
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if str(device) != "auto":
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or another torch device, "
                             f"got {device!r}") from None

