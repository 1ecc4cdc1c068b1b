"""G-Loss inside sentence-transformers and the Hugging Face Trainer, on tiny data on the CPU.

Each trainer's logged terms are checked against ``gloss_lite.losses.g_loss`` on the same
embeddings and mask, and the Trainer's update under gradient accumulation against one computed
by hand.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    TrainingArguments,
)

from gloss_lite.data import load_dataset
from gloss_lite.encoders import default_model_path, mean_pool
from gloss_lite.integrations import (
    GLossLoss,
    GLossTrainer,
    UnmaskableBatchWarning,
    balanced_batch_sampler,
    load_sentence_transformer,
)
from gloss_lite.losses import g_loss
from gloss_lite.masking import split_mask
from gloss_lite.sigma import sigma_sqrt
from gloss_lite.training.sampling import ClassBalancedBatchSampler

TOKENIZER = AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def reviews():
    train, _, _ = load_dataset("reviews_sentiment")
    return train.sample(24, seed=0)


# --------------------------------------------------------------------------------------------
# sentence-transformers


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny random BERT saved as a plain Hugging Face folder (sentence-transformers adds mean pooling)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=TOKENIZER.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(folder)
    TOKENIZER.save_pretrained(folder)
    return folder


def tiny_sentence_transformer(folder):
    return load_sentence_transformer(folder, max_seq_length=24, device="cpu")  # a pathlib.Path


def st_args(tmp_path, **changes):
    from sentence_transformers import SentenceTransformerTrainingArguments

    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-4,
                    lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                    disable_tqdm=True, seed=0, batch_sampler=balanced_batch_sampler)
    settings.update(changes)
    return SentenceTransformerTrainingArguments(**settings)


class RecordingGLossLoss(GLossLoss):
    """Keeps each training step's embeddings, labels, mask and returned terms."""

    def forward(self, sentence_features, labels):
        terms = super().forward(sentence_features, labels)
        if self.model.training:
            self.record.append((sentence_features[0]["sentence_embedding"].detach().clone(), labels.clone(),
                                self.gloss.last_mask.clone(), {k: float(v.detach()) for k, v in terms.items()}))
        return terms


def fixed_mask_gloss(model, texts, labels, sigma):
    """G-Loss of the whole set in eval mode, with one fixed mask: the same yardstick before and after."""
    embeddings = model.encode(texts, convert_to_tensor=True)
    mask = split_mask(labels, 0.7, generator=torch.Generator().manual_seed(123))
    return float(g_loss(embeddings, labels, mask, sigma=sigma, num_classes=2))


