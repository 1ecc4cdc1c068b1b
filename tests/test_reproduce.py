"""The reproduction grid: checks before training, safe results files, claims, workers, failures, the budget,
the GPU-course command. Runs are faked (``fake_execute``) except one real tiny fit."""

import errno
import json
import os
import re
import threading
import time

import pandas as pd
import pytest
import torch

from gloss_lite.reproduction import budget, gpu_course, store, workers
from gloss_lite.reproduction import run as reproduce
from gloss_lite.reproduction.one_run import Run, make_config, peak_memory_mb, precision_name
from gloss_lite.reproduction.results import RESULT_COLUMNS, read_results

from conftest import ROOT

METHODS = ["ce/course", "gloss+ce/course", "ce/authors", "gloss+ce/authors"]
BUDGET = {"epochs": 2, "batch_size": 12, "max_length": 32, "lr": 1e-3}
DATA = os.environ.get("GLOSS_LITE_DATA")
needs_benchmarks = pytest.mark.skipif(not DATA, reason="GLOSS_LITE_DATA is not set (point it at the benchmark CSVs)")


def fake_execute(run, spec):
    """A run's rows without training (accuracy 0.5 + seed / 100); ``spec["log"]`` gets a line per call, and
    ``spec["behaviour"][str(run)]`` makes it fail, stop or fill the disk."""
    if spec.get("log"):
        with open(spec["log"], "a") as log:
            log.write(f"{run}\n")
    behaviour = spec.get("behaviour", {}).get(str(run))
    if behaviour == "fail":
        raise ValueError("a planted failure")
    if behaviour == "interrupt":
        raise KeyboardInterrupt
    if behaviour == "disk":
        raise OSError(errno.ENOSPC, "No space left on device")
    time.sleep(spec.get("sleep", 0))
    epochs = spec["budget"][run.recipe]["epochs"]
    where = {"device": f"gpu {os.environ.get('CUDA_VISIBLE_DEVICES')} threads {torch.get_num_threads()} "
                       f"rayon {os.environ.get('RAYON_NUM_THREADS')}", "precision": "fp32", "torch": "fake",
             "epochs": epochs, "batch_size": spec["budget"][run.recipe].get("batch_size")}
    return [{"dataset": run.dataset, "recipe": run.recipe, "loss": run.loss, "seed": run.seed, "epoch": epoch,
             "val_accuracy": 0.5 + run.seed / 100, "test_accuracy": 0.5 + run.seed / 100 if epoch == epochs else None,
             "best_epoch": epochs if epoch == epochs else None, "seconds": 0.01 * (spec["sizes"]["train"] or 100),
             **where} for epoch in range(1, epochs + 1)]


def tiny_spec(tmp_path, **changes):
    spec = {"datasets": ["reviews_topic"], "methods": METHODS, "seeds": [0],
            "sizes": {"train": 36, "val": 24, "test": 24},
            "budget": {"course": dict(BUDGET), "authors": dict(BUDGET)},
            "device": "cpu", "work_dir": str(tmp_path / "work"), "log": str(tmp_path / "calls.log")}
    spec.update(changes)
    return spec


def calls(tmp_path):
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_one_real_run_records_its_rows_device_precision_and_both_memories(tmp_path):
    from test_train import tiny_encoder

    spec = tiny_spec(tmp_path, methods=["gloss+ce/course"], make_encoder=tiny_encoder,
                     budget={"course": dict(BUDGET, batch_size=4)})
    output = tmp_path / "results.csv"
    report = reproduce.run_grid(spec, output, jobs=0)
    frame = read_results(output)
    assert [str(run) for run in report.finished] == ["reviews_topic gloss+ce/course seed 0"] and len(frame) == 2
    last = frame[frame.epoch == 2].iloc[0]
    assert 0 <= last.test_accuracy <= 1 and 0 <= last.test_accuracy_last <= 1 and last.best_epoch in (1, 2)
    assert frame.aux_grad_share.between(0, 1).all()
    assert set(frame.batch_size) == {7}  # 4 raised to hold the 6 classes (topics) + 1
    assert set(frame.precision) == {"fp32"} and set(frame.torch) == {torch.__version__}
    assert frame.device.str.contains("threads").all()
    assert frame.peak_cuda_allocated_mb.isna().all() and (frame.peak_rss_mb > 50).all()
    assert not list((tmp_path / "work").rglob("*.pt"))  # a finished run leaves no checkpoint behind


