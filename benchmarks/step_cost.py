"""Time one training step with G-Loss + CE against one step with CE alone; count the host syncs.

    python benchmarks/step_cost.py [--rounds 20] [--warmup 2] [--batch-size 32] [--max-length 64]
                                   [--device auto] [--threads 1] [--fit-rounds 3] [--fit-docs 96]

Same encoder (the offline MiniLM), same batch (a stratified sample of ``--batch-size``
reviews from ``reviews_sentiment``' train split, tokenised once and padded/truncated to exactly
``--max-length`` tokens), same linear head, same AdamW (encoder lr 2e-5, head lr 1e-3, as
``gloss_lite.training.fit``). A step is forward + backward + optimizer step, in train mode.
Three kinds of step:

- ``ce``: ``CE(head(E), y)`` with ``E`` = the encoder's embeddings of the batch;
- ``gloss+ce (1 pass)``: what ``fit`` does: one encoder pass, ``E`` fed to both
  ``CE(head(E), y)`` and ``GLoss(E, y)`` (unchecked, its labels on the CPU, where the package
  offers it), mixed by ``mix_losses(ce, g, lam)``;
- ``gloss+ce (2 pass)``: the authors' form: one encoder pass for CE, a second one for G-Loss.

The kinds are interleaved in rounds (a fresh random order each round), so load drift on a shared
machine hits all of them alike; ``--warmup`` rounds run first and are not timed. On CUDA the
encoder runs under the precision ``fit`` would choose (``gloss_lite.runtime``), and every timing
is bracketed by ``torch.cuda.synchronize()``. ``--threads`` sets torch's CPU threads (default 1:
on a CPU shared with other jobs, one thread per process was about 3x faster than two; 0 keeps
torch's default).

Then ``fit`` itself: ``--fit-rounds`` one-epoch runs of ``ce`` and ``gloss+ce`` on ``--fit-docs``
training documents (interleaved; documents per second of the epoch, its small validation
included), and its host syncs per step.

**Host syncs** are the calls that make the host wait for the GPU. On CUDA they are counted with
``torch.cuda.set_sync_debug_mode("warn")``. On a CPU nothing waits, so ``SyncCounter`` counts the
calls that would: reading a value (``item``, ``float``, ``bool``, ``tolist``), and the ops whose
output size depends on the values (``nonzero``, ``unique``, boolean indexing). Calls on data
the trainer keeps on the host by design (the mask drawn from CPU labels, the batch's index
list, the token table, the optimiser's step counters) are counted apart as host-side
(``HOST_SIDE``; ``--sites`` lists every call site). A host-to-device copy
that blocks is not seen on a CPU.

Prints, per kind: the median wall time and spread, documents per second, and syncs per step
(device-side and host-side); then the ratios to ``ce`` (on the CPU also of this process's CPU
time, which other jobs disturb less). The last line is
``gloss_ce_step/ce_step = <ratio of medians, one-pass form>``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import inspect
import random
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gloss_lite.data import load_dataset
from gloss_lite.encoders import load_encoder
from gloss_lite.losses import GLoss, mix_losses
from gloss_lite.runtime import pick_device
from gloss_lite.sigma import sigma_sqrt

KINDS = ("ce", "gloss+ce (1 pass)", "gloss+ce (2 pass)")

# ops whose result the host must wait for: a value read, or an output whose size depends on the values
SYNCING_OPS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select",
               "is_nonzero", "equal"}
# package functions that work on host data by design (CPU labels and masks, index lists, token tables)
HOST_SIDE = {"split_mask", "node_indices", "_check_hidden_classes", "lookup", "tokenize", "local_batch"}


class SyncCounter(TorchDispatchMode):
    """Count, while ``active()`` is true, the calls that would make the host wait for a GPU.

    ``counts[(where, kind)]``: ``where`` is the innermost ``gloss_lite`` function on the stack (or
    the benchmark's), ``kind`` ``"device"`` or ``"host"`` (``HOST_SIDE`` functions, and index lists
    read by the epoch loop).
    """

    def __init__(self, active=lambda: True) -> None:
        super().__init__()
        self.active = active
        self.counts = collections.Counter()

    def _record(self, what: str, tensor: torch.Tensor | None = None) -> None:
        if not self.active():
            return
        where, frame, optimizer = "?", sys._getframe(2), False
        while frame is not None:
            filename = frame.f_code.co_filename
            optimizer = optimizer or "torch/optim/" in filename  # its step counters live on the CPU
            if "gloss_lite" in filename or filename == __file__:
                where = frame.f_code.co_name
                break
            frame = frame.f_back
        integer_list = what == "tolist" and tensor is not None and not tensor.is_floating_point()
        host = optimizer or where in HOST_SIDE or (where == "_train_epoch" and integer_list)
        where = "optimizer" if optimizer else where
        self.counts[(where, "host" if host else "device")] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        boolean_index = name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                                for i in (args[1] if len(args) > 1 else ()) if i is not None)
        if name in SYNCING_OPS or boolean_index:
            self._record(name)
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._tolist = torch.Tensor.tolist
        counter = self

        def tolist(tensor):
            counter._record("tolist", tensor)
            return counter._tolist(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc_info):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc_info)

    def per_step(self, steps: int) -> tuple[float, float]:
        """(device-side, host-side) syncing calls per step."""
        device = sum(n for (_, kind), n in self.counts.items() if kind == "device")
        host = sum(n for (_, kind), n in self.counts.items() if kind == "host")
        return device / steps, host / steps


class CudaSyncCounter:
    """The same interface on CUDA: ``torch.cuda.set_sync_debug_mode("warn")`` and its warnings."""

    def __init__(self, active=lambda: True) -> None:
        self.active = active
        self.counts = collections.Counter()

    def __enter__(self):
        self._warnings = warnings.catch_warnings(record=True)
        self.caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc_info):
        torch.cuda.set_sync_debug_mode("default")
        self._warnings.__exit__(*exc_info)
        self.counts[("cuda", "device")] = sum("synchroniz" in str(w.message) for w in self.caught)

    def per_step(self, steps: int) -> tuple[float, float]:
        return self.counts[("cuda", "device")] / steps, 0.0


def sync_counter(device: torch.device, active=lambda: True):
    return CudaSyncCounter(active) if device.type == "cuda" else SyncCounter(active)


def step_benchmark(args, device, encoder, head, optimizer, train, precision) -> dict:
    """Section 1: the three hand-written kinds of step, timed in interleaved rounds."""
    batch = encoder.tokenizer(train.texts, padding="max_length", truncation=True, max_length=args.max_length,
                              return_tensors="pt").to(device)
    host_labels = train.labels
    labels = host_labels.to(device)
    num_classes = len(train.class_names)

    def embed() -> torch.Tensor:
        """``Encoder.forward`` (mean pooling) on the pre-tokenised, fixed-length batch."""
        old_default = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        with precision.autocast(device.type) if precision else old_default:
            hidden = encoder.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    with torch.no_grad():
        sigma = sigma_sqrt(embed().float())
    unchecked = "check" in inspect.signature(GLoss).parameters  # fit's form: no per-step value checks
    gloss = GLoss(num_classes, sigma, args.gamma, seed=args.seed, **({"check": False} if unchecked else {}))
    gloss_labels = host_labels if unchecked else labels

    def step(kind: str) -> None:
        embeddings = embed().float()
        loss = F.cross_entropy(head(embeddings), labels)
        if kind != "ce":
            if kind == "gloss+ce (2 pass)":
                embeddings = embed().float()  # the authors' second encoder pass, for G-Loss
            loss = mix_losses(loss, gloss(embeddings, gloss_labels), args.lam)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(kind: str) -> tuple[float, float]:
        """Wall seconds and this process's CPU seconds of one step."""
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with precision.matmuls() if precision else contextlib.nullcontext():
            step(kind)
        synchronize(device)
        return time.perf_counter() - start, time.process_time() - cpu_start

    encoder.train()  # dropout on, as in fit
    order = random.Random(args.seed)
    times, cpu_times = {kind: [] for kind in KINDS}, {kind: [] for kind in KINDS}
    for round_ in range(args.warmup + args.rounds):
        kinds = list(KINDS)
        order.shuffle(kinds)
        for kind in kinds:
            elapsed, cpu = timed(kind)
            if round_ >= args.warmup:
                times[kind].append(elapsed)
                cpu_times[kind].append(cpu)
    syncs = {}
    for kind in KINDS:  # counted apart from the timed rounds
        with sync_counter(device) as counter:
            step(kind)
        syncs[kind] = counter.per_step(1)
    return {"times": times, "cpu_times": cpu_times, "syncs": syncs, "sigma": sigma}


