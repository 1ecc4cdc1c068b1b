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

Both accept per-class weights (``class_weights``), as ``cross_entropy`` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .graph import SCHEMES, check_embeddings, check_sigma, gaussian_affinity, transition_matrix
from .lpa import check_labels, propagate
from .masking import split_mask

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

    Returns:
        A scalar tensor. Half-precision embeddings are promoted to float32 for the solve.

    Raises:
        ValueError: bad sigma (or one for which the kernel is degenerate, see
            ``graph.check_kernel_width``), shapes, labels, class weights or options; no hidden
            node; a hidden class that no visible node carries (propagation could never predict
            it; draw the mask with ``split_mask(..., stratified=True)``).
    """
    _check_options(scheme, target)
    check_embeddings(embeddings)
    check_sigma(sigma)
    check_labels(labels, labeled_mask, num_classes, embeddings.shape[0])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}"
        )
    if labeled_mask.all():
        raise ValueError("no hidden node: every label is visible, so there is nothing to score; lower gamma")
    weights = _check_class_weights(class_weights, num_classes)
    labeled_mask = labeled_mask.to(embeddings.device)
    labels = labels.to(embeddings.device).long()  # int32, uint8, ... ids: nll_loss wants int64
    hidden = (~labeled_mask).nonzero().flatten()
    hidden_labels = labels[hidden]
    if weights is not None and not (weights[hidden_labels.to(weights.device)] > 0).any():
        raise ValueError(
            f"class_weights are 0 for every hidden class ({sorted(hidden_labels.unique().tolist())}), so the "
            "weighted mean over the hidden nodes is 0/0; give those classes a positive weight"
        )
    missing = set(hidden_labels.unique().tolist()) - set(labels[labeled_mask].unique().tolist())
    if missing:
        raise ValueError(
            f"hidden classes {sorted(missing)} have no visible node, so propagation gives them "
            "probability 0; draw the mask with split_mask(labels, gamma, stratified=True)"
        )

    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.float()
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        log_affinity = gaussian_affinity(embeddings, sigma, log=True)
        transition = transition_matrix(log_affinity, scheme, log=True)
        distributions = propagate(transition, labels, labeled_mask, num_classes)

    hidden_distributions = distributions.index_select(0, hidden)
    if weights is not None:
        weights = weights.to(device=embeddings.device, dtype=hidden_distributions.dtype)
    if target == "nll":
        tiny = torch.finfo(hidden_distributions.dtype).tiny
        log_probs = hidden_distributions.clamp_min(tiny).log()
        return F.nll_loss(log_probs, hidden_labels, weight=weights)
    return F.cross_entropy(hidden_distributions, hidden_labels, weight=weights)


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
        scheme, target, class_weights: as in ``g_loss``.
        stratified: draw the mask per class (``gloss_lite.masking.split_mask``).
        seed: seed of the module's own mask generator; the same seed gives the same sequence of
            masks. ``None`` uses torch's global generator.

    After each call, ``last_mask`` holds the mask that was drawn.
    """

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
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(scheme, target)
        check_sigma(sigma)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma is the fraction of visible labels and must lie in (0, 1), got {gamma!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.sigma = sigma if isinstance(sigma, torch.Tensor) else float(sigma)
        self.gamma = float(gamma)
        self.scheme = scheme
        self.target = target
        self.stratified = stratified
        self.register_buffer("class_weights", _check_class_weights(class_weights, num_classes))
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.last_mask: torch.Tensor | None = None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mask = split_mask(labels, self.gamma, generator=self.generator, stratified=self.stratified)
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
        )

    def extra_repr(self) -> str:
        sigma = float(torch.as_tensor(self.sigma).detach())
        return (
            f"num_classes={self.num_classes}, sigma={sigma:g}, gamma={self.gamma:g}, "
            f"scheme={self.scheme!r}, target={self.target!r}"
        )


def mix_losses(ce_loss: torch.Tensor, graph_loss: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1 - lam) * CE + lam * G-Loss``: ``lam = 0`` is plain CE, ``lam = 1`` is G-Loss alone."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0 or math.isnan(lam):
        raise ValueError(f"lam weighs G-Loss against CE and must lie in [0, 1], got {lam!r}")
    return (1.0 - lam) * ce_loss + lam * graph_loss


# ---------------------------------------------------------------------------------------------
# Baselines the paper compares with (taught in notebooks/06_comparing_losses.ipynb). Each is a
# module with forward(embeddings, labels), like GLoss, wrapping pytorch-metric-learning's
# implementation. All three L2-normalise the embeddings first (cosine geometry), as G-Loss does.


class SupConLoss(torch.nn.Module):
    """Supervised contrastive loss (Khosla et al., 2020).

    For each anchor ``i`` and each positive ``p`` (same label), with ``s_ij`` the cosine
    similarity and ``tau`` the temperature:
    ``-log( exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau) )``, averaged over the pairs.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        from pytorch_metric_learning.losses import SupConLoss as _SupCon

        self.loss = _SupCon(temperature=temperature)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings.float(), labels)


class TripletLoss(torch.nn.Module):
    """Triplet margin loss ``max(0, d(a, p) - d(a, n) + margin)`` on L2-normalised embeddings.

    ``mining="all"`` (batch-all) averages over every valid triplet of the batch whose loss is
    positive; ``mining="hard"`` (batch-hard, Hermans et al., 2017) keeps, per anchor, the
    farthest positive and the nearest negative.
    """

    MININGS = ("all", "hard")

    def __init__(self, margin: float = 0.1, mining: str = "all") -> None:
        super().__init__()
        if mining not in self.MININGS:
            raise ValueError(f"mining must be one of {self.MININGS}, got {mining!r}")
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        from pytorch_metric_learning.losses import TripletMarginLoss
        from pytorch_metric_learning.miners import BatchHardMiner

        self.mining = mining
        self.loss = TripletMarginLoss(margin=margin)
        self.miner = BatchHardMiner() if mining == "hard" else None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


class ContrastiveLoss(torch.nn.Module):
    """Pairwise contrastive loss (Hadsell, Chopra and LeCun, 2006) on L2-normalised embeddings.

    Positive pairs pay ``d``, negative pairs ``max(0, margin - d)``; each part is averaged over
    its pairs with a non-zero loss and the two parts are added.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        from pytorch_metric_learning.losses import ContrastiveLoss as _Contrastive

        self.loss = _Contrastive(pos_margin=0.0, neg_margin=margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings.float(), labels)
