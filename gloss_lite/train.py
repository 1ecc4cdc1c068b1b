"""Fine-tuning an encoder with G-Loss, cross-entropy, or a baseline loss: one loop for all.

Taught in ``notebooks/05_fine_tuning.ipynb`` and ``06_comparing_losses.ipynb``.

The model is ``load_encoder(...)`` plus a linear head ``A e + b``. Each step embeds the batch
**once** and feeds the same embeddings ``E`` to every loss term:

=========================  =====================================================================
``loss``                   what trains the encoder
=========================  =====================================================================
``"ce"``                   ``CE(head(E), y)``
``"gloss"``                ``G-Loss(E, y)``
``"gloss+ce"``             ``(1 - lam) * CE + lam * G-Loss``
``"scl"``, ``"scl+ce"``    supervised contrastive, alone or mixed with CE by ``lam``
``"triplet"``, ...+ce      triplet margin loss, batch-all or batch-hard (``triplet_mining``)
``"contrastive"``, ...+ce  pairwise contrastive loss
=========================  =====================================================================

When the loss has no CE term, the head still learns, by CE on ``E.detach()``: it never moves
the encoder, and it keeps the head's accuracy measurable for every loss.

Sigma is a number, or ``"sqrt"`` / ``"dicm"``: estimated once, on the initial encoder's
embeddings of (up to 2000 of) the training texts, as in the paper. ``tune`` is G-Loss-O: an
Optuna search over sigma, gamma, lambda and the learning rate on validation macro-F1.

Each epoch ends with validation (head and label propagation, ``gloss_lite.evaluate``) and, with
``checkpoint_dir``, a checkpoint; calling ``fit`` again with the same ``checkpoint_dir``
resumes after the last finished epoch. Every epoch's shuffling, dropout and masks are seeded
from ``(seed, epoch)``, so a resumed run equals an uninterrupted one.

**Two recipes.** ``TrainConfig()`` is the course's recipe (G-Loss with the NLL target, a
stratified mask, one encoder pass, mean pooling, AdamW). ``TrainConfig.authors()`` is the
recipe of the authors' public code, field by field (taught in ``07_reproducing_the_paper``):
the ``"authors"`` target divided once more by ``|U|``, a uniformly random mask, balanced class
weights in CE and G-Loss, G-Loss on a second encoder pass, CLS pooling, Adam at one learning
rate of 1e-5, the rate divided by 10 after epoch 30, gradients clipped at norm 1, batch 128, up
to 200 epochs with early stopping (patience 10 on validation macro-F1), sigma by their SQRT.
Their code tests the last model; ``restore_best`` puts back the best one, and ``fit(..., test=)``
scores both.

**How hard does the graph term push?** For ``"X+ce"`` losses each step also measures, at the
embeddings ``E``, ``||lam dAux/dE|| / (||(1 - lam) dCE/dE|| + ||lam dAux/dE||)``, the share of
the push that comes from the graph (or metric) term; ``history`` holds its mean per epoch
(``aux_grad_share``).

Batches: an epoch is a shuffle cut into ``batch_size`` pieces; a last piece smaller than
``C + 1`` documents (2 for plain CE) joins the one before it, so every batch of a loss that
compares documents has a class with two members and G-Loss can always hide one
(``_min_batch_size``). A batch is one graph: G-Loss propagates over all its documents. With
``chunk_size`` (below ``batch_size``; taught in ``08_the_graph_beyond_one_batch``) the graph
stays ``batch_size`` documents, but the encoder holds activations for only ``chunk_size`` of
them at a time: the batch is embedded without gradient, the loss is backpropagated to the
embeddings, and the chunks are embedded again with gradient, their dropout replayed
(``gloss_lite.cached``). The gradient is that of one backward pass through the same chunks
(with dropout, another draw of masks than one encoder call on the whole batch; without, the
same step up to rounding); each step costs one more encoder forward pass. A ``chunk_size`` of
``batch_size`` or more is refused (it would only add that pass).
Divergence: a NaN or infinite embedding or loss stops the run before the
optimiser step, with ``TrainingDivergedError`` naming the epoch, step, value and settings to try.
Checkpoints hold only tensors and plain values, loaded with ``weights_only=True``, with a
checksum and fingerprints of the training and validation data; ``_load_checkpoint`` lists what
makes one unusable (``CheckpointError``). The checkpoint folder is checked writable before any
work.

``batch_sampler="balanced"`` replaces the shuffle by class-balanced batches, two documents of
every class in each (``gloss_lite.sampling.ClassBalancedBatchSampler``, seeded by ``(seed, epoch)``,
a last batch too small for that merged into the one before); it needs ``batch_size >= 2 C``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed
from .cached import cached_backward, check_chunk_size
from .data import Split, stratified_sample
from .encoders import POOLINGS, Encoder, load_encoder
from .evaluate import classification_metrics, lpa_predict
from .losses import ContrastiveLoss, CosineMSELoss, GLoss, SupConLoss, TripletLoss, mix_losses
from .runtime import pick_device
from .sampling import ClassBalancedBatchSampler
from .sigma import sigma_dicm, sigma_sqrt

LOSSES = (
    "ce", "gloss", "gloss+ce", "scl", "scl+ce", "triplet", "triplet+ce", "contrastive", "contrastive+ce",
)
SIGMA_RULES = ("sqrt", "dicm")
CHECKPOINT_NAME = "last.pt"
BEST_NAME = "best.pt"
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
    batch_sampler: str = "shuffle"  # or "balanced": two documents of every class in each batch (gloss_lite.sampling)
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
    chunk_size: int | None = None  # embed the batch (the graph) this many documents at a time (gloss_lite.cached)
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
        settings = dict(
            loss=loss, recipe="authors", epochs=200, batch_size=128, lr=1e-5, head_lr=None, weight_decay=0.0,
            optimizer="adam", lr_milestones=(30,), lr_decay=0.1, grad_clip=1.0, patience=10, restore_best=True,
            class_weights="balanced", encoder_passes=2, pooling="cls", max_length=128, amp=False,
            lam=0.9 if loss.startswith("scl") else 0.1, gamma=0.7, sigma="sqrt", sigma_variant="authors",
            sigma_sample_size=None, target="authors", divide_by_hidden=loss == "gloss+ce", stratified_mask=False,
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
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
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
        if isinstance(self.sigma, str):
            if self.sigma not in SIGMA_RULES:
                raise ValueError(f"sigma must be a positive number, 'sqrt' or 'dicm', got {self.sigma!r}")
        elif not isinstance(self.sigma, (int, float)) or not math.isfinite(self.sigma) or self.sigma <= 0:
            raise ValueError(f"sigma must be a positive number, 'sqrt' or 'dicm', got {self.sigma!r}")
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


@dataclass
class TrainResult:
    """What ``fit`` returns: the trained model, the history (one dict per epoch), the sigma used, and
    the best epoch and test scores."""

    encoder: Encoder
    head: torch.nn.Linear
    history: list[dict] = field(default_factory=list)
    sigma: float | None = None
    config: TrainConfig | None = None
    best_epoch: int | None = None  # the epoch of the best validation macro-F1
    test_last: dict | None = None  # test scores of the last epoch's model (fit(..., test=))
    test_best: dict | None = None  # test scores of the restored best model (restore_best)

    def evaluate(self, split: Split, reference: Split | None = None) -> dict:
        """Accuracy and macro-F1 of the head on ``split``; of LPA too when ``reference`` is given."""
        return evaluate_split(self.encoder, self.head, split, reference, sigma=self.sigma, config=self.config)


def make_aux_loss(config: TrainConfig, num_classes: int, sigma: float | None,
                  class_weights: torch.Tensor | None = None) -> torch.nn.Module | None:
    """The graph or metric term of ``config.loss`` (None for plain CE)."""
    kind = config.loss.removesuffix("+ce")
    if kind == "gloss":
        return GLoss(num_classes, sigma, config.gamma, scheme=config.scheme, target=config.target,
                     class_weights=class_weights, stratified=config.stratified_mask,
                     divide_by_hidden=config.divide_by_hidden, seed=config.seed)
    if kind == "scl":
        return SupConLoss(config.temperature, base_temperature=config.scl_base_temperature)
    if kind == "triplet":
        return TripletLoss(config.margin, config.triplet_mining, normalize=config.triplet_normalize)
    if kind == "contrastive":
        return CosineMSELoss() if config.contrastive_form == "cosine_mse" else ContrastiveLoss()
    return None


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" weights ``n / (C_present * n_c)``; 0 for a class absent from ``labels``."""
    from sklearn.utils.class_weight import compute_class_weight

    present = torch.unique(labels).numpy()
    weights = torch.zeros(num_classes)
    weights[torch.as_tensor(present)] = torch.as_tensor(
        compute_class_weight("balanced", classes=present, y=labels.numpy()), dtype=torch.float32)
    return weights


