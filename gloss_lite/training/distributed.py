"""One graph across devices: G-Loss on the global batch under data parallelism.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

Under data parallelism each of ``W`` processes (ranks) embeds its own share ``X_r`` (``n_r``
rows) of a global batch of ``N = sum_r n_r`` documents, and ``DistributedDataParallel`` (DDP)
**averages** the parameter gradients over the ranks before the optimiser step. G-Loss is not a
sum over documents: its graph couples every pair, so W small graphs are not one large one. To
build the graph of the global batch, every rank gathers the embeddings of all ranks, in rank
order, ``X = [X_0; ...; X_{W-1}]`` (``gather_with_grad``), gathers the labels
(``gather_labels``), draws the same mask and computes the same loss ``L(X)``.

**Why no rescaling is needed.** The gather must keep the gradient: ``accelerator.gather`` and
``torch.distributed.all_gather`` return tensors cut off from autograd, so G-Loss computed on
them sends no gradient at all into the encoder, silently. torch's functional collective
``all_gather_single_autograd`` keeps it, and its backward is a reduce-scatter that **sums**
over the ranks (measured: ``python -m gloss_lite.training.ddp_check gradient-check`` writes it as
``gather_backward``). Every rank ``s`` holds its own copy ``L_s`` of the same ``L``, so rank
``r`` receives

    ``g_r = sum_s dL_s/dX_r = W dL/dX_r``,

and after DDP's average over ranks the parameter gradient is

    ``(1/W) sum_r (W dL/dX_r) dX_r/dtheta = sum_r dL/dX_r dX_r/dtheta = dL/dtheta``,

the single-process gradient of G-Loss on the concatenated batch: the factor ``W`` of the sum
cancels the ``1/W`` of the average, so G-Loss is used unscaled. (A gather whose backward keeps
only the local slice, or a detached gather with the local rows put back in, gives
``dL/dX_r`` on rank ``r`` and ``dL/dtheta / W`` after the average: the loss would need a
factor ``W``.)

**Cross-entropy** is a mean over documents, computed on the local share only. With per-document
weights ``w_i`` (1 without class weights), rank ``r``'s weighted mean is
``CE_r = sum_{i in r} w_i l_i / S_r`` with ``S_r = sum_{i in r} w_i``, and the global one is
``CE = sum_i w_i l_i / S`` with ``S = sum_r S_r``. Scaling the local mean by
``c_r = W S_r / S`` (``local_batch``) gives ``(1/W) sum_r c_r CE_r = CE`` after averaging:
uneven shares weigh in by their size, and ``c_r = 1`` when ``W = 1``.

Every helper works outside a process group as on one device (world size 1, rank 0: a gather
returns its input), so one code path serves one and many devices. ``gloss_lite.training.fit`` uses
them under ``torchrun --nproc_per_node W``; ``GLoss(..., gather=True)`` (``gloss_lite.losses``)
is the loss for any other trainer; ``GatheredLoss`` does the same for any other loss of the
whole batch (SupCon, triplet), by the same argument.

Command line (rank 0 writes the file; an existing file is never overwritten)::

    torchrun --nproc_per_node 2 -m gloss_lite.training.ddp_check gradient-check --output grad.json
    python -m torch.distributed.run --nproc_per_node 2 -m gloss_lite.training.ddp_check fit-check --output fit.json
"""

from __future__ import annotations

import datetime
import inspect
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..collectives import gather_labels, gather_with_grad, process_group, rank, world_size
from ..losses import GLoss

__all__ = [
    "check_supported",
    "for_global_batch",
    "GatheredLoss",
    "init_from_environment",
    "local_batch",
    "local_device",
    "replicate",
    "environment",
]


def local_batch(batch: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None):
    """This rank's contiguous share of a global batch, and its cross-entropy scale ``c_r = W S_r / S``.

    Args:
        batch: the global batch's document indices, the same on every rank.
        labels: every document's label (indexed by ``batch``).
        weights: optional per-class weights of the cross-entropy.

    Returns:
        ``(indices, scale)``: ``torch.tensor_split(batch, W)[rank]`` (shares differ by at most one
        document) and the float ``c_r`` of the module docstring. ``(batch, 1.0)`` outside a group.

    Raises:
        ValueError: a global batch with fewer documents than processes (a rank would get none).
    """
    size = world_size()
    if size == 1:
        return batch, 1.0
    if len(batch) < size:
        raise ValueError(f"a batch of {len(batch)} documents cannot be shared by {size} processes; "
                         f"use batch_size >= {size} (the batch size is the global graph size)")
    shares = torch.tensor_split(batch, size)
    mine = shares[rank()]

    def total(indices):
        return float(len(indices)) if weights is None else float(weights.cpu()[labels[indices]].double().sum())

    everything = total(batch)
    return mine, size * total(mine) / everything if everything > 0 else 1.0


