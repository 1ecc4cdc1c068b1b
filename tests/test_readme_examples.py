"""The README's "G-Loss in your own training code" examples run as they are written, in order."""

import re

import torch
from transformers import AutoModelForSequenceClassification

from gloss_lite.encoders import default_model_path

from conftest import ROOT

SECTION = "## G-Loss in your own training code"


def section_code_blocks():
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"the README lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_integration_examples_run_and_train(tmp_path, monkeypatch):
    blocks = section_code_blocks()
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)  # the trainers' output folders land here
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["loss"].sigma > 0  # GLossLoss estimated sigma on its first batch, then trained
    assert {"head_accuracy", "lpa_macro_f1"} <= set(namespace["scores"])  # GLossEvaluator on the trained model
    fresh = AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=2)
    trained = namespace["model"].bert.embeddings.word_embeddings.weight
    assert not torch.equal(trained, fresh.bert.embeddings.word_embeddings.weight)
    history = namespace["result"].history  # the cached-graph fit: one epoch of two graphs of 64
    assert len(history) == 1 and history[0]["loss"] > 0 and 0 <= history[0]["val_accuracy"] <= 1
