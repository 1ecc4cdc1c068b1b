"""Time one training step with G-Loss + CE against one step with CE alone.

    python benchmarks/step_cost.py [--rounds 20] [--warmup 2] [--batch-size 32] [--max-length 64]
                                   [--device auto] [--threads 1]

Same encoder (the offline MiniLM), same batch (a stratified sample of ``--batch-size``
reviews from ``reviews_sentiment``' train split, tokenised once and padded/truncated to exactly
``--max-length`` tokens), same linear head, same AdamW (encoder lr 2e-5, head lr 1e-3, as
``gloss_lite.training.fit``). A step is forward + backward + optimizer step, in train mode.
Three kinds of step:

- ``ce``: ``CE(head(E), y)`` with ``E`` = the encoder's embeddings of the batch;
- ``gloss+ce (1 pass)``: what ``fit`` does: one encoder pass, ``E`` fed to both
  ``CE(head(E), y)`` and ``GLoss(E, y)``, mixed by ``mix_losses(ce, g, lam)``;
- ``gloss+ce (2 pass)``: the authors' form: one encoder pass for CE, a second one for G-Loss.

The kinds are interleaved in rounds (a fresh random order each round), so load drift on a shared
machine hits all of them alike; ``--warmup`` rounds run first and are not timed. On CUDA the
encoder runs under bfloat16 autocast, as in ``fit``, and every timing is bracketed by
``torch.cuda.synchronize()``. ``--threads`` sets torch's CPU threads (default 1: on a CPU shared
with other jobs, one thread per process was about 3x faster than two; 0 keeps torch's default).
Prints medians and spread of the wall time per kind, then the ratios (on the CPU also the ratios
of this process's CPU time, which other jobs disturb less); the last line
is ``gloss_ce_step/ce_step = <ratio of medians, one-pass form>``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from gloss_lite.data import load_dataset
from gloss_lite.encoders import load_encoder
from gloss_lite.losses import GLoss, mix_losses
from gloss_lite.runtime import pick_device
from gloss_lite.sigma import sigma_sqrt

KINDS = ("ce", "gloss+ce (1 pass)", "gloss+ce (2 pass)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (one step of each kind per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64, help="every text padded/truncated to this")
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 keeps torch's default")
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    train = load_dataset("reviews_sentiment").train.sample(args.batch_size, seed=args.seed)
    encoder = load_encoder(device=device, max_length=args.max_length)
    num_classes = len(train.class_names)
    head = torch.nn.Linear(encoder.dim, num_classes).to(device)
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": 2e-5}, {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01
    )
    batch = encoder.tokenizer(train.texts, padding="max_length", truncation=True, max_length=args.max_length,
                              return_tensors="pt").to(device)
    labels = train.labels.to(device)
    use_amp = device.type == "cuda"

    def embed() -> torch.Tensor:
        """``Encoder.forward`` (mean pooling) on the pre-tokenised, fixed-length batch."""
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            hidden = encoder.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    with torch.no_grad():
        sigma = sigma_sqrt(embed().float())
    gloss = GLoss(num_classes, sigma, args.gamma, seed=args.seed)

    def loss_of(kind: str) -> torch.Tensor:
        embeddings = embed().float()
        ce = F.cross_entropy(head(embeddings), labels)
        if kind == "ce":
            return ce
        if kind == "gloss+ce (2 pass)":
            embeddings = embed().float()  # the authors' second encoder pass, for G-Loss
        return mix_losses(ce, gloss(embeddings, labels), args.lam)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(kind: str) -> tuple[float, float]:
        """Wall seconds and this process's CPU seconds of one step."""
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_of(kind)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - start, time.process_time() - cpu_start

    encoder.train()  # dropout on, as in fit
    order = random.Random(args.seed)
    times, cpu_times = {kind: [] for kind in KINDS}, {kind: [] for kind in KINDS}
    for round_ in range(args.warmup + args.rounds):
        kinds = list(KINDS)
        order.shuffle(kinds)
        for kind in kinds:
            elapsed, cpu = step(kind)
            if round_ >= args.warmup:
                times[kind].append(elapsed)
                cpu_times[kind].append(cpu)

    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch_size} x {args.max_length} tokens, sigma {sigma:.4f}, lam {args.lam}, gamma {args.gamma}, "
          f"{args.rounds} rounds after {args.warmup} warm-up, amp {use_amp}")
    print(f"{'step':<20} {'median ms':>10} {'q1 ms':>8} {'q3 ms':>8} {'min ms':>8} {'max ms':>8}")
    medians = {}
    for kind in KINDS:
        ms = [t * 1000 for t in times[kind]]
        q1, _, q3 = statistics.quantiles(ms, n=4)
        medians[kind] = statistics.median(ms)
        print(f"{kind:<20} {medians[kind]:>10.1f} {q1:>8.1f} {q3:>8.1f} {min(ms):>8.1f} {max(ms):>8.1f}")
    for kind in KINDS[1:]:
        paired = [g / c for g, c in zip(times[kind], times["ce"])]
        q1, _, q3 = statistics.quantiles(paired, n=4)
        print(f"{kind} / ce: ratio of medians {medians[kind] / medians['ce']:.3f}; "
              f"per-round ratios median {statistics.median(paired):.3f} (q1 {q1:.3f}, q3 {q3:.3f})")
    if device.type == "cpu":  # CPU seconds of this process: less sensitive to other jobs than wall time
        cpu = {kind: statistics.median(cpu_times[kind]) for kind in KINDS}
        print("CPU time medians (ms): " + ", ".join(f"{kind} {cpu[kind] * 1000:.1f}" for kind in KINDS))
        print(f"CPU time ratios: 1 pass / ce {cpu[KINDS[1]] / cpu['ce']:.3f}, "
              f"2 pass / ce {cpu[KINDS[2]] / cpu['ce']:.3f}")
    print(f"two-pass gloss_ce_step/ce_step = {medians[KINDS[2]] / medians['ce']:.3f}")
    print(f"gloss_ce_step/ce_step = {medians[KINDS[1]] / medians['ce']:.3f}")


if __name__ == "__main__":
    main()
