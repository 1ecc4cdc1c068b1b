"""The reproduction grid on a tiny model and data: rows, resumption, worker processes, verdicts."""

import math

import pandas as pd
import pytest
import torch
from scipy import stats
from test_train import TOKENIZER, tiny_encoder

from gloss_lite.reproduction import run as reproduce
from gloss_lite.reproduction.run import Run, paired_interval, summarise, verdict

METHODS = ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors"]
BUDGET = {"epochs": 2, "batch_size": 12, "max_length": 32, "lr": 1e-3}


def tiny_spec(tmp_path, **changes):
    spec = {"datasets": ["reviews_topic"], "methods": METHODS, "seeds": [0],
            "sizes": {"train": 36, "val": 24, "test": 24},
            "budget": {"course": dict(BUDGET), "authors": dict(BUDGET)},
            "device": "cpu", "work_dir": str(tmp_path / "work"), "make_encoder": tiny_encoder}
    spec.update(changes)
    return spec


def test_grid_writes_a_row_per_run_and_epoch_and_skips_finished_runs(tmp_path, capsys):
    output = tmp_path / "results.csv"
    reproduce.run_grid(tiny_spec(tmp_path), output, jobs=0)
    frame = pd.read_csv(output)
    assert list(frame.columns) == reproduce.RUN_COLUMNS
    assert len(frame) == 4 * 2
    assert set(zip(frame.loss, frame.recipe)) == {tuple(m.split("/")) for m in METHODS}
    last = frame[frame.epoch == 2]
    assert last.test_accuracy.between(0, 1).all() and last.test_accuracy_last.between(0, 1).all()
    assert frame[frame.epoch == 1].test_accuracy.isna().all()  # test scores sit on a run's last row
    assert frame[frame.loss == "ce"].aux_grad_share.isna().all()
    assert frame[frame.loss == "gloss+ce"].aux_grad_share.between(0, 1).all()
    assert (frame.torch == torch.__version__).all() and frame.device.str.contains("threads").all()
    assert set(frame.train_size) == {36} and set(frame.batch_size) == {12}
    assert not list((tmp_path / "work").rglob("*.pt"))  # finished runs leave no checkpoint behind
    capsys.readouterr()
    reproduce.run_grid(tiny_spec(tmp_path), output, jobs=0)
    assert "4 already in" in capsys.readouterr().out
    assert len(pd.read_csv(output)) == 8  # nothing trained or written again


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    one = dict(tiny_spec(tmp_path), methods=["gloss+ce/authors"])
    run = Run("reviews_topic", "gloss+ce", "authors", 0)
    straight = reproduce.execute(run, dict(one, work_dir=str(tmp_path / "a")))
    short = dict(one, work_dir=str(tmp_path / "b"), budget={"authors": dict(BUDGET, epochs=1)})
    reproduce.execute(run, short)  # "killed" after epoch 1
    resumed = reproduce.execute(run, dict(one, work_dir=str(tmp_path / "b")))
    assert [r["epoch"] for r in resumed] == [1, 2]
    for key in ("val_accuracy", "loss_value", "test_accuracy", "test_accuracy_last"):
        assert resumed[-1][key] == pytest.approx(straight[-1][key], abs=1e-6)


def test_jobs_run_in_worker_processes_with_a_model_from_a_folder(tmp_path):
    folder = tmp_path / "tiny-model"
    encoder = tiny_encoder()
    encoder.model.save_pretrained(folder)
    TOKENIZER.save_pretrained(folder)
    budget = dict(BUDGET, model=str(folder), epochs=1)
    spec = tiny_spec(tmp_path, methods=["ce/course", "gloss+ce/course"], make_encoder=None,
                     budget={"course": budget}, threads=1)
    output = tmp_path / "results.csv"
    reproduce.run_grid(spec, output, jobs=2)
    frame = pd.read_csv(output)
    assert sorted(frame.loss) == ["ce", "gloss+ce"] and frame.test_accuracy.notna().all()


