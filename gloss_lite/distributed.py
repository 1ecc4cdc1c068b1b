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
over the ranks (measured: ``python -m gloss_lite.distributed gradient-check`` writes it as
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
returns its input), so one code path serves one and many devices. ``gloss_lite.train.fit`` uses
them under ``torchrun --nproc_per_node W``; ``GLoss(..., gather=True)`` (``gloss_lite.losses``)
is the loss for any other trainer; ``GatheredLoss`` does the same for any other loss of the
whole batch (SupCon, triplet), by the same argument.

Command line (rank 0 writes the file; an existing file is never overwritten)::

    torchrun --nproc_per_node 2 -m gloss_lite.distributed gradient-check --output grad.json
    python -m torch.distributed.run --nproc_per_node 2 -m gloss_lite.distributed fit-check --output fit.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


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
    """Where this backend's collectives want their tensors: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather(local: torch.Tensor) -> torch.Tensor:
    from torch.distributed import _functional_collectives as collectives

    gather = getattr(collectives, "all_gather_single_autograd", None) or collectives.all_gather_tensor_autograd
    return gather(local.contiguous(), 0, process_group())


def local_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's ``n`` (its number of rows), in rank order; ``[n]`` outside a process group."""
    if world_size() == 1:
        return [int(n)]
    return [int(size) for size in _all_gather(torch.tensor([int(n)], device=device))]


def _gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; uneven sizes are padded to the largest, then cut."""
    if not isinstance(local, torch.Tensor) or local.dim() == 0:
        raise ValueError(f"gather a tensor with one row per document (at least 1-D), got {type(local).__name__} "
                         f"{getattr(local, 'shape', '')}")
    if world_size() == 1:
        return local
    sizes = local_sizes(local.shape[0], local.device)
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

    Every rank must hold the same keys. ``norms`` itself outside a group, or when it is empty.
    """
    if world_size() == 1 or not norms:
        return norms
    keys = sorted(norms)
    squares = torch.tensor([float(norms[key]) ** 2 for key in keys], dtype=torch.float64,
                           device=_collective_device())
    dist.all_reduce(squares)
    return {key: float(value) ** 0.5 for key, value in zip(keys, squares.tolist())}


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
    from .losses import GLoss

    if world_size() == 1 or aux_loss is None:
        return aux_loss
    if isinstance(aux_loss, GLoss):
        aux_loss.gather = True
        return aux_loss
    return GatheredLoss(aux_loss)