def test_grid_writes_a_row_per_run_and_epoch_and_skips_finished_runs(tmp_path, capsys):
    output = tmp_path / "results.csv"
    reproduce.run_grid(tiny_spec(tmp_path), output, jobs=0, execute=fake_execute)
    frame = pd.read_csv(output)
    assert list(frame.columns) == RESULT_COLUMNS and len(frame) == 4 * 2
    assert set(zip(frame.loss, frame.recipe)) == {tuple(m.split("/")) for m in METHODS}
    capsys.readouterr()
    reproduce.run_grid(tiny_spec(tmp_path), output, jobs=0, execute=fake_execute)
    assert "4 already in" in capsys.readouterr().out
    assert len(pd.read_csv(output)) == 8 and len(calls(tmp_path)) == 4  # nothing trained or written again
    assert not (tmp_path / ".results.csv.claims").exists()


def test_appending_to_a_file_of_another_column_order_puts_each_value_under_its_name(tmp_path):
    output = tmp_path / "results.csv"
    columns = list(reversed(RESULT_COLUMNS)) + ["Notes"]
    old = {**{c: "" for c in columns}, "dataset": "reviews_topic", "recipe": "course", "loss": "ce", "seed": "0",
           "epoch": "2", "val_accuracy": "0.9", "test_accuracy": "0.8", "Notes": "mine"}
    pd.DataFrame([old])[columns].rename(columns={"val_accuracy": " VAL_Accuracy "}).to_csv(output, index=False)
    reproduce.run_grid(tiny_spec(tmp_path, seeds=[0, 3]), output, jobs=0, execute=fake_execute)
    frame = read_results(output)
    assert calls(tmp_path).count("reviews_topic ce/course seed 0") == 0  # finished in the file already
    by_run = frame[frame.epoch == 2].set_index(["loss", "recipe", "seed"])
    assert by_run.loc[("ce", "course", 0), ["val_accuracy", "test_accuracy", "notes"]].tolist() == [0.9, 0.8, "mine"]
    assert by_run.loc[("ce", "course", 3), ["val_accuracy", "test_accuracy", "device"]].tolist()[:2] == [0.53, 0.53]
    assert by_run.loc[("gloss+ce", "authors", 3), "epochs"] == 2 and len(frame) == 1 + 7 * 2


def test_a_row_cut_by_a_full_disk_is_dropped_and_its_run_runs_again(tmp_path):
    output = tmp_path / "results.csv"
    spec = tiny_spec(tmp_path, methods=["ce/course", "gloss+ce/course"])
    reproduce.run_grid(dict(spec, methods=["ce/course"]), output, jobs=0, execute=fake_execute)
    with output.open("a") as handle:
        handle.write("reviews_topic,course,gloss+ce,0,1,0.5")  # the disk filled up here
    reproduce.run_grid(spec, output, jobs=0, execute=fake_execute)
    frame = read_results(output)
    assert len(frame) == 4 and calls(tmp_path) == ["reviews_topic ce/course seed 0",
                                                   "reviews_topic gloss+ce/course seed 0"]


