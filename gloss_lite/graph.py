"""The minibatch document-similarity graph.

Taught in ``notebooks/01_similarity_graph.ipynb`` (first met in ``00_overview``).

Given the embeddings ``e_1 .. e_n`` of a minibatch (rows of an ``n x d`` tensor), G-Loss
builds a dense graph whose edge weights are a Gaussian kernel of the distances,

    W_ij = exp(-||e_i - e_j||^2 / (2 sigma^2)),   W_ii = 0,

and turns it into a transition matrix ``T`` (rows sum to 1) for label propagation:

- ``scheme="row"``: ``T = D^-1 W`` with ``D = diag(W 1)``, the random walk ``P`` of Zhu,
  Ghahramani and Lafferty (2003);
- ``scheme="gloss"``: the paper's transition. First the symmetric normalisation
  ``S = D^-1/2 W D^-1/2``, then column normalisation ``C_ij = S_ij / sum_k S_kj``, then row
  normalisation ``T_ij = C_ij / sum_k C_ik``. Columns then rows is the normalisation of Zhu and
  Ghahramani (2002), whose transition divides the columns of ``W`` and whose loop then
  renormalises the rows; the paper applies it to ``S`` instead of ``W``.

Every normalisation is a division by a sum, so it is computed on ``log W`` with ``logsumexp``.
That matters: with a small sigma every ``W_ij`` underflows to 0 in floating point although the
*normalised* weights are perfectly well defined (the row maximum dominates). Working in the
log domain keeps ``T`` finite for sigma from 1e-3 to 1e3 and beyond.

The Gram matrix ``E E^T`` of the kernel is computed in IEEE float32 (``ieee_float32``) even where
the user allowed faster float32 matmuls (``torch.set_float32_matmul_precision("high")``: TF32,
whose inner products keep 10 mantissa bits). The exponent divides that Gram error by ``sigma^2``:
with TF32 emulated on the CPU (inputs rounded to 10 mantissa bits, 128 correlated unit rows of
384 dimensions, three seeds) the cosines were off by up to 0.9e-4 to 1.1e-4, so the log-weights
by up to 0.04 at sigma = 0.05 (every weight off by up to 4%) and 0.001 at sigma = 0.3. The
backward pass runs under the setting in force when it runs (IEEE under the trainer's fp32
policy); its products are not divided by ``sigma^2`` after rounding, so TF32 there costs only
its usual relative rounding.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch
import torch.nn.functional as F

__all__ = [
    "block_contrast",
    "chance_share",
    "check_embeddings",
    "check_kernel_width",
    "check_sigma",
    "gaussian_affinity",
    "knn_sparsify",
    "SCHEMES",
    "squared_distances",
    "transition_matrix",
    "within_class_share",
    "float32_matmul",
    "ieee_float32",
]

SCHEMES = ("gloss", "row")


def _matmul_backends() -> list:
    """torch's per-backend float32 matmul settings (torch >= 2.9); empty on older versions."""
    backends = (torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None))
    return [backend for backend in backends if hasattr(backend, "fp32_precision")]


@contextmanager
def float32_matmul(mode: str):
    """Inside the block, float32 matmuls run in ``mode``: ``"ieee"`` (plain float32) or ``"tf32"``.

    The setting of ``torch.set_float32_matmul_precision`` (or of the per-backend
    ``fp32_precision``) that held before is put back afterwards. ``"tf32"`` lets GPUs of compute
    capability 8.0 and above use TF32 tensor cores; it changes nothing elsewhere.
    """
    if mode not in ("ieee", "tf32"):
        raise ValueError(f"mode must be 'ieee' or 'tf32', got {mode!r}")
    backends = _matmul_backends()
    if backends:
        saved = [backend.fp32_precision for backend in backends]
        for backend in backends:
            backend.fp32_precision = mode
    else:  # torch < 2.9: one global setting
        saved_precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest" if mode == "ieee" else "high")
    try:
        yield
    finally:
        if backends:
            for backend, value in zip(backends, saved):
                backend.fp32_precision = value
        else:
            torch.set_float32_matmul_precision(saved_precision)


def ieee_float32():
    """``float32_matmul("ieee")``: the kernel's Gram matrix and the propagation solve in IEEE float32."""
    return float32_matmul("ieee")


