"""The precision policy, the fp16 path (on the CPU, where torch allows it) and G-Loss's IEEE float32 guard.

CUDA decisions are tested through the compute capability they are a function of; GPUs are
named by theirs (T4: 7.5, A100: 8.0, H100: 9.0).
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gloss_lite.graph import float32_matmul, gaussian_affinity
from gloss_lite.losses import g_loss
from gloss_lite.masking import split_mask
from gloss_lite.runtime import PRECISIONS, Precision, choose_precision, precision_for
from gloss_lite.training import TrainConfig, fit
from gloss_lite.training import step as step_module
from gloss_lite.training.cached import cached_backward


@pytest.mark.parametrize("capability, name, scales", [((7, 5), "fp16", True), ((8, 0), "bf16", False),
                                                      ((9, 0), "bf16", False)])
def test_auto_is_bf16_where_the_gpu_has_it_natively_and_fp16_with_scaling_below(capability, name, scales):
    precision = choose_precision("cuda", capability)
    assert precision.name == name and precision.scales_loss is scales
    assert precision.autocast_dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
    assert f"compute capability {capability[0]}.{capability[1]}" in precision.reason


def test_auto_is_fp32_on_a_cpu():
    precision = choose_precision("cpu", None)
    assert precision == Precision("fp32", precision.reason) and precision.autocast_dtype is None
    assert not precision.scales_loss


@pytest.mark.parametrize("device, capability, override, name, said", [
    ("cuda", (7, 5), "bf16", "bf16", "emulated"),  # asked for: used, and said to be slow
    ("cuda", (7, 5), "tf32", "fp32", "TF32 needs compute capability 8.0"),
    ("cuda", (9, 0), "tf32", "tf32", "as asked"),
    ("cuda", (9, 0), "fp32", "fp32", "as asked"),
    ("cuda", (8, 0), "fp16", "fp16", "as asked"),
    ("cpu", None, "tf32", "fp32", "TF32 is a GPU matmul mode"),
    ("cpu", None, "fp16", "fp16", "as asked"),
])
def test_an_override_is_used_unless_the_hardware_cannot(device, capability, override, name, said):
    precision = choose_precision(device, capability, override)
    assert precision.name == name and said in precision.reason


def test_bad_overrides_and_a_missing_capability_are_refused():
    with pytest.raises(ValueError, match=r"amp must be one of \('auto', 'bf16', 'fp16', 'fp32', 'tf32'\), got True"):
        choose_precision("cpu", None, True)
    with pytest.raises(ValueError, match=r"compute capability, such as \(7, 5\)"):
        choose_precision("cuda", None)
    with pytest.raises(ValueError, match=r"amp must be one of .*got 'half'"):
        TrainConfig(amp="half").validate()
    assert TrainConfig().amp == "auto" and TrainConfig.authors().amp == "fp32" and "auto" in PRECISIONS


def test_the_capability_of_a_cuda_device_is_read_from_it():
    seen = []
    precision = precision_for(torch.device("cuda", 1), capability_of=lambda device: seen.append(device) or (7, 5))
    assert precision.name == "fp16" and seen == [torch.device("cuda", 1)]
    assert precision_for("cpu", capability_of=lambda device: pytest.fail("a CPU has no capability")).name == "fp32"


def matmul_setting() -> str:
    backend = torch.backends.cuda.matmul
    return backend.fp32_precision if hasattr(backend, "fp32_precision") else torch.get_float32_matmul_precision()


class MatmulSettings(TorchDispatchMode):
    """The float32 matmul setting in force at every matrix product."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "bmm", "matmul", "_linalg_solve_ex"):
            self.seen.append((name, matmul_setting()))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def high_matmul_precision():
    """What a user sets for speed: TF32 matmuls (on CPUs, oneDNN's equivalent)."""
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision("highest")