@pytest.mark.parametrize("line, expected", [
    ("reviews_topic,course,ce,one,1,0.5", r"line 3: seed = 'one' is not a whole number"),
    ("reviews_topic,course,ce,0,1,high", r"line 3: val_accuracy = 'high' is not a score"),
    ("\x00\x01garbage,,,,,,,,,,,", r"line 3: \d+ values for the 6 columns"),
])
def test_a_broken_results_file_stops_the_grid_before_training_naming_file_and_line(tmp_path, capsys, line, expected):
    output = tmp_path / "results.csv"
    output.write_text("dataset,recipe,loss,seed,epoch,val_accuracy\nreviews_topic,course,ce,0,1,0.5\n" + line + "\n")
    code = reproduce.main(["--datasets", "reviews_topic", "--output", str(output), "--jobs", "0"],
                          execute=fake_execute)
    message = capsys.readouterr().err
    assert code == 2 and "Nothing was trained" in message and str(output) in message
    assert re.search(expected, message)


def test_a_claimed_run_is_skipped_and_a_stale_claim_is_taken_over(tmp_path):
    output = tmp_path / "results.csv"
    other = store.RunClaims(output)  # another invocation, running seed 0 of CE
    assert other.claim(("reviews_topic", "course", "ce", 0))
    stale = store.claims_folder(output) / "reviews_topic__course__gloss+ce__0.lock"
    stale.write_text("12345\n")  # left by a killed invocation: nobody holds its lock
    report = reproduce.run_grid(tiny_spec(tmp_path, methods=["ce/course", "gloss+ce/course"]), output, jobs=0,
                                execute=fake_execute)
    assert [str(r) for r in report.skipped] == ["reviews_topic ce/course seed 0"]
    assert calls(tmp_path) == ["reviews_topic gloss+ce/course seed 0"]
    other.close()


def test_two_invocations_on_one_file_train_each_run_once(tmp_path):
    output = tmp_path / "results.csv"
    spec = tiny_spec(tmp_path, seeds=[0, 1, 2], sleep=0.2)
    facts = reproduce.check_grid(spec, output, jobs=0)
    threads = [threading.Thread(target=reproduce.run_grid, args=(spec, output),
                                kwargs={"jobs": 0, "execute": fake_execute, "facts": facts}) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls(tmp_path)) == sorted(set(calls(tmp_path))) and len(calls(tmp_path)) == 12
    assert read_results(output).groupby(["dataset", "recipe", "loss", "seed"]).ngroups == 12


def test_a_read_only_or_full_output_fails_before_any_run_trains(tmp_path, monkeypatch, capsys):
    arguments = ["--datasets", "reviews_topic", "--output", str(tmp_path / "out" / "r.csv"), "--jobs", "0"]

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(store.tempfile, "mkstemp", read_only)
        assert reproduce.main(arguments, execute=fake_execute) == 2
    assert "cannot write the results files" in capsys.readouterr().err
    monkeypatch.setattr(store.shutil, "disk_usage", lambda folder: type("Usage", (), {"free": 2**20})())
    assert reproduce.main(arguments, execute=fake_execute) == 2
    assert "has 1 MB free" in capsys.readouterr().err
    assert calls(tmp_path) == [] and not (tmp_path / "out" / "r.csv").exists()


@pytest.mark.parametrize("arguments, expected", [
    (["--epochs", "0"], "argument --epochs: 0 is below 1"), (["--epochs", "-2"], "argument --epochs: -2 is below 1"),
    (["--train-size", "0"], "argument --train-size: 0 is below 1"), (["--seeds", "x"], "'x' is not a whole number"),
    (["--jobs", "-1"], "argument --jobs: -1 is below 0"), (["--methods", "hinge/course"], "must be loss/recipe"),
])
def test_bad_arguments_are_refused_up_front(capsys, arguments, expected):
    with pytest.raises(SystemExit):
        reproduce.main(arguments + ["--dry-run"])
    assert expected in capsys.readouterr().err


