"""The frozen-feature reproduction: the feature cache, the statistics, the command on a tiny grid."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from test_train import tiny_encoder

from gloss_lite.data import Dataset, Split
from gloss_lite.reproduction import features as features_module
from gloss_lite.reproduction import frozen, frozen_summary
from gloss_lite.reproduction.features import frozen_features
from gloss_lite.reproduction.significance import (
    bootstrap_interval,
    discordant_counts,
    mcnemar_exact,
    pack_correct,
    seconds_to_reach,
    unpack_correct,
    wilson_interval,
)

# ---------------------------------------------------------------------------------------------
# The feature cache


class CountingEncoder:
    """Embeds a text as a vector drawn from its hash; counts the texts it was asked for."""

    device = torch.device("cpu")

    def __init__(self):
        self.calls = 0

    def embed(self, texts, progress=False):
        self.calls += 1
        return torch.stack([torch.randn(4, generator=torch.Generator().manual_seed(hash(t) % 2**31)) for t in texts])


def small_dataset(test_text="a dull film"):
    names = ("neg", "pos")
    train = Split(["a good film", "a bad film", "a fine film"], torch.tensor([1, 0, 1]), names)
    val = Split(["a good film", "dreadful"], torch.tensor([1, 0]), names)  # a text also in train
    test = Split([test_text, "great"], torch.tensor([0, 1]), names)
    return Dataset("tiny", train, val, test, names, source=None)


def model_folder(path, weights=b"weights one"):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer.json").write_text("{}")
    return path


def test_features_are_computed_once_then_read_back_in_each_splits_order(tmp_path):
    encoder, model = CountingEncoder(), model_folder(tmp_path / "model")
    first = frozen_features(small_dataset(), cache=tmp_path / "cache", model=model, encoder=encoder)
    again = frozen_features(small_dataset(), cache=tmp_path / "cache", model=model, encoder=encoder)
    assert not first.from_cache and again.from_cache and encoder.calls == 1
    expected = CountingEncoder().embed(["a good film", "dreadful"])
    assert torch.equal(again["val"], expected)  # rows follow the split, a repeated text gets its vector
    assert torch.equal(again["train"][0], again["val"][0])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"tiny-{first.key[:24]}.pt"]  # no temporary left


@pytest.mark.parametrize("change", ["data", "model", "pooling", "max_length"])
def test_a_change_of_data_model_pooling_or_length_recomputes_the_features(tmp_path, change):
    encoder, cache = CountingEncoder(), tmp_path / "cache"
    settings = {"dataset": small_dataset(), "model": model_folder(tmp_path / "model"), "pooling": "mean",
                "max_length": 128}
    before = frozen_features(settings.pop("dataset"), cache=cache, encoder=encoder, **settings)
    changed = {"data": {}, "model": {"model": model_folder(tmp_path / "other", b"weights two")},
               "pooling": {"pooling": "cls"}, "max_length": {"max_length": 64}}[change]
    dataset = small_dataset("an edited test text") if change == "data" else small_dataset()
    after = frozen_features(dataset, cache=cache, encoder=encoder, **{**settings, **changed})
    assert after.key != before.key and not after.from_cache and encoder.calls == 2
    assert frozen_features(small_dataset(), cache=cache, encoder=encoder, **settings).from_cache  # the old one stays


def test_a_damaged_cache_file_is_recomputed_and_bad_settings_are_refused(tmp_path):
    encoder, model = CountingEncoder(), model_folder(tmp_path / "model")
    found = frozen_features(small_dataset(), cache=tmp_path, model=model, encoder=encoder)
    (tmp_path / f"tiny-{found.key[:24]}.pt").write_bytes(b"not a torch file")
    assert not frozen_features(small_dataset(), cache=tmp_path, model=model, encoder=encoder).from_cache
    with pytest.raises(ValueError, match="pooling must be one of"):
        frozen_features(small_dataset(), cache=tmp_path, pooling="max", encoder=encoder)
    with pytest.raises(ValueError, match="max_length must be an int >= 2"):
        frozen_features(small_dataset(), cache=tmp_path, max_length=1.5, encoder=encoder)


def test_the_cache_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOSS_LITE_CACHE", str(tmp_path / "elsewhere"))
    assert features_module.cache_folder() == tmp_path / "elsewhere"
    monkeypatch.delenv("GLOSS_LITE_CACHE")
    assert features_module.cache_folder().parts[-3:] == (".cache", "gloss-lite", "features")


# ---------------------------------------------------------------------------------------------
# Statistics, against hand computations


@pytest.mark.parametrize("b, c", [(8, 2), (2, 8), (5, 5), (0, 0), (60, 35), (0, 7)])
def test_mcnemar_exact_is_twice_the_binomial_tail(b, c):
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n if n else 0.5
    assert mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024)


def test_discordant_counts_and_the_packed_correct_vector():
    method, reference = [1, 1, 0, 0, 1, 0, 1, 1, 1], [1, 0, 1, 0, 0, 0, 1, 0, 1]
    assert discordant_counts(method, reference) == (3, 1)
    assert unpack_correct(pack_correct(method), 9).tolist() == [bool(x) for x in method]
    with pytest.raises(ValueError, match="not the 20 test documents"):
        unpack_correct(pack_correct(method), 20)


def test_the_document_bootstrap_matches_the_normal_interval_of_the_per_document_differences():
    generator = np.random.default_rng(1)
    reference = generator.random((3, 4000)) < 0.80
    method = np.where(generator.random((3, 4000)) < 0.1, ~reference, reference)  # flips 10% of answers
    d, low, high = bootstrap_interval(method, reference, resamples=4000)
    per_document = (method.astype(float) - reference).mean(axis=0)
    half = 1.959964 * per_document.std(ddof=1) / math.sqrt(4000)
    assert d == pytest.approx(method.mean() - reference.mean())
    assert low == pytest.approx(d - half, abs=0.15 * half) and high == pytest.approx(d + half, abs=0.15 * half)


@pytest.mark.parametrize("correct, n", [(81, 100), (0, 20), (20, 20), (3554, 3554 + 100)])
def test_wilson_interval_solves_its_quadratic(correct, n):
    """The Wilson bounds are the p with (phat - p)^2 = z^2 p (1 - p) / n."""
    z, phat = stats.norm.ppf(0.975), correct / n
    a, b, c = 1 + z * z / n, -(2 * phat + z * z / n), phat * phat
    roots = sorted(np.roots([a, b, c]).real)
    assert wilson_interval(correct, n) == pytest.approx(tuple(roots), abs=1e-9)


def test_seconds_to_reach_counts_the_epochs_up_to_the_first_one_reaching_the_target():
    assert seconds_to_reach([0.5, 0.7, 0.8], [2.0, 3.0, 4.0], 0.7) == (5.0, True)
    assert seconds_to_reach([0.5, 0.6], [2.0, 3.0], 0.7) == (5.0, False)  # censored: all its seconds


def frozen_rows():
    """Three seeds on 10 test documents; G-Loss+CE gets 2 more right than CE on every seed."""
    rows, ce = [], np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    for seed in range(3):
        better = ce.copy()
        better[5 + seed: 7 + seed] = True
        for loss, correct, curve in (("ce", ce, "0.6 0.7 0.75"), ("gloss+ce", better, "0.76 0.77")):
            rows.append({"dataset": "mr", "loss": loss, "recipe": "course", "seed": seed,
                         "test_accuracy": correct.mean() + (0.01 * seed if loss == "gloss+ce" else 0),
                         "test_macro_f1": 0.5, "best_epoch": 2, "epochs_run": len(curve.split()), "seconds": 3.0,
                         "val_accuracy_curve": curve, "epoch_seconds": " ".join(["1.5"] * len(curve.split())),
                         "correct_bits": pack_correct(correct), "test_size": 10})
    return pd.DataFrame(rows)


def test_claims_pair_each_seed_with_ce_and_report_both_intervals(tmp_path):
    path = tmp_path / "runs.csv"
    frozen_rows().to_csv(path, index=False)
    (claim,) = frozen_summary.claims(frozen_summary.read_frozen(path)).to_dict("records")
    differences = [0.2, 0.21, 0.22]
    half = stats.t.ppf(0.975, 2) * np.std(differences, ddof=1) / math.sqrt(3)
    assert claim["accuracy - CE"] == pytest.approx(0.21)
    assert claim["seed 95% CI"] == pytest.approx((0.21 - half, 0.21 + half))
    assert claim["McNemar p<0.05 for / against"] == (0, 0)  # b = 2, c = 0 on 10 documents: p = 0.5
    assert claim["median McNemar p"] == pytest.approx(0.5)
    assert claim["seed verdict"] == "supported" and claim["higher final accuracy"] == claim["test-document verdict"]
    assert claim["epochs to CE's best - CE's"] == -2  # 0.76 >= 0.75 at epoch 1; CE reaches it at epoch 3
    assert claim["seconds to CE's best (method / CE)"] == (1.5, 4.5)
    assert frozen_summary.combined_verdict("supported", "undecided at this sample size") == \
        "undecided at this sample size"


# ---------------------------------------------------------------------------------------------
# The command on a tiny grid


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """The course's reviews (topic) embedded by a tiny random encoder, stored under the default model's key."""
    cache = tmp_path_factory.mktemp("feature-cache")
    frozen_features("reviews_topic", cache=cache, encoder=tiny_encoder())
    return cache


def test_the_command_runs_a_tiny_grid_writes_its_files_and_resumes_in_a_worker(tmp_path, tiny_cache, capsys):
    output = tmp_path / "frozen_features.csv"
    arguments = ["--tiny", "--output", str(output), "--cache", str(tiny_cache)]
    assert frozen.main(arguments) == 0
    runs = pd.read_csv(output)
    assert list(runs.columns) == frozen.COLUMNS and len(runs) == 2 * 4
    assert set(runs.recipe) == {"course", "authors"} and (runs.train_size == 540).all()
    for row in runs.itertuples():
        assert unpack_correct(row.correct_bits, row.test_size).mean() == pytest.approx(row.test_accuracy)
        assert row.epochs_run == len(row.val_accuracy_curve.split()) <= 3
    assert set(runs[runs.loss == "gloss+ce"].lam) == {0.5, 0.1}  # the course's and the authors' lam
    baselines = pd.read_csv(tmp_path / "baselines_frozen.csv")
    assert sorted(baselines.method) == ["linear probe", "lpa (dicm)", "lpa (sqrt)", "tf-idf + logistic regression"]
    assert (baselines.test_accuracy_low <= baselines.test_accuracy).all()
    summary = (tmp_path / "frozen_features_summary.md").read_text()
    assert summary.startswith("# Frozen features:") and "Not the paper's setting" in summary
    capsys.readouterr()
    output.write_text("\n".join(output.read_text().splitlines()[:-1]) + "\n")  # the last run is lost
    assert frozen.main([*arguments, "--jobs", "2"]) == 0  # resumed in a worker process
    assert "1 runs to go (7 already in" in capsys.readouterr().out
    assert len(pd.read_csv(output)) == 8 and len(pd.read_csv(tmp_path / "baselines_frozen.csv")) == 4


@pytest.mark.parametrize("arguments, message", [
    (["--jobs", "0"], "--jobs must be 1 or more"),
    (["--methods", "gloss+ce/paper"], "must be loss/recipe"),
    (["--methods", "gloss+ce/course"], "needs a CE method"),
    (["--seeds", "1", "1"], "distinct integers >= 0"),
    (["--epochs", "0"], "--epochs must be 1 or more"),
    (["--output", "results.txt"], "must be a .csv file"),
])
def test_bad_arguments_stop_the_command_before_any_work(tmp_path, capsys, arguments, message):
    cache = tmp_path / "no-cache-yet"
    with pytest.raises(SystemExit) as stopped:
        frozen.main(["--tiny", "--cache", str(cache), "--output", str(tmp_path / "out.csv"), *arguments])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not cache.exists() and not (tmp_path / "out.csv").exists()


def test_a_file_the_command_did_not_write_is_never_overwritten(tmp_path, capsys):
    mine = tmp_path / "frozen_features.csv"
    mine.write_text("my,own,table\n1,2,3\n")
    with pytest.raises(SystemExit):
        frozen.main(["--tiny", "--output", str(mine), "--cache", str(tmp_path / "cache")])
    assert "was not written by this command" in capsys.readouterr().err
    assert mine.read_text() == "my,own,table\n1,2,3\n"


# ---------------------------------------------------------------------------------------------
# The tiers of evidence


def test_the_tiers_gather_every_file_present_beside_the_published_numbers(tmp_path):
    import matplotlib

    from gloss_lite.reproduction import tiers

    matplotlib.use("Agg")
    results = frozen_summary.REFERENCES.parent
    for name in ("published_references.csv", "reproduction_cpu.csv"):
        (tmp_path / name).write_text((results / name).read_text())
    frozen_rows().to_csv(tmp_path / "frozen_features.csv", index=False)
    pd.DataFrame([{"dataset": "mr", "method": "linear probe", "test_accuracy": 0.7, "test_accuracy_low": 0.6,
                   "test_accuracy_high": 0.8}]).to_csv(tmp_path / "baselines_frozen.csv", index=False)
    scores = tiers.tier_scores(tmp_path)
    assert set(scores.tier) == {tiers.BASELINES, tiers.FROZEN, "fine-tuning, CPU, subsets", tiers.PUBLISHED}
    frozen_ce = scores[(scores.tier == tiers.FROZEN) & (scores.method == "CE")].iloc[0]
    assert frozen_ce.accuracy == pytest.approx(50.0) and frozen_ce.seeds == 3
    gap, datasets = tiers.mean_gap(scores, (tiers.FROZEN, "CE"), (tiers.PUBLISHED, "BERT (fine-tuned)"))
    assert (gap, datasets) == (pytest.approx(50.0 - 85.7), 1)
    reading = tiers.tier_reading(tiers.tier_claims(tmp_path)).set_index("key")
    frozen_row = reading.loc["frozen_gloss_ce_course"]
    assert frozen_row.datasets == 1 and frozen_row.mean_difference == pytest.approx(0.21)
    subsets = reading.loc["cpu_subsets_gloss_ce_course"]  # the committed file: MR and R8
    assert subsets.datasets == 2 and subsets.supported + subsets.not_supported + subsets.undecided == 2
    figure = tiers.plot_tiers(scores)
    assert [ax.get_title() for ax in figure.axes] == tiers.DATASETS  # the published numbers cover all five
    assert tiers.tier_scores(tmp_path / "nothing here").empty
