"""Time G-Loss's step (forward and backward) compiled by ``torch.compile`` against the eager one.

    python benchmarks/compile_step.py [--sizes 32 128 512] [--dim 384] [--rounds 20] [--warmup 3]
                                      [--device auto] [--threads 1] [--backend inductor]

The step is ``g_loss(E, y, mask, sigma=...)`` on random embeddings ``E`` (``N x dim``, requiring
grad) with ``C = 8`` balanced classes and a stratified mask (``gamma = 0.7``), then ``backward``:
the part of a training step that G-Loss adds beside the encoder. The compiled function is
``torch.compile(g_loss, fullgraph=True)``: the whole loss in one graph (in a compiled region
``g_loss`` takes its fixed-shape path, ``gloss_lite.losses._traced_g_loss``). The first compiled
call (compilation) is timed on its own; then ``--warmup`` untimed rounds, then ``--rounds``
rounds in which the two kinds run in a fresh random order, so that load drift on a shared
machine hits both alike. On CUDA every timing is bracketed by ``torch.cuda.synchronize()``.

Prints, per size, the compile time, the median eager and compiled step times, their ratio, and
the largest difference between the two losses; the last line is
``compiled_step/eager_step = <ratio at the largest size>``.

Measured on a shared 2-core CPU, one thread, torch 2.13.0, inductor, ``--rounds 10``:

    N   compile s  eager ms  compiled ms  ratio
   32      114.45      1.79         2.95   1.65   (the first compilation includes inductor's start-up)
  128       29.41     12.23        10.04   0.82
  512       27.71     92.95        87.32   0.94

The losses agreed to the last printed digit. On the CPU the solve and the matrix products dominate
and compilation gains little; a GPU, where the many small kernels of the eager loss cost more, was
not measured here.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from gloss_lite.losses import g_loss
from gloss_lite.masking import split_mask
from gloss_lite.runtime import pick_device


def timed(function, embeddings, labels, mask, device) -> tuple[float, float]:
    """Seconds of one forward + backward, and the loss."""
    embeddings.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    loss = function(embeddings, labels, mask, sigma=0.3, num_classes=8)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, float(loss.detach())


def measure(size: int, args, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(size)
    labels = torch.arange(size) % 8
    mask = split_mask(labels, 0.7, generator=generator)
    embeddings = torch.randn(size, args.dim, generator=generator).to(device).requires_grad_()
    labels, mask = labels.to(device), mask.to(device)
    torch._dynamo.reset()
    compiled = torch.compile(g_loss, fullgraph=True, backend=args.backend)
    compile_seconds, _ = timed(compiled, embeddings, labels, mask, device)
    kinds = {"eager": g_loss, "compiled": compiled}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    losses: dict[str, float] = {}
    for round_number in range(args.warmup + args.rounds):
        for name in random.sample(list(kinds), len(kinds)):
            seconds, losses[name] = timed(kinds[name], embeddings, labels, mask, device)
            if round_number >= args.warmup:
                times[name].append(seconds)
    eager, fast = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {"N": size, "compile_s": compile_seconds, "eager_ms": 1e3 * eager, "compiled_ms": 1e3 * fast,
            "ratio": fast / eager, "loss_difference": abs(losses["eager"] - losses["compiled"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (0: torch's default)")
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    random.seed(0)
    print(f"device {device}, torch {torch.__version__}, backend {args.backend}, dim {args.dim}")
    print(f"{'N':>6} {'compile s':>10} {'eager ms':>10} {'compiled ms':>12} {'ratio':>7} {'|loss diff|':>12}")
    rows = [measure(size, args, device) for size in args.sizes]
    for row in rows:
        print(f"{row['N']:>6} {row['compile_s']:>10.2f} {row['eager_ms']:>10.2f} {row['compiled_ms']:>12.2f} "
              f"{row['ratio']:>7.2f} {row['loss_difference']:>12.2e}")
    print(f"compiled_step/eager_step = {rows[-1]['ratio']:.3f}")


if __name__ == "__main__":
    main()
