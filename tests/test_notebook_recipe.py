"""Notebooks 05 and 06 train with the course's recipe: their learning settings are ``TrainConfig()``'s.

The recipe is stated once, in ``gloss_lite.training.config``; a notebook that departs from it
must say so in its text, and this test names the departure.
"""

import pytest

from gloss_lite.course.run import NOTEBOOK_DIR, declared_parameters
from gloss_lite.training import TrainConfig

RECIPE = {"LR": "lr", "HEAD_LR": "head_lr", "BATCH_SIZE": "batch_size", "LAM": "lam",
          "GAMMA": "gamma", "SIGMA": "sigma"}


@pytest.mark.parametrize("notebook, epochs", [("05_fine_tuning.ipynb", "EPOCHS_CPU"),
                                              ("06_comparing_losses.ipynb", "EPOCHS")])
def test_the_notebook_trains_with_the_course_recipe(notebook, epochs):
    declared = declared_parameters(NOTEBOOK_DIR / notebook)
    recipe = TrainConfig()
    for parameter, field in {**RECIPE, epochs: "epochs"}.items():
        assert declared[parameter] == getattr(recipe, field), (
            f"{notebook}: {parameter} = {declared[parameter]!r}, but the course recipe's {field} is "
            f"{getattr(recipe, field)!r}; use the recipe, or state the departure and its reason")



def test_the_committed_comparison_of_losses_is_the_recipe_over_three_seeds():
    from gloss_lite.reproduction.results import RUN_KEY, read_results, results_files, summary_markdown

    (path,) = results_files(NOTEBOOK_DIR.parent / "results", "losses_reviews_cpu.csv")
    frame = read_results(path)
    recipe = TrainConfig()
    assert frame.groupby(RUN_KEY).ngroups == 15
    assert set(frame.loss) == {"ce", "gloss", "gloss+ce", "scl", "triplet"} and set(frame.seed) == {0, 1, 2}
    assert set(frame.recipe) == {"course"} and set(frame.train_size) == {320}
    for column in ("epochs", "batch_size", "max_length"):
        assert set(frame[column]) == {getattr(recipe, column)}, column
    committed = path.with_name("losses_reviews_cpu_summary.md").read_text(encoding="utf-8")
    assert summary_markdown(frame, path.name) == committed
