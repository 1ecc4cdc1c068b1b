"""Time the G-Loss head: graph + propagation + loss, forward and backward, on the CPU.

    python benchmarks/lpa_head.py [--repeats 30] [--dim 384] [--classes 8]

For n = 128, 512 and 1024 random embeddings (d = 384, the MiniLM width), one step is
``g_loss(embeddings, labels, mask, ...)`` then ``.backward()``: the Gaussian kernel, the paper's
transition, the closed-form solve on the hidden nodes (30% of n) and the NLL. Prints the median
and the spread in milliseconds, float32 and float64, and ends with the line
``lpa_head_ms_n1024 = <median ms, float32>``. Goal: <= 60 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gloss_lite.losses import g_loss
from gloss_lite.masking import split_mask


def time_step(n: int, dim: int, classes: int, dtype: torch.dtype, repeats: int) -> list[float]:
    generator = torch.Generator().manual_seed(n)
    labels = torch.arange(n) % classes
    base = torch.randn(n, dim, generator=generator, dtype=dtype)
    mask = split_mask(labels, 0.7, generator=generator)
    timings = []
    for repeat in range(repeats + 3):  # 3 warm-up steps
        embeddings = base.clone().requires_grad_()
        start = time.perf_counter()
        loss = g_loss(embeddings, labels, mask, sigma=0.5, num_classes=classes)
        loss.backward()
        elapsed = (time.perf_counter() - start) * 1000
        if repeat >= 3:
            timings.append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d={args.dim}, C={args.classes}")
    print(f"{'n':>6} {'dtype':>8} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    medians = {}
    for n in (128, 512, 1024):
        for dtype in (torch.float32, torch.float64):
            timings = time_step(n, args.dim, args.classes, dtype, args.repeats)
            medians[n, dtype] = statistics.median(timings)
            name = str(dtype).removeprefix("torch.")
            print(f"{n:>6} {name:>8} {medians[n, dtype]:>10.2f} {min(timings):>8.2f} {max(timings):>8.2f}")
    ratio = medians[1024, torch.float64] / medians[1024, torch.float32]
    print(f"float64/float32 at n=1024 = {ratio:.2f}")
    print(f"lpa_head_ms_n1024 = {medians[1024, torch.float32]:.2f}")


if __name__ == "__main__":
    main()
