"""Fine-tuning an encoder with G-Loss, cross-entropy, or a baseline loss: one loop for all.

Taught in ``notebooks/05_fine_tuning.ipynb`` and ``06_comparing_losses.ipynb``.

The model is ``load_encoder(...)`` plus a linear head; each step (``gloss_lite.training.step``)
embeds a batch once and trains on ``config.loss``: CE, G-Loss or a baseline, alone or mixed
with CE.

Sigma is a number, or ``"sqrt"`` / ``"dicm"``: estimated once, on the initial encoder's
embeddings of (up to 2000 of) the training texts, as in the paper. ``tune`` is G-Loss-O: an
Optuna search over sigma, gamma, lambda and the learning rate on validation macro-F1.

Each epoch ends with validation (head and label propagation, ``gloss_lite.evaluate``) and, with
``checkpoint_dir``, a checkpoint every ``checkpoint_every`` epochs and after the last; calling
``fit`` again with the same ``checkpoint_dir`` resumes after the last checkpointed epoch. Every
epoch's shuffling and masks are seeded from ``(seed, epoch)`` and its dropout from ``(seed,
epoch, rank)`` (``dropout_seed``), so on a CPU a resumed run equals an uninterrupted one. On a
GPU it does only with ``deterministic=True`` (``torch.use_deterministic_algorithms``): CUDA's
fastest kernels (atomic adds in scatter and index backward passes, cuBLAS workspaces) may add
in another order from run to run.

Per run, not per step: the run's texts are tokenised once (``Encoder.pretokenized``), the data
is checked once, and the precision is chosen once (``gloss_lite.runtime.choose_precision``,
``config.amp``); the history records it.

The configuration and the two recipes are ``gloss_lite.training.config``; checkpoints are
``gloss_lite.training.checkpoint``; G-Loss-O is ``gloss_lite.training.tune``.

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

Checkpoints hold only tensors and plain values, loaded with ``weights_only=True``, with a
checksum and fingerprints of the training and validation data; ``load_checkpoint`` lists what
makes one unusable (``CheckpointError``). The checkpoint folder is checked writable before any
work.

``batch_sampler="balanced"`` replaces the shuffle by class-balanced batches, two documents of
every class in each (``gloss_lite.training.sampling.ClassBalancedBatchSampler``, seeded by ``(seed, epoch)``,
a last batch too small for that merged into the one before); it needs ``batch_size >= 2 C``.

**Several processes** (``torchrun --nproc_per_node W``, taught in
``08_the_graph_beyond_one_batch``). With ``WORLD_SIZE > 1`` in the environment and no
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
resumes in several, and back). ``on_epoch`` is called on every rank. A NaN seen by one rank
stops every rank at the same step (``TrainingDivergedError`` on each). ``encoder_passes=2`` is
refused with ``ValueError`` (DDP cannot run the model twice before one backward pass).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .. import collectives, sigma
from ..data import Split, stratified_sample
from ..encoders import Encoder, load_encoder
from ..evaluate import classification_metrics, lpa_predict
from ..losses import GLoss
from ..runtime import pick_device, precision_for
from . import distributed
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
from .config import TrainConfig, parse_loss
from .sampling import ClassBalancedBatchSampler
from .step import Batch, TrainingRun, make_aux_loss, train_step

__all__ = [
    "balanced_class_weights",
    "estimate_sigma",
    "evaluate_split",
    "fit",
    "TrainResult",
    "dropout_seed",
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
    precision: str | None = None  # what the encoder computed in: "bf16", "fp16", "fp32" or "tf32"

    def evaluate(self, split: Split, reference: Split | None = None) -> dict:
        """Accuracy and macro-F1 of the head on ``split``; of LPA too when ``reference`` is given."""
        return evaluate_split(self.encoder, self.head, split, reference, sigma=self.sigma, config=self.config)


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

    Under ``torchrun`` (``WORLD_SIZE > 1``) it trains one global batch across the processes
    (module docstring). Resuming from ``checkpoint_dir`` gives the uninterrupted run's numbers on
    a CPU, and on a GPU with ``config.deterministic`` (deterministic algorithms) only.

    Raises ``ValueError`` for bad settings or data and an unwritable ``checkpoint_dir`` (all
    before a model is loaded), ``CheckpointError`` for a checkpoint that cannot be resumed (for
    instance one that holds more epochs than ``config.epochs``: refused, never truncated), and
    ``TrainingDivergedError`` when the loss becomes non-finite.
    """
    config = config or TrainConfig()
    num_classes = _check_data(train, val, config)
    checkpoint_path = check_checkpoint_dir(config)  # an unwritable folder fails now, not after an epoch
    fingerprint, state = None, None
    if checkpoint_path is not None:
        fingerprint = data_fingerprint(train, val)
        state = load_checkpoint(checkpoint_path, fingerprint, config, num_classes)
    texts = [*train.texts, *val.texts, *(test.texts if test is not None else [])]
    with _training_run(train, texts, config, encoder, num_classes, state) as training:
        history: list[dict] = []
        start_epoch = 0
        best = {"epoch": None, "score": -math.inf, "bad_epochs": 0, "stopped": False}
        best_weights = None
        if state is not None:
            assert checkpoint_path is not None  # a state is read from the checkpoint file
            history, start_epoch = restore(state, checkpoint_path, *training.model, training.optimizer,
                                           training.scheduler, training.scaler)
            best = dict(state["best"])
            if config.restore_best and checkpoint_path.with_name(BEST_NAME).exists():
                best_weights = torch.load(checkpoint_path.with_name(BEST_NAME), map_location="cpu", weights_only=True)
        encoder, head = training.model
        best_unsaved = False
        for epoch in range(start_epoch, config.epochs):
            if best["stopped"]:
                break
            started = time.perf_counter()
            totals = collectives.mean_over_ranks(_train_epoch(training, train, epoch))  # the global batch's means
            learning_rate = training.optimizer.param_groups[0]["lr"]
            training.scheduler.step()
            encoder.eval()
            scores = collectives.on_rank_zero(evaluate_split, encoder, head, val, train if config.lpa_eval else None,
                                              sigma=training.sigma, config=config)
            history.append({"epoch": epoch + 1, **totals, **{f"val_{k}": v for k, v in scores.items()},
                            "lr": learning_rate, "seconds": time.perf_counter() - started, "sigma": training.sigma,
                            "precision": training.precision.name})
            if on_epoch is not None:
                on_epoch(history[-1])
            if _update_best(best, scores["macro_f1"], epoch, config) and config.restore_best:
                best_weights, best_unsaved = copy_weights(encoder, head), True
            last = best["stopped"] or epoch + 1 == config.epochs
            if checkpoint_path and ((epoch + 1) % config.checkpoint_every == 0 or last):
                if collectives.rank() == 0:
                    if best_unsaved:
                        atomic_save(best_weights, checkpoint_path.with_name(BEST_NAME))
                    save_checkpoint(checkpoint_path, training, history, epoch, best, fingerprint)
                best_unsaved = False
                collectives.barrier()  # the checkpoint is complete before any rank goes on
        return _finish(training, history, best, best_weights, train, test)


