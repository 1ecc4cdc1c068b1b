"""G-Loss across processes: two CPU processes over gloo against one process on the concatenated batch.

Each test group starts its two processes once (``torch.multiprocessing`` spawn, a ``file://``
rendezvous in ``tmp_path``); a child's traceback becomes the test's failure message, and a run
that does not finish in time is stopped and fails.
"""

import datetime
import functools
import json
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from gloss_lite import collectives
from gloss_lite.losses import GLoss, g_loss
from gloss_lite.masking import split_mask
from gloss_lite.training import ddp_check, distributed

# The children import this module; the trainer (and transformers) only where a test needs it.

WORLD = 2
SIZES = (5, 7)  # uneven local batches
NUM_CLASSES, SIGMA, GAMMA = 3, 0.8, 0.5
TIME_LIMIT = 180  # seconds for one group of processes


def run_processes(task, tmp_path, *args):
    """Run ``task(rank, *args)`` in WORLD spawned processes in one gloo group; return each rank's result."""
    context = mp.start_processes(_child, args=(task, str(tmp_path), args), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + TIME_LIMIT
    while not context.join(timeout=max(1.0, deadline - time.monotonic())):  # raises a child's error
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail(f"{task.__name__} did not finish within {TIME_LIMIT} s in {WORLD} processes")
    return [torch.load(tmp_path / f"result_{rank}.pt", weights_only=False) for rank in range(WORLD)]


def _child(rank, task, folder, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        result = task(rank, *args)
        torch.save(result, f"{folder}/result_{rank}.pt")
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Gradients and masks on a float64 toy model


def toy_problem():
    generator = torch.Generator().manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    head = torch.nn.Linear(4, NUM_CLASSES).double()
    for parameter in [*encoder.parameters(), *head.parameters()]:
        parameter.data = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
    n = sum(SIZES)
    inputs = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=generator)]
    return encoder, head, inputs, labels


def parameters(encoder, head):
    return [*encoder.parameters(), *head.parameters()]


def gradient_task(rank):
    """On each rank: DDP gradients of lam G-Loss(gather=True) + (1 - lam) c_r CE_r, the masks, and more."""
    start = sum(SIZES[:rank])
    mine = slice(start, start + SIZES[rank])
    scale = WORLD * SIZES[rank] / sum(SIZES)
    results = {"runs": []}
    for lam, seed in ((1.0, 0), (0.5, 0), (0.5, None)):
        encoder, head, inputs, labels = toy_problem()
        parallel_encoder = torch.nn.parallel.DistributedDataParallel(encoder)
        parallel_head = torch.nn.parallel.DistributedDataParallel(head)
        torch.manual_seed(100 + rank)  # different global generators: with seed=None the ranks must still agree
        loss_module = GLoss(NUM_CLASSES, SIGMA, GAMMA, seed=seed, gather=True)
        embeddings = parallel_encoder(inputs[mine])
        loss = lam * loss_module(embeddings, labels[mine]) + (1 - lam) * scale * F.cross_entropy(
            parallel_head(embeddings), labels[mine])
        loss.backward()
        results["runs"].append({"lam": lam, "seed": seed, "mask": loss_module.last_mask, "loss": float(loss.detach()),
                                "grads": [p.grad.clone() for p in parameters(encoder, head)]})
    probe = torch.arange(3.0 * (rank + 1), dtype=torch.float64).reshape(rank + 1, 3).requires_grad_()
    gathered = collectives.gather_with_grad(probe)
    gathered.sum().backward()
    results["gathered"], results["probe_grad"] = gathered.detach(), probe.grad
    results["labels"] = collectives.gather_labels(torch.tensor([rank] * (rank + 2)))
    weights = torch.tensor([1.0, 2.0, 0.5])
    results["local_batch"] = distributed.local_batch(torch.arange(11), toy_problem()[3], weights)
    results["check"] = ddp_check.gradient_check(SIZES, lam=0.5, mask_seed=3)
    try:  # embeddings of different widths on the two ranks
        collectives.gather_with_grad(torch.zeros(2, 3 + rank))
        results["widths"] = "no error"
    except ValueError as error:
        results["widths"] = str(error)
    return results


@pytest.fixture(scope="module")
def gradient_runs(tmp_path_factory):
    return run_processes(gradient_task, tmp_path_factory.mktemp("gradients"))


def reference_gradients(lam, mask):
    """One process, no process group: the gradient on the whole batch of 12 for the given mask."""
    encoder, head, inputs, labels = toy_problem()
    embeddings = encoder(inputs)
    loss = lam * g_loss(embeddings, labels, mask, sigma=SIGMA, num_classes=NUM_CLASSES, scheme="gloss")
    loss = loss + (1 - lam) * F.cross_entropy(head(embeddings), labels)
    loss.backward()
    return float(loss.detach()), [p.grad for p in parameters(encoder, head)]


