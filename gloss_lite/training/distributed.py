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

import inspect
import os

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
    options = {"device_ids": [device.index] if device.type == "cuda" else None,
               "find_unused_parameters": find_unused_parameters}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    return _Replica(module, **options)


def init_from_environment(device: torch.device) -> bool:
    """Initialise the default process group when ``torchrun`` started this process and none exists.

    ``WORLD_SIZE > 1`` in the environment (``torchrun`` also sets ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``): NCCL for a CUDA ``device`` (after choosing the GPU
    ``LOCAL_RANK``), gloo for the CPU. Returns True when it initialised one.
    """
    if process_group() is not None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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