def check_supported(config) -> None:
    """Refuse, under a process group, what ``fit`` cannot run as the global-batch run.

    ``encoder_passes=2`` would call the DDP-wrapped encoder twice before one backward pass, and
    ``chunk_size`` (``gloss_lite.cached``) once per chunk, each with its own backward pass.
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


# ---------------------------------------------------------------------------------------------
# Checks for the notebook: run under torchrun, rank 0 writes a JSON file.


def _tiny_problem(sizes, num_classes=3, dim_in=6, dim=4, seed=0):
    """A float64 "encoder" (two linear layers and a tanh) and head, and a global batch split by ``sizes``."""
    generator = torch.Generator().manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(dim_in, 8), torch.nn.Tanh(), torch.nn.Linear(8, dim)).double()
    head = torch.nn.Linear(dim, num_classes).double()
    for parameter in [*encoder.parameters(), *head.parameters()]:
        parameter.data = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
    n = sum(sizes)
    inputs = torch.randn(n, dim_in, generator=generator, dtype=torch.float64)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    return encoder, head, inputs, labels


def _parameters(*modules) -> list[torch.nn.Parameter]:
    return [p for module in modules for p in module.parameters()]


def gradient_check(sizes=(5, 7), lam: float = 0.5, mask_seed: int | None = 0) -> dict:
    """DDP's parameter gradient of G-Loss (+ CE) on the global graph against one process on the whole batch.

    Runs on every rank of a process group of ``len(sizes)`` ranks (or alone, ``sizes`` of one
    entry); rank ``r`` holds ``sizes[r]`` rows of a float64 toy problem. Each rank minimises
    ``lam GLoss(gather=True) + (1 - lam) c_r CE_r``; rank 0 then computes, in the same process
    and without any collective, the gradient of ``lam g_loss + (1 - lam) CE`` on the whole batch
    with the mask the ranks drew. Returns a plain dict: the largest absolute difference of the
    gradients (rank 0), whether the masks agree across ranks and, with a ``mask_seed``, with the
    mask one process draws on the whole batch, the local sizes, and what the gather's backward does.
    """
    from .losses import GLoss, g_loss
    from .masking import split_mask

    size, me = world_size(), rank()
    if len(sizes) != size:
        raise ValueError(f"sizes {list(sizes)} must give one local batch size per process ({size} processes)")
    num_classes, sigma, gamma = 3, 0.8, 0.5
    encoder, head, inputs, labels = _tiny_problem(sizes, num_classes)
    start = sum(sizes[:me])
    mine = slice(start, start + sizes[me])

    parallel_encoder, parallel_head = (
        replicate(module, torch.device("cpu"), find_unused_parameters=False) for module in (encoder, head))
    torch.manual_seed(1234)  # the global generator rank 0 draws a seed from when mask_seed is None
    graph_loss = GLoss(num_classes, sigma, gamma, seed=mask_seed, gather=True)
    embeddings = parallel_encoder(inputs[mine])
    scale = size * sizes[me] / sum(sizes)  # c_r = W n_r / N (no class weights)
    loss = lam * graph_loss(embeddings, labels[mine]) + (1 - lam) * scale * F.cross_entropy(
        parallel_head(embeddings), labels[mine])
    loss.backward()
    mask = graph_loss.last_mask
    masks = _all_ranks(mask.long()) if size > 1 else [mask.long()]

    probe = torch.ones(2, dtype=torch.float64, requires_grad=True)
    gathered = gather_with_grad(probe)
    (gathered * torch.arange(1, len(gathered) + 1, dtype=torch.float64)).sum().backward()
    result = {
        "world_size": size, "local_sizes": local_sizes(sizes[me]), "lam": lam, "mask_seed": mask_seed,
        "masks_agree_across_ranks": all(torch.equal(m, masks[0]) for m in masks),
        "gather_backward": "none (one process)" if size == 1 else (
            "sum over ranks" if float(probe.grad[0]) == size else "local slice"),
        "torch": torch.__version__, "backend": dist.get_backend() if size > 1 else None,
    }
    if me == 0:
        parallel = [p.grad.detach().clone() for p in _parameters(encoder, head)]
        for parameter in _parameters(encoder, head):
            parameter.grad = None
        embeddings = encoder(inputs)
        reference = lam * g_loss(embeddings, labels, mask, sigma=sigma, num_classes=num_classes) + (
            1 - lam) * F.cross_entropy(head(embeddings), labels)
        reference.backward()
        single = [p.grad for p in _parameters(encoder, head)]
        result["max_abs_gradient_difference"] = max(float((a - b).abs().max()) for a, b in zip(parallel, single))
        result["max_abs_gradient"] = max(float(g.abs().max()) for g in single)
        if mask_seed is not None:
            drawn = split_mask(labels, gamma, generator=torch.Generator().manual_seed(mask_seed))
            result["mask_equals_single_process"] = torch.equal(drawn, mask)
    return result


def _all_ranks(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of an equal-shaped ``tensor`` (no gradient), in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor)
    return parts


def _write_new(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path``, which must not exist yet (an existing file is never replaced)."""
    with open(path, "x", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def fit_check(loss: str = "gloss+ce", epochs: int = 2) -> dict:
    """A smoke fit on the course's reviews with a tiny random BERT, under the current process group.

    Returns the history's losses and a fingerprint of the final weights (their sum) on rank 0,
    every rank's fingerprint, and whether they are all equal.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .data import load_dataset
    from .encoders import Encoder, default_model_path
    from .train import TrainConfig, fit

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    encoder = Encoder(model, tokenizer, max_length=32, name="tiny")
    train, val, _ = load_dataset("reviews_sentiment")
    config = TrainConfig(loss=loss, epochs=epochs, batch_size=8, lr=1e-3, head_lr=1e-2, device="cpu",
                         progress=False, sigma=0.5, lpa_eval=False)
    result = fit(train.sample(24, seed=0), val.sample(12, seed=0), config, encoder=encoder)
    weights = sum(float(p.detach().double().sum()) for p in [*encoder.parameters(), *result.head.parameters()])
    every_rank = [weights]
    if world_size() > 1:
        every_rank = [None] * world_size()
        dist.all_gather_object(every_rank, weights)
    return {"world_size": world_size(), "history": [{k: row[k] for k in ("epoch", "loss", "ce", "aux", "val_macro_f1")}
                                                    for row in result.history], "weight_sum": weights,
            "weight_sums_by_rank": every_rank, "weights_agree_across_ranks": len(set(every_rank)) == 1}


CHECKS = {"gradient-check": gradient_check, "fit-check": fit_check}


def main(argv=None) -> int:
    """``gradient-check`` or ``fit-check`` under ``torchrun``; rank 0 writes ``--output`` (a new file)."""
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--output", required=True, help="the JSON file to write (must not exist yet)")
    parser.add_argument("--seed", type=int, default=0, help="mask seed of gradient-check; -1 for seed=None")
    parser.add_argument("--loss", default="gloss+ce", help="the loss of fit-check (a TrainConfig.loss)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists():
        parser.error(f"{output} exists; this command never overwrites a file: choose a new path")
    if not output.parent.is_dir():
        parser.error(f"the folder of {output} does not exist")
    started = init_from_environment(torch.device("cpu"))
    try:
        if args.check == "gradient-check":
            sizes = [5 + 2 * r for r in range(world_size())]  # uneven: 5, 7, 9, ...
            results = [gradient_check(sizes, lam, None if args.seed < 0 else args.seed) for lam in (1.0, 0.5)]
            payload = {"check": args.check, "runs": results}
        else:
            payload = {"check": args.check, **fit_check(args.loss)}
        if rank() == 0:
            _write_new(output, payload)
            print(f"wrote {output}")
        barrier()
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