@pytest.mark.parametrize("run", [0, 1, 2], ids=["gloss-seeded", "gloss+ce-seeded", "gloss+ce-seed-None"])
def test_ddp_gradient_equals_the_single_process_gradient_on_the_whole_batch(gradient_runs, run):
    ranks = [result["runs"][run] for result in gradient_runs]
    lam = ranks[0]["lam"]
    loss, expected = reference_gradients(lam, ranks[0]["mask"])
    for result in ranks:
        assert len(result["grads"]) == len(expected)
        for got, want in zip(result["grads"], expected):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    # each rank's loss: lam G (the same everywhere) + (1 - lam) c_r CE_r; their mean is the global loss
    assert sum(result["loss"] for result in ranks) / WORLD == pytest.approx(loss, abs=1e-12)
    assert max(float(g.abs().max()) for g in expected) > 1e-3  # a real gradient, not zeros


def test_masks_agree_across_ranks_and_equal_the_single_process_mask(gradient_runs):
    for run in range(3):
        masks = [result["runs"][run]["mask"] for result in gradient_runs]
        assert masks[0].shape == (sum(SIZES),) and torch.equal(masks[0], masks[1])
        seed = gradient_runs[0]["runs"][run]["seed"]
        if seed is not None:
            labels = toy_problem()[3]
            assert torch.equal(masks[0], split_mask(labels, GAMMA, generator=torch.Generator().manual_seed(seed)))


def test_gather_keeps_rank_order_uneven_sizes_and_sums_the_gradient_over_ranks(gradient_runs):
    expected = torch.cat([torch.arange(3.0).reshape(1, 3), torch.arange(6.0).reshape(2, 3)]).double()
    for rank, result in enumerate(gradient_runs):
        torch.testing.assert_close(result["gathered"], expected)
        # every rank's loss is gathered.sum(), so each row's gradient is the sum over the ranks: W
        torch.testing.assert_close(result["probe_grad"], torch.full((rank + 1, 3), float(WORLD), dtype=torch.float64))
        assert result["labels"].tolist() == [0, 0, 1, 1, 1]


def test_local_batch_shares_and_scales_give_the_global_weighted_mean(gradient_runs):
    labels = toy_problem()[3][:11]
    weights = torch.tensor([1.0, 2.0, 0.5])
    logits = torch.randn(11, NUM_CLASSES, generator=torch.Generator().manual_seed(5))
    shares = [result["local_batch"] for result in gradient_runs]
    assert torch.cat([indices for indices, _ in shares]).tolist() == list(range(11))
    assert [len(indices) for indices, _ in shares] == [6, 5]
    mean = sum(scale * F.cross_entropy(logits[indices], labels[indices], weight=weights)
               for indices, scale in shares) / WORLD
    torch.testing.assert_close(mean, F.cross_entropy(logits, labels, weight=weights))


def test_gradient_check_reports_agreement(gradient_runs):
    report = gradient_runs[0]["check"]
    assert report["max_abs_gradient_difference"] < 1e-10 < report["max_abs_gradient"]
    assert report["masks_agree_across_ranks"] and report["mask_equals_single_process"]
    assert report["local_sizes"] == list(SIZES) and report["gather_backward"] == "sum over ranks"
    assert gradient_runs[1]["check"]["masks_agree_across_ranks"]


def test_outside_a_process_group_gather_is_the_identity_and_gloss_the_ordinary_loss():
    assert not dist.is_initialized() and collectives.world_size() == 1 and collectives.rank() == 0
    local = torch.randn(5, 3, requires_grad=True)
    assert collectives.gather_with_grad(local) is local
    indices, scale = distributed.local_batch(torch.arange(4), torch.zeros(4, dtype=torch.long))
    assert indices.tolist() == [0, 1, 2, 3] and scale == 1.0
    encoder, _, inputs, labels = toy_problem()
    embeddings = encoder(inputs)
    for seed in (0, None):
        torch.manual_seed(7)
        plain = GLoss(NUM_CLASSES, SIGMA, GAMMA, seed=seed)(embeddings, labels)
        torch.manual_seed(7)
        gathered = GLoss(NUM_CLASSES, SIGMA, GAMMA, seed=seed, gather=True)
        assert torch.equal(gathered(embeddings, labels), plain)
    with pytest.raises(ValueError, match="gather must be True or False"):
        GLoss(NUM_CLASSES, SIGMA, gather="yes")


# ---------------------------------------------------------------------------------------------
# fit in two processes


@functools.cache
def tokenizer_of_minilm():
    from transformers import AutoTokenizer

    from gloss_lite.encoders import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path())


