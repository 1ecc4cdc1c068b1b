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

The configuration and the two recipes are ``gloss_lite.training.config``; checkpoints are
``gloss_lite.training.checkpoint``; G-Loss-O is ``gloss_lite.training.tune``.

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
(``gloss_lite.training.cached``). The gradient is that of one backward pass through the same chunks
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
every class in each (``gloss_lite.training.sampling.ClassBalancedBatchSampler``, seeded by ``(seed, epoch)``,
a last batch too small for that merged into the one before); it needs ``batch_size >= 2 C``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import collectives, sigma
from ..baselines import ContrastiveLoss, CosineMSELoss, SupConLoss, TripletLoss
from ..data import Split, stratified_sample
from ..encoders import Encoder, load_encoder
from ..evaluate import classification_metrics, lpa_predict
from ..losses import GLoss, mix_losses
from ..runtime import pick_device
from . import distributed
from .cached import cached_backward
from .checkpoint import (
    BEST_NAME,
    atomic_save,
    check_checkpoint_dir,
    copy_weights,
    data_fingerprint,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from .config import TrainConfig
from .sampling import ClassBalancedBatchSampler

__all__ = [
    "balanced_class_weights",
    "estimate_sigma",
    "evaluate_split",
    "fit",
    "gradient_share",
    "make_aux_loss",
    "TrainingDivergedError",
    "TrainResult",
]


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
    return sigma.estimate(rule, encoder.embed(sample.texts, progress=False), sample.labels, variant=variant)


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
    (``gloss_lite.training.distributed``). So with dropout off the run is the one-process run with the
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
    checkpoint_path = check_checkpoint_dir(config)  # an unwritable folder fails now, not after an epoch
    fingerprint = data_fingerprint(train, val) if checkpoint_path else None
    state = load_checkpoint(checkpoint_path, fingerprint, config, num_classes) if checkpoint_path else None
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
    sigma = collectives.broadcast_object(sigma)  # rank 0's, so every rank builds the same graph

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
        history, start_epoch = restore(state, checkpoint_path, encoder, head, optimizer, scheduler)
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
        totals = collectives.mean_over_ranks(totals)  # the global batch's means
        learning_rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        encoder.eval()
        scores = collectives.on_rank_zero(evaluate_split, encoder, head, val, train if config.lpa_eval else None,
                                          sigma=sigma, config=config)
        history.append({"epoch": epoch + 1, **totals, **{f"val_{k}": v for k, v in scores.items()},
                        "lr": learning_rate, "seconds": time.perf_counter() - started, "sigma": sigma})
        if on_epoch is not None:
            on_epoch(history[-1])
        improved = scores["macro_f1"] > best["score"]
        if improved:
            best.update(epoch=epoch + 1, score=scores["macro_f1"], bad_epochs=0)
            if config.restore_best:
                best_weights = copy_weights(encoder, head)
        else:
            best["bad_epochs"] += 1
        best["stopped"] = config.patience is not None and best["bad_epochs"] >= config.patience
        if checkpoint_path and collectives.rank() == 0:
            if improved and config.restore_best:
                atomic_save(best_weights, checkpoint_path.with_name(BEST_NAME))
            save_checkpoint(checkpoint_path, encoder, head, optimizer, scheduler, history, epoch, sigma, best,
                             config, fingerprint)
        collectives.barrier()  # the checkpoint is complete before any rank goes on
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
        norms = collectives.global_norms(norms)  # the push on the global batch's embeddings
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
    factor (``gloss_lite.training.distributed.local_batch``; 1.0 in one process).
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
    ``gloss_lite.training.cached.cached_backward`` on the cached embeddings of the whole batch (the
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


class TrainingDivergedError(RuntimeError):
    """A loss or the embeddings became NaN or infinite during training."""


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