def test_an_unknown_dataset_is_refused_and_a_seed_given_twice_trains_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert reproduce.main(["--datasets", "nosuch", "--jobs", "0"], execute=fake_execute) == 2
    assert "dataset 'nosuch': unknown dataset 'nosuch'" in capsys.readouterr().err
    code = reproduce.main(["--datasets", "reviews_topic", "--methods", "ce/course", "--seeds", "1", "1",
                           "--epochs", "1", "--train-size", "24", "--jobs", "0"], execute=fake_execute)
    assert code == 0 and "--seeds names 1 more than once: each runs once" in capsys.readouterr().out
    assert read_results(tmp_path / "outputs" / "reproduction" / "cpu.csv").seed.tolist() == [1]


def test_defaults_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    committed = (ROOT / "results" / "reproduction_cpu.csv").read_bytes()
    assert reproduce.main(["--datasets", "reviews_topic", "--dry-run"]) == 0
    assert (tmp_path / "outputs" / "reproduction" / "cpu_plan.md").read_text().count("- valid ") == 12
    assert (ROOT / "results" / "reproduction_cpu.csv").read_bytes() == committed


def test_a_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(tmp_path, behaviour={"reviews_topic gloss+ce/course seed 0": "fail"})
    output = tmp_path / "results.csv"
    report = reproduce.run_grid(spec, output, jobs=0, execute=fake_execute)
    assert [str(r) for r in report.failed] == ["reviews_topic gloss+ce/course seed 0"] and len(report.finished) == 3
    failures = pd.read_csv(tmp_path / "results_failures.csv")
    assert failures[["loss", "recipe", "error", "message"]].values.tolist() == [
        ["gloss+ce", "course", "ValueError", "a planted failure"]]
    summary = reproduce.write_summary(output)
    assert "Failed, not finished since: reviews_topic gloss+ce/course seed 0 (ValueError: a planted failure)" in summary


@pytest.mark.parametrize("behaviour, error", [("interrupt", KeyboardInterrupt), ("disk", workers.FatalGridError)])
def test_a_fatal_error_cancels_the_queued_runs(tmp_path, capsys, behaviour, error):
    spec = tiny_spec(tmp_path, behaviour={"reviews_topic gloss+ce/course seed 0": behaviour})
    with pytest.raises(error):
        reproduce.run_grid(spec, tmp_path / "results.csv", jobs=0, execute=fake_execute)
    assert calls(tmp_path) == ["reviews_topic ce/course seed 0", "reviews_topic gloss+ce/course seed 0"]
    assert "3 run(s) stopped or cancelled, none of them recorded" in capsys.readouterr().out
    assert len(read_results(tmp_path / "results.csv")) == 2 and not (tmp_path / ".results.csv.claims").exists()


def test_a_full_disk_while_recording_stops_the_grid(tmp_path, monkeypatch):
    output = tmp_path / "results.csv"
    original, written = store.write_atomically, []

    def fill_up(path, text):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        original(path, text)

    monkeypatch.setattr(store, "write_atomically", fill_up)
    with pytest.raises(workers.FatalGridError, match="No space left"):
        reproduce.run_grid(tiny_spec(tmp_path), output, jobs=0, execute=fake_execute)
    assert len(calls(tmp_path)) == 2 and len(read_results(output)) == 2


def test_workers_take_the_gpus_in_turn_with_a_thread_budget_without_python_311_pools(tmp_path, monkeypatch):
    import concurrent.futures

    class Python310Pool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, max_tasks_per_child=None, **kwargs):
            if max_tasks_per_child is not None:
                raise TypeError("__init__() got an unexpected keyword argument 'max_tasks_per_child'")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Python310Pool)
    spec = tiny_spec(tmp_path, methods=["ce/course"], seeds=[0, 1, 2], gpus=["3", "5"], threads=1,
                     behaviour={"reviews_topic ce/course seed 2": "fail"})
    report = reproduce.run_grid(spec, tmp_path / "results.csv", jobs=2, execute=fake_execute)
    assert len(report.finished) == 2 and [str(r) for r in report.failed] == ["reviews_topic ce/course seed 2"]
    devices = set(read_results(tmp_path / "results.csv").device)
    assert devices == {"gpu 3 threads 1 rayon 1", "gpu 5 threads 1 rayon 1"}  # slots 0 and 1, one run each


