"""A graph larger than memory allows: cached embeddings (the GradCache pattern).

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``.

G-Loss couples every document of a batch (propagation runs over the whole graph), so its graph
is as large as the batch, and a plain step holds the encoder's activations for all ``N``
documents at once. But the loss needs only the embeddings ``E`` (``N x d``), and ``d`` is small
(384 for MiniLM) beside the activations of a transformer. ``cached_backward`` uses this in three
steps, holding activations for one chunk of ``chunk_size`` documents at a time:

1. **Embed without gradient.** ``E`` is computed chunk by chunk under ``torch.no_grad()``, in
   train mode (dropout on). Before each chunk ``k`` the random state is saved (``RandomState``,
   the CPU's and the CUDA device's generators).
2. **Loss on the cached embeddings.** ``E`` becomes a leaf that requires grad; the loss is
   computed on it and ``loss.backward()`` gives ``G = dLoss/dE`` (``N x d``). Parameters the
   loss uses directly (the head's) receive their gradient here.
3. **Re-embed with gradient.** Each chunk ``k`` is embedded again with gradient, its random
   state replayed inside ``torch.random.fork_rng``, and ``E_k.backward(G_k)`` pushes its slice
   of ``G`` into the encoder's parameters; then the chunk's activations are freed.

Why the gradient is exact: by the chain rule,

    dLoss/dtheta = sum_i (dLoss/dE_i) (dE_i/dtheta) = sum_k  G_k^T (dE_k/dtheta),

and ``E_k`` depends on the parameters ``theta`` and on chunk ``k``'s texts only (a transformer
with an attention mask embeds each text on its own; a batch-norm layer would break this). Step 3
recomputes the very ``E_k`` of step 1: the same weights, the same texts in the same chunk, and
the same dropout masks, because the random state is replayed. Its vector-Jacobian product with
``G_k`` is therefore chunk ``k``'s term of the sum, and the parameter gradients accumulate over
the chunks to the gradient of one ``loss.backward()`` through all ``N`` embeddings at once
(rounding aside: the terms are added in another order). Without the replay, step 3 would draw
new dropout masks: ``G`` would belong to other embeddings than those it is applied to.

The price is a second encoder forward pass per step (a forward pass is about a third of forward
plus backward; ``benchmarks/graph_scale.py`` measured about 1.4 times the CPU time of a plain
step); the gain is memory that grows with ``chunk_size``, not with ``N`` (there, about 0.2 GiB
for any graph of up to 1024 documents, where a plain step held 6 GiB at 1024).

The "plain" step that this equals, dropout on, is the one that embeds the same chunks with
gradient and backpropagates once (``torch.cat([encoder(chunk) for chunk in chunks])``). One
encoder call on all ``N`` texts draws its dropout masks in another order (and pads all texts to
one length), so it gives an equally valid but different random draw; with dropout off the two
agree up to rounding.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Sequence

import torch

from ..checks import check_int

__all__ = ["cached_backward", "check_chunk_size", "RandomState"]


class RandomState:
    """The random state of torch's CPU generator (and of a CUDA device's) as it is when created.

    ``with state:`` runs its block from that saved state inside ``torch.random.fork_rng``, which
    puts back the state that held just before the block, so code after the block is unaffected
    by the replay. Use it to repeat a random computation (dropout) exactly::

        state = RandomState()
        first = torch.nn.functional.dropout(x, 0.1)
        with state:
            again = torch.nn.functional.dropout(x, 0.1)   # the same mask: again == first

    ``device``: a CUDA device whose generator is saved and replayed too (CUDA dropout draws
    from it); None or a CPU device saves the CPU generator only.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        device = torch.device(device) if device is not None else None
        self.cuda_devices = [device] if device is not None and device.type == "cuda" else []
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = [torch.cuda.get_rng_state(cuda) for cuda in self.cuda_devices]
        self._fork: AbstractContextManager[None] | None = None

    def __enter__(self) -> "RandomState":
        if self._fork is not None:
            raise RuntimeError("this RandomState is already being replayed; nest two RandomState objects instead")
        fork = torch.random.fork_rng(devices=self.cuda_devices)
        fork.__enter__()
        self._fork = fork
        torch.set_rng_state(self.cpu_state)
        for cuda, state in zip(self.cuda_devices, self.cuda_states):
            torch.cuda.set_rng_state(state, cuda)
        return self

    def __exit__(self, *exc_info) -> None:
        fork, self._fork = self._fork, None
        assert fork is not None, "__exit__ without __enter__"
        fork.__exit__(*exc_info)


