"""How much of a training step tokenising long texts costs, with and without the character cut.

    GLOSS_LITE_DATA=<folder holding 20ng/> python benchmarks/tokenize_cost.py
        [--texts 1024] [--rounds 3] [--batch-size 32] [--max-length 128] [--threads 1] [--seed 0]

On 20 Newsgroups' train split (posts up to 30,000+ characters), a seeded random sample of
``--texts`` posts is tokenised in batches of ``--batch-size``, truncated to ``--max-length``
tokens, two ways:

- ``full``: the tokenizer on the whole texts (``tokenizer(texts, truncation=True, ...)``), which
  reads every character and then drops all tokens after the first ``max_length``;
- ``cut``: ``gloss_lite.encoders.tokenize``, which first cuts each text at a whitespace within
  ``CHARS_PER_TOKEN * max_length`` characters (the input ids are checked to be the same).

It then times one training step of the offline MiniLM on one batch of those posts, already
tokenised: forward, mean pooling, a linear head's cross-entropy, backward (train mode, CPU).
Both ways and the step are interleaved in ``--rounds`` rounds and the medians are compared, all
in this one run. The last lines are

    tokenize_share_of_step = t_cut / (t_cut + t_step)   (per batch, with the cut)
    cut_speedup = t_full / t_cut
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from gloss_lite.data import DatasetNotFoundError, load_dataset
from gloss_lite.encoders import CHARS_PER_TOKEN, load_encoder, mean_pool, tokenize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1024, help="20NG train posts tokenised per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    try:
        train = load_dataset("20ng").train
    except (DatasetNotFoundError, ValueError) as err:
        sys.exit(
            "tokenize_cost needs the 20 Newsgroups splits: set GLOSS_LITE_DATA to a folder holding "
            f"20ng/train.csv, val.csv, test.csv (or let load_dataset download them).\n{err}"
        )
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(train), generator=generator)[: args.texts].tolist()
    texts = [train.texts[i] for i in chosen]
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    budget = CHARS_PER_TOKEN * args.max_length
    lengths = sorted(len(text) for text in texts)
    print(f"20ng train: {len(texts)} posts, {len(batches)} batches of {args.batch_size}; characters: "
          f"median {lengths[len(lengths) // 2]}, max {lengths[-1]}, total {sum(lengths)}; "
          f"{sum(n > budget for n in lengths)} posts longer than the budget of {budget} characters")

    encoder = load_encoder(device="cpu", max_length=args.max_length)
    tokenizer = encoder.tokenizer
    head = torch.nn.Linear(encoder.dim, len(train.class_names))
    step_batch = tokenize(tokenizer, batches[0], args.max_length)
    step_labels = torch.tensor([int(train.labels[i]) for i in chosen[: args.batch_size]])
    print(f"step batch: {tuple(step_batch['input_ids'].shape)} tokens (batch x length)")

    def tokenize_full():
        return [tokenizer(b, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
                for b in batches]

    def tokenize_cut():
        return [tokenize(tokenizer, b, args.max_length) for b in batches]

    def train_step():
        hidden = encoder.model(**step_batch).last_hidden_state
        loss = F.cross_entropy(head(mean_pool(hidden, step_batch["attention_mask"])), step_labels)
        loss.backward()
        encoder.model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)

    full, cut = tokenize_full(), tokenize_cut()  # warm-up, and the check that both agree
    for a, b in zip(full, cut):
        if not torch.equal(a["input_ids"], b["input_ids"]):
            sys.exit("the cut changed the input ids: tokenize is not exact for this tokenizer")
    encoder.train()
    train_step()

    times = {"full": [], "cut": [], "step": []}
    for _ in range(args.rounds):
        for kind, work in (("full", tokenize_full), ("cut", tokenize_cut), ("step", train_step)):
            start = time.perf_counter()
            work()
            seconds = time.perf_counter() - start
            times[kind].append(seconds / len(batches) if kind != "step" else seconds)
    per_batch = {kind: statistics.median(values) for kind, values in times.items()}
    for kind, label in (("full", "tokenise, full texts"), ("cut", "tokenise, cut texts"),
                        ("step", "MiniLM forward+backward")):
        spread = ", ".join(f"{value * 1e3:.1f}" for value in times[kind])
        print(f"{label:>24}: {per_batch[kind] * 1e3:8.1f} ms per batch (rounds: {spread})")
    full_share = per_batch["full"] / (per_batch["full"] + per_batch["step"])
    cut_share = per_batch["cut"] / (per_batch["cut"] + per_batch["step"])
    print(f"full_tokenize_share_of_step = {full_share:.3f}")
    print(f"tokenize_share_of_step = {cut_share:.3f}")
    print(f"cut_speedup = {per_batch['full'] / per_batch['cut']:.2f}")


if __name__ == "__main__":
    main()
