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

import math
import os
from dataclasses import dataclass

import torch

from ..baselines import TripletLoss
from ..encoders import POOLINGS
from ..sigma import check_sigma_setting
from .cached import check_chunk_size

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
    amp: bool = True  # bfloat16 autocast on CUDA (the G-Loss solve stays in float32)
    lpa_eval: bool = True
    lpa_reference_size: int = 2000
    checkpoint_dir: str | None = None
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
        settings = dict(
            loss=loss, recipe="authors", epochs=200, batch_size=128, lr=1e-5, head_lr=None, weight_decay=0.0,
            optimizer="adam", lr_milestones=(30,), lr_decay=0.1, grad_clip=1.0, patience=10, restore_best=True,
            class_weights="balanced", encoder_passes=2, pooling="cls", max_length=128, amp=False,
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

        Every field is checked: its type (``True`` is not a number here), its range and, for
        names, the valid choices (see also ``_check_settings``).
        """
        _check_settings(self)
        parse_loss(self.loss)
        for name in ("epochs", "batch_size", "max_length", "lpa_reference_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {self.batch_size}")
        if self.chunk_size is not None:
            check_chunk_size(self.chunk_size)
            if self.chunk_size >= self.batch_size:
                raise ValueError(
                    f"chunk_size {self.chunk_size} >= batch_size {self.batch_size}: every batch would be one chunk, "
                    f"and caching would only add a second encoder pass; use chunk_size=None for the plain step, or "
                    f"a chunk_size below batch_size (the graph stays batch_size documents)"
                )
        if self.batch_sampler not in BATCH_SAMPLERS:
            raise ValueError(f"batch_sampler must be one of {BATCH_SAMPLERS}, got {self.batch_sampler!r}")
        if num_classes is not None and self.batch_sampler == "balanced" and self.batch_size < 2 * num_classes:
            raise ValueError(
                f"batch_sampler='balanced' puts 2 documents of each of the {num_classes} classes into every batch: "
                f"use batch_size >= {2 * num_classes}, or batch_sampler='shuffle'"
            )
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if name == "head_lr" and value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.encoder_passes not in (1, 2):
            raise ValueError(f"encoder_passes must be 1 or 2, got {self.encoder_passes!r}")
        if self.class_weights not in (None, "balanced"):
            raise ValueError(f"class_weights must be None or 'balanced', got {self.class_weights!r}")
        if self.sigma_variant not in RECIPES:
            raise ValueError(f"sigma_variant must be one of {RECIPES}, got {self.sigma_variant!r}")
        if self.contrastive_form not in CONTRASTIVE_FORMS:
            raise ValueError(f"contrastive_form must be one of {CONTRASTIVE_FORMS}, got {self.contrastive_form!r}")
        milestones = self.lr_milestones
        if not isinstance(milestones, (tuple, list)) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones):
            raise ValueError(f"lr_milestones must be a tuple of positive ints (epochs), got {milestones!r}")
        if not isinstance(self.lr_decay, (int, float)) or not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay multiplies the learning rate and must lie in (0, 1], got {self.lr_decay!r}")
        for name in ("grad_clip", "sigma_fallback"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be None or a positive number, got {value!r}")
        for name in ("patience", "sigma_sample_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if not isinstance(self.lam, (int, float)) or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam weighs the auxiliary loss against CE and must lie in [0, 1], got {self.lam!r}")
        if not isinstance(self.gamma, (int, float)) or not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma is the fraction of visible labels and must lie in (0, 1), got {self.gamma!r}")
        check_sigma_setting(self.sigma)
        if self.scheme not in ("gloss", "row"):
            raise ValueError(f"scheme must be 'gloss' or 'row', got {self.scheme!r}")
        if self.target not in ("nll", "authors"):
            raise ValueError(f"target must be 'nll' or 'authors', got {self.target!r}")
        if self.triplet_mining not in TripletLoss.MININGS:
            raise ValueError(f"triplet_mining must be one of {TripletLoss.MININGS}, got {self.triplet_mining!r}")
        if num_classes is not None and self.loss != "ce" and self.batch_size <= num_classes:
            raise ValueError(
                f"batch_size {self.batch_size} cannot hold the {num_classes} classes plus one more document; "
                f"the {self.loss!r} loss compares documents within a batch: use batch_size > {num_classes}"
            )


def _check_settings(config: TrainConfig) -> None:
    """The checks of ``TrainConfig.validate`` on types, booleans, names and the remaining numbers."""
    for name in ("epochs", "batch_size", "chunk_size", "max_length", "lpa_reference_size", "seed", "lr", "head_lr",
                 "weight_decay", "lam", "gamma", "sigma", "temperature", "margin"):
        if isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be a number, got the bool {getattr(config, name)!r}")
    for name in ("amp", "lpa_eval", "progress"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}")
    if not isinstance(config.seed, int) or not 0 <= config.seed < 2**53:
        raise ValueError(f"seed must be an int >= 0 (below 2**53), got {config.seed!r}")
    if not isinstance(config.weight_decay, (int, float)) or not math.isfinite(config.weight_decay) \
            or config.weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0 (AdamW's decoupled decay), got "
                         f"{config.weight_decay!r}")
    for name, used_by in (("temperature", "scl"), ("margin", "triplet")):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} (used by the {used_by} losses) must be a finite number > 0, got {value!r}")
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
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

