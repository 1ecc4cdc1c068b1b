"""Fine-tuning an encoder with G-Loss, cross-entropy, or a baseline loss: one loop for all.

Taught in ``notebooks/05_fine_tuning.ipynb`` and ``06_comparing_losses.ipynb``.

The model is ``load_encoder(...)`` plus a linear head ``A e + b``. Each step embeds the batch
**once** and feeds the same embeddings ``E`` to every loss term:

========================  =====================================================================
``loss``                  what trains the encoder
========================  =====================================================================
``"ce"``                  ``CE(head(E), y)``
``"gloss"``               ``G-Loss(E, y)``
``"gloss+ce"``            ``(1 - lam) * CE + lam * G-Loss``
``"scl"``, ``"scl+ce"``   supervised contrastive, alone or mixed with CE by ``lam``
``"triplet"``, ...+ce     triplet margin loss, batch-all or batch-hard (``triplet_mining``)
``"contrastive"``, ...+ce pairwise contrastive loss
========================  =====================================================================

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
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Split, stratified_sample
from .encoders import Encoder, load_encoder
from .evaluate import classification_metrics, lpa_predict
from .losses import ContrastiveLoss, CosineMSELoss, GLoss, SupConLoss, TripletLoss, mix_losses
from .runtime import pick_device
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
        """Raise ``ValueError`` naming the first bad setting and what would be valid."""
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "max_length", "lpa_reference_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {self.batch_size}")
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


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch; a last batch of fewer than 2 documents joins the one before it."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


def _check_data(train: Split, val: Split, config: TrainConfig) -> int:
    num_classes = len(train.class_names)
    if len(train) < 2 or len(val) == 0:
        raise ValueError(f"need at least 2 training and 1 validation documents, got {len(train)} and {len(val)}")
    if tuple(val.class_names) != tuple(train.class_names):
        raise ValueError("train and val must share their class names (load them from one dataset)")
    config.validate(num_classes)
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
    """
    config = config or TrainConfig()
    num_classes = _check_data(train, val, config)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    if encoder is None:
        encoder = load_encoder(config.model, pooling=config.pooling, max_length=config.max_length, device=device)
    encoder.to(device)
    head = torch.nn.Linear(encoder.dim, num_classes).to(device)
    use_amp = config.amp and device.type == "cuda"

    checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME if config.checkpoint_dir else None
    state = torch.load(checkpoint_path, map_location=device, weights_only=False) if (
        checkpoint_path and checkpoint_path.exists()) else None
    if state is not None and state["config"] != _comparable(config):
        raise ValueError(
            f"{checkpoint_path} was written by a run with another configuration; "
            "resume with the same TrainConfig or choose another checkpoint_dir"
        )
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

    weights = balanced_class_weights(train.labels, num_classes).to(device) if config.class_weights else None
    aux_loss = make_aux_loss(config, num_classes, sigma, weights)
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
        encoder.model.load_state_dict(state["encoder"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch, best = state["history"], state["epoch"] + 1, state["best"]
        best_path = checkpoint_path.with_name(BEST_NAME)
        if config.restore_best and best_path.exists():
            best_weights = torch.load(best_path, map_location="cpu", weights_only=True)

    for epoch in range(start_epoch, config.epochs):
        if best["stopped"]:
            break
        started = time.perf_counter()
        totals = _train_epoch(encoder, head, aux_loss, optimizer, train, config, epoch, device, use_amp, weights)
        learning_rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        encoder.eval()
        scores = evaluate_split(encoder, head, val, train if config.lpa_eval else None, sigma=sigma, config=config)
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
        if checkpoint_path:
            if improved and config.restore_best:
                _atomic_save(best_weights, checkpoint_path.with_name(BEST_NAME))
            _save_checkpoint(checkpoint_path, encoder, head, optimizer, scheduler, history, epoch, sigma, best,
                             config)
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
    batches = _batches(len(train), config.batch_size, torch.Generator().manual_seed(epoch_seed))
    totals = {"loss": 0.0, "ce": 0.0, "aux": 0.0}
    shares = []
    mixed = aux_loss is not None and config.loss.endswith("+ce")
    parameters = [*encoder.parameters(), *head.parameters()]
    encoder.train()
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False)
    for batch in bar:
        texts = [train.texts[i] for i in batch.tolist()]
        labels = train.labels[batch].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            embeddings = encoder(texts).float()  # the step's encoder pass
            aux_embeddings = encoder(texts).float() if aux_loss is not None and config.encoder_passes == 2 \
                else embeddings  # the authors' second pass: other dropout, same weights
        ce = F.cross_entropy(head(embeddings), labels, weight=weights)
        if aux_loss is None:
            loss, aux = ce, torch.zeros(())
        else:
            aux = aux_loss(aux_embeddings, labels)
            if mixed:
                loss = mix_losses(ce, aux, config.lam)
                if config.log_grad_share:
                    shares.append(gradient_share((1 - config.lam) * ce, embeddings, config.lam * aux, aux_embeddings))
            else:  # the head learns on detached embeddings; the encoder sees the aux loss only
                ce = F.cross_entropy(head(embeddings.detach()), labels, weight=weights)
                loss = aux + ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        for key, value in (("loss", loss), ("ce", ce), ("aux", aux)):
            totals[key] += float(value.detach()) / len(batches)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    totals["aux_grad_share"] = sum(shares) / len(shares) if shares else float("nan")
    return totals


def _comparable(config: TrainConfig) -> dict:
    """The settings a checkpoint must agree on to be resumed (not bookkeeping like progress bars)."""
    settings = dataclasses.asdict(config)
    for key in ("epochs", "checkpoint_dir", "progress", "device"):
        settings.pop(key)
    settings["lr_milestones"] = list(settings["lr_milestones"])
    return settings


def _weights(encoder, head) -> dict:
    """A CPU copy of the model's weights."""
    return {"encoder": {k: v.detach().cpu().clone() for k, v in encoder.model.state_dict().items()},
            "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}


def _atomic_save(state, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)  # atomic: an interruption mid-write leaves the previous file intact


def _save_checkpoint(path: Path, encoder, head, optimizer, scheduler, history, epoch, sigma, best, config) -> None:
    _atomic_save({
        "encoder": encoder.model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch, "sigma": sigma, "best": best,
        "config": _comparable(config),
    }, path)


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