@contextmanager
def _training_run(train: Split, texts: list[str], config: TrainConfig, encoder: Encoder | None, num_classes: int,
                  state: dict | None) -> Iterator[TrainingRun]:
    """The run's device (and process group), model, precision, sigma, aux loss, optimiser and schedule.

    Inside the block the run's texts are tokenised once (``Encoder.pretokenized``) and, with
    ``config.deterministic``, torch uses deterministic algorithms.
    """
    device = pick_device(config.device)
    distributed.init_from_environment(device)  # under torchrun: one process group for all ranks
    distributed.check_supported(config)
    device = distributed.local_device(device)
    torch.manual_seed(config.seed)
    if encoder is None:
        encoder = load_encoder(config.model, pooling=config.pooling, max_length=config.max_length, device=device)
    encoder.to(device)
    head = torch.nn.Linear(encoder.dim, num_classes).to(device)
    with encoder.pretokenized(texts), _deterministic(config.deterministic):
        sigma = state["sigma"] if state is not None else _initial_sigma(encoder, train, config)
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
        yield TrainingRun(
            config, distributed.replicate(encoder, device),  # BERT's pooler gets no gradient: find unused ones
            distributed.replicate(head, device, find_unused_parameters=False),  # always used
            (encoder, head), aux_loss, optimizer, scheduler, weights, device, sigma,
            precision_for(device, config.amp))