def tiny_encoder():
    from transformers import BertConfig, BertModel

    from gloss_lite.encoders import Encoder

    tokenizer = tokenizer_of_minilm()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return Encoder(BertModel(config), tokenizer, max_length=32, name="tiny")


@functools.cache
def splits():
    from gloss_lite.data import load_dataset

    train, val, _ = load_dataset("reviews_sentiment")
    return train.sample(24, seed=0), val.sample(12, seed=0)


def config(**changes):
    from gloss_lite.training import TrainConfig

    # batch 7 of 24 documents: batches of 7, 7, 7 and 3, shared 4 + 3 and 2 + 1; balanced class weights in CE
    settings = dict(loss="gloss+ce", epochs=2, batch_size=7, lr=1e-3, head_lr=1e-2, device="cpu", progress=False,
                    sigma="sqrt", lpa_eval=True, lpa_reference_size=24, class_weights="balanced", patience=5)
    settings.update(changes)
    return TrainConfig(**settings)


def weights_of(result):
    return [p.detach().clone() for p in [*result.encoder.parameters(), *result.head.parameters()]]


def fit_task(rank, folder):
    """Epoch 1 with a checkpoint, then a second call that resumes it for epoch 2."""
    from gloss_lite.training import TrainingDivergedError, fit
    from gloss_lite.training import loop as train_module

    train, val = splits()
    saved, seeds = [], []
    original = train_module.save_checkpoint
    train_module.save_checkpoint = lambda *args, **kwargs: saved.append(rank) or original(*args, **kwargs)
    first = fit(train, val, config(epochs=1, checkpoint_dir=folder), encoder=tiny_encoder(),
                on_epoch=lambda row: seeds.append(torch.initial_seed()))  # the seed of this rank's dropout
    resumed = fit(train, val, config(checkpoint_dir=folder), encoder=tiny_encoder())
    train_module.save_checkpoint = original
    refused = {}
    for name, changes in (("passes", {"encoder_passes": 2}), ("chunks", {"chunk_size": 2})):
        try:
            fit(train, val, config(**changes), encoder=tiny_encoder())
        except ValueError as error:
            refused[name] = str(error)
    encoder = tiny_encoder()
    if rank == 1:  # only rank 1 sees NaN (DDP would overwrite NaN weights with rank 0's); CE gathers nothing
        embed = encoder.forward
        encoder.forward = lambda texts: embed(texts) * float("nan")
    try:
        fit(train, val, config(loss="ce", sigma=0.5, lpa_eval=False, class_weights=None), encoder=encoder)
        diverged = "no error"
    except TrainingDivergedError as error:
        diverged = str(error)
    return {"first_history": first.history, "sigma": first.sigma, "resumed_history": resumed.history,
            "resumed_weights": weights_of(resumed), "saved_by": saved, "refused": refused, "diverged": diverged,
            "dropout_seeds": seeds}


@pytest.fixture(scope="module")
def fit_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    return run_processes(fit_task, folder, str(folder / "checkpoints"))


@pytest.fixture(scope="module")
def single_process_fit():
    from gloss_lite.training import fit

    train, val = splits()
    return fit(train, val, config(), encoder=tiny_encoder())


KEYS = ("loss", "ce", "aux", "aux_grad_share", "val_accuracy", "val_macro_f1", "val_lpa_accuracy", "sigma")