def estimate_sigma(encoder: Encoder, train: Split, rule: str, seed: int, size: int | None = 2000,
                   variant: str = "course") -> float:
    """Sigma by ``rule`` ("sqrt" or "dicm") on the encoder's embeddings of up to ``size`` train texts.

    ``variant="authors"``: SQRT over the full distance matrix (diagonal included), DICM with its
    median fallback (``gloss_lite.sigma``).
    """
    sample = train.subset(stratified_sample(train.labels, size, seed=seed))
    embeddings = encoder.embed(sample.texts, progress=False)
    authors = variant == "authors"
    if rule == "sqrt":
        return sigma_sqrt(embeddings, include_diagonal=authors)
    return sigma_dicm(embeddings, sample.labels, fallback=authors)


def evaluate_split(encoder, head, split: Split, reference: Split | None, *, sigma, config) -> dict:
    """Head metrics on ``split``, and LPA metrics against ``reference`` (usually train) if given."""
    embeddings = encoder.embed(split.texts, progress=False)
    with torch.no_grad():
        predicted = head(embeddings.to(next(head.parameters()).device)).argmax(dim=1).cpu()
    result = classification_metrics(split.labels, predicted)
    if reference is not None and sigma is not None:
        reference = reference.subset(stratified_sample(reference.labels, config.lpa_reference_size, seed=config.seed))
        reference_embeddings = encoder.embed(reference.texts, progress=False)
        predicted = lpa_predict(reference_embeddings, reference.labels, embeddings, head.out_features,
                                sigma=sigma, scheme=config.scheme)
        result.update({f"lpa_{k}": v for k, v in classification_metrics(split.labels, predicted).items()})
    return result