def check_embeddings(embeddings: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``embeddings`` is a finite float ``n x d`` tensor with n >= 2."""
    if not isinstance(embeddings, torch.Tensor):
        raise ValueError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be 2-D (n documents x d features), got shape {tuple(embeddings.shape)}"
        )
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}; use .float()")
    if embeddings.shape[0] < 2:
        raise ValueError(f"a graph needs at least 2 nodes, got {embeddings.shape[0]} embedding(s)")
    if not torch.isfinite(embeddings).all():
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"embeddings contain NaN or Inf (rows {bad[:10]}); check the encoder's output")


def check_sigma(sigma: float | torch.Tensor) -> None:
    """Raise ``ValueError`` unless sigma is a finite positive number or a 0-d float tensor.

    A tensor with more than zero dimensions (even one element) is refused: the kernel has one
    width, and broadcasting a (1,) or (2,) sigma would silently change the shape of ``W``.
    """
    if isinstance(sigma, torch.Tensor):
        if sigma.dim() != 0 or not sigma.is_floating_point():
            raise ValueError(
                f"sigma must be a number or a 0-d float tensor, got a {sigma.dtype} tensor of shape "
                f"{tuple(sigma.shape)}; the kernel has one width (use torch.tensor(0.5), or sigma.squeeze())"
            )
        value = float(sigma.detach())
    else:
        value = sigma
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"sigma must be finite and > 0, got {value}")


def check_kernel_width(sigma: float | torch.Tensor, dtype: torch.dtype, *, normalize: bool = True) -> None:
    """Raise ``ValueError`` when sigma is finite and positive yet the kernel is degenerate in ``dtype``.

    The exponent is ``-d^2 / (2 sigma^2)``. Too small a sigma: ``sigma^2`` or ``1 / sigma^2``
    leaves ``dtype``'s range and the exponent becomes 0/0 or inf. Too large a sigma, on unit rows
    (``normalize=True``, so ``d^2 <= 4``): ``2 / sigma^2`` is below a quarter of ``dtype``'s
    machine epsilon, every weight rounds to exactly 1, the graph ignores the embeddings and the
    gradient is 0 (float32: sigma above about 8e3; float64: about 2e8).
    """
    check_sigma(sigma)
    value = float(sigma.detach()) if isinstance(sigma, torch.Tensor) else float(sigma)
    info = torch.finfo(dtype)
    square = value * value
    low = math.sqrt(max(info.tiny, 1.0 / info.max))
    if square < info.tiny or square == 0.0 or 1.0 / square > info.max:
        raise ValueError(
            f"sigma = {value:g} is too small for {dtype}: sigma^2 leaves its range and the kernel "
            f"exponent would be 0/0 or infinite; use sigma >= {low:.3g} (or float64 embeddings)"
        )
    high = math.sqrt(8.0 / info.eps)
    if normalize and (math.isinf(square) or 2.0 / square < info.eps / 4):
        raise ValueError(
            f"sigma = {value:g} is too large for {dtype}: every weight exp(-d^2 / (2 sigma^2)) rounds to 1, "
            f"so the graph ignores the embeddings and propagation returns the class prior; "
            f"use sigma <= {high:.3g} (see gloss_lite.sigma for estimates)"
        )


def squared_distances(embeddings: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``||e_i - e_j||^2`` as an ``n x n`` tensor.

    With ``normalize=True`` the rows are first scaled to unit length, so the distances lie in
    [0, 4] and ``||e_i - e_j||^2 = 2 - 2 cos(e_i, e_j)``. The diagonal is exactly 0 and no square
    root is taken, so the gradient is finite everywhere.
    """
    check_embeddings(embeddings)
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
    sq_norms = (embeddings * embeddings).sum(dim=1)
    dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * embeddings @ embeddings.T
    dist = dist.clamp_min(0.0)
    return dist * (1.0 - torch.eye(len(dist), dtype=dist.dtype, device=dist.device))


def gaussian_affinity(
    embeddings: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    normalize: bool = True,
    log: bool = False,
    check: bool = True,
) -> torch.Tensor:
    """Gaussian-kernel affinity ``W_ij = exp(-||e_i - e_j||^2 / (2 sigma^2))`` with ``W_ii = 0``.

    Args:
        embeddings: ``n x d`` float tensor, one row per document.
        sigma: kernel width (> 0): a number, or a 0-d tensor (gradients then flow into it).
            Small sigma keeps only the nearest neighbours; large sigma connects everything with
            weight close to 1. A sigma for which the kernel is degenerate in the embeddings'
            dtype is refused (``check_kernel_width``).
        normalize: L2-normalise the rows of ``embeddings`` first (the paper's choice: distances
            then depend on direction only and lie in [0, 4], so one sigma fits every batch).
        log: return ``log W`` instead (diagonal ``-inf``); this never underflows.
        check: False skips the checks that read the embeddings' values (finite, at least two
            rows): for a caller that has checked them, such as a training step, which then runs
            without waiting for the GPU.

    Returns:
        ``n x n`` symmetric tensor.
    """
    check_sigma(sigma)
    if check:
        check_embeddings(embeddings)
    check_kernel_width(sigma, embeddings.dtype, normalize=normalize)
    with ieee_float32():  # a TF32 Gram error would be amplified by 1 / sigma^2
        if normalize:  # ||u_i - u_j||^2 = 2 - 2 u_i.u_j for unit rows, so the exponent is (u_i.u_j - 1) / sigma^2
            unit = F.normalize(embeddings, dim=1)
            log_w = ((unit @ unit.T - 1.0) / sigma**2).clamp_max(0.0)
        else:
            log_w = -squared_distances(embeddings, normalize=False) / (2.0 * sigma**2)
    diagonal = torch.eye(len(log_w), dtype=torch.bool, device=log_w.device)
    log_w = log_w.masked_fill(diagonal, float("-inf"))
    return log_w if log else log_w.exp()


def transition_matrix(
    affinity: torch.Tensor, scheme: str = "gloss", *, log: bool = False, check: bool = True
) -> torch.Tensor:
    """Transition matrix ``T`` (rows sum to 1) of a graph with affinity ``W``.

    Args:
        affinity: ``n x n`` non-negative symmetric ``W``, or ``log W`` when ``log=True``
            (use ``gaussian_affinity(..., log=True)`` when sigma is small).
        scheme: ``"row"`` for ``D^-1 W``; ``"gloss"`` for the paper's symmetric, then column,
            then row normalisation (see the module docstring).
        check: False skips the checks of the values (no NaN, no isolated node), which make the
            host wait for the GPU; a NaN then propagates into ``T``.

    Raises:
        ValueError: unknown scheme, a non-square matrix, or a node with no positive edge
            (its row of ``T`` would be 0/0).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if affinity.dim() != 2 or affinity.shape[0] != affinity.shape[1]:
        raise ValueError(f"affinity must be a square n x n matrix, got shape {tuple(affinity.shape)}")
    if check and not log and not (affinity >= 0).all():
        raise ValueError("affinity must be non-negative and free of NaN (pass log=True for log W)")
    if check and log and (torch.isnan(affinity).any() or torch.isposinf(affinity).any()):
        raise ValueError("log affinity must be free of NaN and +inf (log W <= 0 for a Gaussian kernel)")
    log_w = affinity if log else affinity.log()
    log_degree = torch.logsumexp(log_w, dim=1)
    if check and torch.isneginf(log_degree).any():
        isolated = torch.isneginf(log_degree).nonzero().flatten().tolist()
        hint = "" if log else " (with a small sigma, pass gaussian_affinity(..., log=True) and log=True)"
        raise ValueError(f"nodes {isolated[:10]} have no edge of positive weight{hint}")
    if scheme == "gloss":
        # T = rows(cols(D^-1/2 W D^-1/2)). Column j's factor d_j^-1/2 cancels in the column
        # normalisation and row i's factor d_i^-1/2 in the row normalisation, which leaves
        # T_ij proportional to W_ij / c_j with c_j = sum_k W_kj d_k^-1/2: one sum fewer.
        log_c = torch.logsumexp(log_w - 0.5 * log_degree[:, None], dim=0)
        log_w = log_w - log_c[None, :]
    return torch.softmax(log_w, dim=1)


def knn_sparsify(affinity: torch.Tensor, k: int) -> torch.Tensor:
    """Keep, for every node, only its ``k`` strongest edges; symmetrise by keeping an edge if
    either endpoint chose it (``max(W_kNN, W_kNN^T)``). The diagonal stays 0.

    G-Loss itself uses the dense graph; the kNN graph is the usual alternative in graph-based
    semi-supervised learning and is compared with it in ``notebooks/01_similarity_graph.ipynb``.
    """
    n = affinity.shape[0]
    if affinity.dim() != 2 or affinity.shape != (n, n):
        raise ValueError(f"affinity must be a square n x n matrix, got shape {tuple(affinity.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int between 1 and n - 1 = {n - 1}, got {k!r}")
    without_self = affinity.masked_fill(torch.eye(n, dtype=torch.bool, device=affinity.device), float("-inf"))
    keep = torch.zeros_like(affinity, dtype=torch.bool)
    keep.scatter_(1, without_self.topk(k, dim=1).indices, True)
    keep = keep | keep.T
    return torch.where(keep, affinity, torch.zeros_like(affinity))


def _same_class_off_diagonal(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.as_tensor(labels)
    off = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return (labels[:, None] == labels[None, :]) & off, off


def within_class_share(affinity: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of the off-diagonal edge weight that joins two nodes of the same class.

    Compare it with ``chance_share(labels)``, the value for a graph whose weights are all equal.
    """
    same, off = _same_class_off_diagonal(labels)
    return float(affinity[same].sum() / affinity[off].sum())


def chance_share(labels: torch.Tensor) -> float:
    """Fraction of ordered pairs ``i != j`` with ``y_i = y_j`` (about 1/C for C balanced classes)."""
    same, off = _same_class_off_diagonal(labels)
    return float(same.sum() / off.sum())


def block_contrast(affinity: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean within-class weight over mean between-class weight (off-diagonal); 1 means no class blocks."""
    same, off = _same_class_off_diagonal(labels)
    between = ~same & off
    if not same.any() or not between.any():
        raise ValueError("block_contrast needs at least two classes and a class with two members")
    return float(affinity[same].mean() / affinity[between].mean())
