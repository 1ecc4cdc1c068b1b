"""One training step: embed the batch, compute the loss terms, backward, clip, step.

Used by ``gloss_lite.training.loop.fit``; taught in ``notebooks/05_fine_tuning.ipynb`` and
``06_comparing_losses.ipynb``.

The model is an encoder plus a linear head ``A e + b``. Each step embeds the batch **once** and
feeds the same embeddings ``E`` to every loss term:

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

When the loss has no CE term, the head still learns, by CE on ``E.detach()`` (computed once): it
never moves the encoder, and it keeps the head's accuracy measurable for every loss. With
``encoder_passes=2`` (the authors' form) the graph or metric term gets a second encoder pass of
the batch, with its own dropout. With ``chunk_size`` the batch is embedded chunk by chunk
(``gloss_lite.training.cached``), and the same loss terms are computed on the cached embeddings.

**How hard does the graph term push?** For ``"X+ce"`` losses each step also measures, at the
embeddings ``E``, ``||lam dAux/dE|| / (||(1 - lam) dCE/dE|| + ||lam dAux/dE||)``, the share of
the push that comes from the graph (or metric) term (``gradient_share``; in the step, gradient
probes on two views of ``E`` read it off the one backward pass).

**Precision** (``gloss_lite.runtime.choose_precision``): the encoder runs under bf16 or fp16
autocast, or in float32 with TF32 matmuls allowed or not; its embeddings are cast to float32 for
the loss terms. With fp16 the loss is scaled before backward (``torch.amp.GradScaler``), the
gradients are unscaled before clipping, a step whose gradients overflowed is skipped (and the
scale lowered), and the gradient probes report unscaled norms.

**One wait per step.** Nothing in a step makes the host wait for the GPU (G-Loss is called with
``check=False`` on labels and masks kept on the CPU; the probes' norms stay tensors) except one
read of the step's numbers (``_read``): the loss terms, the probes' share and whether anything
became NaN or infinite. Under several processes these alarms are or-ed over the ranks first
(``gloss_lite.collectives.any_rank``), so that every rank stops at the same step.

**Divergence:** a NaN or infinite embedding, loss or gradient stops the run before the optimiser
step, with ``TrainingDivergedError`` naming the epoch, step, value and settings to try.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import collectives
from ..baselines import ContrastiveLoss, CosineMSELoss, SupConLoss, TripletLoss
from ..encoders import Encoder
from ..losses import GLoss, mix_losses
from ..runtime import Precision
from .cached import cached_backward
from .config import TrainConfig, parse_loss

__all__ = ["Batch", "TrainingDivergedError", "TrainingRun", "gradient_share", "make_aux_loss", "train_step"]


def make_aux_loss(config: TrainConfig, num_classes: int, sigma: float | None,
                  class_weights: torch.Tensor | None = None) -> torch.nn.Module | None:
    """The graph or metric term of ``config.loss`` (None for plain CE).

    G-Loss skips its per-call checks of tensor values (``check=False``): ``fit`` checks the data
    once per run and the step checks for NaN once per step.
    """
    kind, _ = parse_loss(config.loss)
    if kind == "gloss":
        if sigma is None:
            raise ValueError("the G-Loss term needs sigma, the kernel width (a positive number)")
        return GLoss(num_classes, sigma, config.gamma, scheme=config.scheme, target=config.target,
                     class_weights=class_weights, stratified=config.stratified_mask,
                     divide_by_hidden=config.divide_by_hidden, seed=config.seed, check=False)
    if kind == "scl":
        return SupConLoss(config.temperature, base_temperature=config.scl_base_temperature)
    if kind == "triplet":
        return TripletLoss(config.margin, config.triplet_mining, normalize=config.triplet_normalize)
    if kind == "contrastive":
        return CosineMSELoss() if config.contrastive_form == "cosine_mse" else ContrastiveLoss()
    return None


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


@dataclass
class TrainingRun:
    """What every epoch and step of one ``fit`` shares, built once per run.

    ``encoder`` and ``head`` are the modules the step runs (wrapped in DistributedDataParallel
    under several processes); ``model`` is the plain ``(encoder, head)`` pair that is evaluated
    and checkpointed. ``scaler`` is the fp16 gradient scaler (None for other precisions).
    """

    config: TrainConfig
    encoder: torch.nn.Module
    head: torch.nn.Module
    model: tuple[Encoder, torch.nn.Linear]
    aux_loss: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    weights: torch.Tensor | None  # CE's (and G-Loss's) class weights
    device: torch.device
    sigma: float | None
    precision: Precision
    kind: str = field(init=False)
    with_ce: bool = field(init=False)

    def __post_init__(self) -> None:
        self.kind, self.with_ce = parse_loss(self.config.loss)
        self.parameters = [*self.encoder.parameters(), *self.head.parameters()]
        self.passes = 2 if self.aux_loss is not None and self.config.encoder_passes == 2 else 1
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision.scales_loss else None
        # G-Loss draws its mask on the CPU: its labels stay there (not under a gather across ranks)
        self.labels_on_host = isinstance(self.aux_loss, GLoss) and not self.aux_loss.gather


@dataclass
class Batch:
    """One step's documents: texts, labels (on the device and on the CPU), CE scale, and where it is in the run."""

    texts: list[str]
    labels: torch.Tensor
    host_labels: torch.Tensor
    ce_scale: float  # this process's CE factor (gloss_lite.training.distributed.local_batch); 1.0 alone
    epoch: int
    number: int  # 1-based step of the epoch
    steps: int