class _Replica(DistributedDataParallel):
    """DDP that also answers for the wrapped module's attributes (``head.out_features``, ``encoder.dim``)."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def replicate(module: torch.nn.Module, device: torch.device, *, find_unused_parameters: bool = True):
    """``module`` wrapped in ``DistributedDataParallel``; ``module`` itself outside a group.

    ``find_unused_parameters=True``: a Hugging Face encoder computes outputs the pooled embedding
    never uses (BERT's pooler), so some parameters get no gradient; DDP then marks them ready
    instead of waiting for them (their gradient stays None, as on one device). Buffers are not
    re-sent before each forward pass: the encoders' buffers (position ids) never change. The
    wrapper forwards attribute look-ups to ``module``; checkpoints and evaluation use ``module``.
    """
    if world_size() == 1:
        return module
    # DistributedDataParallel's keyword arguments, whose names vary with torch's version
    options: dict[str, Any] = {"device_ids": [device.index] if device.type == "cuda" else None,
                               "find_unused_parameters": find_unused_parameters}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    return _Replica(module, **options)


RENDEZVOUS_TIMEOUT = 120.0  # seconds for all processes to join; GLOSS_LITE_RENDEZVOUS_TIMEOUT overrides it


def _whole_number(name: str, minimum: int = 0) -> int:
    """The environment variable ``name`` as an int >= ``minimum``; a ``ValueError`` naming it otherwise."""
    raw = os.environ[name]
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"the environment variable {name}={raw!r} must be a whole number >= {minimum}; torchrun "
                         f"sets it (torchrun --nproc_per_node N ...), or unset WORLD_SIZE to train in one process")
    return value


def environment() -> tuple[int, int] | None:
    """``(rank, world_size)`` that torchrun set for this process; None for a single process.

    Raises ``ValueError`` naming the variable and the fix for ``WORLD_SIZE`` that is not a whole
    number, or ``WORLD_SIZE > 1`` without ``RANK``, ``MASTER_ADDR`` or ``MASTER_PORT`` (or with a
    rank outside ``0 .. WORLD_SIZE - 1``).
    """
    if "WORLD_SIZE" not in os.environ or _whole_number("WORLD_SIZE", minimum=1) == 1:
        return None
    size = _whole_number("WORLD_SIZE", minimum=1)
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ValueError(
            f"WORLD_SIZE={size} asks for {size} processes, but {', '.join(missing)} {verb} not set: start every "
            f"process with torchrun --nproc_per_node {size} (it sets them), or unset "
            "WORLD_SIZE to train in one process")
    rank, port = _whole_number("RANK"), _whole_number("MASTER_PORT", minimum=1)
    if rank >= size or port > 65535:
        raise ValueError(f"RANK={rank} and MASTER_PORT={port} must lie in 0 .. {size - 1} and 1 .. 65535 "
                         f"(WORLD_SIZE={size}); start the processes with torchrun")
    return rank, size


def init_from_environment(device: torch.device) -> bool:
    """Initialise the default process group when ``torchrun`` started this process and none exists.

    ``WORLD_SIZE > 1`` in the environment (``torchrun`` also sets ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``; ``environment`` checks them): NCCL for a CUDA ``device``
    (after choosing the GPU ``LOCAL_RANK``), gloo for the CPU. The processes must all join
    within ``RENDEZVOUS_TIMEOUT`` seconds (environment variable ``GLOSS_LITE_RENDEZVOUS_TIMEOUT``):
    a missing process raises ``TimeoutError`` then, not after torch's 30 minutes. Collectives
    afterwards keep torch's default timeout. Returns True when it initialised a group.
    """
    if process_group() is not None:
        return False
    found = environment()
    if found is None:
        return False
    rank, size = found
    if device.type == "cuda":
        torch.cuda.set_device(_whole_number("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0)
    limit = float(os.environ.get("GLOSS_LITE_RENDEZVOUS_TIMEOUT", RENDEZVOUS_TIMEOUT))
    try:
        store, rank, size = next(dist.rendezvous("env://", rank=rank, world_size=size,
                                                 timeout=datetime.timedelta(seconds=limit)))
    except (RuntimeError, OSError) as error:  # torch's DistStoreError and DistNetworkError are RuntimeErrors
        raise TimeoutError(
            f"rank {rank} of WORLD_SIZE={size}: the {size} processes did not all meet at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {limit:g} s "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}). "
            f"Start all of them with torchrun --nproc_per_node {size}, or unset WORLD_SIZE to train in one process "
            "(GLOSS_LITE_RENDEZVOUS_TIMEOUT sets the wait in seconds)") from None
    store.set_timeout(datetime.timedelta(minutes=30))  # later waits (rank 0 validating) may be long
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=size)
    return True


def local_device(device: torch.device) -> torch.device:
    """``device``, or in a process group on CUDA, this rank's GPU (``LOCAL_RANK``)."""
    if world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return device


class GatheredLoss(torch.nn.Module):
    """Any batch loss ``loss(embeddings, labels)`` computed on the global batch (``gather_with_grad``).

    Deterministic losses of the whole batch (SupCon, triplet, contrastive) need nothing else:
    every rank computes the same value and, as for G-Loss, needs no rescaling.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(gather_with_grad(embeddings), gather_labels(labels))


def for_global_batch(aux_loss):
    """The trainer's aux loss on the global batch: ``GLoss`` with ``gather=True``, others in ``GatheredLoss``.

    Unchanged outside a process group (or with ``aux_loss`` None).
    """
    if world_size() == 1 or aux_loss is None:
        return aux_loss
    if isinstance(aux_loss, GLoss):
        aux_loss.gather = True
        return aux_loss
    return GatheredLoss(aux_loss)


def check_supported(config) -> None:
    """Refuse, under a process group, what ``fit`` cannot run as the global-batch run.

    ``encoder_passes=2`` would call the DDP-wrapped encoder twice before one backward pass, and
    ``chunk_size`` (``gloss_lite.training.cached``) once per chunk, each with its own backward pass.
    """
    if world_size() > 1 and getattr(config, "chunk_size", None) is not None:
        raise ValueError(
            f"chunk_size={config.chunk_size} is not supported with {world_size()} processes: the cached step runs "
            "the DistributedDataParallel model once per chunk, each with its own backward pass; use chunk_size=None "
            "(several processes already give a graph of batch_size documents), or train in one process")
    if world_size() > 1 and config.encoder_passes != 1:
        raise ValueError(
            f"encoder_passes={config.encoder_passes} is not supported with {world_size()} processes: a second "
            "encoder pass per step would run the DistributedDataParallel model twice before one backward pass; "
            "use encoder_passes=1, or train in one process")