def gradient_share(ce_term: torch.Tensor, ce_input: torch.Tensor, aux_term: torch.Tensor,
                   aux_input: torch.Tensor) -> float:
    """``||d aux_term / d aux_input|| / (||d ce_term / d ce_input|| + ||d aux_term / d aux_input||)``.

    The terms come weighted (``(1 - lam) CE`` and ``lam Aux``); the inputs are the embeddings
    each term was computed from (the same tensor, or two encoder passes). The graph is kept for
    the step's backward pass. Returns NaN when both gradients are 0.
    """
    grad_ce = torch.autograd.grad(ce_term, ce_input, retain_graph=True, allow_unused=True)[0]
    grad_aux = torch.autograd.grad(aux_term, aux_input, retain_graph=True, allow_unused=True)[0]
    norm_ce = 0.0 if grad_ce is None else float(grad_ce.norm())
    norm_aux = 0.0 if grad_aux is None else float(grad_aux.norm())
    total = norm_ce + norm_aux
    return norm_aux / total if total > 0 else float("nan")


def _batches(n: int, batch_size: int, generator: torch.Generator, min_size: int = 2) -> list[torch.Tensor]:
    """A shuffled epoch; a last batch of fewer than ``min_size`` documents joins the one before it.

    So every batch has at least ``min_size`` documents (when ``n`` has), and the last one at
    most ``batch_size + min_size - 1``.
    """
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_size:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


def _min_batch_size(config: TrainConfig, num_classes: int) -> int:
    """The fewest documents a batch may hold: 2 for CE, ``C + 1`` for a loss that compares documents.

    A batch of more than ``C`` documents has some class with two members (pigeonhole), so the
    stratified mask of G-Loss always hides at least one document while every class present
    keeps a visible one: the trainer never builds a batch that G-Loss cannot mask.
    """
    return 2 if config.loss == "ce" else num_classes + 1


def _check_data(train: Split, val: Split, config: TrainConfig) -> int:
    for name, split in (("train", train), ("val", val)):
        if not isinstance(split, Split):
            raise ValueError(f"{name} must be a gloss_lite.data.Split (from load_dataset), got {type(split).__name__}")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    num_classes = len(train.class_names)
    if len(train) < 2 or len(val) == 0:
        raise ValueError(f"need at least 2 training and 1 validation documents, got {len(train)} and {len(val)}")
    if tuple(val.class_names) != tuple(train.class_names):
        raise ValueError("train and val must share their class names (load them from one dataset)")
    config.validate(num_classes)
    if len(train) < _min_batch_size(config, num_classes):
        raise ValueError(
            f"the {config.loss!r} loss compares documents within a batch and needs more training documents "
            f"than classes ({num_classes}), got {len(train)}"
        )
    return num_classes



