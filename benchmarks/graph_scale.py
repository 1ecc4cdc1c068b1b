"""Time and peak memory of one G-Loss + CE training step against the graph's size: plain against cached.

    GLOSS_LITE_DATA=<folder holding mr/> python benchmarks/graph_scale.py
        [--sizes 32 64 128 256 512 1024] [--chunk-size 32] [--rounds 3] [--repeat-up-to 256] [--steps 1]
        [--max-length 32] [--threads 1] [--step-timeout 300] [--seed 0] [--quick]

A step trains the offline MiniLM and a linear head on a graph of ``N`` MR training sentences (a
stratified sample), every text truncated to ``--max-length`` tokens: forward, the loss
``mix_losses(CE(head(E), y), GLoss(E, y), 0.5)``, backward, AdamW step, in train mode (dropout
on), as ``gloss_lite.training.fit`` does it. Two kinds of step:

- ``plain``: one encoder call on all ``N`` texts, one ``loss.backward()``: the activations of all
  ``N`` documents are held at once;
- ``cached``: ``gloss_lite.training.cached.cached_backward`` with ``--chunk-size`` documents at a time
  (embed without gradient, backward to the embeddings, re-embed each chunk with gradient).

**Memory.** Each (kind, N) runs in a fresh process, so no allocation of another run is reused.
That process loads the model and the texts, takes one warm-up step on 4 texts (so AdamW's state
exists, as in any step after the first), then measures the first full step: its peak resident set
size (Linux ``VmHWM``, reset just before the step by writing 5 to ``/proc/self/clear_refs``)
minus the resident set size just before it. That is everything the step allocates on top of the
model, the optimiser state and the data: activations, gradients (freed between steps by
``zero_grad(set_to_none=True)``), the cached embeddings and temporaries. glibc's malloc is told
to hand every block above 128 KiB straight back to the system (``MALLOC_MMAP_THRESHOLD_``), so a
freed tensor leaves the resident set at once and the peak is not hidden by memory kept from the
warm-up. Where ``clear_refs`` cannot be written, the peak since the process started
(``resource.getrusage(...).ru_maxrss``) is used instead, and the output says so.

**Time.** In the same process ``--steps`` full steps are timed (wall clock and the process's CPU
time; the first of them is the one whose memory is measured) and their median kept. Each
(kind, N) runs once per round, the runs of a round in a fresh random order, and the median over
the rounds is reported: ``--rounds`` rounds for sizes up to ``--repeat-up-to``, one round above
it (a step at N=1024 takes most of a minute on one thread: three rounds of everything would not
fit in a quarter of an hour). The CPU is shared with other jobs, so wall times are noisy; the
CPU seconds, which other jobs disturb less, are shown beside them. Freeing memory straight back
to the system costs page faults in every step, alike for both kinds. A run that takes longer
than ``--step-timeout`` seconds per step, or that dies (out of memory), is reported as such,
never extrapolated.

The last two lines are

    peak_memory_ratio = <peak of cached at the largest N / peak of plain at N=64>   (goal <= 1.5)
    time_ratio = <median over the sizes both kinds ran of median cached / median plain>   (goal <= 1.4)

``--quick`` is a smoke run: sizes 16 and 32, chunks of 8, one round, one timed step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

KINDS = ("plain", "cached")
MMAP_THRESHOLD = 131072  # bytes: larger blocks are mmap'ed, so freeing them returns them to the system
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def resident_kb() -> int:
    """This process's resident set size now, in KiB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KB


