"""G-Loss: label propagation on the minibatch graph, scored at the hidden nodes.

Taught in ``notebooks/03_masking_and_the_loss.ipynb``.

For a minibatch with embeddings ``E`` (n x d), labels ``y`` and a mask of visible labels:

1. ``W = gaussian_affinity(E, sigma)``            (``gloss_lite.graph``)
2. ``T = transition_matrix(W, scheme)``           (``gloss_lite.graph``)
3. ``F = propagate(T, y, mask, C)``               (``gloss_lite.lpa``), ``F_U`` at the hidden nodes
4. the loss compares ``F_U`` with the true hidden labels ``y_U``.

Every step is differentiable, so the gradient flows from the loss through the solve and the
kernel into the embeddings, and from there into the encoder: G-Loss pulls documents of the
same class together *in the geometry that label propagation sees*.

Two ways to score ``F_U`` (``target``):

- ``"nll"`` (default): the negative log-likelihood of the propagated distribution,
  ``-mean_u log F_U[u, y_u]``. ``F_U`` is already a probability distribution (each row sums to
  1), so this is the cross-entropy between the true labels and the propagated ones; it is 0
  when propagation is certain and right, and grows without bound when it is confidently wrong.
- ``"authors"``: the authors' code passes ``F_U`` to ``torch.nn.functional.cross_entropy``,
  which applies a softmax first, as if ``F_U`` were logits: ``-mean_u log softmax(F_U)[u, y_u]``.
  Since every entry lies in [0, 1], the softmax is nearly flat: even a perfect ``F_U`` gives
  ``log(1 + (C - 1) / e)``, not 0, and the gradient is weaker. Kept to reproduce their numbers.

Both accept per-class weights (``class_weights``), as ``cross_entropy`` does: with weights
``w``, the mean over hidden nodes becomes ``sum_u w_{y_u} l_u / sum_u w_{y_u}``.

``divide_by_hidden=True`` divides the result once more by the number of hidden nodes ``|U|``, as
the authors' Combined-with-CE code does (their ``predict_lpa`` returns ``loss / len(labels)``
after ``cross_entropy`` has already averaged). At a batch of 128 and ``gamma = 0.7`` that shrinks
the graph term, and its gradient, 38-fold; notebook ``07_reproducing_the_paper`` measures how much
of the push on the embeddings is left.

A hidden class with no visible node cannot be predicted (its column of ``F_U`` is 0). Under
``"nll"`` that is an infinite loss, so ``g_loss`` refuses the mask; under ``"authors"`` the
softmax keeps the loss finite and the mask is allowed, as in the authors' code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import collectives
from .checks import check_bool, check_class_range, check_int
from .graph import SCHEMES, check_embeddings, check_sigma, gaussian_affinity, ieee_float32, transition_matrix
from .lpa import check_labels, default_teleport, node_indices, propagate
from .masking import check_gamma, split_mask

__all__ = ["g_loss", "GLoss", "mix_losses", "TARGETS"]

TARGETS = ("nll", "authors")


def _check_options(scheme: str, target: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def _check_class_weights(class_weights, num_classes: int) -> torch.Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32)
    if weights.shape != (num_classes,) or not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(
            f"class_weights must hold {num_classes} finite non-negative numbers, got {class_weights!r}"
        )
    if not (weights > 0).any():
        raise ValueError(
            "class_weights are all 0, so the weighted mean over the hidden nodes is 0/0; "
            "give at least one class a positive weight (or pass None for equal weights)"
        )
    return weights


def _check_hidden_classes(labels, labeled_mask, weights, target: str) -> None:
    """Refuse a mask whose hidden nodes carry only zero-weight classes, or (``"nll"``) an unseen class."""
    hidden_labels = labels[~labeled_mask]
    if weights is not None and not (weights[hidden_labels.to(weights.device)] > 0).any():
        raise ValueError(
            f"class_weights are 0 for every hidden class ({sorted(hidden_labels.unique().tolist())}), so the "
            "weighted mean over the hidden nodes is 0/0; give those classes a positive weight"
        )
    missing = set(hidden_labels.unique().tolist()) - set(labels[labeled_mask].unique().tolist())
    if missing and target == "nll":
        raise ValueError(
            f"hidden classes {sorted(missing)} have no visible node, so propagation gives them "
            "probability 0; draw the mask with split_mask(labels, gamma, stratified=True)"
        )


def g_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    labeled_mask: torch.Tensor,
    *,
    sigma: float | torch.Tensor,
    num_classes: int,
    class_weights: torch.Tensor | None = None,
    scheme: str = "gloss",
    target: str = "nll",
    divide_by_hidden: bool = False,
    check: bool = True,
) -> torch.Tensor:
    """G-Loss of one minibatch for a given mask (see the module docstring).

    Args:
        embeddings: ``n x d`` float tensor (gradients flow into it).
        labels: ``n`` integer labels in ``[0, num_classes)`` (any integer dtype; not bool).
        labeled_mask: ``n`` bools, True where the label is visible to propagation.
        sigma: Gaussian kernel width, > 0.
        num_classes: ``C``.
        class_weights: optional ``C`` weights, as in ``cross_entropy``: finite, >= 0, and
            positive for at least one hidden class of the batch (else the weighted mean is 0/0).
        scheme: ``"gloss"`` (the paper's transition) or ``"row"`` (``D^-1 W``).
        target: ``"nll"`` or ``"authors"``.
        divide_by_hidden: divide by ``|U|`` once more, as the authors' Combined-with-CE code does.
        check: False skips every check that reads tensor values (finite embeddings, labels in
            range, class weights), for a caller that has checked them once, such as a training
            step: with the labels and the mask on the CPU, G-Loss then never makes the host wait
            for the GPU. A hidden class without a visible node is still refused when the mask
            is on the CPU.

    Returns:
        A scalar tensor. Half-precision embeddings are promoted to float32 for the solve; the
        kernel, the transition and the solve run in IEEE float32 (no autocast, no TF32) whatever
        ``torch.set_float32_matmul_precision`` says (``gloss_lite.graph.ieee_float32``).

    Raises:
        ValueError: bad sigma (or one for which the kernel is degenerate, see
            ``graph.check_kernel_width``), shapes, labels, class weights or options; no hidden
            node; a hidden class that no visible node carries under ``target="nll"``
            (propagation could never predict it; draw the mask with
            ``split_mask(..., stratified=True)``).
    """
    if torch.compiler.is_compiling():  # torch.compile traces the same math in fixed shapes, unchecked
        return _traced_g_loss(embeddings, labels, labeled_mask, sigma, num_classes, class_weights, scheme, target,
                              divide_by_hidden)
    _check_options(scheme, target)
    if check:
        check_embeddings(embeddings)
        check_sigma(sigma)
        check_labels(labels, labeled_mask, num_classes, embeddings.shape[0])
        check_class_range(labels, num_classes)
        if labeled_mask.all():
            raise ValueError("no hidden node: every label is visible, so there is nothing to score; lower gamma")
        class_weights = _check_class_weights(class_weights, num_classes)
        labeled_mask = labeled_mask.to(embeddings.device)
        labels = labels.to(embeddings.device)
    if check or not labeled_mask.is_cuda:  # on the CPU (where the trainer keeps the mask) no GPU is waited for
        _check_hidden_classes(labels.long(), labeled_mask, class_weights if check else None, target)
    _, hidden = node_indices(labeled_mask, embeddings.device)
    labels = labels.to(embeddings.device, non_blocking=True).long()  # int32, uint8, ... ids: nll_loss wants int64
    hidden_labels = labels[hidden]
    weights = class_weights

    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.float()
    with torch.autocast(device_type=embeddings.device.type, enabled=False), ieee_float32():
        log_affinity = gaussian_affinity(embeddings, sigma, log=True, check=check)
        transition = transition_matrix(log_affinity, scheme, log=True, check=check)
        distributions = propagate(transition, labels, labeled_mask, num_classes, check=check)

    hidden_distributions = distributions.index_select(0, hidden)
    if weights is not None:
        weights = weights.to(device=embeddings.device, dtype=hidden_distributions.dtype)
    if target == "nll":
        tiny = torch.finfo(hidden_distributions.dtype).tiny
        log_probs = hidden_distributions.clamp_min(tiny).log()
        loss = F.nll_loss(log_probs, hidden_labels, weight=weights)
    else:
        loss = F.cross_entropy(hidden_distributions, hidden_labels, weight=weights)
    return loss / len(hidden) if divide_by_hidden else loss


def _traced_g_loss(embeddings, labels, labeled_mask, sigma, num_classes, class_weights, scheme, target,
                   divide_by_hidden) -> torch.Tensor:
    """``g_loss`` as ``torch.compile(fullgraph=True)`` traces it: no data-dependent branch or shape.

    The checks are left to the eager call (they read tensor values). Propagation solves the full
    ``n x n`` system ``(I - diag(h) T') F = diag(v) Y`` (``h``, ``v``: hidden and visible
    indicators, ``T'`` the teleport-mixed transition of ``gloss_lite.lpa``): its visible rows give
    ``F_L = Y_L`` and its hidden rows ``F_U = T'_UU F_U + T'_UL Y_L``, the harmonic solution, so the
    value equals the eager one up to rounding; the mean over hidden nodes is a weighted sum.
    """
    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.float()
    n, dtype, device = embeddings.shape[0], embeddings.dtype, embeddings.device
    with torch.autocast(device_type=device.type, enabled=False):
        eye = torch.eye(n, dtype=dtype, device=device)
        unit = F.normalize(embeddings, dim=1)
        log_w = ((unit @ unit.T - 1.0) / sigma**2).clamp_max(0.0).masked_fill(eye.bool(), float("-inf"))
        if scheme == "gloss":  # as gloss_lite.graph.transition_matrix
            log_degree = torch.logsumexp(log_w, dim=1)
            log_w = log_w - torch.logsumexp(log_w - 0.5 * log_degree[:, None], dim=0)[None, :]
        teleport = default_teleport(dtype)
        mixed = (1.0 - teleport) * torch.softmax(log_w, dim=1) + teleport * (1.0 - eye) / (n - 1)
        visible = labeled_mask.to(device)
        hidden = (~visible).to(dtype)
        labels = labels.to(device).long()
        one_hot = F.one_hot(labels, num_classes).to(dtype) * visible[:, None].to(dtype)
        distributions = torch.linalg.solve(eye - hidden[:, None] * mixed, one_hot)
    weights = hidden if class_weights is None else hidden * torch.as_tensor(class_weights).to(device, dtype)[labels]
    if target == "nll":
        per_node = -distributions.clamp_min(torch.finfo(dtype).tiny).log().gather(1, labels[:, None]).squeeze(1)
    else:
        per_node = F.cross_entropy(distributions, labels, reduction="none")
    loss = (weights * per_node).sum() / weights.sum()
    return loss / hidden.sum() if divide_by_hidden else loss


class GLoss(torch.nn.Module):
    """G-Loss as a module: ``forward(embeddings, labels)`` draws the mask, then calls ``g_loss``.

    Args:
        num_classes: ``C``.
        sigma: kernel width (> 0); see ``gloss_lite.sigma`` for ways to choose it. A number is
            stored as a float. A 0-d float tensor is kept as that tensor, not copied into a
            float: if it requires grad (e.g. an ``nn.Parameter``, which then also appears in
            ``parameters()``), the loss's gradient reaches it, so sigma can be learned, and a
            later in-place change to it is seen by the next call. A tensor of any other shape
            is refused.
        gamma: fraction of labels kept visible in each minibatch, in (0, 1).
        scheme, target, class_weights, divide_by_hidden: as in ``g_loss``.
        stratified: draw the mask per class (``gloss_lite.masking.split_mask``); False draws the
            authors' uniformly random mask.
        seed: seed of the module's own mask generator; the same seed gives the same sequence of
            masks. ``None`` uses torch's global generator.
        gather: under an initialised ``torch.distributed`` process group, build the graph of the
            **global** batch: gather every rank's embeddings (with gradient) and labels in rank
            order (``gloss_lite.training.distributed``; local batch sizes may differ), draw one mask on the
            global batch that every rank agrees on, and return the global batch's G-Loss on every
            rank. With a ``seed`` every rank's generator steps in lockstep; with ``seed=None``
            rank 0 draws a seed from torch's global generator for each call and sends it to the
            others. No rescaling is needed: the gather's backward sums over the ranks what DDP's
            gradient average divides by ``W``, so DDP's gradient is the single-process gradient on
            the concatenated batch (derived in ``gloss_lite.training.distributed``). Outside a process
            group it is the ordinary loss. Taught in ``08_the_graph_beyond_one_batch``.

        check: False skips the checks of tensor values in every call (``g_loss(..., check=False)``):
            for a trainer that checks its inputs once per run. Give it the labels on the CPU
            (the mask is drawn there) and no call waits for the GPU.

    After each call, ``last_mask`` holds the mask that was drawn (with ``gather``, the global one).
    """

    class_weights: torch.Tensor | None  # a buffer (register_buffer), so it moves with the module

    def __init__(
        self,
        num_classes: int,
        sigma: float,
        gamma: float = 0.7,
        *,
        scheme: str = "gloss",
        target: str = "nll",
        class_weights: torch.Tensor | None = None,
        stratified: bool = True,
        divide_by_hidden: bool = False,
        seed: int | None = None,
        gather: bool = False,
        check: bool = True,
    ) -> None:
        super().__init__()
        check_bool("gather", gather)
        check_bool("check", check)
        _check_options(scheme, target)
        check_sigma(sigma)
        check_gamma(gamma)
        check_int("num_classes", num_classes, minimum=2)
        self.num_classes = num_classes
        self.sigma = sigma if isinstance(sigma, torch.Tensor) else float(sigma)
        self.gamma = float(gamma)
        self.scheme = scheme
        self.target = target
        self.stratified = stratified
        self.divide_by_hidden = divide_by_hidden
        self.register_buffer("class_weights", _check_class_weights(class_weights, num_classes))
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.gather = gather
        self.check = check
        self.last_mask: torch.Tensor | None = None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        generator = self.generator
        if self.gather and collectives.world_size() > 1:
            embeddings = collectives.gather_with_grad(embeddings)
            labels = collectives.gather_labels(labels)
            if generator is None:  # every rank must draw the same mask
                generator = torch.Generator().manual_seed(collectives.agreed_seed())
        mask = split_mask(labels, self.gamma, generator=generator, stratified=self.stratified)
        self.last_mask = mask
        return g_loss(
            embeddings,
            labels,
            mask,
            sigma=self.sigma,
            num_classes=self.num_classes,
            class_weights=self.class_weights,
            scheme=self.scheme,
            target=self.target,
            divide_by_hidden=self.divide_by_hidden,
            check=self.check,
        )

    def extra_repr(self) -> str:
        sigma = float(torch.as_tensor(self.sigma).detach())
        return (
            f"num_classes={self.num_classes}, sigma={sigma:g}, gamma={self.gamma:g}, "
            f"scheme={self.scheme!r}, target={self.target!r}, stratified={self.stratified}, "
            f"divide_by_hidden={self.divide_by_hidden}" + (", gather=True" if self.gather else "")
        )


def mix_losses(ce_loss: torch.Tensor, graph_loss: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1 - lam) * CE + lam * G-Loss``: ``lam = 0`` is plain CE, ``lam = 1`` is G-Loss alone."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0 or math.isnan(lam):
        raise ValueError(f"lam weighs G-Loss against CE and must lie in [0, 1], got {lam!r}")
    return (1.0 - lam) * ce_loss + lam * graph_loss