def fit(train: Split, val: Split, config: TrainConfig | None = None, *, encoder: Encoder | None = None,
        test: Split | None = None, on_epoch=None) -> TrainResult:
    """Fine-tune ``encoder`` (default: ``load_encoder(config.model)``) and a linear head on ``train``.

    Returns a ``TrainResult``; ``history`` has one row per epoch: the mean loss terms, the
    aux term's gradient share, the validation accuracy and macro-F1 of the head (and of LPA
    against ``train`` when ``config.lpa_eval``), the learning rate and the seconds the epoch took.
    With ``config.patience``, training stops after that many epochs without a better validation
    macro-F1; with ``config.restore_best`` the returned model is the best epoch's. With ``test``,
    ``result.test_last`` scores the last epoch's model on it and, with ``restore_best``,
    ``result.test_best`` the restored one. ``on_epoch(row)`` is called with each new history row.

    **Several processes** (``torchrun --nproc_per_node W``, taught in
    ``08_the_graph_beyond_one_batch``): with ``WORLD_SIZE > 1`` in the environment and no
    process group yet, ``fit`` initialises one (gloo on the CPU; NCCL on CUDA, each rank on GPU
    ``LOCAL_RANK``), which stays initialised afterwards. ``config.batch_size`` stays the size of
    the **global** batch and graph: every rank draws the same seeded batches and trains on its
    contiguous share (``torch.tensor_split``, shares may differ by one), the model is wrapped in
    ``DistributedDataParallel`` (``find_unused_parameters=True``, for BERT's unused pooler),
    G-Loss and the other batch losses gather the embeddings of all ranks with gradient, and CE is
    scaled so that DDP's gradient average is the gradient of the global batch's mean CE
    (``gloss_lite.distributed``). So with dropout off the run is the one-process run with the
    same global batch, up to rounding; with dropout on, each rank draws its own dropout. Sigma
    is rank 0's estimate, validation runs on rank 0 and its scores reach every rank (early
    stopping and the best epoch agree), the history's loss terms are global-batch means, rank 0
    alone writes checkpoints and every rank resumes from them (a checkpoint of a one-process run
    resumes in several, and back). ``on_epoch`` is called on every rank. ``encoder_passes=2`` is
    refused with ``ValueError`` (DDP cannot run the model twice before one backward pass).

    Raises ``ValueError`` for bad settings or data and an unwritable ``checkpoint_dir`` (all
    before a model is loaded), ``CheckpointError`` for a checkpoint that cannot be resumed (for
    instance one that holds more epochs than ``config.epochs``: refused, never truncated), and
    ``TrainingDivergedError`` when the loss becomes non-finite.
    """
    config = config or TrainConfig()
    num_classes = _check_data(train, val, config)
    checkpoint_path = _check_checkpoint_dir(config)  # an unwritable folder fails now, not after an epoch
    fingerprint = _data_fingerprint(train, val) if checkpoint_path else None
    state = _load_checkpoint(checkpoint_path, fingerprint, config, num_classes) if checkpoint_path else None
    device = pick_device(config.device)
    distributed.init_from_environment(device)  # under torchrun: one process group for all ranks
    distributed.check_supported(config)
    device = distributed.local_device(device)
    torch.manual_seed(config.seed)
    if encoder is None:
        encoder = load_encoder(config.model, pooling=config.pooling, max_length=config.max_length, device=device)
    encoder.to(device)
    head = torch.nn.Linear(encoder.dim, num_classes).to(device)
    use_amp = config.amp and device.type == "cuda"

    if state is not None:
        sigma = state["sigma"]
    elif not isinstance(config.sigma, str):
        sigma = float(config.sigma)
    elif config.loss.startswith("gloss") or config.lpa_eval:  # other losses need sigma for LPA only
        rule = config.sigma if config.loss.startswith("gloss") else "sqrt"
        sigma = estimate_sigma(encoder, train, rule, config.seed, config.sigma_sample_size, config.sigma_variant)
        if sigma < 0.01 and config.sigma_fallback is not None:  # the authors' --optuna_sigma rule
            sigma = float(config.sigma_fallback)
    else:
        sigma = None
    sigma = distributed.broadcast_object(sigma)  # rank 0's, so every rank builds the same graph

    weights = balanced_class_weights(train.labels, num_classes).to(device) if config.class_weights else None
    aux_loss = distributed.for_global_batch(make_aux_loss(config, num_classes, sigma, weights))
    head_lr = config.lr if config.head_lr is None else config.head_lr
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(
        [{"params": encoder.parameters(), "lr": config.lr}, {"params": head.parameters(), "lr": head_lr}],
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), config.lr_decay)
    history, start_epoch = [], 0
    best = {"epoch": None, "score": -math.inf, "bad_epochs": 0, "stopped": False}
    best_weights = None
    if state is not None:
        history, start_epoch = _restore(state, checkpoint_path, encoder, head, optimizer, scheduler)
        best = dict(state["best"])
        best_path = checkpoint_path.with_name(BEST_NAME)
        if config.restore_best and best_path.exists():
            best_weights = torch.load(best_path, map_location="cpu", weights_only=True)
    parallel_encoder = distributed.replicate(encoder, device)  # BERT's pooler gets no gradient: find unused ones
    parallel_head = distributed.replicate(head, device, find_unused_parameters=False)  # always used

    for epoch in range(start_epoch, config.epochs):
        if best["stopped"]:
            break
        started = time.perf_counter()
        totals = _train_epoch(parallel_encoder, parallel_head, aux_loss, optimizer, train, config, epoch, device,
                              use_amp, weights)
        totals = distributed.mean_over_ranks(totals)  # the global batch's means
        learning_rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        encoder.eval()
        scores = distributed.on_rank_zero(evaluate_split, encoder, head, val, train if config.lpa_eval else None,
                                          sigma=sigma, config=config)
        history.append({"epoch": epoch + 1, **totals, **{f"val_{k}": v for k, v in scores.items()},
                        "lr": learning_rate, "seconds": time.perf_counter() - started, "sigma": sigma})
        if on_epoch is not None:
            on_epoch(history[-1])
        improved = scores["macro_f1"] > best["score"]
        if improved:
            best.update(epoch=epoch + 1, score=scores["macro_f1"], bad_epochs=0)
            if config.restore_best:
                best_weights = _weights(encoder, head)
        else:
            best["bad_epochs"] += 1
        best["stopped"] = config.patience is not None and best["bad_epochs"] >= config.patience
        if checkpoint_path and distributed.rank() == 0:
            if improved and config.restore_best:
                _atomic_save(best_weights, checkpoint_path.with_name(BEST_NAME))
            _save_checkpoint(checkpoint_path, encoder, head, optimizer, scheduler, history, epoch, sigma, best,
                             config, fingerprint)
        distributed.barrier()  # the checkpoint is complete before any rank goes on
    encoder.eval()
    result = TrainResult(encoder, head, history, sigma, config, best_epoch=best["epoch"])
    if test is not None:
        result.test_last = result.evaluate(test, train if config.lpa_eval else None)
    if config.restore_best and best_weights is not None:
        encoder.model.load_state_dict(best_weights["encoder"])
        head.load_state_dict(best_weights["head"])
        if test is not None:
            result.test_best = result.evaluate(test, train if config.lpa_eval else None)
    return result


