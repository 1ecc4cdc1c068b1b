"""Collectives for one graph across processes, each a no-op outside a process group.

A leaf: it imports torch only, so a loss can gather without knowing about training. Why the
gather keeps the gradient and needs no rescaling is derived in ``gloss_lite.training.distributed``
(taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "agreed_seed",
    "any_rank",
    "barrier",
    "broadcast_object",
    "gather_labels",
    "gather_with_grad",
    "global_norms",
    "local_sizes",
    "mean_over_ranks",
    "on_rank_zero",
    "process_group",
    "rank",
    "world_size",
]


def process_group():
    """The default process group when one is initialised, else None."""
    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """``W``, the number of processes; 1 outside a process group."""
    return dist.get_world_size() if process_group() is not None else 1


def rank() -> int:
    """This process's rank in ``0 .. W-1``; 0 outside a process group."""
    return dist.get_rank() if process_group() is not None else 0


def _collective_device() -> torch.device:
    """Where this backend's collectives want their tensors: this rank's GPU for NCCL, else the CPU.

    This rank's GPU is ``cuda:LOCAL_RANK`` (torchrun sets it), not the current device: a script
    that initialises NCCL without ``torch.cuda.set_device`` would otherwise put every rank's
    collective on ``cuda:0``. Without ``LOCAL_RANK`` the current device is all there is.
    """
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    return torch.device("cuda", int(local_rank) if local_rank is not None else torch.cuda.current_device())


def _all_gather(local: torch.Tensor) -> torch.Tensor:
    from torch.distributed import _functional_collectives as collectives

    gather = getattr(collectives, "all_gather_single_autograd", None) or collectives.all_gather_tensor_autograd
    return gather(local.contiguous(), 0, process_group())


def local_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's ``n`` (its number of rows), in rank order; ``[n]`` outside a process group."""
    if world_size() == 1:
        return [int(n)]
    return [int(size) for size in _all_gather(torch.tensor([int(n)], device=device))]


MAX_DIMS = 8  # the shapes compared across ranks before a gather have at most this many dimensions


def _check_shapes(local: torch.Tensor) -> list[int]:
    """Every rank's number of rows; a ``ValueError`` on every rank when the other dimensions differ.

    Gloo and NCCL would abort the process (or hang) on a gather of rows of different widths, so
    the shapes are gathered first and compared; every rank sees them all and raises the same error.
    """
    if local.dim() > MAX_DIMS:
        raise ValueError(f"gather tensors of at most {MAX_DIMS} dimensions, got {local.dim()}")
    shape = [local.dim(), *local.shape] + [-1] * (MAX_DIMS - local.dim())
    shapes = _all_gather(torch.tensor([shape], dtype=torch.int64, device=local.device)).tolist()
    shapes = [tuple(row[1 : 1 + row[0]]) for row in shapes]
    if len({shape[1:] for shape in shapes}) > 1:
        shown = ", ".join(f"rank {r}: {list(shape)}" for r, shape in enumerate(shapes))
        raise ValueError(f"the ranks' tensors differ beyond their number of rows ({shown}); every rank must gather "
                         f"rows of one width, such as embeddings of one encoder (the same model on every rank)")
    return [shape[0] for shape in shapes]


def _gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; uneven sizes are padded to the largest, then cut."""
    if not isinstance(local, torch.Tensor) or local.dim() == 0:
        raise ValueError(f"gather a tensor with one row per document (at least 1-D), got {type(local).__name__} "
                         f"{getattr(local, 'shape', '')}")
    if world_size() == 1:
        return local
    sizes = _check_shapes(local)
    largest = max(sizes)
    padding = local.new_zeros((largest - local.shape[0], *local.shape[1:]))
    gathered = _all_gather(torch.cat([local, padding]) if len(padding) else local)
    return torch.cat([gathered[r * largest: r * largest + size] for r, size in enumerate(sizes)])


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """``[X_0; ...; X_{W-1}]``: every rank's rows of ``local`` in rank order, gradients kept.

    The backward sums over the ranks what each rank's loss sends to ``X_r`` (see the module
    docstring). Local sizes may differ between ranks. Outside a process group (or in a group of
    one) ``local`` itself is returned.
    """
    return _gather_rows(local)


def gather_labels(local: torch.Tensor) -> torch.Tensor:
    """Every rank's labels (or any tensor without gradient) in rank order; ``local`` outside a group."""
    return _gather_rows(local.detach())


def broadcast_object(value, src: int = 0):
    """Rank ``src``'s ``value`` on every rank (any picklable value); ``value`` itself outside a group."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src, device=_collective_device())
    return holder[0]


def agreed_seed() -> int:
    """A seed drawn by rank 0 from torch's global generator and sent to every rank.

    Outside a process group it is drawn locally, from the same generator.
    """
    return int(broadcast_object(int(torch.randint(2**62, (1,)))))


def barrier() -> None:
    """Wait for every rank; nothing outside a process group."""
    if world_size() > 1:
        dist.barrier()


def on_rank_zero(function, *args, **kwargs):
    """``function(*args, **kwargs)`` run on rank 0 only, its result sent to every rank.

    An exception on rank 0 is raised on every rank (as a ``RuntimeError`` naming it on the
    others), so no rank waits for a result that will never come.
    """
    outcome = None
    if rank() == 0:
        try:
            outcome = ("ok", function(*args, **kwargs))
        except Exception as error:
            if world_size() == 1:
                raise
            broadcast_object(("error", f"{type(error).__name__}: {error}"))
            raise
    outcome = broadcast_object(outcome)
    if outcome[0] == "error":
        raise RuntimeError(f"rank 0 failed: {outcome[1]}")
    return outcome[1]


def mean_over_ranks(values: dict) -> dict:
    """Each float of ``values`` averaged over the ranks (float64); ``values`` outside a group."""
    if world_size() == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return {key: float(value) / world_size() for key, value in zip(keys, tensor.tolist())}


def global_norms(norms: dict) -> dict:
    """``sqrt(sum_r norms_r[k]^2)`` for each key: the norm over the global batch of a per-rank norm.

    ``norms`` maps names to 0-d tensors, which stay on their device (no host synchronisation).
    Every rank must hold the same keys. ``norms`` itself outside a group, or when it is empty.
    """
    if world_size() == 1 or not norms:
        return norms
    keys = sorted(norms)
    squares = torch.stack([norms[key].detach().double() ** 2 for key in keys])
    dist.all_reduce(squares)
    return dict(zip(keys, squares.sqrt().unbind()))


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """``flags`` (bools or 0/1) or-ed over the ranks, on the flags' device: every rank sees every rank's alarm.

    A rank that stops alone (a NaN only it has seen) would leave the others waiting in the next
    collective; with this, all ranks stop at the same step. ``flags`` itself outside a group.
    """
    if world_size() == 1:
        return flags
    reduced = flags.to(torch.int32, copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return reduced.to(flags.dtype)