def train_step(run: TrainingRun, batch: Batch) -> dict:
    """One optimiser step on one batch: embed, loss terms, backward, unscale and clip, step.

    With ``config.chunk_size`` the embedding and the backward pass run chunk by chunk
    (``cached_backward`` calls the same ``_loss_terms``). Before the optimiser step ``_read``
    reads the step's numbers (the one wait for the GPU) and stops a diverged run. Returns
    ``{"loss", "ce", "aux", "aux_grad_share", "skipped"}`` as Python numbers; ``skipped`` is 1
    when fp16 gradients overflowed and the step was left out.
    """
    probes: dict[str, torch.Tensor] = {}  # the gradient norms the probes record: "ce", "aux"
    config, terms = run.config, {}

    def loss_of(embeddings, aux_embeddings=None):
        terms.update(_loss_terms(run, embeddings, aux_embeddings, batch, probes))
        return terms["loss"]

    run.optimizer.zero_grad(set_to_none=True)
    scale = run.scaler.scale if run.scaler is not None else None
    with run.precision.matmuls():  # TF32 or IEEE float32 products, forward and backward
        if config.chunk_size is None:
            with run.precision.autocast(run.device.type):
                embeddings = [run.encoder(batch.texts).float() for _ in range(run.passes)]  # the authors' 2nd pass
            loss = loss_of(*embeddings)
            (scale(loss) if scale else loss).backward()
        else:  # the graph embedded chunk_size documents at a time
            cached_backward(run.encoder, batch.texts, loss_of, config.chunk_size, passes=run.passes,
                            autocast=run.precision.autocast_dtype or False, scale=scale)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)  # clipping and the overflow check see the true gradients
    gradient_norm = None
    if config.grad_clip is not None or run.scaler is not None:  # inf: only measured
        gradient_norm = torch.nn.utils.clip_grad_norm_(run.parameters, config.grad_clip or float("inf"))
    numbers = _read(run, terms, probes, gradient_norm, batch)
    if not numbers["skipped"]:
        run.optimizer.step()
    if run.scaler is not None:
        run.scaler.update()  # a lower scale after an overflow
    return numbers


def _loss_terms(run: TrainingRun, embeddings, aux_embeddings, batch: Batch, probes: dict) -> dict:
    """``loss``, ``ce`` and ``aux`` of one step from its embeddings (and a second pass's, or None).

    Also the flags ``bad_embeddings`` (NaN or Inf in either pass) for ``_read``. For ``"X+ce"``
    with ``log_grad_share``, gradient probes on two views of the embeddings store each term's
    push on them in ``probes`` during the backward pass. Without a CE term the head learns on the
    detached embeddings: CE is computed once, on them.
    """
    bad = ~torch.isfinite(embeddings.detach()).all()
    if aux_embeddings is None:
        aux_embeddings = embeddings
    else:
        bad = bad | ~torch.isfinite(aux_embeddings.detach()).all()
    aux_labels = batch.host_labels if run.labels_on_host else batch.labels

    def cross_entropy(inputs):
        return F.cross_entropy(run.head(inputs), batch.labels, weight=run.weights) * batch.ce_scale

    if run.aux_loss is None:
        loss = ce = cross_entropy(embeddings)
        aux = torch.zeros((), device=ce.device)
    elif run.with_ce:
        if run.config.log_grad_share:  # the backward pass itself reports each term's push on E
            unscale = run.scaler.scale(torch.ones((), device=run.device)) if run.scaler is not None else None
            embeddings, aux_embeddings = (_gradient_probe(embeddings, "ce", probes, unscale),
                                          _gradient_probe(aux_embeddings, "aux", probes, unscale))
        ce, aux = cross_entropy(embeddings), run.aux_loss(aux_embeddings, aux_labels)
        loss = mix_losses(ce, aux, run.config.lam)
    else:  # the encoder sees the aux loss only
        ce, aux = cross_entropy(embeddings.detach()), run.aux_loss(aux_embeddings, aux_labels)
        loss = aux + ce
    return {"loss": loss, "ce": ce, "aux": aux, "bad_embeddings": bad}