def test_a_fatal_error_in_a_worker_cancels_the_queue(tmp_path):
    spec = tiny_spec(tmp_path, methods=["ce/course"], seeds=[0, 1, 2], gpus=[], threads=1,
                     behaviour={"reviews_topic ce/course seed 0": "disk"})  # its worker fills the disk
    with pytest.raises(workers.FatalGridError, match="OSError") as info:
        reproduce.run_grid(spec, tmp_path / "results.csv", jobs=1, execute=fake_execute)
    assert calls(tmp_path) == ["reviews_topic ce/course seed 0"] and len(info.value.cancelled) == 3


def test_gpus_jobs_and_threads_are_decided_from_what_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert workers.visible_gpus("cuda") == ["4", "6"] and workers.visible_gpus("auto") == ["4", "6"]
    assert workers.visible_gpus("cpu") == [] and workers.visible_gpus("cuda:1") == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert workers.visible_gpus("cuda") == ["0", "1"]
    assert workers.default_jobs(["0"], 16) == 4 and workers.default_jobs(["0", "1"], 16) == 8
    assert workers.default_jobs(["0"], 2) == 1 and workers.default_jobs([], 16) == 1
    environment = workers.worker_environment(3, ["4", "6"], 2)
    assert environment["CUDA_VISIBLE_DEVICES"] == "6" and environment["RAYON_NUM_THREADS"] == "2"
    assert environment["TOKENIZERS_PARALLELISM"] == "true"
    assert workers.worker_environment(0, [], 1)["TOKENIZERS_PARALLELISM"] == "false"


