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
from .losses import ContrastiveLoss, GLoss, SupConLoss, TripletLoss, mix_losses
from .runtime import pick_device
from .sigma import sigma_dicm, sigma_sqrt

LOSSES = (
    "ce", "gloss", "gloss+ce", "scl", "scl+ce", "triplet", "triplet+ce", "contrastive", "contrastive+ce",
)
SIGMA_RULES = {"sqrt": sigma_sqrt, "dicm": sigma_dicm}
CHECKPOINT_NAME = "last.pt"


@dataclass
class TrainConfig:
    """Everything that defines a run. ``validate`` checks it before any work is done."""

    loss: str = "gloss+ce"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-5  # encoder learning rate (AdamW)
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    lam: float = 0.5  # weight of the graph/metric term in "X+ce"
    sigma: float | str = "sqrt"  # a number, "sqrt" or "dicm"
    gamma: float = 0.7  # fraction of a batch's labels visible to G-Loss
    scheme: str = "gloss"
    target: str = "nll"
    temperature: float = 0.1  # scl
    margin: float = 0.1  # triplet margin (cosine geometry); the contrastive loss keeps its margin of 1
    triplet_mining: str = "all"
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
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
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
    """What ``fit`` returns: the trained model, the history (one dict per epoch) and the sigma used."""

    encoder: Encoder
    head: torch.nn.Linear
    history: list[dict] = field(default_factory=list)
    sigma: float | None = None
    config: TrainConfig | None = None

    def evaluate(self, split: Split, reference: Split | None = None) -> dict:
        """Accuracy and macro-F1 of the head on ``split``; of LPA too when ``reference`` is given."""
        return evaluate_split(self.encoder, self.head, split, reference, sigma=self.sigma, config=self.config)


def make_aux_loss(config: TrainConfig, num_classes: int, sigma: float | None) -> torch.nn.Module | None:
    """The graph or metric term of ``config.loss`` (None for plain CE)."""
    kind = config.loss.removesuffix("+ce")
    if kind == "gloss":
        return GLoss(num_classes, sigma, config.gamma, scheme=config.scheme, target=config.target, seed=config.seed)
    if kind == "scl":
        return SupConLoss(config.temperature)
    if kind == "triplet":
        return TripletLoss(config.margin, config.triplet_mining)
    if kind == "contrastive":
        return ContrastiveLoss()
    return None


def estimate_sigma(encoder: Encoder, train: Split, rule: str, seed: int, size: int = 2000) -> float:
    """Sigma by ``rule`` ("sqrt" or "dicm") on the encoder's embeddings of up to ``size`` train texts."""
    sample = train.subset(stratified_sample(train.labels, size, seed=seed))
    embeddings = encoder.embed(sample.texts, progress=False)
    return SIGMA_RULES[rule](embeddings) if rule == "sqrt" else SIGMA_RULES[rule](embeddings, sample.labels)


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


