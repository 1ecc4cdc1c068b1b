"""gloss_lite.reproduction.results: reading a results file and the convergence measure, against hand computations."""

import math

import pandas as pd
import pytest

from gloss_lite.reproduction.results import RESULT_COLUMNS, first_epoch_reaching, read_results, summarise_results


def test_first_epoch_reaching_is_one_based_and_none_when_never():
    assert first_epoch_reaching([0.5, 0.7, 0.9], 0.7) == 2
    assert first_epoch_reaching([0.8, 0.7], 0.75) == 1
    assert first_epoch_reaching([0.5, 0.6], 0.61) is None
    assert first_epoch_reaching([], 0.1) is None
    assert first_epoch_reaching([0.1 + 0.2], 0.3) == 1  # 0.30000000000000004 vs 0.3: float noise counts as reached


def write(tmp_path, text):
    path = tmp_path / "results.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_results_cleans_names_fills_optional_columns_and_drops_bad_rows(tmp_path, capsys):
    path = write(tmp_path, (
        " Dataset , LOSS,seed,epoch,val_accuracy\n"
        "mr, ce,0,1,0.70\n"
        "mr,ce,0,2,0.75\n"
        "mr,ce,0,2,0.76\n"  # repeated key: the last row wins
        "mr,ce,x,3,0.80\n"  # seed not numeric: dropped
        ",ce,0,4,0.80\n"  # no dataset: dropped
    ))
    frame = read_results(path)
    assert list(frame.columns) == RESULT_COLUMNS
    assert frame[["dataset", "loss", "seed", "epoch"]].values.tolist() == [["mr", "ce", 0, 1], ["mr", "ce", 0, 2]]
    assert frame["val_accuracy"].tolist() == [0.70, 0.76]
    assert frame["test_accuracy"].isna().all()
    assert "skipped 2 row(s)" in capsys.readouterr().out


def test_read_results_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results file"):
        read_results(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['val_accuracy'\]"):
        read_results(write(tmp_path, "dataset,loss,seed,epoch\nmr,ce,0,1\n"))


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


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("val_accuracy", "70", "a score between 0 and 1"),
        ("val_accuracy", "-0.5", "a score between 0 and 1"),
        ("val_accuracy", "inf", "a score between 0 and 1"),
        ("test_accuracy", "1.2", "a score between 0 and 1"),
        ("val_macro_f1", "-inf", "a score between 0 and 1"),
        ("seed", "0.5", "a whole number"),
        ("epoch", "1.5", "a whole number >= 0"),
        ("epoch", "-1", "a whole number >= 0"),
        ("seconds", "-3", "a finite number >= 0"),
    ],
)
def test_impossible_values_are_errors_naming_file_column_and_line(tmp_path, column, value, expected):
    row = {"dataset": "mr", "loss": "ce", "seed": "0", "epoch": "2", "val_accuracy": "0.7",
           "val_macro_f1": "0.6", "test_accuracy": "0.7", "seconds": "3"}
    good = ",".join(row.values())
    row[column] = value
    path = write(tmp_path, ",".join(row) + "\n" + good + "\n" + ",".join(row.values()) + "\n")
    with pytest.raises(ValueError, match=rf"line 3: {column} = .* is not {expected}") as info:
        read_results(path)
    assert str(path) in str(info.value)


def test_fractional_seeds_are_an_error_not_merged_into_one_run(tmp_path):
    path = write(tmp_path, "dataset,loss,seed,epoch,val_accuracy\nmr,ce,0.5,1,0.7\nmr,ce,0.7,1,0.8\n")
    with pytest.raises(ValueError, match=r"line 2: seed = 0.5 is not a whole number"):
        read_results(path)


def test_an_empty_or_unreadable_results_file_names_the_path(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ValueError, match=r"results.csv is empty; a results file has a header line dataset,loss"):
        read_results(path)
    path.write_bytes("dataset,loss,seed,epoch,val_accuracy\nmr,c\xe9,0,1,0.7\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"results.csv is not a readable CSV \(UnicodeDecodeError"):
        read_results(path)