def test_the_gram_matrix_and_the_solve_stay_ieee_float32_under_high_matmul_precision(high_matmul_precision):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(16, 8, generator=generator, requires_grad=True)
    labels = torch.arange(16) % 3
    mask = split_mask(labels, 0.5, generator=generator)
    outside = matmul_setting()
    assert outside in ("tf32", "high")
    with MatmulSettings() as settings:
        loss = g_loss(embeddings, labels, mask, sigma=0.05, num_classes=3)
        gaussian_affinity(embeddings.detach(), 0.05)
    # the Gram matrix and T_UL Y_L (products), the solve, and the Gram of gaussian_affinity alone
    assert [name for name, _ in settings.seen] == ["mm", "mm", "_linalg_solve_ex", "mm"], settings.seen
    assert {setting for _, setting in settings.seen} <= {"ieee", "highest"}, settings.seen
    assert matmul_setting() == outside  # the user's setting is back afterwards
    loss.backward()


def test_g_loss_is_the_same_number_under_every_matmul_precision():
    """On CPUs with bf16 support, "medium" changes float32 products; G-Loss must not move."""
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.nn.functional.normalize(torch.randn(64, 96, generator=generator) + 0.5, dim=1)
    labels = torch.arange(64) % 4
    mask = split_mask(labels, 0.7, generator=generator)
    values = {}
    for setting in ("highest", "high", "medium"):
        torch.set_float32_matmul_precision(setting)
        try:
            values[setting] = g_loss(embeddings, labels, mask, sigma=0.05, num_classes=4)
        finally:
            torch.set_float32_matmul_precision("highest")
    assert torch.equal(values["high"], values["highest"]) and torch.equal(values["medium"], values["highest"])


def test_a_step_runs_in_tf32_or_ieee_as_its_precision_says_and_autocast_only_where_asked():
    for name, expected in (("tf32", {"tf32", "high"}), ("fp32", {"ieee", "highest"})):
        with Precision(name, "").matmuls(), Precision(name, "").autocast("cpu"):
            assert matmul_setting() in expected and not torch.is_autocast_enabled("cpu")
    with float32_matmul("tf32"), Precision("fp32", "").matmuls():  # the authors' fp32 overrides a user's TF32
        assert matmul_setting() in {"ieee", "highest"}
    with float32_matmul("tf32"), Precision("bf16", "").matmuls(), Precision("bf16", "").autocast("cpu"):
        assert matmul_setting() in {"tf32", "high"} and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert matmul_setting() in {"ieee", "highest", "none"}
    with pytest.raises(ValueError, match="mode must be 'ieee' or 'tf32'"):
        with float32_matmul("bf16"):
            pass


# ---------------------------------------------------------------------------------------------
# fp16 with a gradient scaler, on the CPU


def tiny_setup():
    from test_train import quick, tiny_encoder

    from gloss_lite.data import load_dataset

    train, val, _ = load_dataset("reviews_sentiment")
    return train.sample(24, seed=0), val.sample(12, seed=0), quick, tiny_encoder


def test_fp16_scales_the_loss_unscales_before_clipping_and_records_its_precision(monkeypatch):
    train, val, quick, tiny_encoder = tiny_setup()
    calls = []
    scaler_class = torch.amp.GradScaler
    original = {name: getattr(scaler_class, name) for name in ("scale", "unscale_", "update")}
    for name in original:
        monkeypatch.setattr(scaler_class, name, lambda self, *a, _n=name, **k: calls.append(_n) or original[_n](
            self, *a, **k))
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(step_module.torch.nn.utils, "clip_grad_norm_",
                        lambda *a, **k: calls.append("clip") or clip(*a, **k))
    result = fit(train, val, quick(loss="gloss+ce", lpa_eval=False, amp="fp16", grad_clip=1.0),
                 encoder=tiny_encoder())
    (row,) = result.history
    assert row["precision"] == "fp16" and result.precision == "fp16" and row["skipped_steps"] == 0
    steps = [call for call in calls if call != "scale"]
    assert steps == ["unscale_", "clip", "update"] * 3  # every step: unscale, then clip, then the scaler's update
    assert "scale" in calls and 0 < row["aux_grad_share"] < 1