def _train_epoch(encoder, head, aux_loss, optimizer, train, config, epoch, device, use_amp, weights) -> dict:
    """One pass over ``train``; returns the mean loss terms and the mean gradient share."""
    epoch_seed = config.seed * 1000 + epoch
    torch.manual_seed(epoch_seed)  # dropout
    if isinstance(aux_loss, GLoss):
        aux_loss.generator = torch.Generator().manual_seed(epoch_seed)  # masks
    batches = _batches(len(train), config.batch_size, torch.Generator().manual_seed(epoch_seed),
                       min_size=_min_batch_size(config, head.out_features)) if config.batch_sampler == "shuffle" \
        else [torch.tensor(batch) for batch in ClassBalancedBatchSampler(train.labels, config.batch_size,
                                                                         seed=epoch_seed)]
    sigma = getattr(aux_loss, "sigma", None)
    totals = {"loss": 0.0, "ce": 0.0, "aux": 0.0}
    shares = []
    parameters = [*encoder.parameters(), *head.parameters()]
    encoder.train()
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False)
    for step, batch in enumerate(bar, start=1):
        batch, ce_scale = distributed.local_batch(batch, train.labels, weights)  # this rank's share; 1.0 alone
        texts = [train.texts[i] for i in batch.tolist()]
        labels = train.labels[batch].to(device)
        norms = {}
        check = partial(_check_finite, epoch=epoch, step=step, steps=len(batches), config=config, sigma=sigma)
        if config.chunk_size is not None:  # the graph embedded chunk_size documents at a time
            loss, ce, aux = _cached_step(encoder, head, aux_loss, optimizer, texts, labels, config, use_amp, weights,
                                         ce_scale, norms, check)
        else:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                embeddings = encoder(texts).float()  # the step's encoder pass
                aux_embeddings = encoder(texts).float() if aux_loss is not None and config.encoder_passes == 2 \
                    else None  # the authors' second pass: other dropout, same weights
            loss, ce, aux = _loss_terms(embeddings, aux_embeddings, labels, head, aux_loss, config, weights, ce_scale,
                                        norms, check)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        norms = distributed.global_norms(norms)  # the push on the global batch's embeddings
        if norms:
            total = norms["ce"] + norms.get("aux", 0.0)
            shares.append(norms.get("aux", 0.0) / total if total > 0 else float("nan"))
        for key, value in (("loss", loss), ("ce", ce), ("aux", aux)):
            totals[key] += float(value.detach()) / len(batches)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    totals["aux_grad_share"] = sum(shares) / len(shares) if shares else float("nan")
    return totals


