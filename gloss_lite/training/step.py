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

**Divergence:** a NaN or infinite embedding or loss stops the run before the optimiser step,
with ``TrainingDivergedError`` naming the epoch, step, value and settings to try.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..baselines import ContrastiveLoss, CosineMSELoss, SupConLoss, TripletLoss
from ..encoders import Encoder
from ..losses import GLoss, mix_losses
from .cached import cached_backward
from .config import TrainConfig, parse_loss


def make_aux_loss(config: TrainConfig, num_classes: int, sigma: float | None,
                  class_weights: torch.Tensor | None = None) -> torch.nn.Module | None:
    """The graph or metric term of ``config.loss`` (None for plain CE)."""
    kind, _ = parse_loss(config.loss)
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
    """What every epoch and step of one ``fit`` shares, built once by ``_prepare``.

    ``encoder`` and ``head`` are the modules the step runs (wrapped in DistributedDataParallel
    under several processes); ``model`` is the plain ``(encoder, head)`` pair that is evaluated
    and checkpointed.
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
    use_amp: bool
    kind: str = field(init=False)
    with_ce: bool = field(init=False)

    def __post_init__(self) -> None:
        self.kind, self.with_ce = parse_loss(self.config.loss)
        self.parameters = [*self.encoder.parameters(), *self.head.parameters()]
        self.passes = 2 if self.aux_loss is not None and self.config.encoder_passes == 2 else 1



def train_step(training: TrainingRun, texts: list[str], labels: torch.Tensor, ce_scale: float,
               check) -> tuple[dict, dict]:
    """One optimiser step on one batch: embed, loss terms, backward, clip, step.

    With ``config.chunk_size`` the embedding and the backward pass run chunk by chunk
    (``cached_backward`` calls the same ``_loss_terms``). ``check(what, value, terms=None)`` stops
    a diverged run before the optimiser step. Returns the detached loss terms
    ``{"loss", "ce", "aux"}`` and the gradient probes' norms (empty without them).
    """
    config, norms, terms = training.config, {}, {}

    def loss_of(embeddings, aux_embeddings=None):
        loss, terms["ce"], terms["aux"] = _loss_terms(training, embeddings, aux_embeddings, labels, ce_scale,
                                                      norms, check)
        return loss

    training.optimizer.zero_grad(set_to_none=True)
    if config.chunk_size is None:
        with torch.autocast(device_type=training.device.type, dtype=torch.bfloat16, enabled=training.use_amp):
            embeddings = [training.encoder(texts).float() for _ in range(training.passes)]  # the authors' 2nd pass
        loss = loss_of(*embeddings)
        loss.backward()
    else:  # the graph embedded chunk_size documents at a time
        loss, _ = cached_backward(training.encoder, texts, loss_of, config.chunk_size, passes=training.passes,
                                  autocast=training.use_amp)
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(training.parameters, config.grad_clip)
    training.optimizer.step()
    return {"loss": loss.detach(), "ce": terms["ce"].detach(), "aux": terms["aux"].detach()}, norms


def _loss_terms(training: TrainingRun, embeddings, aux_embeddings, labels, ce_scale, norms, check) -> tuple:
    """``(loss, ce, aux)`` of one step from its embeddings (and a second pass's, or None).

    ``check(what, value, terms=None)`` stops a diverged run before any backward pass. For
    ``"X+ce"`` with ``log_grad_share``, gradient probes on two views of the embeddings store each
    term's push on them in ``norms`` during the backward pass. ``ce_scale`` is this process's CE
    factor (``gloss_lite.training.distributed.local_batch``; 1.0 in one process). Without a CE
    term the head learns on the detached embeddings: CE is computed once, on them.
    """
    check("the embeddings", embeddings)
    if aux_embeddings is None:
        aux_embeddings = embeddings
    else:
        check("the embeddings of the second pass", aux_embeddings)

    def cross_entropy(inputs):
        return F.cross_entropy(training.head(inputs), labels, weight=training.weights) * ce_scale

    if training.aux_loss is None:
        loss = ce = cross_entropy(embeddings)
        aux = torch.zeros(())
    elif training.with_ce:
        if training.config.log_grad_share:  # the backward pass itself reports each term's push on E
            embeddings, aux_embeddings = (_gradient_probe(embeddings, "ce", norms),
                                          _gradient_probe(aux_embeddings, "aux", norms))
        ce, aux = cross_entropy(embeddings), training.aux_loss(aux_embeddings, labels)
        loss = mix_losses(ce, aux, training.config.lam)
    else:  # the encoder sees the aux loss only
        ce, aux = cross_entropy(embeddings.detach()), training.aux_loss(aux_embeddings, labels)
        loss = aux + ce
    check("the loss", loss, terms={"ce": ce, "aux": aux})
    return loss, ce, aux


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


def check_finite(what: str, value: torch.Tensor, epoch: int, step: int, steps: int, config: TrainConfig,
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
    kind, _ = parse_loss(config.loss)
    if kind == "gloss":
        estimated = f", estimated {sigma:.4g}" if isinstance(config.sigma, str) and isinstance(sigma, float) else ""
        advice.append(f"a larger sigma (now {config.sigma!r}{estimated})")
    elif kind == "scl":
        advice.append(f"a larger temperature (now {config.temperature:g})")
    raise TrainingDivergedError(
        f"training diverged at epoch {epoch + 1}, step {step} of {steps} (loss {config.loss!r}): {what} = {shown}; "
        f"the run stopped before this step changed the model. Try {', '.join(advice)}"
    )