def assert_same_rows(history, single_history):
    assert len(history) == len(single_history)
    for got, want in zip(history, single_history):
        for key in KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_a_two_process_fit_is_the_single_process_run_with_the_global_batch(fit_runs, single_process_fit):
    initial = [p.detach() for p in tiny_encoder().parameters()]
    moved = max(float((a - b).abs().max()) for a, b in zip(weights_of(single_process_fit), initial))
    assert moved > 1e-3  # training moved the weights well beyond the tolerance
    for result in fit_runs:
        assert result["sigma"] == single_process_fit.sigma  # estimated ("sqrt"), the same on every rank
        assert_same_rows(result["first_history"], single_process_fit.history[:1])
        for got, want in zip(result["resumed_weights"], weights_of(single_process_fit)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_rank_zero_alone_writes_checkpoints_and_a_resumed_run_continues(fit_runs, single_process_fit):
    assert fit_runs[0]["saved_by"] == [0, 0] and fit_runs[1]["saved_by"] == []  # after epoch 1, after epoch 2
    for result in fit_runs:
        assert [row["epoch"] for row in result["resumed_history"]] == [1, 2]
        assert_same_rows(result["resumed_history"], single_process_fit.history)


def test_two_encoder_passes_and_cached_chunks_are_refused_in_several_processes(fit_runs):
    for result in fit_runs:
        assert "encoder_passes=2 is not supported with 2 processes" in result["refused"]["passes"]
        assert "chunk_size=2 is not supported with 2 processes" in result["refused"]["chunks"]


def test_the_command_line_writes_a_new_file_and_refuses_to_overwrite_one(tmp_path, capsys):
    existing = tmp_path / "report.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        ddp_check.main(["gradient-check", "--output", str(existing)])
    assert exit_info.value.code == 2 and "never overwrites" in capsys.readouterr().err
    assert existing.read_text() == "{}"
    fresh = tmp_path / "fresh.json"
    assert ddp_check.main(["gradient-check", "--output", str(fresh)]) == 0  # one process, no group
    report = json.loads(fresh.read_text())["runs"][1]
    assert report["world_size"] == 1 and report["local_sizes"] == [5] and report["lam"] == 0.5
    assert report["max_abs_gradient_difference"] < 1e-12 and report["mask_equals_single_process"]


# ---------------------------------------------------------------------------------------------
# Failures that must be Python errors on every rank, not aborts or waits


def test_embeddings_of_different_widths_are_a_python_error_on_every_rank(gradient_runs):
    for result in gradient_runs:
        assert "differ beyond their number of rows (rank 0: [2, 3], rank 1: [2, 4])" in result["widths"]


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(fit_runs):
    for result in fit_runs:
        assert "training diverged at epoch 1, step 1 of 4" in result["diverged"]
        assert "the embeddings = NaN or infinite" in result["diverged"]


def test_each_rank_draws_its_own_dropout(fit_runs):
    seeds = [result["dropout_seeds"] for result in fit_runs]
    assert seeds[0] == [0] and seeds[1] != seeds[0]  # rank 0 keeps the one-process seed (seed 0, epoch 0)


def test_nccl_collectives_use_this_ranks_gpu_not_the_current_device(monkeypatch):
    monkeypatch.setattr(collectives.dist, "get_backend", lambda *args: "nccl")
    monkeypatch.setattr(collectives.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert collectives._collective_device() == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert collectives._collective_device() == torch.device("cuda", 0)  # nothing else to go by
    monkeypatch.setattr(collectives.dist, "get_backend", lambda *args: "gloo")
    assert collectives._collective_device() == torch.device("cpu")
    flags = torch.tensor([False, True])
    assert collectives.any_rank(flags) is flags  # one process: its own alarms


@pytest.mark.parametrize("environment, message", [
    ({"WORLD_SIZE": "two"}, r"WORLD_SIZE='two' must be a whole number >= 1"),
    ({"WORLD_SIZE": "2"}, r"WORLD_SIZE=2 asks for 2 processes, but RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost"}, r"but MASTER_PORT is not set: start every"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29999"}, r"RANK=2 .* 0 \.\. 1"),
])
def test_a_broken_torchrun_environment_is_a_clear_error(environment, message, monkeypatch, capsys, tmp_path):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        distributed.init_from_environment(torch.device("cpu"))
    with pytest.raises(SystemExit) as exit_info:
        ddp_check.main(["gradient-check", "--output", str(tmp_path / "report.json")])
    assert exit_info.value.code == 2 and "torchrun" in capsys.readouterr().err


def test_fit_check_refuses_an_unknown_loss_before_starting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ddp_check.main(["fit-check", "--output", str(tmp_path / "fit.json"), "--loss", "nosuch"])
    assert exit_info.value.code == 2 and "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_a_missing_second_process_is_a_timeout_error_within_the_limit(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(port), "GLOSS_LITE_RENDEZVOUS_TIMEOUT": "3"}
    code = ("import torch; from gloss_lite.training import distributed; "
            "distributed.init_from_environment(torch.device('cpu'))")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and time.monotonic() - started < 100
    assert "TimeoutError: rank 0 of WORLD_SIZE=2: the 2 processes did not all meet" in done.stderr
    assert "within 3 s" in done.stderr and "GLOSS_LITE_RENDEZVOUS_TIMEOUT" in done.stderr


def test_the_readmes_torchrun_example_leaves_out_what_several_processes_refuse():
    from conftest import ROOT

    section = (ROOT / "README.md").read_text().split("### A larger graph, and one graph across processes", 1)[1]
    section = section.split("\n## ", 1)[0]
    command = section[section.index("```bash"):]
    command = command[: command.index("```", 3)]
    assert "torchrun" in command
    instruction = section[section.index("Across processes"): section.index("```bash")]
    config = instruction[instruction.index("TrainConfig("): instruction.index(")`") + 1].replace("\n", " ")
    assert "chunk_size" not in config and "encoder_passes" not in config
    from gloss_lite.training import TrainConfig

    eval(config, {"TrainConfig": TrainConfig}).validate()  # the config it names is a valid one