def _loss_terms(embeddings, aux_embeddings, labels, head, aux_loss, config, weights, ce_scale, norms,
                check) -> tuple:
    """``(loss, ce, aux)`` of one step from its embeddings (and a second pass's, or None).

    ``check(what, value, terms=None)`` stops a diverged run before any backward pass. For
    ``"X+ce"`` with ``log_grad_share``, gradient probes on two views of the embeddings store each
    term's push on them in ``norms`` during the backward pass. ``ce_scale`` is this process's CE
    factor (``gloss_lite.distributed.local_batch``; 1.0 in one process).
    """
    mixed = aux_loss is not None and config.loss.endswith("+ce")
    check("the embeddings", embeddings)
    if aux_embeddings is None:
        aux_embeddings = embeddings
    else:
        check("the embeddings of the second pass", aux_embeddings)
    if mixed and config.log_grad_share:  # the backward pass itself reports each term's push on E
        embeddings, aux_embeddings = _gradient_probe(embeddings, "ce", norms), _gradient_probe(
            aux_embeddings, "aux", norms)
    ce = F.cross_entropy(head(embeddings), labels, weight=weights) * ce_scale
    if aux_loss is None:
        loss, aux = ce, torch.zeros(())
    else:
        aux = aux_loss(aux_embeddings, labels)
        if mixed:
            loss = mix_losses(ce, aux, config.lam)
        else:  # the head learns on detached embeddings; the encoder sees the aux loss only
            ce = F.cross_entropy(head(embeddings.detach()), labels, weight=weights) * ce_scale
            loss = aux + ce
    check("the loss", loss, terms={"ce": ce, "aux": aux})
    return loss, ce, aux


def _cached_step(encoder, head, aux_loss, optimizer, texts, labels, config, use_amp, weights, ce_scale, norms,
                 check) -> tuple:
    """One step's ``(loss, ce, aux)`` and backward, the batch embedded ``config.chunk_size`` documents at a time.

    The loss terms of the plain step (``_loss_terms``), computed by
    ``gloss_lite.cached.cached_backward`` on the cached embeddings of the whole batch (the
    gradient probes fire on views of the cached leaf); the encoder's gradients equal those of
    the plain step on the same chunks (dropout replayed). The parameters' gradients are left in
    place.
    """
    terms = {}

    def loss_of(embeddings, aux_embeddings=None):
        loss, terms["ce"], terms["aux"] = _loss_terms(embeddings, aux_embeddings, labels, head, aux_loss, config,
                                                      weights, ce_scale, norms, check)
        return loss

    passes = 2 if aux_loss is not None and config.encoder_passes == 2 else 1
    optimizer.zero_grad(set_to_none=True)
    loss, _ = cached_backward(encoder, texts, loss_of, config.chunk_size, passes=passes, autocast=use_amp)
    return loss, terms["ce"].detach(), terms["aux"].detach()


def _gradient_probe(tensor: torch.Tensor, name: str, norms: dict) -> torch.Tensor:
    """A view of ``tensor`` whose gradient's norm is stored in ``norms[name]`` during backward.

    Feeding CE one view of the embeddings and the aux term another separates their gradients,
    ``(1 - lam) dCE/dE`` and ``lam dAux/dE``, at no extra backward pass (``gradient_share`` is the
    same quantity computed on its own).
    """
    view = tensor.view_as(tensor)
    view.register_hook(lambda grad: norms.__setitem__(name, float(grad.norm())))
    return view


