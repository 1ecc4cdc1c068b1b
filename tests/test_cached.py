"""Cached embeddings (gloss_lite.training.cached): the gradient of a graph embedded chunk by chunk is the plain one."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertModel

from gloss_lite.data import load_dataset
from gloss_lite.encoders import Encoder, default_model_path
from gloss_lite.losses import GLoss, mix_losses
from gloss_lite.training import TrainConfig, TrainingDivergedError, cached, fit
from gloss_lite.training.cached import RandomState, cached_backward

TOKENIZER = AutoTokenizer.from_pretrained(default_model_path())


def tiny_encoder(dropout=0.1, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=TOKENIZER.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    return Encoder(BertModel(config).to(dtype), TOKENIZER, max_length=32, name="tiny")


class ChunkedEncoder(Encoder):
    """The plain reference: ``forward`` embeds its texts in chunks, all with gradient, activations all held.

    Its dropout draws come in the order of the cached step's (chunk after chunk), so one
    ``loss.backward()`` through it is the plain full-batch backward that the cached step must equal.
    """

    def __init__(self, encoder: Encoder, chunk_size: int) -> None:
        super().__init__(encoder.model, encoder.tokenizer, pooling=encoder.pooling, max_length=encoder.max_length)
        self.chunk_size = chunk_size

    def forward(self, texts):
        texts = list(texts)
        return torch.cat([super(ChunkedEncoder, self).forward(texts[i : i + self.chunk_size])
                          for i in range(0, len(texts), self.chunk_size)])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: a second CPU thread only waits on the first (and, on a busy CPU, for minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batch():
    train = load_dataset("reviews_sentiment").train.sample(10, seed=0)
    return train.texts, train.labels


def graph_loss(head, labels, passes=1):
    """CE of the head mixed with G-Loss, its mask generator seeded afresh: a function of the embeddings only."""
    gloss = GLoss(int(labels.max()) + 1, sigma=1.0, gamma=0.6, seed=3)

    def loss_of(embeddings, aux_embeddings=None):
        aux_embeddings = embeddings if aux_embeddings is None else aux_embeddings
        return mix_losses(F.cross_entropy(head(embeddings), labels), gloss(aux_embeddings, labels), 0.5)

    return loss_of


def gradients(*modules):
    """Every parameter's gradient (zeros for the ones the loss does not reach, like BERT's pooler)."""
    parameters = [p for module in modules for p in module.parameters()]
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]


def plain_step(encoder, head, texts, labels, chunk_size, passes=1, seed=1):
    """One ``loss.backward()`` through all embeddings at once (chunked forward, every activation held)."""
    reference = ChunkedEncoder(encoder, chunk_size).train()
    torch.manual_seed(seed)
    embeddings = [reference(texts) for _ in range(passes)]
    loss = graph_loss(head, labels, passes)(*embeddings)
    encoder.zero_grad(), head.zero_grad()
    loss.backward()
    return loss.detach(), embeddings[0].detach(), gradients(encoder, head), torch.get_rng_state()


def cached_step(encoder, head, texts, labels, chunk_size, passes=1, seed=1):
    encoder.train()
    torch.manual_seed(seed)
    encoder.zero_grad(), head.zero_grad()
    loss, embeddings = cached_backward(encoder, texts, graph_loss(head, labels, passes), chunk_size, passes=passes)
    first = embeddings if passes == 1 else embeddings[0]
    return loss, first, gradients(encoder, head), torch.get_rng_state()


def largest_difference(left, right):
    return max(float((a - b).abs().max()) for a, b in zip(left, right))


@pytest.mark.parametrize("chunk_size, passes", [(3, 1), (4, 2), (10, 1)])
def test_cached_gradients_equal_the_plain_backward_with_dropout_on(batch, chunk_size, passes):
    texts, labels = batch
    encoder = tiny_encoder(dropout=0.1, dtype=torch.float64)
    head = torch.nn.Linear(encoder.dim, 2).double()
    plain = plain_step(encoder, head, texts, labels, chunk_size, passes)
    cached_result = cached_step(encoder, head, texts, labels, chunk_size, passes)
    assert float(plain[0]) == pytest.approx(float(cached_result[0]), abs=1e-12)
    assert torch.allclose(plain[1], cached_result[1], atol=1e-12, rtol=0)
    grads_plain, grads_cached = plain[2], cached_result[2]
    assert len(grads_plain) == len(list(encoder.parameters())) + 2
    assert all(g.abs().max() > 0 for g in grads_plain[:3])  # embeddings, layer norms: a real gradient
    scale = max(float(g.abs().max()) for g in grads_plain)
    assert largest_difference(grads_plain, grads_cached) <= 1e-10 * scale
    assert torch.equal(plain[3], cached_result[3])  # the generator ends where the plain step leaves it


def test_without_the_replay_the_gradients_differ(batch, monkeypatch):
    """The test above can fail: with the random state not restored, step 3 draws other dropout masks."""
    texts, labels = batch
    encoder = tiny_encoder(dropout=0.1, dtype=torch.float64)
    head = torch.nn.Linear(encoder.dim, 2).double()
    plain = plain_step(encoder, head, texts, labels, chunk_size=3)
    monkeypatch.setattr(cached.RandomState, "__enter__", lambda self: self)
    monkeypatch.setattr(cached.RandomState, "__exit__", lambda self, *exc: None)
    unreplayed = cached_step(encoder, head, texts, labels, chunk_size=3)
    encoder_grads = len(list(encoder.parameters()))
    scale = max(float(g.abs().max()) for g in plain[2])
    assert largest_difference(plain[2][:encoder_grads], unreplayed[2][:encoder_grads]) > 1e-3 * scale
    assert float(plain[0]) == pytest.approx(float(unreplayed[0]), abs=1e-12)  # step 1 and the loss are unchanged


def test_without_dropout_the_cached_step_equals_one_encoder_call(batch):
    """Chunking changes only the padding: one call on all texts gives the same gradient, up to rounding."""
    texts, labels = batch
    encoder = tiny_encoder(dropout=0.0, dtype=torch.float64).train()
    head = torch.nn.Linear(encoder.dim, 2).double()
    loss = graph_loss(head, labels)(encoder(texts))
    loss.backward()
    whole = gradients(encoder, head)
    _, _, chunked, _ = cached_step(encoder, head, texts, labels, chunk_size=4)
    scale = max(float(g.abs().max()) for g in whole)
    assert largest_difference(whole, chunked) <= 1e-9 * scale


def test_under_autocast_the_cached_step_equals_the_plain_backward_under_autocast(batch):
    """``autocast=True``: the encoder in bfloat16 (here on the CPU), its embeddings float32, as in fit with amp."""
    texts, labels = batch
    encoder = tiny_encoder(dropout=0.1)
    head = torch.nn.Linear(encoder.dim, 2)
    reference = ChunkedEncoder(encoder, 4).train()
    torch.manual_seed(1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        embeddings = reference(texts).float()
    graph_loss(head, labels)(embeddings).backward()
    plain = gradients(encoder, head)
    encoder.zero_grad(), head.zero_grad()
    torch.manual_seed(1)
    _, cached_embeddings = cached_backward(encoder, texts, graph_loss(head, labels), 4, autocast=True)
    assert cached_embeddings.dtype == torch.float32
    assert torch.equal(cached_embeddings, embeddings.detach())
    # One autocast region shares one bfloat16 copy of each weight, whose gradient sums the chunks in
    # bfloat16; the cached step's chunks each have their own: equal up to bfloat16 rounding (2**-8).
    scale = max(float(g.abs().max()) for g in plain)
    assert largest_difference(plain, gradients(encoder, head)) <= 2**-8 * scale


def test_random_state_replays_and_restores_the_cpu_generator():
    torch.manual_seed(5)
    state = RandomState()
    first = torch.rand(7)
    torch.rand(3)
    before = torch.get_rng_state()
    with state:
        again = torch.rand(7)
    assert torch.equal(again, first)
    assert torch.equal(torch.get_rng_state(), before)  # the code after the block continues undisturbed
    with pytest.raises(KeyError):
        with state:
            torch.rand(2)
            raise KeyError("inside")
    assert torch.equal(torch.get_rng_state(), before)
    with state:
        with pytest.raises(RuntimeError, match="already being replayed"):
            state.__enter__()
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("chunk_size", [0, -2, 2.5, True, "8", None])
def test_bad_chunk_sizes_are_refused(batch, chunk_size):
    texts, labels = batch
    encoder = tiny_encoder()
    head = torch.nn.Linear(encoder.dim, 2)
    with pytest.raises(ValueError, match=r"chunk_size .*(positive int|got the bool True)"):
        cached_backward(encoder, texts, graph_loss(head, labels), chunk_size)


def test_bad_passes_loss_and_texts_are_refused(batch):
    texts, labels = batch
    encoder = tiny_encoder()
    head = torch.nn.Linear(encoder.dim, 2)
    with pytest.raises(ValueError, match="passes must be 1 or 2"):
        cached_backward(encoder, texts, graph_loss(head, labels), 4, passes=3)
    with pytest.raises(ValueError, match="texts is empty"):
        cached_backward(encoder, [], graph_loss(head, labels), 4)
    with pytest.raises(ValueError, match=r"scalar tensor, got Tensor of shape \(10, 32\)"):
        cached_backward(encoder, texts, lambda embeddings: embeddings * 2, 4)


@pytest.mark.parametrize("chunk_size, batch_size, message", [
    (0, 8, "positive int"), (True, 8, "got the bool"), (2.0, 8, "positive int"),
    (8, 8, r"chunk_size 8 >= batch_size 8.*chunk_size=None"), (20, 8, r"chunk_size 20 >= batch_size 8"),
])
def test_train_config_refuses_bad_chunk_sizes(chunk_size, batch_size, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(chunk_size=chunk_size, batch_size=batch_size).validate()


@pytest.fixture(scope="module")
def splits():
    train, val, _ = load_dataset("reviews_sentiment")
    return train.sample(24, seed=0), val.sample(12, seed=0)


def run(splits, encoder, **changes):
    settings = dict(epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2, device="cpu", progress=False, sigma=1.0,
                    lpa_eval=False, loss="gloss+ce", seed=0)
    settings.update(changes)
    return fit(*splits, TrainConfig(**settings), encoder=copy.deepcopy(encoder))


def assert_same_runs(plain, chunked, tolerance):
    for row_plain, row_chunked in zip(plain.history, chunked.history, strict=True):
        for key in ("loss", "ce", "aux", "aux_grad_share", "val_accuracy", "val_macro_f1"):
            assert row_chunked[key] == pytest.approx(row_plain[key], abs=tolerance, nan_ok=True), key
    weights_plain = [*plain.encoder.model.state_dict().values(), *plain.head.state_dict().values()]
    weights_chunked = [*chunked.encoder.model.state_dict().values(), *chunked.head.state_dict().values()]
    assert max(float((a.float() - b.float()).abs().max()) for a, b in zip(weights_plain, weights_chunked)) < tolerance


@pytest.mark.parametrize("changes", [
    {},
    {"encoder_passes": 2, "class_weights": "balanced", "lam": 0.3},
    {"loss": "gloss"},
    {"loss": "ce"},
])
def test_fit_with_chunk_size_equals_the_plain_fit_with_dropout_on(splits, changes):
    """Two epochs of three steps: the same history and weights as the plain step on the same chunks."""
    encoder = ChunkedEncoder(tiny_encoder(dropout=0.1), chunk_size=3)
    plain = run(splits, encoder, **changes)
    chunked = run(splits, encoder, chunk_size=3, **changes)
    assert_same_runs(plain, chunked, tolerance=1e-5)
    if changes.get("loss", "gloss+ce") == "gloss+ce":
        assert 0 < plain.history[0]["aux_grad_share"] < 1  # the probes fire on the cached leaf too


def test_fit_with_chunk_size_and_dropout_off_equals_the_plain_fit_on_whole_batches(splits):
    """Without dropout, chunking changes nothing but the padding of the encoder calls."""
    encoder = tiny_encoder(dropout=0.0)
    assert_same_runs(run(splits, encoder), run(splits, encoder, chunk_size=3), tolerance=1e-5)


def test_a_diverged_cached_step_stops_before_the_optimizer_step(splits):
    encoder = tiny_encoder()
    with torch.no_grad():
        encoder.model.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="step 1 of 3 .*the embeddings = NaN or infinite"):
        run(splits, encoder, chunk_size=3)


def test_the_benchmarks_memory_probe_sees_a_known_allocation():
    """benchmarks/graph_scale.py measures a step's peak resident memory above the memory before it."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "graph_scale.py"
    spec = importlib.util.spec_from_file_location("graph_scale", path)
    graph_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph_scale)
    held = []
    measured = graph_scale.peak_memory_of(lambda: held.append(torch.ones(50 * 2**20 // 4)))  # 50 MiB, written
    assert 49 <= measured["peak_mb"] <= 60
    held.clear()
    measured = graph_scale.peak_memory_of(lambda: torch.ones(200 * 2**20 // 4).sum())  # 200 MiB, freed at once
    assert 199 <= measured["peak_mb"] <= 215


def test_the_replay_forks_and_restores_the_cuda_generator_too(monkeypatch):
    """On CUDA dropout draws from the device's generator: it is saved, replayed inside fork_rng, and put back."""
    cuda = torch.device("cuda", 0)
    generator_states = {cuda: torch.tensor([1], dtype=torch.uint8)}
    forks = []

    class Fork:
        def __init__(self, devices):
            self.devices = devices

        def __enter__(self):
            forks.append(list(self.devices))
            self.saved = (torch.get_rng_state(), {d: generator_states[d].clone() for d in self.devices})

        def __exit__(self, *exc_info):
            torch.set_rng_state(self.saved[0])
            generator_states.update(self.saved[1])

    monkeypatch.setattr(cached.torch.random, "fork_rng", lambda devices: Fork(devices))
    monkeypatch.setattr(cached.torch.cuda, "get_rng_state", lambda device: generator_states[device].clone())
    monkeypatch.setattr(cached.torch.cuda, "set_rng_state", lambda state, device: generator_states.__setitem__(
        device, state.clone()))
    state = RandomState(cuda)
    generator_states[cuda] = torch.tensor([2], dtype=torch.uint8)  # the generator moves on (dropout drew)
    seen = []
    with state:
        seen.append(int(generator_states[cuda]))
    assert forks == [[cuda]] and seen == [1]  # replayed from the saved state inside the fork
    assert int(generator_states[cuda]) == 2  # and put back afterwards
    assert RandomState(torch.device("cpu")).cuda_devices == [] and RandomState().cuda_devices == []


def notebook_08_cells():
    import json

    path = Path(__file__).resolve().parents[1] / "notebooks" / "08_the_graph_beyond_one_batch.ipynb"
    return ["".join(cell["source"]) for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]]


def test_notebook_08_replays_the_gpu_generator_and_times_the_gpu_it_waited_for():
    cells = notebook_08_cells()
    check = next(cell for cell in cells if "cached_gradient_max_abs_difference" in cell)
    assert "torch.random.fork_rng(devices=generators)" in check and "torch.set_rng_state" not in check
    assert 'generators = [device] if device.type == "cuda" else []' in check
    for cell in (cell for cell in cells if "time.perf_counter() - started" in cell and "torch.distributed.run"
                 not in cell):  # the two-process cell times subprocesses, not the GPU
        assert "torch.cuda.synchronize()" in cell, cell[:200]
    assert 'SOURCE = f"gloss-lite[integrations] @ git+' in cells[0]  # 08 imports the integrations