def test_glossloss_trains_a_sentence_transformer_and_logs_the_true_g_loss(tiny_folder, reviews, tmp_path):
    from sentence_transformers import SentenceTransformerTrainer

    start, model = tiny_sentence_transformer(tiny_folder), tiny_sentence_transformer(tiny_folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = RecordingGLossLoss(model, num_classes=2, sigma="sqrt", gamma=0.7, lam=0.5)
    loss.record = []
    data = Dataset.from_dict({"text": reviews.texts, "label": reviews.labels.tolist()})
    args = st_args(tmp_path, num_train_epochs=3, learning_rate=1e-3)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    head = loss.classifier.weight.detach().clone()
    trainer.train()
    assert len(loss.record) == 9  # 24 documents, batches of 8 (two of each class), 3 epochs
    for embeddings, labels, mask, _ in loss.record:
        assert labels.bincount().min() >= 2
    # sigma: SQRT of the first batch's embeddings (eval mode; without dropout the same as training's)
    assert loss.sigma == pytest.approx(sigma_sqrt(loss.record[0][0]), rel=1e-5)
    logged = [row for row in trainer.state.log_history if "gloss" in row]
    assert len(logged) == 9
    for row, (embeddings, labels, mask, terms) in zip(logged, loss.record):
        expected = 0.5 * float(g_loss(embeddings, labels, mask, sigma=loss.sigma, num_classes=2))
        assert row["gloss"] == pytest.approx(expected, abs=1e-4)
        assert row["loss"] == pytest.approx(row["gloss"] + row["ce"], abs=2e-4)
    moved = max(float((p.detach() - before[name]).abs().max()) for name, p in model.named_parameters())
    assert moved > 1e-4
    assert not torch.equal(loss.classifier.weight, head)  # the CE head inside the loss trains too
    # the loss falls: G-Loss of the whole set under one fixed mask, before and after training
    yardstick_before = fixed_mask_gloss(start, reviews.texts, reviews.labels, loss.sigma)
    yardstick_after = fixed_mask_gloss(model, reviews.texts, reviews.labels, loss.sigma)
    assert yardstick_after < 0.9 * yardstick_before, (yardstick_before, yardstick_after)


def test_glossloss_config_and_the_dict_of_terms(tiny_folder):
    minilm = tiny_sentence_transformer(tiny_folder)
    alone = GLossLoss(minilm, num_classes=2, sigma=0.5)
    assert alone.classifier is None and alone.get_config_dict()["lam"] == 1.0
    features = [minilm.tokenize(["good", "fine", "bad", "awful"])]
    terms = alone(features, torch.tensor([1, 1, 0, 0]))
    assert set(terms) == {"gloss"}
    mixed = GLossLoss(minilm, num_classes=2, sigma=0.5, lam=0.25)
    assert set(mixed(features, torch.tensor([1, 1, 0, 0]))) == {"gloss", "ce"}
    assert mixed.get_config_dict()["sigma"] == 0.5
    # in eval mode: sigma of this batch (not yet fixed), a mask from a fresh generator seeded by seed
    estimated = GLossLoss(minilm, num_classes=2, sigma="sqrt", seed=5).eval()
    minilm.eval()
    labels = torch.tensor([1, 1, 0, 0])
    with torch.no_grad():
        embeddings = minilm(minilm.tokenize(["good", "fine", "bad", "awful"]))["sentence_embedding"]
        value = estimated([minilm.tokenize(["good", "fine", "bad", "awful"])], labels)["gloss"]
    mask = split_mask(labels, 0.7, generator=torch.Generator().manual_seed(5))
    assert float(value) == pytest.approx(float(g_loss(embeddings, labels, mask, sigma=sigma_sqrt(embeddings),
                                                       num_classes=2)), rel=1e-5)
    assert estimated.sigma is None and estimated.gloss.last_mask is None
    for lam in (0, 0.0, 1.5, True):
        with pytest.raises(ValueError, match="lam is the weight of G-Loss"):
            GLossLoss(minilm, num_classes=2, lam=lam)
    with pytest.raises(ValueError, match="sigma must be a positive number, 'sqrt' or 'dicm'"):
        GLossLoss(minilm, num_classes=2, sigma="median")


def test_a_last_batch_of_one_gives_a_zero_g_loss_with_a_warning_and_training_goes_on(reviews, tmp_path):
    """On the offline MiniLM, loaded from its pathlib.Path."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.base.sampler import BatchSamplers

    model = load_sentence_transformer(default_model_path(), max_seq_length=16, device="cpu")
    before = model[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    loss = GLossLoss(model, num_classes=2, sigma=0.5, lam=1.0)
    data = Dataset.from_dict({"text": reviews.texts[:9], "label": reviews.labels[:9].tolist()})
    args = st_args(tmp_path, batch_sampler=BatchSamplers.BATCH_SAMPLER)  # plain shuffle: 8 + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    unmaskable = [w for w in caught if issubclass(w.category, UnmaskableBatchWarning)]
    assert len(unmaskable) == 1 and "a batch of 1 documents" in str(unmaskable[0].message)
    assert not torch.equal(model[0].auto_model.embeddings.word_embeddings.weight, before)
    single = loss([model.tokenize(["one lonely review"])], torch.tensor([1]))
    assert float(single["gloss"].detach()) == 0.0 and single["gloss"].requires_grad
    # the balanced sampler merges that document into the batch before: one batch of 9
    assert [len(b) for b in balanced_batch_sampler(data, 8, valid_label_columns=["label"])] == [9]


def test_model_fit_the_old_api_trains_with_glossloss(tiny_folder, reviews, tmp_path, monkeypatch):
    from sentence_transformers import InputExample
    from torch.utils.data import DataLoader

    monkeypatch.chdir(tmp_path)
    model = tiny_sentence_transformer(tiny_folder)
    before = model[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    examples = [InputExample(texts=[t], label=int(y)) for t, y in zip(reviews.texts[:16], reviews.labels[:16])]
    loss = GLossLoss(model, num_classes=2, sigma="dicm", lam=0.5)
    model.fit([(DataLoader(examples, batch_size=8, shuffle=True), loss)], epochs=1, scheduler="constantlr",
              optimizer_params={"lr": 1e-3}, show_progress_bar=False, checkpoint_path=None)
    assert loss.sigma is not None and loss.sigma > 0
    assert not torch.equal(model[0].auto_model.embeddings.word_embeddings.weight, before)


def test_load_sentence_transformer_takes_a_path_and_refuses_a_missing_one(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_sentence_transformer(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# the Hugging Face Trainer


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=TOKENIZER.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def tokenized(texts, labels, max_length=24):
    batch = TOKENIZER(list(texts), padding="max_length", truncation=True, max_length=max_length)
    return Dataset.from_dict({**batch, "labels": [int(y) for y in labels]})


def hf_args(tmp_path, **changes):
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=6, num_train_epochs=1, learning_rate=1e-3,
                    lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                    disable_tqdm=True, seed=0, max_grad_norm=0.0, weight_decay=0.0)
    settings.update(changes)
    return TrainingArguments(**settings)


class RecordingTrainer(GLossTrainer):
    """Keeps every training micro-batch, its mask and the G-Loss recomputed on its embeddings."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            batch = {k: v.detach().clone() for k, v in inputs.items()}
            with torch.no_grad():  # dropout is off: the embeddings the loss saw
                hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               token_type_ids=batch["token_type_ids"], output_hidden_states=True).hidden_states[-1]
            embeddings = mean_pool(hidden, batch["attention_mask"])
            mask = self.gloss.last_mask.clone()
            expected = float(g_loss(embeddings, batch["labels"], mask, sigma=self.sigma, num_classes=2))
            if not self.record:
                self.first_embeddings = embeddings
            self.record.append((batch, mask, expected))
        return loss


