"""gloss_lite.reproduction.results: the one reader, paired intervals, verdicts and summaries, against hand
computations; where the committed results files are found."""

import math
import warnings

import pandas as pd
import pytest
import tomllib
from scipy import stats

from gloss_lite.reproduction import results
from gloss_lite.reproduction.one_run import Run
from gloss_lite.reproduction.results import (
    RESULT_COLUMNS,
    RUN_KEY,
    first_epoch_reaching,
    markdown_table,
    paired_interval,
    read_results,
    results_files,
    summarise,
    summarise_results,
    summary_markdown,
    verdict,
)

from conftest import ROOT


def write(tmp_path, text, name="results.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_first_epoch_reaching_is_one_based_and_none_when_never():
    assert first_epoch_reaching([0.5, 0.7, 0.9], 0.7) == 2
    assert first_epoch_reaching([0.8, 0.7], 0.75) == 1
    assert first_epoch_reaching([0.5, 0.6], 0.61) is None
    assert first_epoch_reaching([], 0.1) is None
    assert first_epoch_reaching([0.1 + 0.2], 0.3) == 1  # 0.30000000000000004 vs 0.3: float noise counts as reached


def test_one_run_key_for_the_grid_and_the_reader():
    assert RUN_KEY == ["dataset", "recipe", "loss", "seed"] == RESULT_COLUMNS[:4]
    assert dict(zip(RUN_KEY, Run("mr", "gloss+ce", "authors", 2).key())) == {
        "dataset": "mr", "recipe": "authors", "loss": "gloss+ce", "seed": 2}


def test_read_results_cleans_names_fills_optional_columns_and_keeps_the_last_of_a_repeated_row(tmp_path):
    path = write(tmp_path, (
        " Dataset , LOSS,seed,epoch,val_accuracy,my notes\n"
        "mr, ce,0,1,0.70,first\n"
        "mr,ce,0,2,0.75,\n"
        "\n"
        "mr,ce,0,2,0.76,again\n"  # repeated key: the last row wins
    ))
    frame = read_results(path)
    assert list(frame.columns) == RESULT_COLUMNS + ["my notes"]
    assert frame[["dataset", "recipe", "loss", "seed", "epoch"]].values.tolist() == [
        ["mr", "course", "ce", 0, 1], ["mr", "course", "ce", 0, 2]]
    assert frame["val_accuracy"].tolist() == [0.70, 0.76]
    assert frame["test_accuracy"].isna().all() and frame["peak_rss_mb"].isna().all()


def test_read_results_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results file"):
        read_results(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match=r"line 1 \(the header\): no column \['val_accuracy'\]"):
        read_results(write(tmp_path, "dataset,loss,seed,epoch\nmr,ce,0,1\n"))


ROW = {"dataset": "mr", "loss": "ce", "seed": "0", "epoch": "2", "val_accuracy": "0.7", "val_macro_f1": "0.6",
       "test_accuracy": "0.7", "seconds": "3"}


def file_with(tmp_path, column, value):
    """A file whose line 3 holds ``value`` in ``column`` (line 2 is a good row)."""
    bad = dict(ROW, **{column: value})
    return write(tmp_path, ",".join(ROW) + "\n" + ",".join(ROW.values()) + "\n" + ",".join(bad.values()) + "\n")


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("val_accuracy", "70", "a score between 0 and 1"),
        ("val_accuracy", "-0.5", "a score between 0 and 1"),
        ("val_accuracy", "inf", "a score between 0 and 1"),
        ("test_accuracy", "1.2", "a score between 0 and 1"),
        ("val_macro_f1", "-inf", "a score between 0 and 1"),
        ("seed", "0.5", "a whole number"),
        ("seed", "one", "a whole number"),  # a word as a seed
        ("val_accuracy", "high", "a score between 0 and 1"),  # garbage where a number belongs
        ("epoch", "1.5", "a whole number >= 0"),
        ("epoch", "-1", "a whole number >= 0"),
        ("seconds", "-3", "a finite number >= 0"),
    ],
)
def test_impossible_values_are_errors_naming_file_line_and_column(tmp_path, column, value, expected):
    path = file_with(tmp_path, column, value)
    with pytest.raises(ValueError, match=rf"line 3: {column} = '{value}' is not {expected}") as info:
        read_results(path)
    assert str(path) in str(info.value) and f"column {column}" in str(info.value)


