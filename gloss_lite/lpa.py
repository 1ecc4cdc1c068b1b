"""Label propagation (LPA) on a graph's transition matrix.

Taught in ``notebooks/02_label_propagation.ipynb``.

Split the nodes into the labelled set ``L`` (labels visible) and the unlabelled set ``U``
(labels hidden), order the transition matrix ``T`` accordingly and let ``Y_L`` be the one-hot
labels of ``L``:

    T = [[T_LL, T_LU],          F = [[Y_L],
         [T_UL, T_UU]]               [F_U]]

Label propagation (Zhu and Ghahramani, 2002) repeats ``F <- T F`` and clamps the labelled rows
back to ``Y_L``. Its fixed point, already given in closed form by Zhu and Ghahramani (2002), is
the harmonic solution of Zhu, Ghahramani and Lafferty (2003): every hidden node's distribution
is the ``T``-weighted average of its neighbours':

    F_U = T_UU F_U + T_UL Y_L   <=>   F_U = (I - T_UU)^-1 T_UL Y_L.

``I - T_UU`` is invertible when every hidden node can reach a visible one. A tiny kernel width
can cut a group of hidden nodes off in floating point (their mutual weights round to 1, all
others to 0), so ``propagate`` first mixes ``T`` with a uniform jump of weight ``teleport``,
as PageRank does: ``T' = (1 - teleport) T + teleport (J - I) / (n - 1)``. Rows still sum to 1,
the system is always solvable, a cut-off node receives the visible nodes' label mix, and for a
connected graph the change to ``F`` is of order ``teleport`` (1e-10 in float64, 1e-6 in
float32 by default; pass ``teleport=0`` for the textbook formula).

Both methods are differentiable with respect to ``T`` (``torch.linalg.solve_ex`` has a
gradient), which is what makes G-Loss a loss.
"""

from __future__ import annotations

import warnings

import torch

from .checks import check_class_range, check_int, class_ids

__all__ = [
    "check_labels",
    "check_transition",
    "default_teleport",
    "METHODS",
    "propagate",
    "node_indices",
]

METHODS = ("closed_form", "iterative")


def default_teleport(dtype: torch.dtype) -> float:
    """The default jump weight: 1e-10 for float64, 1e-6 for lower precisions."""
    return 1e-10 if dtype == torch.float64 else 1e-6