def _comparable(config: TrainConfig) -> dict:
    """The settings a checkpoint must agree on to be resumed (not bookkeeping like progress bars)."""
    settings = dataclasses.asdict(config)
    for key in ("epochs", "checkpoint_dir", "progress", "device"):
        settings.pop(key)
    settings["lr_milestones"] = list(settings["lr_milestones"])
    return _plain(settings)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, damaged, or from another run."""


class TrainingDivergedError(RuntimeError):
    """A loss or the embeddings became NaN or infinite during training."""


CHECKPOINT_FORMAT = 2  # the layout _save_checkpoint writes; older files are refused, not misread


def _plain(value):
    """``value`` with tuples, paths, tensors and NumPy scalars turned into plain lists, strings and numbers.

    A checkpoint holds only tensors (the weights) and such plain values, so ``torch.load(...,
    weights_only=True)`` can read it without running any code from the file.
    """
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a NumPy scalar
        return value.item()
    return value


def _split_fingerprint(split: Split) -> str:
    """SHA-256 of a split's class names, texts (each length-prefixed) and labels."""
    digest = hashlib.sha256(json.dumps(list(split.class_names)).encode())
    for text in split.texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    digest.update(split.labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _data_fingerprint(train: Split, val: Split) -> dict:
    """The fingerprints of the training and validation data a checkpoint was written for."""
    return {"train": _split_fingerprint(train), "val": _split_fingerprint(val)}


def _update_digest(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _update_digest(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _update_digest(digest, item)
    else:
        digest.update(f"V{value!r}".encode())


def _checksum(state: dict) -> str:
    """SHA-256 over every tensor byte and value of a checkpoint, its "checksum" entry left out."""
    digest = hashlib.sha256()
    _update_digest(digest, {key: value for key, value in state.items() if key != "checksum"})
    return digest.hexdigest()


def _check_checkpoint_dir(config: TrainConfig) -> Path | None:
    """The checkpoint file of ``config.checkpoint_dir`` (None without one), once the folder is known writable.

    Creates the folder and writes (and removes) a test file in it, so that a path that is a
    file, a read-only folder or a full disk fails before any model is loaded or trained.
    """
    if config.checkpoint_dir is None:
        return None
    folder = Path(config.checkpoint_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {str(folder)!r} is a file, not a folder; choose a folder for the checkpoints")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(
            f"checkpoint_dir {str(folder)!r} is not writable ({type(error).__name__}: {error.strerror or error}); "
            "choose a folder you can write to, or checkpoint_dir=None"
        ) from None
    return folder / CHECKPOINT_NAME


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _load_checkpoint(path: Path, fingerprint: dict, config: TrainConfig, num_classes: int) -> dict | None:
    """The verified contents of the checkpoint at ``path``; None when there is none yet.

    Loaded with ``weights_only=True`` (a shared checkpoint cannot run code), then checked, each
    failure a ``CheckpointError`` that names the file and what to do: readable at all
    (truncated, empty or garbage files), written by this version, its checksum (any changed
    byte), its head's number of classes, the fingerprints of the training and validation data,
    the settings (the error lists those that differ), finite parameters, and no more finished
    epochs than ``config.epochs`` (a longer run is never returned as a shorter one; ask for at
    least as many epochs, or choose another ``checkpoint_dir``).
    """
    if not path.exists():
        return None
    fix = f"delete {path} to train from the start, or choose another checkpoint_dir"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(error)}); it may be truncated, "
                              f"damaged or not a checkpoint at all: {fix}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint in the format this version writes: {fix}")
    if state.get("checksum") != _checksum(state):
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum written with them: {fix}")
    saved_classes = state["head"]["weight"].shape[0]
    if saved_classes != num_classes:
        raise CheckpointError(f"{path} holds a head for {saved_classes} classes, but this data has {num_classes}: "
                              f"it is from a run on other data; {fix}")
    for split in ("train", "val"):
        if state["data"][split] != fingerprint[split]:
            raise CheckpointError(f"{path} was written for other {split} documents (their texts or labels differ "
                                  f"from these); resume with the same data, or {fix}")
    settings = _comparable(config)
    changed = sorted(key for key in set(settings) | set(state["config"])
                     if settings.get(key) != state["config"].get(key))
    if changed:
        shown = ", ".join(f"{key} = {state['config'].get(key)!r} there, {settings.get(key)!r} now" for key in changed)
        raise CheckpointError(f"{path} was written by a run with another configuration ({shown}); resume with "
                              f"the same TrainConfig, or {fix}")
    weights = [*state["encoder"].values(), *state["head"].values()]
    if not all(torch.isfinite(t).all() for t in weights if t.is_floating_point()):
        raise CheckpointError(f"{path} holds NaN or infinite parameters (the run diverged); {fix}")
    finished = state["epoch"] + 1
    if finished > config.epochs:
        raise CheckpointError(
            f"{path} holds {finished} finished epochs but epochs={config.epochs} was asked for; a shorter run cannot "
            f"be recovered from it: ask for epochs >= {finished}, or choose another checkpoint_dir"
        )
    return state


def _restore(state: dict, path: Path, encoder, head, optimizer, scheduler) -> tuple[list, int]:
    """Load a verified checkpoint into the model, optimiser and schedule; return (history, first epoch to run)."""
    try:
        encoder.model.load_state_dict(state["encoder"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} does not fit this model ({_first_line(error)}); it was written for another encoder: resume "
            f"with the same model, or delete it or choose another checkpoint_dir"
        ) from None
    return [dict(row) for row in state["history"]], state["epoch"] + 1