def micro_batch_terms(model, batch, mask, sigma):
    """CE and G-Loss of one micro-batch, written out by hand."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"], output_hidden_states=True)
    embeddings = mean_pool(out.hidden_states[-1], batch["attention_mask"])
    ce = F.cross_entropy(out.logits, batch["labels"])
    return ce, g_loss(embeddings, batch["labels"], mask, sigma=sigma, num_classes=2)


def sgd_step_by_hand(model, loss, lr):
    """The parameters after one SGD step on ``loss``: ``p - lr * dloss/dp``."""
    parameters = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
    return {name: p.detach() - lr * (0 if g is None else g) for (name, p), g in zip(parameters.items(), grads)}


def largest_difference(model, parameters):
    return max(float((p.detach() - parameters[name]).abs().max()) for name, p in model.named_parameters())


class NaiveTrainer(GLossTrainer):
    """The 10-line glue many write: G-Loss added to the model's own loss, the Trainer's scaling left as it is."""

    loss_is_scaled_for_ga = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch, output_hidden_states=True)
        embeddings = mean_pool(outputs.hidden_states[-1], inputs["attention_mask"])
        graph = g_loss(embeddings, inputs["labels"], self.masks.pop(0), sigma=0.7, num_classes=2)
        return 0.5 * outputs.loss + 0.5 * graph


def accumulate_one_step(trainer_class, reviews, tmp_path, **extra):
    model = tiny_classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = trainer_class(model=model, args=hf_args(tmp_path, gradient_accumulation_steps=2, max_steps=1),
                            train_dataset=tokenized(reviews.texts[:12], reviews.labels[:12]),
                            optimizers=(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)),
                            num_classes=2, sigma=0.7, lam=0.5)
    for name, value in extra.items():
        setattr(trainer, name, value)
    trainer.train()
    return trainer


def test_gloss_trainer_under_gradient_accumulation_steps_on_the_mean_of_the_micro_batch_losses(reviews, tmp_path):
    trainer = accumulate_one_step(RecordingTrainer, reviews, tmp_path / "gloss", record=[])
    assert trainer.model_accepts_loss_kwargs  # BERT's forward takes **kwargs: the Trainer trusts its scaling
    assert [len(batch["labels"]) for batch, _, _ in trainer.record] == [6, 7]  # a class of 3 reused once
    start = tiny_classifier()
    terms = [micro_batch_terms(start, batch, mask, 0.7) for batch, mask, _ in trainer.record]
    mean_loss = sum(0.5 * ce + 0.5 * graph for ce, graph in terms) / 2
    by_hand = sgd_step_by_hand(start, mean_loss, lr=0.5)
    step = largest_difference(start, by_hand)
    assert step > 1e-3  # a step large enough for a mis-scaled G-Loss to show
    assert largest_difference(trainer.model, by_hand) < 1e-5 * step
    assert trainer.state.log_history[0]["loss"] == pytest.approx(float(mean_loss.detach()), rel=1e-4)

    # the naive glue, on the same micro-batches and masks, steps on the sum of the micro-batch losses
    naive = accumulate_one_step(NaiveTrainer, reviews, tmp_path / "naive",
                                masks=[mask for _, mask, _ in trainer.record])
    start = tiny_classifier()
    terms = [micro_batch_terms(start, batch, mask, 0.7) for batch, mask, _ in trainer.record]
    # BERT's forward takes **kwargs, so the Trainer counts its loss as scaled already and does not divide by
    # the 2 micro-batches; but its CE is a per-batch mean (it ignores num_items_in_batch): the step sums them
    doubled = sum(0.5 * ce + 0.5 * graph for ce, graph in terms)
    assert largest_difference(naive.model, sgd_step_by_hand(start, doubled, lr=0.5)) < 1e-5 * step
    assert largest_difference(naive.model, by_hand) > 0.5 * step


def test_gloss_trainer_trains_logs_the_true_g_loss_and_evaluation_draws_no_mask(reviews, tmp_path):
    model = tiny_classifier()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train = tokenized(reviews.texts, reviews.labels)
    trainer = RecordingTrainer(model=model, args=hf_args(tmp_path, num_train_epochs=4), train_dataset=train,
                               eval_dataset=train, num_classes=2, sigma="sqrt", lam=0.5)
    trainer.record = []
    first = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert len(trainer.record) == 16  # 4 balanced batches of 6 per epoch, 4 epochs
    assert all(batch["labels"].bincount().min() >= 2 for batch, _, _ in trainer.record)
    assert trainer.sigma == pytest.approx(sigma_sqrt(trainer.first_embeddings), rel=1e-5)  # the first batch's
    logged = [row for row in trainer.state.log_history if "gloss" in row]
    for row, (_, _, expected) in zip(logged, trainer.record, strict=True):
        assert row["gloss"] == pytest.approx(0.5 * expected, rel=1e-4, abs=1e-6)
        assert row["loss"] == pytest.approx(row["gloss"] + row["ce"], rel=1e-4)
    assert max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()) > 1e-3
    first_epoch = sum(row["loss"] for row in logged[:4]) / 4
    last_epoch = sum(row["loss"] for row in logged[-4:]) / 4
    assert last_epoch < 0.9 * first_epoch, (first_epoch, last_epoch)

    state, mask = trainer.gloss.generator.get_state().clone(), trainer.gloss.last_mask
    metrics = trainer.evaluate()
    prediction = trainer.predict(train)
    assert torch.equal(trainer.gloss.generator.get_state(), state) and trainer.gloss.last_mask is mask
    assert prediction.predictions.shape == (len(train), 2)  # logits only, no hidden states
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(train["input_ids"]), attention_mask=torch.tensor(train["attention_mask"]),
                       token_type_ids=torch.tensor(train["token_type_ids"])).logits
    assert metrics["eval_loss"] == pytest.approx(float(F.cross_entropy(logits, torch.tensor(train["labels"]))),
                                                 rel=1e-4)
    assert metrics["eval_loss"] < first


def test_gloss_trainer_batches_are_the_balanced_sampler_s(reviews, tmp_path):
    train = tokenized(reviews.texts, reviews.labels)
    trainer = RecordingTrainer(model=tiny_classifier(), args=hf_args(tmp_path, num_train_epochs=2),
                               train_dataset=train, num_classes=2, sigma=0.7)
    trainer.record = []
    trainer.train()
    sampler = ClassBalancedBatchSampler(train["labels"], 6, seed=0)
    expected = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        expected += [sorted(map(tuple, (train[i]["input_ids"] for i in b))) for b in sampler]
    seen = [sorted(map(tuple, batch["input_ids"].tolist())) for batch, _, _ in trainer.record]
    assert seen == expected


def test_gloss_trainer_refuses_a_model_with_another_number_of_labels(tmp_path):
    with pytest.raises(ValueError, match="num_labels=3"):
        GLossTrainer(model=tiny_classifier(), args=hf_args(tmp_path), num_classes=3)
    with pytest.raises(ValueError, match="lam is the weight of G-Loss"):
        GLossTrainer(model=tiny_classifier(), args=hf_args(tmp_path), num_classes=2, lam=0)


def test_gloss_trainer_trains_minilm_loaded_from_a_path(reviews, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=2)
    before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    train = tokenized(reviews.texts[:12], reviews.labels[:12], max_length=16)
    trainer = GLossTrainer(model=model, args=hf_args(tmp_path, max_steps=1, learning_rate=1e-4),
                           train_dataset=train, num_classes=2, sigma="sqrt", lam=0.5)
    trainer.train()
    assert trainer.sigma > 0
    assert not torch.equal(model.bert.embeddings.word_embeddings.weight, before)