def check_transition(transition: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``transition`` is a square, finite, row-stochastic float matrix.

    Rows must sum to 1 within ``1e-8`` (float64), ``1e-4`` (float32) or ``5e-2`` (16-bit floats),
    and every entry must be >= 0; the error names the first bad row.
    """
    if not isinstance(transition, torch.Tensor) or not transition.is_floating_point():
        got = transition.dtype if isinstance(transition, torch.Tensor) else type(transition).__name__
        raise ValueError(f"transition must be a float tensor, got {got}")
    n = transition.shape[0] if transition.dim() else 0
    if transition.dim() != 2 or transition.shape != (n, n):
        raise ValueError(f"transition must be square n x n, got shape {tuple(transition.shape)}")
    values = transition.detach()
    if not torch.isfinite(values).all():
        rows = (~torch.isfinite(values)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"transition holds NaN or Inf (rows {rows[:10]}); check the affinity and sigma")
    if (values < 0).any():
        rows = (values < 0).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"transition has negative entries (rows {rows[:10]}); a transition matrix is >= 0")
    tolerance = {torch.float64: 1e-8, torch.float32: 1e-4}.get(values.dtype, 5e-2)
    error = (values.double().sum(dim=1) - 1.0).abs()
    if (error > tolerance).any():
        row = int(error.argmax())
        raise ValueError(
            f"transition rows must sum to 1 (row-stochastic), but row {row} sums to "
            f"{float(values[row].double().sum()):.6g}; build it with gloss_lite.graph.transition_matrix(W)"
        )


def check_labels(labels: torch.Tensor, labeled_mask: torch.Tensor, num_classes: int, n: int) -> None:
    """Raise ``ValueError`` unless labels and mask fit ``n`` nodes and visible labels lie in [0, C)."""
    check_int("num_classes", num_classes)
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a 1-D integer tensor of class ids, got {type(labels).__name__}; "
                         f"use torch.as_tensor(labels, dtype=torch.long)")
    class_ids(labels)
    if not isinstance(labeled_mask, torch.Tensor) or labeled_mask.dtype != torch.bool:
        raise ValueError("labeled_mask must be a bool tensor, True where the label is visible")
    if len(labels) != n or labeled_mask.shape != (n,):
        raise ValueError(
            f"shapes disagree: {n} nodes, {len(labels)} labels, mask of shape {tuple(labeled_mask.shape)}"
        )
    if not labeled_mask.any():
        raise ValueError("no visible label: labeled_mask has no True entry, nothing to propagate")
    check_class_range(labels[labeled_mask], num_classes, name="visible labels")


def propagate(
    transition: torch.Tensor,
    labels: torch.Tensor,
    labeled_mask: torch.Tensor,
    num_classes: int,
    *,
    method: str = "closed_form",
    teleport: float | None = None,
    tol: float | None = None,
    max_iter: int = 10_000,
    check: bool = True,
) -> torch.Tensor:
    """Propagate the visible labels to the hidden nodes.

    Args:
        transition: ``n x n`` row-stochastic ``T`` (see ``gloss_lite.graph.transition_matrix``).
        labels: ``n`` integer labels; only the visible ones are read (hidden ones may be -1).
        labeled_mask: ``n`` bools, True where the label is visible.
        num_classes: ``C``.
        method: ``"closed_form"`` solves ``(I - T_UU) F_U = T_UL Y_L``; ``"iterative"`` starts
            from uniform ``F_U``, repeats ``F_U <- T_UU F_U + T_UL Y_L`` (the clamped
            ``F <- T F``), renormalises the rows, and stops when no entry moves more than ``tol``.
        teleport: weight of the uniform jump mixed into ``T`` (module docstring); ``None`` picks
            ``default_teleport(dtype)``.
        tol: stopping tolerance of the iterative method (``None``: 1e-12 in float64, 1e-6 else).
        max_iter: iteration cap of the iterative method (a ``RuntimeWarning`` if reached).
        check: False skips the checks that read tensor values (``check_transition``,
            ``check_labels``, a singular system): for a caller that has checked its inputs, such
            as a training step, which then never waits for the GPU. Keep the labels and the mask on
            the CPU: the indices of the visible and hidden nodes are then found there. A singular
            system (possible only with ``teleport=0``) gives NaN rows instead of an error.

    Returns:
        ``n x C`` label distributions: visible rows one-hot, hidden rows ``F_U``; every row sums
        to 1. Same dtype and device as ``transition``, differentiable with respect to it. A
        float16 or bfloat16 ``transition`` is solved in float32 and the result cast back.

    Raises:
        ValueError: a transition that is not square, finite, non-negative and row-stochastic
            (``check_transition``); labels that are not integer class ids (bool, float, ...;
            int8 to int64 are accepted); a teleport outside [0, 1]; a bad mask or method.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if check:
        check_transition(transition)
        check_labels(labels, labeled_mask, num_classes, transition.shape[0])
    if teleport is not None and (isinstance(teleport, bool) or not isinstance(teleport, (int, float))
                                 or not 0.0 <= teleport <= 1.0):
        raise ValueError(f"teleport is the weight of the uniform jump and must lie in [0, 1], got {teleport!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if transition.dtype in (torch.float16, torch.bfloat16):  # the solve needs float32 or float64
        return _propagate(transition.float(), labels, labeled_mask, num_classes, method=method,
                          teleport=teleport, tol=tol, max_iter=max_iter, check=check).to(transition.dtype)
    return _propagate(transition, labels, labeled_mask, num_classes, method=method, teleport=teleport,
                      tol=tol, max_iter=max_iter, check=check)


def node_indices(labeled_mask: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(visible, hidden)``: the indices of the visible and of the hidden nodes, on ``device``.

    Found where the mask lives (on the CPU no GPU is waited for), then copied without blocking.
    """
    visible = labeled_mask.nonzero().flatten()
    hidden = (~labeled_mask).nonzero().flatten()
    return visible.to(device, non_blocking=True), hidden.to(device, non_blocking=True)


def _propagate(transition, labels, labeled_mask, num_classes, *, method, teleport, tol, max_iter, check):
    """``propagate`` on checked inputs."""
    n = transition.shape[0]
    labels = labels.long()
    visible, hidden = node_indices(labeled_mask, transition.device)
    one_hot = torch.zeros(n, num_classes, dtype=transition.dtype, device=transition.device)
    one_hot[visible, labels.to(transition.device, non_blocking=True)[visible]] = 1.0  # Y_L (no value checks)
    if len(hidden) == 0:
        return one_hot

    rows = transition.index_select(0, hidden)  # only the hidden rows of T enter the solution
    t_uu = rows.index_select(1, hidden)
    source = rows.index_select(1, visible) @ one_hot[visible]  # T_UL Y_L
    teleport = default_teleport(transition.dtype) if teleport is None else teleport
    if teleport:  # T' = (1 - teleport) T + teleport (J - I) / (n - 1), restricted to these rows
        jump = teleport / (n - 1)
        no_self_loop = 1.0 - torch.eye(len(hidden), dtype=t_uu.dtype, device=t_uu.device)
        t_uu = (1.0 - teleport) * t_uu + jump * no_self_loop
        source = (1.0 - teleport) * source + jump * one_hot[visible].sum(dim=0)

    if method == "closed_form":
        identity = torch.eye(len(t_uu), dtype=t_uu.dtype, device=t_uu.device)
        f_hidden, info = torch.linalg.solve_ex(identity - t_uu, source)  # no host sync on the GPU
        if check and info.item() != 0:
            raise torch.linalg.LinAlgError(
                f"I - T_UU is singular (the solver's info = {info.item()}): some hidden nodes reach no visible "
                "one; keep the default teleport, or use method='iterative'")
        f_hidden = f_hidden.masked_fill(info != 0, float("nan"))  # unchecked: a singular solve gives NaN
    else:
        tol = (1e-12 if transition.dtype == torch.float64 else 1e-6) if tol is None else tol
        f_hidden = torch.full_like(source, 1.0 / num_classes)
        for _ in range(max_iter):
            updated = t_uu @ f_hidden + source
            updated = updated / updated.sum(dim=1, keepdim=True)
            change = (updated - f_hidden).abs().max()
            f_hidden = updated
            if change <= tol:
                break
        else:
            warnings.warn(
                f"iterative propagation did not reach tol={tol} in {max_iter} iterations; "
                "raise max_iter or use method='closed_form'",
                RuntimeWarning,
                stacklevel=3,
            )

    return one_hot.index_copy(0, hidden, f_hidden)