def check_chunk_size(chunk_size, *, allow_none: bool = False) -> int | None:
    """``chunk_size`` if it is a positive int (or None with ``allow_none``); otherwise a ``ValueError``."""
    check_int("chunk_size", chunk_size, allow_none=allow_none,
              what=" (the number of documents embedded with gradient at a time, such as 32)")
    return chunk_size


def cached_backward(
    encoder: torch.nn.Module,
    texts: Sequence[str],
    loss_of_embeddings: Callable[..., torch.Tensor],
    chunk_size: int,
    *,
    passes: int = 1,
    autocast: bool | torch.dtype = False,
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, ...]]:
    """Backpropagate ``loss_of_embeddings(E)`` through ``encoder`` holding one chunk's activations at a time.

    Runs the three steps of this module's docstring and leaves in ``.grad`` of the encoder's
    parameters (and of any parameter the loss uses, such as a head) what ``loss.backward()``
    through ``E = torch.cat([encoder(chunk) for chunk in chunks])`` would leave, dropout
    included. Gradients are accumulated, as by ``backward``: zero them before, as usual.

    Args:
        encoder: the model (an ``Encoder``, or its ``DistributedDataParallel`` replica), in the mode
            to train in (``encoder.train()`` for dropout).
        texts: the ``N`` documents of the graph.
        loss_of_embeddings: called once with the ``N x d`` embeddings (a leaf that requires
            grad; ``passes`` of them) and returning the scalar loss.
        chunk_size: documents embedded at a time (positive int; ``>= N`` is one chunk).
        passes: 2 embeds the texts twice (each pass its own dropout, as two encoder calls would)
            and calls ``loss_of_embeddings(E_1, E_2)``.
        autocast: run the encoder under autocast on its device, its output cast to float32, as
            ``gloss_lite.training.fit`` does with ``amp``: True for bfloat16, or a dtype
            (``torch.float16``); False keeps the encoder's dtype.
        scale: applied to the loss before the backward pass (``torch.amp.GradScaler.scale`` for
            fp16): every gradient, the encoder's and the head's, then carries the scale, to be
            unscaled before clipping and the optimiser step. The returned loss is unscaled.

    Returns:
        ``(loss, embeddings)``: the loss (detached) and the embeddings, detached (a tuple of
        ``passes`` tensors when ``passes == 2``).

    Raises:
        ValueError: a chunk size that is not a positive int, ``passes`` not 1 or 2, no texts,
            or a loss that is not a scalar tensor.
    """
    check_chunk_size(chunk_size)
    if passes not in (1, 2) or isinstance(passes, bool):
        raise ValueError(f"passes must be 1 or 2 (encoder passes over the texts), got {passes!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: give the documents of the graph")
    chunks = [texts[start : start + chunk_size] for start in range(0, len(texts), chunk_size)]
    device = next(encoder.parameters()).device

    dtype = torch.bfloat16 if autocast is True else autocast

    def embed(chunk):
        precision = torch.autocast(device_type=device.type, dtype=dtype) if autocast else nullcontext()
        with precision:
            output = encoder(chunk)
        return output.float() if autocast else output

    # Step 1: every embedding without gradient, the random state saved before each chunk.
    states: list[list[RandomState]] = []  # states[p][k]: before chunk k of pass p
    cached: list[torch.Tensor] = []
    with torch.no_grad():
        for _ in range(passes):
            states.append([])
            parts = []
            for chunk in chunks:
                states[-1].append(RandomState(device))
                parts.append(embed(chunk))
            cached.append(torch.cat(parts).requires_grad_())

    # Step 2: the loss on the cached embeddings, backward to them (and to the head).
    loss = loss_of_embeddings(*cached)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""
        raise ValueError(f"loss_of_embeddings must return a scalar tensor, got {type(loss).__name__}{shape}")
    (scale(loss) if scale is not None else loss).backward()

    # Step 3: each chunk again with gradient, its dropout replayed, fed its slice of dLoss/dE.
    for leaf, pass_states in zip(cached, states):
        if leaf.grad is None:  # a pass the loss does not use: no gradient to push
            continue
        for number, (chunk, state) in enumerate(zip(chunks, pass_states)):
            with state:
                part = embed(chunk)
            start = number * chunk_size
            part.backward(leaf.grad[start : start + len(chunk)])
    embeddings = tuple(leaf.detach() for leaf in cached)
    return loss.detach(), embeddings[0] if passes == 1 else embeddings