def _gradient_probe(tensor: torch.Tensor, name: str, probes: dict, scale: torch.Tensor | None = None) -> torch.Tensor:
    """A view of ``tensor`` whose gradient's norm (a tensor, divided by ``scale``) goes to ``probes[name]``.

    Feeding CE one view of the embeddings and the aux term another separates their gradients,
    ``(1 - lam) dCE/dE`` and ``lam dAux/dE``, at no extra backward pass (``gradient_share`` is the
    same quantity computed on its own). The norm stays on the device: no wait for the GPU.
    """
    view = tensor.view_as(tensor)
    view.register_hook(lambda grad: probes.__setitem__(name, grad.norm() if scale is None else grad.norm() / scale))
    return view


def _share(probes: dict) -> torch.Tensor | float:
    """The aux term's share of the push on the embeddings, in float64 (NaN without probes or push)."""
    probes = collectives.global_norms(probes)  # the push on the global batch's embeddings
    if not probes:
        return float("nan")
    ce = probes["ce"].double()
    aux = probes["aux"].double() if "aux" in probes else torch.zeros_like(ce)
    total = ce + aux
    return torch.where(total > 0, aux / total, torch.full_like(total, float("nan")))


def _read(run: TrainingRun, terms: dict, probes: dict, gradient_norm, batch: Batch) -> dict:
    """The step's one wait for the GPU: its numbers, and its alarms or-ed over the ranks.

    Raises ``TrainingDivergedError`` for NaN or infinite embeddings or loss (or gradients,
    outside fp16, where an overflow only skips the step).
    """
    loss, ce, aux = terms["loss"].detach(), terms["ce"].detach(), terms["aux"].detach()
    no_norm = torch.zeros((), dtype=torch.bool, device=loss.device)
    gradient_alarm = ~torch.isfinite(gradient_norm) if gradient_norm is not None else no_norm
    alarms = collectives.any_rank(torch.stack([terms["bad_embeddings"], ~torch.isfinite(loss), gradient_alarm]))
    share = _share(probes)
    if not isinstance(share, torch.Tensor):  # a fill, not a copy from the host (which would wait)
        share = torch.full((), share, dtype=torch.float64, device=loss.device)
    values = torch.cat([alarms.double(), torch.stack([loss.double(), ce.double(), aux.double(), share])]).tolist()
    bad_embeddings, bad_loss, bad_gradient = (bool(flag) for flag in values[:3])
    numbers = dict(zip(("loss", "ce", "aux", "aux_grad_share"), values[3:]))
    if bad_embeddings or bad_loss or (bad_gradient and run.scaler is None):
        what, shown = ("the embeddings", "NaN or infinite in some rows") if bad_embeddings else (
            ("the loss", f"{numbers['loss']} (ce = {numbers['ce']}, aux = {numbers['aux']})") if bad_loss else
            ("the gradient norm", "NaN or infinite"))
        raise TrainingDivergedError(_divergence_message(run, batch, what, shown))
    numbers["skipped"] = int(bad_gradient)  # fp16: the scaler lowers its scale, the step is left out
    return numbers


class TrainingDivergedError(RuntimeError):
    """A loss or the embeddings became NaN or infinite during training."""


def _divergence_message(run: TrainingRun, batch: Batch, what: str, shown: str) -> str:
    """Where the run diverged (epoch, step), what, and the settings to try."""
    config = run.config
    head_lr = config.lr if config.head_lr is None else config.head_lr
    advice = [f"a lower lr (now {config.lr:g}; try {config.lr / 10:g}) and head_lr (now {head_lr:g})"]
    if run.precision.autocast_dtype is not None:
        advice.append(f"amp='fp32' (now {run.precision.name} autocast)")
    if run.kind == "gloss":
        estimated = f", estimated {run.sigma:.4g}" if isinstance(config.sigma, str) and isinstance(
            run.sigma, float) else ""
        advice.append(f"a larger sigma (now {config.sigma!r}{estimated})")
    elif run.kind == "scl":
        advice.append(f"a larger temperature (now {config.temperature:g})")
    return (f"training diverged at epoch {batch.epoch + 1}, step {batch.number} of {batch.steps} (loss "
            f"{config.loss!r}): {what} = {shown}; the run stopped before this step changed the model. "
            f"Try {', '.join(advice)}")