def test_an_accuracy_in_percent_is_refused_by_the_reader_the_grid_uses(tmp_path):
    from gloss_lite.reproduction.run import finished_keys

    path = file_with(tmp_path, "test_accuracy", "85")
    with pytest.raises(ValueError, match="line 3: test_accuracy = '85' is not a score between 0 and 1"):
        finished_keys(path)


def test_a_renamed_column_is_named_with_its_likely_old_name(tmp_path):
    path = write(tmp_path, "dataset,loss,seed,epoch,val_acc\nmr,ce,0,1,0.7\n")
    with pytest.raises(ValueError, match=r"results.csv, line 1 \(the header\): no column \['val_accuracy'\] "
                                         r"\(renamed\? the file has 'val_acc' for 'val_accuracy'\)"):
        read_results(path)


def test_rows_with_too_many_or_too_few_values_name_their_line(tmp_path):
    good = ",".join(ROW.values())
    with pytest.raises(ValueError, match=r"line 3: 9 values for the 8 columns; fix or delete that line"):
        read_results(write(tmp_path, ",".join(ROW) + f"\n{good}\n{good},x\n"))
    with pytest.raises(ValueError, match=r"line 3: 4 values for the 8 columns \(cut short by a full disk"):
        read_results(write(tmp_path, ",".join(ROW) + f"\n{good}\nmr,ce,0,2"))
    with pytest.raises(ValueError, match=r"line 2: dataset is empty"):
        read_results(write(tmp_path, ",".join(ROW) + "\n" + good.replace("mr", " ", 1) + "\n"))