def fit(train: Split, val: Split, config: TrainConfig | None = None, *, encoder: Encoder | None = None) -> TrainResult:
    """Fine-tune ``encoder`` (default: ``load_encoder(config.model)``) and a linear head on ``train``.

    Returns a ``TrainResult``; ``history`` has one row per epoch: the mean loss terms, the
    validation accuracy and macro-F1 of the head (and of LPA against ``train`` when
    ``config.lpa_eval``), and the seconds the epoch took.
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
        sigma = estimate_sigma(encoder, train, rule, config.seed)
    else:
        sigma = None

    aux_loss = make_aux_loss(config, num_classes, sigma)
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": config.lr}, {"params": head.parameters(), "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    history, start_epoch = [], 0
    if state is not None:
        encoder.model.load_state_dict(state["encoder"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = state["history"], state["epoch"] + 1

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        epoch_seed = config.seed * 1000 + epoch
        torch.manual_seed(epoch_seed)  # dropout
        if isinstance(aux_loss, GLoss):
            aux_loss.generator = torch.Generator().manual_seed(epoch_seed)  # masks
        batches = _batches(len(train), config.batch_size, torch.Generator().manual_seed(epoch_seed))
        totals = {"loss": 0.0, "ce": 0.0, "aux": 0.0}
        encoder.train()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False)
        for batch in bar:
            texts = [train.texts[i] for i in batch.tolist()]
            labels = train.labels[batch].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                embeddings = encoder(texts)  # the one encoder pass of this step
            ce = F.cross_entropy(head(embeddings.float()), labels)
            if aux_loss is None:
                loss, aux = ce, torch.zeros(())
            else:
                aux = aux_loss(embeddings.float(), labels)
                if config.loss.endswith("+ce"):
                    loss = mix_losses(ce, aux, config.lam)
                else:  # the head learns on detached embeddings; the encoder sees the aux loss only
                    ce = F.cross_entropy(head(embeddings.detach().float()), labels)
                    loss = aux + ce
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("ce", ce), ("aux", aux)):
                totals[key] += float(value.detach()) / len(batches)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        encoder.eval()
        scores = evaluate_split(encoder, head, val, train if config.lpa_eval else None, sigma=sigma, config=config)
        history.append({"epoch": epoch + 1, **totals, **{f"val_{k}": v for k, v in scores.items()},
                        "seconds": time.perf_counter() - started, "sigma": sigma})
        if checkpoint_path:
            _save_checkpoint(checkpoint_path, encoder, head, optimizer, history, epoch, sigma, config)
    encoder.eval()
    return TrainResult(encoder, head, history, sigma, config)


def _comparable(config: TrainConfig) -> dict:
    """The settings a checkpoint must agree on to be resumed (not bookkeeping like progress bars)."""
    settings = dataclasses.asdict(config)
    for key in ("epochs", "checkpoint_dir", "progress", "device"):
        settings.pop(key)
    return settings


def _save_checkpoint(path: Path, encoder, head, optimizer, history, epoch, sigma, config) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "encoder": encoder.model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
        "history": history, "epoch": epoch, "sigma": sigma, "config": _comparable(config),
    }
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)  # atomic: an interruption mid-write leaves the previous checkpoint intact


def tune(
    train: Split,
    val: Split,
    config: TrainConfig,
    *,
    n_trials: int = 10,
    search_space: dict | None = None,
    make_encoder=None,
):
    """G-Loss-O: an Optuna (TPE) search over sigma, gamma, lambda and lr on validation macro-F1.

    Each trial trains a fresh encoder with ``config`` and the trial's values; its score is the
    best validation macro-F1 of the head over the epochs. ``search_space`` maps a name to
    ``(low, high, log)``; the defaults are below. ``make_encoder()`` builds each trial's fresh
    encoder (default: ``load_encoder`` with the config's model). Returns ``(best_config, study)``.
    """
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    space = {"sigma": (0.05, 2.0, True), "gamma": (0.3, 0.9, False), "lam": (0.1, 0.9, False), "lr": (1e-5, 1e-4, True)}
    space.update(search_space or {})
    unknown = set(space) - {"sigma", "gamma", "lam", "lr"}
    if unknown:
        raise ValueError(f"search_space names unknown settings {sorted(unknown)}; use sigma, gamma, lam, lr")
    base = dataclasses.replace(config, checkpoint_dir=None, progress=False, lpa_eval=False)
    base.validate(len(train.class_names))

    def objective(trial):
        values = {name: trial.suggest_float(name, low, high, log=log) for name, (low, high, log) in space.items()}
        encoder = make_encoder() if make_encoder else None
        result = fit(train, val, dataclasses.replace(base, **values), encoder=encoder)
        return max(row["val_macro_f1"] for row in result.history)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    study.optimize(objective, n_trials=n_trials)
    return dataclasses.replace(config, **study.best_params), study