def test_precision_and_the_two_memories_on_an_injected_gpu(monkeypatch):
    cuda = torch.device("cuda")
    capability = (9, 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision_name("auto", cuda) == "bf16"  # a GPU with bf16 tensor cores
    assert precision_name("tf32", cuda) == "tf32"
    capability = (7, 5)
    assert precision_name("auto", cuda) == "fp16"  # a T4: fp16 with a loss scaler, not emulated bf16
    assert precision_name("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**30)
    allocated, resident = peak_memory_mb(cuda)
    assert allocated == 3072 and resident > 50 and resident != allocated


def test_the_batch_holds_every_class_plus_one():
    config = make_config(Run("r52", "ce", "course", 0), {"course": {"batch_size": 32}}, num_classes=52, device="cpu")
    assert config.batch_size == 53
    config = make_config(Run("r8", "gloss+ce", "course", 0), {"course": {"batch_size": 32}}, num_classes=8,
                         device="cpu")
    assert config.batch_size == 32


@needs_benchmarks
@pytest.mark.benchmark_data
@pytest.mark.parametrize("arguments, runs", [(["--full"], 90), (["--preset", "gpu-10min"], 90)])
def test_the_full_grids_dry_run_lists_every_run_as_valid(tmp_path, capsys, arguments, runs):
    output = tmp_path / "grid.csv"
    code = reproduce.main([*arguments, "--device", "cpu", "--dry-run", "--output", str(output)], execute=None)
    plan = (tmp_path / "grid_plan.md").read_text()
    assert code == 0 and f"{runs} runs, {runs} valid." in plan and plan.count("- valid ") == runs
    assert "- valid r52 ce/course seed 0: 10 epochs, batch 53 (raised from 32: 52 classes + 1)" in plan
    assert not output.exists()


def test_the_budget_estimate_and_trim_match_a_hand_computation():
    spec = {"datasets": ["a"], "methods": ["ce/course"], "seeds": [0, 1], "budget": {"course": {"epochs": 3}}}
    facts = {"a": {"classes": 2, "train": 100, "val": 30, "test": 60, "characters": 10}}
    costs = {"ce/course": {"per_document": 0.01, "overhead": 5.0}}
    # a run: 5 + 0.01 (E (100 + 30/3) + (100 + 2 * 60) / 3); two runs, two at once
    assert budget.estimate(spec, facts, costs, {"course": 3}, jobs=2) == pytest.approx(5 + 0.01 * (330 + 220 / 3))
    assert budget.trim(spec, facts, costs, 8.0, jobs=2) == ({"course": 2}, pytest.approx(5 + 0.01 * (220 + 220 / 3)))
    with pytest.raises(store.GridError, match="even at 1 epoch per recipe"):
        budget.trim(spec, facts, costs, 5.5, jobs=2)


def test_the_budgeted_preset_measures_estimates_trims_and_writes_a_summary_on_a_cpu(tmp_path, capsys):
    output = tmp_path / "gpu.csv"
    arguments = ["--preset", "gpu-10min", "--device", "cpu", "--datasets", "reviews_topic", "--seeds", "0",
                 "--methods", "ce/course", "gloss+ce/course", "--train-size", "40", "--jobs", "0",
                 "--output", str(output), "--work-dir", str(tmp_path / "work")]
    assert reproduce.main([*arguments, "--budget-minutes", "0.0001"], execute=fake_execute) == 2
    assert "even at 1 epoch per recipe" in capsys.readouterr().err and not output.exists()
    assert reproduce.main([*arguments, "--budget-minutes", "0.2"], execute=fake_execute) == 0
    plan = json.loads((tmp_path / "gpu_budget.json").read_text())
    # a fake epoch takes 0.01 s per training document: c = 0.4 / (40 + 32 / 3) per document (40 training and
    # 32 validation documents probed); a run of 40 / 180 / 180 documents costs c (E (40 + 60) + 400 / 3), and two
    # runs one at a time must fit the 12 s less the probe's own seconds p
    c = 0.4 / (40 + 32 / 3)
    assert plan["costs"]["ce/course"]["per_document"] == pytest.approx(c)
    expected = int(((12 - plan["probe_seconds"]) / (2 * c) - 400 / 3) // 100)
    assert plan["epochs_asked"] == {"course": 10} and plan["epochs"]["course"] == expected and 1 <= expected < 10
    assert plan["estimate_seconds"] <= 12 - plan["probe_seconds"]
    frame = read_results(output)
    assert set(frame.epochs) == {plan["epochs"]["course"]} and frame.groupby("loss").ngroups == 2
    summary = (tmp_path / "gpu_summary.md").read_text()
    assert "Budget 0.2 min: the first steps took" in summary and "caps it at 10 epochs" in summary
    assert f"Trimmed to fit: course from 10 to {plan['epochs']['course']} epochs" in summary
    capsys.readouterr()
    assert reproduce.main([*arguments, "--budget-minutes", "0.2"], execute=fake_execute) == 0  # resumed: same plan
    assert "Using the budget plan of" in capsys.readouterr().out


@needs_benchmarks
def test_the_gpu_course_dry_run_prints_the_plan_and_checks_every_input(tmp_path, capsys, monkeypatch):
    output = tmp_path / "gpu-run"
    assert gpu_course.main(["--output", str(output), "--repo", str(ROOT), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "-p DEVICE cuda" in printed and "step_cost.py --device cuda" in printed
    assert "--preset gpu-10min --device cuda" in printed and "Every input is there" in printed
    monkeypatch.setenv("GLOSS_LITE_DATA", str(tmp_path))
    assert gpu_course.main(["--output", str(output), "--repo", str(tmp_path), "--dry-run"]) == 2
    problems = capsys.readouterr().err
    assert "05_fine_tuning.ipynb is missing" in problems and "step_cost.py is missing" in problems
    assert f"{tmp_path / 'r52'}/ (or R52/) lacks train.csv" in problems