@contextmanager
def _deterministic(enabled: bool):
    """With ``enabled``, torch's deterministic algorithms inside the block (a warning where an op has none)."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (CUDA >= 10.2)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _initial_sigma(encoder: Encoder, train: Split, config: TrainConfig) -> float | None:
    """``config.sigma`` as a number: given, or estimated on the initial encoder (None when nothing needs one)."""
    if not isinstance(config.sigma, str):
        return float(config.sigma)
    graph_loss = parse_loss(config.loss)[0] == "gloss"
    if not (graph_loss or config.lpa_eval):  # other losses need sigma for LPA only
        return None
    rule = config.sigma if graph_loss else "sqrt"
    sigma = estimate_sigma(encoder, train, rule, config.seed, config.sigma_sample_size, config.sigma_variant)
    if sigma < 0.01 and config.sigma_fallback is not None:  # the authors' --optuna_sigma rule
        sigma = float(config.sigma_fallback)
    return sigma


def _update_best(best: dict, score: float, epoch: int, config: TrainConfig) -> bool:
    """Record an epoch's validation macro-F1 in ``best``; True when it is the best so far."""
    improved = score > best["score"]
    if improved:
        best.update(epoch=epoch + 1, score=score, bad_epochs=0)
    else:
        best["bad_epochs"] += 1
    best["stopped"] = config.patience is not None and best["bad_epochs"] >= config.patience
    return improved


def _finish(training: TrainingRun, history: list, best: dict, best_weights: dict | None, train: Split,
            test: Split | None) -> TrainResult:
    """The result: the last model scored on ``test``, then the best one restored and scored (``restore_best``)."""
    config = training.config
    encoder, head = training.model
    encoder.eval()
    result = TrainResult(encoder, head, history, training.sigma, config, best_epoch=best["epoch"],
                         precision=training.precision.name)
    reference = train if config.lpa_eval else None
    if test is not None:
        result.test_last = result.evaluate(test, reference)
    if config.restore_best and best_weights is not None:
        encoder.model.load_state_dict(best_weights["encoder"])
        head.load_state_dict(best_weights["head"])
        if test is not None:
            result.test_best = result.evaluate(test, reference)
    return result


def _epoch_batches(train: Split, config: TrainConfig, num_classes: int, epoch_seed: int) -> list[torch.Tensor]:
    """The epoch's batches of document indices: a seeded shuffle, or class-balanced batches."""
    if config.batch_sampler == "balanced":
        return [torch.tensor(batch) for batch in ClassBalancedBatchSampler(train.labels, config.batch_size,
                                                                           seed=epoch_seed)]
    return _batches(len(train), config.batch_size, torch.Generator().manual_seed(epoch_seed),
                    min_size=_min_batch_size(config, num_classes))


def dropout_seed(epoch_seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s dropout in an epoch: rank 0 keeps the epoch's seed, each other rank its own.

    So a one-process run is unchanged, and under several processes no two ranks draw the same
    dropout masks for their different documents. Shuffles and G-Loss masks stay the epoch's,
    shared by every rank.
    """
    return epoch_seed if rank == 0 else (epoch_seed + rank * 0x9E3779B97F4A7C15) % 2**64


def _train_epoch(run: TrainingRun, train: Split, epoch: int) -> dict:
    """One pass over ``train``; returns the mean loss terms, the mean gradient share and the skipped steps."""
    config = run.config
    epoch_seed = config.seed * 1000 + epoch
    torch.manual_seed(dropout_seed(epoch_seed, collectives.rank()))
    if isinstance(run.aux_loss, GLoss):
        run.aux_loss.generator = torch.Generator().manual_seed(epoch_seed)  # masks
    batches = _epoch_batches(train, config, run.model[1].out_features, epoch_seed)
    totals = {"loss": 0.0, "ce": 0.0, "aux": 0.0}
    shares, skipped = [], 0
    probed = run.aux_loss is not None and run.with_ce and config.log_grad_share
    run.encoder.train()
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False)
    for number, indices in enumerate(bar, start=1):
        indices, ce_scale = distributed.local_batch(indices, train.labels, run.weights)  # this rank's share
        host_labels = train.labels[indices]
        batch = Batch([train.texts[i] for i in indices.tolist()], host_labels.to(run.device, non_blocking=True),
                      host_labels, ce_scale, epoch, number, len(batches))
        numbers = train_step(run, batch)
        for key in totals:
            totals[key] += numbers[key] / len(batches)
        if probed:
            shares.append(numbers["aux_grad_share"])
        skipped += numbers["skipped"]
        bar.set_postfix(loss=f"{numbers['loss']:.4f}")
    totals["aux_grad_share"] = sum(shares) / len(shares) if shares else float("nan")
    totals["skipped_steps"] = skipped
    return totals