def _weights(encoder, head) -> dict:
    """A CPU copy of the model's weights."""
    return {"encoder": {k: v.detach().cpu().clone() for k, v in encoder.model.state_dict().items()},
            "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}


def _atomic_save(state, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)  # atomic: an interruption mid-write leaves the previous file intact


def _save_checkpoint(path: Path, encoder, head, optimizer, scheduler, history, epoch, sigma, best, config,
                     fingerprint) -> None:
    """Write the run's state after ``epoch`` atomically: only tensors and plain values, with a checksum."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "encoder": encoder.model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": _plain(scheduler.state_dict()), "history": _plain(history), "epoch": epoch,
        "sigma": _plain(sigma), "best": _plain(best), "config": _comparable(config), "data": fingerprint,
    }
    state["checksum"] = _checksum(state)
    _atomic_save(state, path)


def _check_finite(what: str, value: torch.Tensor, epoch: int, step: int, steps: int, config: TrainConfig,
                  sigma=None, terms: dict | None = None) -> None:
    """Stop the run with ``TrainingDivergedError`` if ``value`` holds NaN or Inf.

    Checked after the encoder pass and before the optimiser step, so the step that diverged is
    never applied and no checkpoint of a diverged model is written. The message names the epoch,
    the step, the value and the settings to try.
    """
    if torch.isfinite(value.detach()).all():
        return
    shown = f"{float(value.detach())}" if value.numel() == 1 else "NaN or infinite in some rows"
    if terms:
        shown += " (" + ", ".join(f"{key} = {float(term.detach())}" for key, term in terms.items()) + ")"
    advice = [f"a lower lr (now {config.lr:g}; try {config.lr / 10:g}) and head_lr (now {config.head_lr:g})"]
    if config.amp and str(config.device) != "cpu":
        advice.append("amp=False (bfloat16 autocast is on where CUDA is)")
    kind = config.loss.removesuffix("+ce")
    if kind == "gloss":
        estimated = f", estimated {sigma:.4g}" if isinstance(config.sigma, str) and isinstance(sigma, float) else ""
        advice.append(f"a larger sigma (now {config.sigma!r}{estimated})")
    elif kind == "scl":
        advice.append(f"a larger temperature (now {config.temperature:g})")
    raise TrainingDivergedError(
        f"training diverged at epoch {epoch + 1}, step {step} of {steps} (loss {config.loss!r}): {what} = {shown}; "
        f"the run stopped before this step changed the model. Try {', '.join(advice)}"
    )


def tune(
    train: Split,
    val: Split,
    config: TrainConfig,
    *,
    n_trials: int = 10,
    search_space: dict | None = None,
    make_encoder=None,
    sampler_seed: int | None = None,
):
    """G-Loss-O: an Optuna (TPE) search over sigma, gamma, lambda and lr on validation macro-F1.

    Each trial trains a fresh encoder with ``config`` and the trial's values; its score is the
    best validation macro-F1 of the head over the epochs. ``search_space`` maps a name (sigma,
    gamma, lam, lr, temperature) to a list of choices or to ``(low, high, log)`` or
    ``(low, high, log, step)``; the defaults are below, and ``AUTHORS_TUNING`` holds the
    authors' space, trial count and sampler seed (``tune(..., **AUTHORS_TUNING)``). The TPE
    sampler is seeded with ``sampler_seed`` (default: ``config.seed``). ``make_encoder()``
    builds each trial's fresh encoder (default: ``load_encoder`` with the config's model).
    Returns ``(best_config, study)``.
    """
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    space = {"sigma": (0.05, 2.0, True), "gamma": (0.3, 0.9, False), "lam": (0.1, 0.9, False), "lr": (1e-5, 1e-4, True)}
    space.update(search_space or {})
    unknown = set(space) - {"sigma", "gamma", "lam", "lr", "temperature"}
    if unknown:
        raise ValueError(
            f"search_space names unknown settings {sorted(unknown)}; use sigma, gamma, lam, lr, temperature")
    base = dataclasses.replace(config, checkpoint_dir=None, progress=False, lpa_eval=False)
    base.validate(len(train.class_names))

    def suggest(trial, name, spec):
        if isinstance(spec, list):
            return trial.suggest_categorical(name, spec)
        low, high, log, *step = spec
        return trial.suggest_float(name, low, high, log=log, step=step[0] if step else None)

    def objective(trial):
        values = {name: suggest(trial, name, spec) for name, spec in space.items()}
        encoder = make_encoder() if make_encoder else None
        result = fit(train, val, dataclasses.replace(base, **values), encoder=encoder)
        return max(row["val_macro_f1"] for row in result.history)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = config.seed if sampler_seed is None else sampler_seed
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return dataclasses.replace(config, **study.best_params), study