def test_an_fp16_step_whose_gradients_overflow_is_skipped_and_the_scale_lowered(monkeypatch):
    train, val, quick, tiny_encoder = tiny_setup()
    encoder = tiny_encoder()
    poison = {"left": 1}

    def overflow(grad):  # the first backward pass overflows, as a too-high scale would
        if poison["left"]:
            poison["left"] -= 1
            return grad * float("inf")
        return grad

    encoder.model.embeddings.word_embeddings.weight.register_hook(overflow)
    before = encoder.model.embeddings.word_embeddings.weight.detach().clone()
    scales = []
    update = torch.amp.GradScaler.update
    monkeypatch.setattr(torch.amp.GradScaler, "update",
                        lambda self, *a: update(self, *a) or scales.append(self.get_scale()))
    result = fit(train, val, quick(loss="ce", lpa_eval=False, amp="fp16", epochs=1), encoder=encoder)
    assert result.history[0]["skipped_steps"] == 1
    assert scales[0] == 2.0**16 * 0.5 and scales[1] == scales[0]  # halved after the overflow, then kept
    assert not torch.equal(before, encoder.model.embeddings.word_embeddings.weight.detach())  # later steps ran


def test_the_same_overflow_in_fp32_stops_the_run(monkeypatch):
    train, val, quick, tiny_encoder = tiny_setup()
    encoder = tiny_encoder()
    encoder.model.embeddings.word_embeddings.weight.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(step_module.TrainingDivergedError, match=r"step 1 of 3 .*the gradient norm = NaN or infinite"):
        fit(train, val, quick(loss="ce", lpa_eval=False, grad_clip=1.0), encoder=encoder)


def test_gradient_probes_report_unscaled_norms():
    embeddings = torch.randn(5, 3, requires_grad=True)
    probes = {}
    view = step_module._gradient_probe(embeddings, "ce", probes, scale=torch.tensor(1024.0))
    (1024.0 * (view * 2.0).sum()).backward()  # a loss scaled by 1024
    torch.testing.assert_close(probes["ce"], torch.full((5, 3), 2.0).norm())


def test_the_cached_step_scales_its_loss_and_autocasts_in_the_dtype_asked_for():
    from test_cached import ChunkedEncoder, gradients, graph_loss
    from test_cached import tiny_encoder as cached_encoder

    from gloss_lite.data import load_dataset

    train = load_dataset("reviews_sentiment").train.sample(10, seed=0)
    encoder = cached_encoder(dropout=0.0)
    head = torch.nn.Linear(encoder.dim, 2)
    encoder.train()
    cached_backward(encoder, train.texts, graph_loss(head, train.labels), 4)
    plain = gradients(encoder, head)
    encoder.zero_grad(), head.zero_grad()
    loss, _ = cached_backward(encoder, train.texts, graph_loss(head, train.labels), 4, scale=lambda loss: 8.0 * loss)
    for got, want in zip(gradients(encoder, head), plain):
        torch.testing.assert_close(got, 8.0 * want)  # a power of two: exactly eight times
    with torch.autocast("cpu", dtype=torch.float16):
        half = ChunkedEncoder(encoder, 4)(train.texts).float()
    _, embeddings = cached_backward(encoder, train.texts, graph_loss(head, train.labels), 4, autocast=torch.float16)
    assert embeddings.dtype == torch.float32 and torch.equal(embeddings, half.detach())


# ---------------------------------------------------------------------------------------------
# Notebook 05 says what a GPU computes in


def _compiles(source: str) -> bool:
    try:
        compile(source, "cell", "exec")
    except SyntaxError:
        return False
    return True


def notebook_cell(name: str, marker: str) -> str:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "notebooks" / name
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return next("".join(cell["source"]) for cell in cells if marker in "".join(cell["source"]))


@pytest.mark.parametrize("capability, computes", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_notebook_05_never_says_a_t4_uses_bf16(capability, computes, monkeypatch, capsys):
    cell = notebook_cell("05_fine_tuning.ipynb", "precision = precision_for(")
    lines = cell[cell.index("precision = precision_for("):].splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("print("))
    while not _compiles("\n".join(lines[: end + 1])):  # the print may run over several lines
        end += 1
    statements = "\n".join(lines[: end + 1])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    exec(statements, {"device": torch.device("cuda"), "config": TrainConfig(), "precision_for": precision_for})
    printed = capsys.readouterr().out
    assert f"computes in {computes}" in printed and "used" not in printed, printed