def fit_benchmark(args, device, encoder) -> dict:
    """Section 2: one-epoch ``fit`` runs of CE and G-Loss + CE, interleaved; documents per second and syncs."""
    from gloss_lite.training import TrainConfig, fit

    data = load_dataset("reviews_sentiment")
    train, val = data.train.sample(args.fit_docs, seed=args.seed + 1), data.val.sample(8, seed=args.seed)
    rates = {"ce": [], "gloss+ce": []}
    syncs = {}
    order = random.Random(args.seed)
    for round_ in range(args.fit_rounds + 1):
        kinds = list(rates)
        order.shuffle(kinds)
        for kind in kinds:
            config = TrainConfig(loss=kind, epochs=1, batch_size=args.batch_size, lr=2e-5, head_lr=1e-3, sigma=0.5,
                                 max_length=args.max_length, device=str(device), progress=False, lpa_eval=False,
                                 seed=args.seed)
            model = copy.deepcopy(encoder)
            if round_ == args.fit_rounds:  # the last round counts the syncs of the training steps
                with sync_counter(device, active=lambda: model.training) as counter:
                    fit(train, val, config, encoder=model)
                steps = -(-len(train) // args.batch_size)
                syncs[kind] = counter.per_step(steps)
                if args.sites:
                    for (where, side), count in sorted(counter.counts.items(), key=lambda item: -item[1]):
                        print(f"  {kind}: {count / steps:5.1f} per step in {where} ({side})")
            else:
                rates[kind].append(len(train) / fit(train, val, config, encoder=model).history[0]["seconds"])
    return {"rates": rates, "syncs": syncs}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def report(args, device, steps: dict, fits: dict | None, precision_name: str) -> None:
    times, cpu_times, syncs = steps["times"], steps["cpu_times"], steps["syncs"]
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch_size} x {args.max_length} tokens, sigma {steps['sigma']:.4f}, lam {args.lam}, "
          f"gamma {args.gamma}, {args.rounds} rounds after {args.warmup} warm-up, precision {precision_name}")
    print(f"{'step':<20} {'median ms':>10} {'q1 ms':>8} {'q3 ms':>8} {'docs/s':>8} {'syncs/step':>11} {'host':>6}")
    medians = {}
    for kind in KINDS:
        ms = [t * 1000 for t in times[kind]]
        q1, _, q3 = statistics.quantiles(ms, n=4)
        medians[kind] = statistics.median(ms)
        device_syncs, host_syncs = syncs[kind]
        print(f"{kind:<20} {medians[kind]:>10.1f} {q1:>8.1f} {q3:>8.1f} {args.batch_size / medians[kind] * 1000:>8.1f} "
              f"{device_syncs:>11.0f} {host_syncs:>6.0f}")
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
    if fits:
        print(f"fit, one epoch of {args.fit_docs} documents in batches of {args.batch_size} "
              f"({args.fit_rounds} rounds):")
        for kind, rates in fits["rates"].items():
            device_syncs, host_syncs = fits["syncs"][kind]
            print(f"  {kind:<10} docs/s median {statistics.median(rates):.2f} (min {min(rates):.2f}, max "
                  f"{max(rates):.2f}); syncs per step {device_syncs:.1f} on the device, {host_syncs:.1f} host-side")
        ratio = statistics.median(fits["rates"]["ce"]) / statistics.median(fits["rates"]["gloss+ce"])
        print(f"fit gloss+ce epoch time / ce epoch time = {ratio:.3f}")
    print(f"two-pass gloss_ce_step/ce_step = {medians[KINDS[2]] / medians['ce']:.3f}")
    print(f"gloss_ce_step/ce_step = {medians[KINDS[1]] / medians['ce']:.3f}")


def main(argv=None) -> None:
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
    parser.add_argument("--fit-rounds", type=int, default=3, help="one-epoch fit runs per loss (0: none)")
    parser.add_argument("--fit-docs", type=int, default=96, help="training documents of each fit run")
    parser.add_argument("--sites", action="store_true", help="also list the syncing calls of fit by call site")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    try:
        from gloss_lite.runtime import precision_for
        precision = precision_for(device)
    except ImportError:  # a version of the package before the precision policy: bf16 autocast on CUDA
        precision = None
    train = load_dataset("reviews_sentiment").train.sample(args.batch_size, seed=args.seed)
    encoder = load_encoder(device=device, max_length=args.max_length)
    pristine = copy.deepcopy(encoder)
    head = torch.nn.Linear(encoder.dim, len(train.class_names)).to(device)
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": 2e-5}, {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01
    )
    steps = step_benchmark(args, device, encoder, head, optimizer, train, precision)
    fits = fit_benchmark(args, device, pristine) if args.fit_rounds > 0 else None
    report(args, device, steps, fits, precision.name if precision else "fp32 (bf16 autocast on CUDA)")


if __name__ == "__main__":
    sys.exit(main())