def test_an_empty_or_unreadable_results_file_names_the_path(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ValueError, match=r"results.csv is empty; a results file starts with the header line dataset"):
        read_results(path)
    path.write_bytes("dataset,loss,seed,epoch,val_accuracy\nmr,c\xe9,0,1,0.7\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"results.csv, line 2: not UTF-8 text \(byte 41"):
        read_results(path)


def test_paired_interval_is_the_t_interval_of_the_differences():
    scores, reference = [0.72, 0.75, 0.69], [0.70, 0.70, 0.70]
    mean, low, high = paired_interval(scores, reference)
    half = stats.t.ppf(0.975, 2) * pd.Series([0.02, 0.05, -0.01]).std() / math.sqrt(3)
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02 - half) and high == pytest.approx(0.02 + half)
    assert half == pytest.approx(4.302653 * 0.0300 / math.sqrt(3), rel=1e-4)
    assert paired_interval([0.8], [0.7]) == (pytest.approx(0.1), -math.inf, math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning reaches a notebook
        assert paired_interval([0.72, 0.72, 0.72], [0.7, 0.7, 0.7]) == pytest.approx((0.02, 0.02, 0.02))
    with pytest.raises(ValueError, match="one reference each"):
        paired_interval([0.1, 0.2], [0.1])


@pytest.mark.parametrize("low, high, better, expected", [
    (0.01, 0.05, "higher", "supported"), (-0.05, -0.01, "higher", "not supported"),
    (-0.01, 0.05, "higher", "undecided at this sample size"), (-3.0, -1.0, "lower", "supported"),
    (0.5, 2.0, "lower", "not supported"), (-math.inf, math.inf, "lower", "undecided at this sample size")])
def test_verdicts(low, high, better, expected):
    assert verdict(low, high, better) == expected


def synthetic_file(tmp_path):
    """Two recipes, three seeds; G-Loss+CE (course) beats CE by 0.02-0.04 and reaches CE's best earlier."""
    rows = []
    ce_curve = [0.60, 0.70, 0.75]
    for seed, gain in zip(range(3), (0.02, 0.03, 0.04)):
        for loss, recipe, curve, test in [
            ("ce", "course", ce_curve, 0.70), ("gloss+ce", "course", [0.65, 0.76, 0.77], 0.70 + gain),
            ("ce", "authors", ce_curve, 0.70), ("gloss+ce", "authors", [0.5, 0.6, 0.7], 0.70 - gain + 0.03)]:
            for epoch, value in enumerate(curve, start=1):
                last = epoch == 3
                rows.append({"dataset": "mr", "loss": loss, "recipe": recipe, "seed": seed, "epoch": epoch,
                             "val_accuracy": value, "test_accuracy": test if last else None,
                             "test_macro_f1": test if last else None, "test_accuracy_last": test,
                             "best_epoch": 3, "aux_grad_share": 0.5, "seconds": 1.0, "peak_rss_mb": 10.0,
                             "device": "cpu", "torch": "x", "precision": "fp32"})
    path = tmp_path / "synthetic.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_summary_compares_each_method_with_ce_of_its_own_recipe(tmp_path):
    scores, claims = summarise(read_results(synthetic_file(tmp_path)))
    assert scores.loc[("mr", "course", "gloss+ce"), "test_accuracy"] == pytest.approx(0.73)
    course = claims.set_index("recipe").loc["course"]
    assert course["test accuracy - CE"] == pytest.approx(0.03)
    assert course["higher final accuracy"] == "supported"  # 0.03 +- 4.30 * 0.01 / sqrt(3) = [0.005, 0.055]
    assert course["epochs to CE's best - CE's"] == -1 and course["faster convergence"] == "supported"
    authors = claims.set_index("recipe").loc["authors"]  # differences 0.01, 0.00, -0.01
    assert authors["higher final accuracy"] == "undecided at this sample size"
    assert authors["epochs to CE's best - CE's"] == 1  # never reaches 0.75: counted as epoch 4, CE's is 3
    assert authors["faster convergence"] == "not supported"


def test_markdown_tables_have_four_decimals_and_a_dash_for_none():
    frame = pd.DataFrame({"loss": ["ce", "gloss+ce"], "seeds": [3, 2], "share": [float("nan"), 0.123456]})
    assert markdown_table(frame).splitlines() == [
        "| loss     |   seeds |   share |",
        "|:---------|--------:|--------:|",
        "| ce       |       3 |  -      |",
        "| gloss+ce |       2 |  0.1235 |",
    ]


def test_the_committed_results_read_and_their_summary_is_what_the_reader_makes():
    (path,) = results_files(ROOT / "results", "reproduction_cpu.csv")
    frame = read_results(path)
    assert frame.groupby(RUN_KEY).ngroups == 24 and set(frame.precision) == {"fp32"}
    committed = (ROOT / "results" / "reproduction_cpu_summary.md").read_text(encoding="utf-8")
    assert summary_markdown(frame, path.name) == committed


def test_results_files_come_from_the_installed_copy_when_there_is_one(tmp_path, monkeypatch):
    assert results_files() == results_files(ROOT / "results")  # a clone: results/ beside the package
    assert results_files() and all(path.parent == ROOT / "results" for path in results_files())
    installed = tmp_path / "site" / "gloss_lite"
    (installed / "results_data").mkdir(parents=True)
    (installed / "results_data" / "reproduction_gpu.csv").write_text("dataset,loss,seed,epoch,val_accuracy\n")
    monkeypatch.setattr(results, "PACKAGE", installed)
    assert results_files() == [installed / "results_data" / "reproduction_gpu.csv"]


def test_the_package_ships_the_results_files_and_every_subpackage():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["gloss_lite.results_data"] == "results"
    patterns = setuptools["package-data"]["gloss_lite.results_data"]
    shipped = {path for pattern in patterns for path in (ROOT / "results").glob(pattern)}
    assert {path for path in (ROOT / "results").iterdir() if path.is_file()} <= shipped
    subpackages = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "gloss_lite").rglob("__init__.py")}
    assert subpackages <= set(setuptools["packages"]), "a subpackage missing from the wheel"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"scipy", "tabulate"} <= {entry.split(">")[0].split("=")[0].split("<")[0] for entry in dependencies}