def reset_peak() -> bool:
    """Reset the kernel's peak resident set size (``VmHWM``) to the current size; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_kb(reset_worked: bool) -> int:
    """The peak resident set size in KiB: since the last reset, or since the process started."""
    if reset_worked:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def peak_memory_of(step) -> dict:
    """Run ``step()`` once; return its peak resident memory above the resident size just before it (MiB)."""
    import gc

    gc.collect()
    before = resident_kb()
    reset_worked = reset_peak()
    step()
    return {"peak_mb": (peak_kb(reset_worked) - before) / 1024, "before_mb": before / 1024,
            "peak_source": "VmHWM after clear_refs" if reset_worked else "ru_maxrss since the start"}


def worker(kind: str, n: int, args) -> dict:
    """One (kind, N) run: the memory of one step after a warm-up, then ``args.steps`` timed steps."""
    import torch
    import torch.nn.functional as F

    from gloss_lite.data import load_dataset
    from gloss_lite.encoders import load_encoder
    from gloss_lite.losses import GLoss, mix_losses
    from gloss_lite.sigma import sigma_sqrt
    from gloss_lite.training.cached import cached_backward

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = load_dataset("mr").train.sample(n, seed=args.seed)
    texts, labels = train.texts, train.labels
    encoder = load_encoder(device="cpu", max_length=args.max_length)
    head = torch.nn.Linear(encoder.dim, len(train.class_names))
    sigma = sigma_sqrt(encoder.embed(texts[:64], progress=False))  # one sigma for every N: the first 64 texts
    gloss = GLoss(len(train.class_names), sigma, 0.7, seed=args.seed)
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": 2e-5}, {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    encoder.train()

    def step(batch_texts, batch_labels) -> None:
        def loss_of(embeddings):
            return mix_losses(F.cross_entropy(head(embeddings), batch_labels), gloss(embeddings, batch_labels), 0.5)

        optimizer.zero_grad(set_to_none=True)
        if kind == "plain":
            loss_of(encoder(batch_texts)).backward()
        else:
            cached_backward(encoder, batch_texts, loss_of, args.chunk_size)
        optimizer.step()

    first = [labels.tolist().index(c) for c in range(len(train.class_names))]
    second = [next(i for i in range(len(labels)) if labels[i] == c and i not in first) for c in range(len(first))]
    warm = first + second  # two texts per class: G-Loss can hide one of each
    step([texts[i] for i in warm], labels[warm])
    result = {"kind": kind, "n": n}
    seconds, cpu_seconds = [], []

    def timed_step() -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        step(texts, labels)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)

    result.update(peak_memory_of(timed_step))
    for _ in range(args.steps - 1):
        timed_step()
    result.update(seconds=statistics.median(seconds), cpu_seconds=statistics.median(cpu_seconds),
                  threads=torch.get_num_threads(), sigma=sigma)
    return result


def run_worker(kind: str, n: int, args) -> dict:
    """``worker`` in a fresh Python process (its own memory), with malloc returning freed blocks at once."""
    command = [sys.executable, __file__, "--worker", kind, str(n), "--chunk-size", str(args.chunk_size),
               "--steps", str(args.steps), "--max-length", str(args.max_length), "--threads", str(args.threads),
               "--seed", str(args.seed)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    timeout = 120 + args.step_timeout * (args.steps + 2)  # start-up, the warm-up, the measured and timed steps
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "n": n, "failed": f"over {timeout} s (steps slower than --step-timeout)"}
    if done.returncode != 0:
        reason = "killed (out of memory?)" if done.returncode in (-9, 137) else f"exit {done.returncode}"
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"kind": kind, "n": n, "failed": f"{reason}: {tail[0][:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], sizes: list[int]) -> dict:
    """Per (kind, N): median seconds, median CPU seconds, median peak MiB over the rounds (None if it never ran)."""
    table = {}
    for kind in KINDS:
        for n in sizes:
            ok = [r for r in runs if r["kind"] == kind and r["n"] == n and "failed" not in r]
            failed = [r["failed"] for r in runs if r["kind"] == kind and r["n"] == n and "failed" in r]
            table[kind, n] = {
                "seconds": statistics.median(r["seconds"] for r in ok) if ok else None,
                "cpu_seconds": statistics.median(r["cpu_seconds"] for r in ok) if ok else None,
                "peak_mb": statistics.median(r["peak_mb"] for r in ok) if ok else None,
                "before_mb": statistics.median(r["before_mb"] for r in ok) if ok else None,
                "runs": len(ok), "failed": failed,
            }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat-up-to", type=int, default=256, help="sizes above this run in one round only")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per run (the first one's memory measured)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens kept per text")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--step-timeout", type=float, default=300.0, help="seconds a step may take before a run stops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 16 32, chunks of 8, one round")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args)))
        return
    if args.quick:
        args.sizes, args.chunk_size, args.rounds, args.steps = [16, 32], 8, 1, 1
    sizes = sorted(set(args.sizes))

    started = time.perf_counter()
    order = random.Random(args.seed)
    runs = []
    for round_ in range(args.rounds):
        plan = [(kind, n) for kind in KINDS for n in sizes if round_ == 0 or n <= args.repeat_up_to]
        order.shuffle(plan)
        for kind, n in plan:
            runs.append(run_worker(kind, n, args))
    table = summarise(runs, sizes)
    source = next((r["peak_source"] for r in runs if "peak_source" in r), "none")
    threads = next((r["threads"] for r in runs if "threads" in r), args.threads)

    print(f"MR train sentences, offline all-MiniLM-L6-v2, max_length {args.max_length} tokens, train mode, "
          f"G-Loss + CE (lam 0.5, gamma 0.7), AdamW; cached chunks of {args.chunk_size}; {threads} CPU thread(s)")
    repeated = [n for n in sizes if n <= args.repeat_up_to]
    print(f"{args.rounds} round(s) for N in {repeated}, 1 round above; one fresh process per (kind, N) and round: "
          f"1 warm-up step (4 texts), then {args.steps} timed step(s), the first one's memory measured; "
          f"medians over the rounds; the CPU is shared with other jobs, so times are noisy")
    print(f"memory: peak resident set during the step minus the resident set just before it ({source}), "
          f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
    print(f"{'N':>6} {'plain s':>9} {'cached s':>9} {'cached/plain':>13} {'plain cpu s':>12} {'cached cpu s':>13} "
          f"{'plain MiB':>10} {'cached MiB':>11}")

    def show(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    time_ratios = {}
    for n in sizes:
        plain, cached = table["plain", n], table["cached", n]
        if plain["seconds"] is not None and cached["seconds"] is not None:
            time_ratios[n] = cached["seconds"] / plain["seconds"]
        print(f"{n:>6} {show(plain['seconds'], 3):>9} {show(cached['seconds'], 3):>9} "
              f"{show(time_ratios.get(n), 3):>13} {show(plain['cpu_seconds'], 3):>12} "
              f"{show(cached['cpu_seconds'], 3):>13} {show(plain['peak_mb'], 1):>10} {show(cached['peak_mb'], 1):>11}")
    for (kind, n), row in table.items():
        for reason in row["failed"]:
            print(f"not measured: {kind} at N={n}: {reason}")
    before = [row["before_mb"] for row in table.values() if row["before_mb"] is not None]
    if before:
        print(f"resident set before the step (model, optimiser state, data): {min(before):.0f}-{max(before):.0f} MiB")
    print(f"wall time of the benchmark: {time.perf_counter() - started:.0f} s")

    largest = max(n for n in sizes if table["cached", n]["peak_mb"] is not None) if any(
        table["cached", n]["peak_mb"] is not None for n in sizes) else None
    reference = 64 if 64 in sizes else sizes[0]
    plain_reference = table["plain", reference]["peak_mb"]
    memory_ratio = (table["cached", largest]["peak_mb"] / plain_reference
                    if largest is not None and plain_reference else float("nan"))
    time_ratio = statistics.median(time_ratios.values()) if time_ratios else float("nan")
    cpu_ratios = [table["cached", n]["cpu_seconds"] / table["plain", n]["cpu_seconds"] for n in time_ratios]
    if cpu_ratios:
        print(f"CPU-time ratio cached / plain, median over the same N: {statistics.median(cpu_ratios):.3f}")
    print(f"peak_memory_ratio: cached at N={largest} / plain at N={reference} (goal <= 1.5)")
    print(f"time_ratio: median over N = {sorted(time_ratios)} of (median cached s / median plain s) (goal <= 1.4)")
    print(f"peak_memory_ratio = {memory_ratio:.3f}")
    print(f"time_ratio = {time_ratio:.3f}")


if __name__ == "__main__":
    main()
