"""The torchrun self-check of one graph across processes (taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``).

Command line (rank 0 writes the file; an existing file is never overwritten)::

    torchrun --nproc_per_node 2 -m gloss_lite.training.ddp_check gradient-check --output grad.json
    python -m torch.distributed.run --nproc_per_node 2 -m gloss_lite.training.ddp_check fit-check --output fit.json

``gradient-check`` compares the DDP gradients of G-Loss on the gathered batch with one process's
gradient on the concatenated batch; ``fit-check`` runs ``fit`` for two epochs and reports every
rank's weight fingerprint. Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..collectives import barrier, gather_with_grad, local_sizes, rank, world_size
from ..losses import GLoss, g_loss
from ..masking import split_mask
from .config import LOSSES
from .distributed import init_from_environment, replicate

__all__ = ["CHECKS", "fit_check", "gradient_check", "main"]


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
    assert mask is not None  # set by the call above
    masks = _all_ranks(mask.long()) if size > 1 else [mask.long()]

    probe = torch.ones(2, dtype=torch.float64, requires_grad=True)
    gathered = gather_with_grad(probe)
    (gathered * torch.arange(1, len(gathered) + 1, dtype=torch.float64)).sum().backward()
    probe_gradient = _gradient(probe)
    result = {
        "world_size": size, "local_sizes": local_sizes(sizes[me]), "lam": lam, "mask_seed": mask_seed,
        "masks_agree_across_ranks": all(torch.equal(m, masks[0]) for m in masks),
        "gather_backward": "none (one process)" if size == 1 else (
            "sum over ranks" if float(probe_gradient[0]) == size else "local slice"),
        "torch": torch.__version__, "backend": dist.get_backend() if size > 1 else None,
    }
    if me == 0:
        parallel = [_gradient(p).detach().clone() for p in _parameters(encoder, head)]
        for parameter in _parameters(encoder, head):
            parameter.grad = None
        embeddings = encoder(inputs)
        reference = lam * g_loss(embeddings, labels, mask, sigma=sigma, num_classes=num_classes) + (
            1 - lam) * F.cross_entropy(head(embeddings), labels)
        reference.backward()
        single = [_gradient(p) for p in _parameters(encoder, head)]
        result["max_abs_gradient_difference"] = max(float((a - b).abs().max()) for a, b in zip(parallel, single))
        result["max_abs_gradient"] = max(float(g.abs().max()) for g in single)
        if mask_seed is not None:
            drawn = split_mask(labels, gamma, generator=torch.Generator().manual_seed(mask_seed))
            result["mask_equals_single_process"] = torch.equal(drawn, mask)
    return result


def _gradient(tensor: torch.Tensor) -> torch.Tensor:
    """The gradient of a tensor the loss used (every parameter here is used, so each has one)."""
    assert tensor.grad is not None, "a tensor the loss used has a gradient after backward()"
    return tensor.grad


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

    from ..data import load_dataset
    from ..encoders import Encoder, default_model_path
    from .config import TrainConfig
    from .loop import fit

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
    every_rank: list[float | None] = [weights]  # rank r's sum at [r]
    if world_size() > 1:
        every_rank = [None] * world_size()
        dist.all_gather_object(every_rank, weights)
    return {"world_size": world_size(), "history": [{k: row[k] for k in ("epoch", "loss", "ce", "aux", "val_macro_f1")}
                                                    for row in result.history], "weight_sum": weights,
            "weight_sums_by_rank": every_rank, "weights_agree_across_ranks": len(set(every_rank)) == 1}


CHECKS = {"gradient-check": gradient_check, "fit-check": fit_check}


def main(argv=None) -> int:
    """``gradient-check`` or ``fit-check`` under ``torchrun``; rank 0 writes ``--output`` (a new file)."""
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.training.ddp_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--output", required=True, help="the JSON file to write (must not exist yet)")
    parser.add_argument("--seed", type=int, default=0, help="mask seed of gradient-check; -1 for seed=None")
    parser.add_argument("--loss", default="gloss+ce", choices=LOSSES, help="the loss of fit-check")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists():
        parser.error(f"{output} exists; this command never overwrites a file: choose a new path")
    if not output.parent.is_dir():
        parser.error(f"the folder of {output} does not exist")
    try:
        started = init_from_environment(torch.device("cpu"))
    except (ValueError, TimeoutError) as error:  # a broken torchrun environment, a process that never came
        parser.error(str(error))
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