def test_summarise_results_matches_a_hand_computation(tmp_path):
    rows = []
    curves = {  # (loss, seed) -> validation accuracy per epoch; test scores on the last epoch
        ("ce", 0): [0.60, 0.70, 0.80], ("ce", 1): [0.62, 0.72, 0.78],
        ("gloss+ce", 0): [0.70, 0.80, 0.81], ("gloss+ce", 1): [0.70, 0.79, 0.80],
        ("scl", 0): [0.5, 0.6, 0.7], ("scl", 1): [0.5, 0.6, 0.7],
    }
    tests = {("ce", 0): 0.75, ("ce", 1): 0.77, ("gloss+ce", 0): 0.80, ("gloss+ce", 1): 0.78,
             ("scl", 0): 0.7, ("scl", 1): 0.7}
    for (loss, seed), curve in curves.items():
        for epoch, acc in enumerate(curve, start=1):
            last = epoch == len(curve)
            rows.append({"dataset": "mr", "loss": loss, "seed": seed, "epoch": epoch, "val_accuracy": acc,
                         "test_accuracy": tests[loss, seed] if last else None, "seconds": 10.0})
    path = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    summary = summarise_results(read_results(path))
    # CE's mean curve: 0.61, 0.71, 0.79 -> best 0.79 at epoch 3.
    # G-Loss+CE's mean curve: 0.70, 0.795, 0.805 -> first >= 0.79 at epoch 2. SCL never reaches it.
    first = "first epoch >= ce's best val"
    assert summary.loc[("mr", "course", "ce"), first] == 3
    assert summary.loc[("mr", "course", "gloss+ce"), first] == 2
    assert math.isnan(summary.loc[("mr", "course", "scl"), first])
    assert summary.loc[("mr", "course", "gloss+ce"), "test accuracy"] == pytest.approx(0.79)
    assert summary.loc[("mr", "course", "ce"), "test accuracy std"] == pytest.approx(pd.Series([0.75, 0.77]).std())
    assert summary.loc[("mr", "course", "ce"), "best mean val accuracy"] == pytest.approx(0.79)
    assert summary.loc[("mr", "course", "ce"), "seconds per run"] == pytest.approx(30.0)
    assert summary.loc[("mr", "course", "ce"), "seeds"] == 2 and summary.loc[("mr", "course", "ce"), "epochs"] == 3


def test_recipes_are_kept_apart_and_compared_with_their_own_ce(tmp_path):
    path = tmp_path / "results.csv"
    rows = ["dataset,loss,recipe,seed,epoch,val_accuracy,test_accuracy,gpu"]
    for recipe, ce_curve, gloss_curve in (("course", (0.6, 0.7), (0.7, 0.72)), ("authors", (0.5, 0.8), (0.6, 0.7))):
        for loss, curve in (("ce", ce_curve), ("gloss+ce", gloss_curve)):
            rows += [f"mr,{loss},{recipe},0,{e},{v},{v if e == 2 else ''},H200" for e, v in enumerate(curve, 1)]
    path.write_text("\n".join(rows) + "\n")
    frame = read_results(path)
    assert len(frame) == 8 and set(frame.recipe) == {"course", "authors"}  # no CE row lost to the other recipe
    assert set(frame.device) == {"H200"}  # an older file's "gpu" column
    summary = summarise_results(frame)
    first = "first epoch >= ce's best val"
    assert summary.loc[("mr", "course", "gloss+ce"), first] == 1  # 0.7 reaches the course CE's 0.7
    assert math.isnan(summary.loc[("mr", "authors", "gloss+ce"), first])  # never reaches the authors' CE's 0.8
