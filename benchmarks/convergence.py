"""Epochs G-Loss + CE needs to reach the best validation accuracy that CE alone reaches.

    python benchmarks/convergence.py [--train-size 800] [--val-size 400] [--epochs 4]
                                     [--batch-size 32] [--max-length 48] [--seeds 0 1 2]
                                     [--device auto] [--threads 1]

On MR (``load_dataset("mr")``: set ``GLOSS_LITE_DATA`` to the folder holding ``mr/``), a
class-stratified subset of the train and validation splits (``Split.sample``, drawn once with
``--data-seed``; size 0 = the whole split). For each seed, ``gloss_lite.training.fit`` trains a fresh
offline MiniLM + linear head twice, with the same ``TrainConfig`` except ``loss``: ``"ce"`` and
``"gloss+ce"`` (lam 0.5, gamma 0.7, sigma "sqrt"). Per seed:

- CE's best validation accuracy (head) over its epochs, and the first epoch where CE reaches it;
- the first epoch where G-Loss + CE reaches that accuracy, or "never" within the budget;
- the ratio of the two epoch counts (G-Loss + CE / CE).

Prints the config, each seed's per-epoch validation accuracy of both losses, the per-seed
table and the wall time; the last line is ``gloss_ce_epochs/ce_epochs = <median ratio>``
("never" counts as infinitely many epochs; a median that is infinite prints ``n/a``).
With ``--device cuda --train-size 0 --val-size 0`` on a GPU it runs on the full data.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from gloss_lite.data import load_dataset
from gloss_lite.reproduction.results import first_epoch_reaching
from gloss_lite.training import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=800, help="stratified train subset; 0 = all")
    parser.add_argument("--val-size", type=int, default=400, help="stratified validation subset; 0 = all")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-5, help="encoder learning rate")
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the subsets (same for every run)")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 keeps torch's default")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # one thread per process: far faster on a CPU shared with other jobs

    started = time.perf_counter()
    data = load_dataset(args.dataset)
    train = data.train.sample(args.train_size or None, seed=args.data_seed)
    val = data.val.sample(args.val_size or None, seed=args.data_seed)
    base = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lam=args.lam,
                       max_length=args.max_length, device=args.device, lpa_eval=False, progress=False)
    print(f"{args.dataset}: {len(train)} train / {len(val)} val docs (data seed {args.data_seed}), "
          f"epochs {base.epochs}, batch {base.batch_size}, lr {base.lr}, head_lr {base.head_lr}, "
          f"max_length {base.max_length}, lam {base.lam}, gamma {base.gamma}, sigma {base.sigma!r}, "
          f"seeds {args.seeds}, device {args.device}, torch threads {torch.get_num_threads()}", flush=True)

    rows = []
    for seed in args.seeds:
        accuracies, info = {}, {}
        for loss in ("ce", "gloss+ce"):
            run_started = time.perf_counter()
            result = fit(train, val, TrainConfig(**{**vars(base), "loss": loss, "seed": seed}))
            accuracies[loss] = [row["val_accuracy"] for row in result.history]
            info[loss] = f"{loss} {time.perf_counter() - run_started:.0f} s" + (
                f" (sigma {result.sigma:.4f})" if loss != "ce" else "")
        print(f"\nseed {seed}: {', '.join(info.values())}")
        print(f"{'epoch':>5} {'ce val acc':>11} {'gloss+ce val acc':>17}")
        for epoch, (a, b) in enumerate(zip(accuracies["ce"], accuracies["gloss+ce"]), start=1):
            print(f"{epoch:>5} {a:>11.4f} {b:>17.4f}", flush=True)
        best = max(accuracies["ce"])
        ce_epochs = first_epoch_reaching(accuracies["ce"], best)
        gloss_epochs = first_epoch_reaching(accuracies["gloss+ce"], best)
        ratio = math.inf if gloss_epochs is None else gloss_epochs / ce_epochs
        rows.append((seed, best, ce_epochs, gloss_epochs, ratio, max(accuracies["gloss+ce"])))

    print(f"\n{'seed':>4} {'ce best acc':>11} {'ce epoch':>8} {'gloss+ce epoch':>14} {'ratio':>6} "
          f"{'gloss+ce best acc':>17}")
    for seed, best, ce_epochs, gloss_epochs, ratio, gloss_best in rows:
        reached = "never" if gloss_epochs is None else str(gloss_epochs)
        shown = "inf" if math.isinf(ratio) else f"{ratio:.2f}"
        print(f"{seed:>4} {best:>11.4f} {ce_epochs:>8} {reached:>14} {shown:>6} {gloss_best:>17.4f}")
    median = statistics.median(row[4] for row in rows)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    print(f"gloss_ce_epochs/ce_epochs = {'n/a' if math.isinf(median) else f'{median:.2f}'}")


if __name__ == "__main__":
    main()