def test_paired_interval_is_the_t_interval():
    d = [0.02, 0.05, -0.01]
    mean, low, high = paired_interval(d)
    half = stats.t.ppf(0.975, 2) * pd.Series(d).std() / math.sqrt(3)
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02 - half) and high == pytest.approx(0.02 + half)
    assert half == pytest.approx(4.302653 * 0.0300 / math.sqrt(3), rel=1e-4)
    assert paired_interval([0.1]) == (0.1, -math.inf, math.inf)


@pytest.mark.parametrize("low, high, better, expected", [
    (0.01, 0.05, "higher", "supported"), (-0.05, -0.01, "higher", "not supported"),
    (-0.01, 0.05, "higher", "undecided at this sample size"), (-3.0, -1.0, "lower", "supported"),
    (0.5, 2.0, "lower", "not supported"), (-math.inf, math.inf, "lower", "undecided at this sample size")])
def test_verdicts(low, high, better, expected):
    assert verdict(low, high, better) == expected


def synthetic_results():
    """Two recipes, three seeds; G-Loss+CE (course) beats CE by 0.02-0.04 and reaches CE's best earlier."""
    rows = []
    ce_curve = [0.60, 0.70, 0.75]
    for seed, gain in zip(range(3), (0.02, 0.03, 0.04)):
        for loss, recipe, curve, test in [
            ("ce", "course", ce_curve, 0.70), ("gloss+ce", "course", [0.65, 0.76, 0.77], 0.70 + gain),
            ("ce", "authors", ce_curve, 0.70), ("gloss+ce", "authors", [0.5, 0.6, 0.7], 0.70 - gain + 0.03)]:
            for epoch, value in enumerate(curve, start=1):
                rows.append({"dataset": "mr", "loss": loss, "recipe": recipe, "seed": seed, "epoch": epoch,
                             "val_accuracy": value, "test_accuracy": test if epoch == 3 else None,
                             "test_macro_f1": test if epoch == 3 else None, "test_accuracy_last": test,
                             "best_epoch": 3, "aux_grad_share": 0.5, "seconds": 1.0, "peak_memory_mb": 10.0})
    return pd.DataFrame(rows)


def test_summary_compares_each_method_with_ce_of_its_own_recipe():
    scores, claims = summarise(synthetic_results())
    assert scores.loc[("mr", "course", "gloss+ce"), "test_accuracy"] == pytest.approx(0.73)
    course = claims.set_index("recipe").loc["course"]
    assert course["test accuracy - CE"] == pytest.approx(0.03)
    assert course["higher final accuracy"] == "supported"  # 0.03 +- 4.30 * 0.01 / sqrt(3) = [0.005, 0.055]
    assert course["epochs to CE's best - CE's"] == -1 and course["faster convergence"] == "supported"
    authors = claims.set_index("recipe").loc["authors"]  # differences 0.01, 0.00, -0.01
    assert authors["higher final accuracy"] == "undecided at this sample size"
    assert authors["epochs to CE's best - CE's"] == 1  # never reaches 0.75: counted as epoch 4, CE's is 3
    assert authors["faster convergence"] == "not supported"


def test_methods_are_checked():
    assert reproduce.parse_method("gloss+ce/authors") == ("gloss+ce", "authors")
    assert reproduce.parse_method("ce") == ("ce", "course")
    with pytest.raises(ValueError, match="must be loss/recipe"):
        reproduce.parse_method("gloss+ce/paper")
    with pytest.raises(SystemExit):
        reproduce.main(["--methods", "hinge/course", "--summary-only"])


def test_the_summary_file_is_written_beside_the_results_but_never_over_a_users_file(tmp_path):
    output = tmp_path / "mine.csv"
    synthetic_results().assign(device="cpu", torch="x").to_csv(output, index=False)
    assert reproduce.main(["--summary-only", "--output", str(output)]) == 0
    assert (tmp_path / "mine_summary.md").read_text().startswith("# Summary of mine.csv")
    (tmp_path / "mine_summary.md").write_text("my own notes\n")
    assert reproduce.main(["--summary-only", "--output", str(output)]) == 0
    assert (tmp_path / "mine_summary.md").read_text() == "my own notes\n"
