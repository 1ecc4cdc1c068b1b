"""G-Loss inside sentence-transformers and the Hugging Face Trainer, on tiny data on the CPU.

Each trainer's logged terms are checked against ``gloss_lite.losses.g_loss`` on the same
embeddings and mask, the Trainer's update under gradient accumulation against one computed by
hand, a resumed run against the uninterrupted one, and the evaluator against scikit-learn.
"""

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BartConfig,
    BartForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    T5Config,
    T5ForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from gloss_lite.data import load_dataset
from gloss_lite.encoders import default_model_path, mean_pool
from gloss_lite.integrations import (
    GLossEvaluator,
    GLossHead,
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
    loss = RecordingGLossLoss(model, num_labels=2, return_terms=True)  # the defaults: sigma "sqrt", lam 0.5
    loss.record = []
    data = Dataset.from_dict({"text": reviews.texts, "label": reviews.labels.tolist()})
    args = st_args(tmp_path, num_train_epochs=3, learning_rate=1e-3)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    head = loss.head.linear.weight.detach().clone()
    trainer.train()
    assert len(loss.record) == 9  # 24 documents, batches of 8 (two of each class), 3 epochs
    for embeddings, labels, mask, _ in loss.record:
        assert labels.bincount().min() >= 2
    # sigma: SQRT of the first batch's embeddings, kept (float32) in the model's GLossHead
    assert loss.sigma == pytest.approx(sigma_sqrt(loss.record[0][0]), rel=1e-6)
    assert isinstance(model[-1], GLossHead) and model[-1].sigma == loss.sigma
    logged = [row for row in trainer.state.log_history if "gloss" in row]
    assert len(logged) == 9
    for row, (embeddings, labels, mask, terms) in zip(logged, loss.record):
        expected = 0.5 * float(g_loss(embeddings, labels, mask, sigma=loss.sigma, num_classes=2))
        assert row["gloss"] == pytest.approx(expected, abs=1e-4)
        assert row["loss"] == pytest.approx(row["gloss"] + row["ce"], abs=2e-4)
    moved = max(float((p.detach() - before[name]).abs().max()) for name, p in model.named_parameters()
                if name in before)
    assert moved > 1e-4
    assert not torch.equal(loss.head.linear.weight, head)  # the CE head in the model's GLossHead trains too
    # the loss falls: G-Loss of the whole set under one fixed mask, before and after training
    yardstick_before = fixed_mask_gloss(start, reviews.texts, reviews.labels, loss.sigma)
    yardstick_after = fixed_mask_gloss(model, reviews.texts, reviews.labels, loss.sigma)
    assert yardstick_after < 0.9 * yardstick_before, (yardstick_before, yardstick_after)
    # saved with the model: sigma and the head come back on load
    model.save_pretrained(str(tmp_path / "saved"))
    again = load_sentence_transformer(tmp_path / "saved", device="cpu")
    assert again[-1].sigma == loss.sigma and torch.equal(again[-1].linear.weight, loss.head.linear.weight)
    texts = reviews.texts[:4]
    assert torch.allclose(again.encode(texts, convert_to_tensor=True), model.encode(texts, convert_to_tensor=True))


def test_glossloss_returns_a_tensor_and_its_terms_on_request(tiny_folder):
    minilm = tiny_sentence_transformer(tiny_folder)
    features = [minilm.tokenize(["good", "fine", "bad", "awful"])]
    labels = torch.tensor([1, 1, 0, 0])
    alone = GLossLoss(minilm, num_labels=2, sigma=0.5, lam=1.0)
    assert not alone.head.classifier and alone.get_config_dict()["lam"] == 1.0
    value = alone(features, labels)
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.requires_grad
    mixed = GLossLoss(tiny_sentence_transformer(tiny_folder), num_labels=2, sigma=0.5, lam=0.25, return_terms=True)
    assert set(mixed(features, labels)) == {"gloss", "ce"}
    assert mixed.get_config_dict()["sigma"] == 0.5
    # in eval mode: sigma of this batch (not yet fixed), a mask from a fresh generator seeded by seed
    model = tiny_sentence_transformer(tiny_folder)
    estimated = GLossLoss(model, num_labels=2, sigma="sqrt", lam=1.0, seed=5).eval()
    model.eval()
    with torch.no_grad():
        embeddings = model(model.tokenize(["good", "fine", "bad", "awful"]))["sentence_embedding"]
        value = estimated([model.tokenize(["good", "fine", "bad", "awful"])], labels)
    mask = split_mask(labels, 0.7, generator=torch.Generator().manual_seed(5))
    assert float(value) == pytest.approx(float(g_loss(embeddings, labels, mask, sigma=sigma_sqrt(embeddings),
                                                       num_classes=2)), rel=1e-5)
    assert estimated.sigma is None and estimated.gloss.last_mask is None
    for lam in (0, 0.0, 1.5, True):
        with pytest.raises(ValueError, match="lam is the weight of G-Loss"):
            GLossLoss(minilm, num_labels=2, lam=lam)
    with pytest.raises(ValueError, match="sigma must be a positive number, 'sqrt' or 'dicm'"):
        GLossLoss(minilm, num_labels=2, sigma="median")
    with pytest.raises(ValueError, match="GLossHead has 2 labels but num_labels is 3"):
        GLossLoss(minilm, num_labels=3)


def test_matryoshka_loss_composes_with_glossloss(tiny_folder, reviews, tmp_path):
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    model = tiny_sentence_transformer(tiny_folder).eval()
    texts, labels = reviews.texts[:8], reviews.labels[:8]
    loss = MatryoshkaLoss(model, GLossLoss(model, num_labels=2, sigma=0.6, lam=1.0, seed=3), [32, 16],
                          matryoshka_weights=[1.0, 0.5])
    with torch.no_grad():
        value = loss([model.tokenize(texts)], labels)
        embeddings = model.encode(texts, convert_to_tensor=True)
    mask = split_mask(labels, 0.7, generator=torch.Generator().manual_seed(3))  # evaluation: the seeded mask

    def at(dim):
        return g_loss(F.normalize(embeddings[:, :dim], dim=1), labels, mask, sigma=0.6, num_classes=2)

    assert float(value) == pytest.approx(float(at(32) + 0.5 * at(16)), rel=1e-5)
    model.train()
    before = model[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    data = Dataset.from_dict({"text": reviews.texts[:16], "label": reviews.labels[:16].tolist()})
    SentenceTransformerTrainer(model=model, args=st_args(tmp_path, max_steps=2, learning_rate=1e-3),
                               train_dataset=data, loss=loss).train()
    assert not torch.equal(model[0].auto_model.embeddings.word_embeddings.weight, before)
    other = tiny_sentence_transformer(tiny_folder)
    headed = MatryoshkaLoss(other, GLossLoss(other, 2, sigma=0.6), [32, 16])  # lam 0.5: a head of 32 inputs
    with pytest.raises(ValueError, match="MatryoshkaLoss makes, cannot feed it"):
        headed([other.tokenize(texts)], labels)


def test_the_cached_glossloss_gives_the_gradient_of_the_plain_one(tiny_folder, reviews):
    texts, labels = reviews.texts[:12], reviews.labels[:12]
    grads = []
    for mini_batch_size in (None, 5):
        model = tiny_sentence_transformer(tiny_folder)
        torch.manual_seed(7)  # the same head, and the same training mask
        loss = GLossLoss(model, num_labels=2, sigma=0.6, lam=0.5, mini_batch_size=mini_batch_size)
        value = loss([model.tokenize(texts)], labels)
        value.backward()
        grads.append((float(value.detach()),
                      {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (cached, cached_grads) = grads
    assert cached == pytest.approx(plain, rel=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and "2.linear.weight" in plain_grads
    for name, grad in plain_grads.items():
        assert torch.allclose(cached_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_a_last_batch_of_one_gives_a_zero_g_loss_with_a_warning_and_training_goes_on(reviews, tmp_path):
    """On the offline MiniLM, loaded from its pathlib.Path."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.base.sampler import BatchSamplers

    model = load_sentence_transformer(default_model_path(), max_seq_length=16, device="cpu")
    before = model[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    loss = GLossLoss(model, num_labels=2, sigma=0.5, lam=1.0)
    data = Dataset.from_dict({"text": reviews.texts[:9], "label": reviews.labels[:9].tolist()})
    args = st_args(tmp_path, batch_sampler=BatchSamplers.BATCH_SAMPLER)  # plain shuffle: 8 + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    unmaskable = [w for w in caught if issubclass(w.category, UnmaskableBatchWarning)]
    assert len(unmaskable) == 1 and "a batch of 1 documents" in str(unmaskable[0].message)
    assert not torch.equal(model[0].auto_model.embeddings.word_embeddings.weight, before)
    single = loss([model.tokenize(["one lonely review"])], torch.tensor([1]))
    assert float(single.detach()) == 0.0 and single.requires_grad
    # the balanced sampler merges that document into the batch before: one batch of 9
    assert [len(b) for b in balanced_batch_sampler(data, 8, valid_label_columns=["label"])] == [9]
    with pytest.raises(ValueError, match="leave batch_sampler at its default"):
        balanced_batch_sampler(Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 0, 1]}), 8)


def test_model_fit_the_old_api_trains_with_glossloss(tiny_folder, reviews, tmp_path, monkeypatch):
    from sentence_transformers import InputExample
    from torch.utils.data import DataLoader

    monkeypatch.chdir(tmp_path)
    model = tiny_sentence_transformer(tiny_folder)
    before = model[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    examples = [InputExample(texts=[t], label=int(y)) for t, y in zip(reviews.texts[:16], reviews.labels[:16])]
    loss = GLossLoss(model, num_labels=2, sigma="dicm", lam=0.5)
    model.fit([(DataLoader(examples, batch_size=8, shuffle=True), loss)], epochs=1, scheduler="constantlr",
              optimizer_params={"lr": 1e-3}, show_progress_bar=False, checkpoint_path=None)
    assert loss.sigma is not None and loss.sigma > 0
    assert not torch.equal(model[0].auto_model.embeddings.word_embeddings.weight, before)


def test_load_sentence_transformer_takes_a_path_and_refuses_a_missing_one(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_sentence_transformer(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# the Hugging Face Trainer


def tiny_classifier(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=TOKENIZER.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
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
                            sigma=0.7, lam=0.5, balanced_batches=True)
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


def test_gloss_trainer_trains_logs_the_true_g_loss_and_evaluates_the_same_mixture(reviews, tmp_path):
    model = tiny_classifier()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train = tokenized(reviews.texts, reviews.labels)
    trainer = RecordingTrainer(model=model, args=hf_args(tmp_path, num_train_epochs=4), train_dataset=train,
                               eval_dataset=train, num_labels=2, sigma="sqrt", lam=0.5, balanced_batches=True)
    trainer.record = []
    first = trainer.evaluate()["eval_loss"]
    assert trainer.sigma is None  # evaluation estimates on each batch and fixes nothing
    trainer.train()
    assert len(trainer.record) == 16  # 4 balanced batches of 6 per epoch, 4 epochs
    assert all(batch["labels"].bincount().min() >= 2 for batch, _, _ in trainer.record)
    assert trainer.sigma == pytest.approx(sigma_sqrt(trainer.first_embeddings), rel=1e-5)  # the first batch's
    assert model.config.gloss_sigma == trainer.sigma  # saved with the model's config
    logged = [row for row in trainer.state.log_history if "gloss" in row]
    for row, (_, _, expected) in zip(logged, trainer.record, strict=True):
        assert row["gloss"] == pytest.approx(0.5 * expected, rel=1e-4, abs=1e-6)
        assert row["loss"] == pytest.approx(row["gloss"] + row["ce"], rel=1e-4)
    assert max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()) > 1e-3
    first_epoch = sum(row["loss"] for row in logged[:4]) / 4
    last_epoch = sum(row["loss"] for row in logged[-4:]) / 4
    assert last_epoch < 0.9 * first_epoch, (first_epoch, last_epoch)

    mask = trainer.gloss.last_mask
    metrics = trainer.evaluate()
    prediction = trainer.predict(train)
    assert trainer.gloss.last_mask is mask and trainer.evaluate()["eval_loss"] == metrics["eval_loss"]  # repeats
    assert prediction.predictions.shape == (len(train), 2)  # logits only, no hidden states
    by_batch = []
    with torch.no_grad():
        for start in range(0, len(train), 8):  # the evaluation batches, in order; each mask seeded by args.seed
            rows = train[start:start + 8]
            out = model(input_ids=torch.tensor(rows["input_ids"]), attention_mask=torch.tensor(rows["attention_mask"]),
                        token_type_ids=torch.tensor(rows["token_type_ids"]), output_hidden_states=True)
            labels = torch.tensor(rows["labels"])
            embeddings = mean_pool(out.hidden_states[-1], torch.tensor(rows["attention_mask"]))
            mask = split_mask(labels, 0.7, generator=torch.Generator().manual_seed(0))
            graph = g_loss(embeddings, labels, mask, sigma=trainer.sigma, num_classes=2)
            by_batch.append(0.5 * F.cross_entropy(out.logits, labels) + 0.5 * graph)
    assert metrics["eval_loss"] == pytest.approx(float(sum(by_batch) / len(by_batch)), rel=1e-4)
    assert metrics["eval_loss"] < first


def test_gloss_trainer_batches_are_the_balanced_sampler_s(reviews, tmp_path):
    train = tokenized(reviews.texts, reviews.labels)
    trainer = RecordingTrainer(model=tiny_classifier(), args=hf_args(tmp_path, num_train_epochs=2),
                               train_dataset=train, sigma=0.7, balanced_batches=True)
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
        GLossTrainer(model=tiny_classifier(), args=hf_args(tmp_path), num_labels=3)
    with pytest.raises(ValueError, match="lam is the weight of G-Loss"):
        GLossTrainer(model=tiny_classifier(), args=hf_args(tmp_path), lam=0)
    with pytest.raises(ValueError, match="train_dataset is empty"):
        empty = Dataset.from_dict({"input_ids": [], "labels": []})
        GLossTrainer(model=tiny_classifier(), args=hf_args(tmp_path), train_dataset=empty)


def test_gloss_trainer_trains_minilm_loaded_from_a_path(reviews, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=2)
    before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    train = tokenized(reviews.texts[:12], reviews.labels[:12], max_length=16)
    trainer = GLossTrainer(model=model, args=hf_args(tmp_path, max_steps=1, learning_rate=1e-4),
                           train_dataset=train, num_labels=2, sigma="sqrt", lam=0.5)
    trainer.train()
    assert trainer.sigma > 0
    assert not torch.equal(model.bert.embeddings.word_embeddings.weight, before)


# --------------------------------------------------------------------------------------------
# one vocabulary, one set of defaults


def test_fit_glossloss_and_gloss_trainer_share_their_defaults():
    from gloss_lite.training import TrainConfig

    config = TrainConfig()
    loss_defaults = inspect.signature(GLossLoss).parameters
    trainer_defaults = inspect.signature(GLossTrainer.__init__).parameters
    for name in ("lam", "sigma", "gamma"):
        assert loss_defaults[name].default == trainer_defaults[name].default == getattr(config, name), name
    assert config.lam == 0.5 and config.sigma == "sqrt"
    assert config.batch_sampler == "shuffle" and trainer_defaults["balanced_batches"].default is False
    assert "num_labels" in loss_defaults and "num_labels" in trainer_defaults


def test_balanced_batches_that_cannot_be_built_say_how_to_turn_them_off(tmp_path):
    # as on R52: a class with a single document cannot give two to a batch
    train = tokenized(["a", "b", "c", "d", "e"], [0, 0, 1, 1, 2])
    model = tiny_classifier()
    model.config.num_labels = 3
    trainer = GLossTrainer(model=model, args=hf_args(tmp_path), train_dataset=train, balanced_batches=True)
    with pytest.raises(ValueError, match=r"classes \[2\] have a single document.*balanced_batches=False"):
        trainer.get_train_dataloader()
    plain = GLossTrainer(model=model, args=hf_args(tmp_path), train_dataset=train)  # the default: the shuffle
    assert sum(len(batch["labels"]) for batch in plain.get_train_dataloader()) == 5


# --------------------------------------------------------------------------------------------
# a run stopped at step 2 and resumed equals the uninterrupted 4-step run


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def losses_at(trainer, steps):
    return [row["loss"] for row in trainer.state.log_history if "loss" in row and row["step"] in steps]


def stopped_and_resumed(make_trainer, folder):
    """(losses at steps 3 and 4, final parameters) of the uninterrupted run and of the resumed one."""
    whole = make_trainer(folder / "whole")
    whole.train()
    first = make_trainer(folder / "resumed")
    first.add_callback(StopAt(2))
    first.train()
    assert first.state.global_step == 2 and (folder / "resumed" / "checkpoint-2").is_dir()
    second = make_trainer(folder / "resumed")
    second.train(resume_from_checkpoint=str(folder / "resumed" / "checkpoint-2"))
    return [(losses_at(run, {3, 4}), {n: p.detach() for n, p in run.model.named_parameters()}, run)
            for run in (whole, second)]


def assert_same_run(whole, resumed):
    (whole_losses, whole_weights, _), (resumed_losses, resumed_weights, _) = whole, resumed
    assert len(whole_losses) == 2 and whole_losses == resumed_losses
    assert whole_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(whole_weights[name], resumed_weights[name]) for name in whole_weights)


@pytest.mark.parametrize("trainer_class", [Trainer, GLossTrainer])
def test_a_resumed_trainer_run_equals_the_uninterrupted_one(trainer_class, reviews, tmp_path):
    train = tokenized(reviews.texts[:18], reviews.labels[:18])

    def make_trainer(folder):
        extra = {"sigma": "sqrt", "lam": 0.5} if trainer_class is GLossTrainer else {}
        return trainer_class(model=tiny_classifier(dropout=0.1), train_dataset=train, **extra,
                             args=hf_args(folder, max_steps=4, save_strategy="steps", save_steps=2))

    whole, resumed = stopped_and_resumed(make_trainer, tmp_path)
    assert_same_run(whole, resumed)
    if trainer_class is GLossTrainer:  # sigma came back from the checkpoint, not from a new estimate
        assert resumed[2].sigma == whole[2].sigma and resumed[2].model.config.gloss_sigma == whole[2].sigma


def test_a_resumed_glossloss_run_equals_the_uninterrupted_one(tiny_folder, reviews, tmp_path):
    from sentence_transformers import SentenceTransformerTrainer

    data = Dataset.from_dict({"text": reviews.texts, "label": reviews.labels.tolist()})

    def make_trainer(folder):
        model = tiny_sentence_transformer(tiny_folder)
        model[0].auto_model.config.hidden_dropout_prob = 0.1
        torch.manual_seed(1)
        loss = GLossLoss(model, num_labels=2, sigma="sqrt", lam=0.5)  # sigma, the head and the masks to restore
        args = st_args(folder, max_steps=4, save_strategy="steps", save_steps=2, batch_sampler="batch_sampler")
        return SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)

    whole, resumed = stopped_and_resumed(make_trainer, tmp_path)
    assert_same_run(whole, resumed)
    assert resumed[2].loss.sigma == whole[2].loss.sigma


# --------------------------------------------------------------------------------------------
# encoder-decoder classifiers: G-Loss on the encoder's last hidden state


def tiny_encoder_decoder(kind):
    torch.manual_seed(0)
    special = dict(pad_token_id=TOKENIZER.pad_token_id, eos_token_id=TOKENIZER.sep_token_id,
                   decoder_start_token_id=TOKENIZER.cls_token_id, num_labels=2)
    if kind == "bart":
        config = BartConfig(vocab_size=TOKENIZER.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0,
                            bos_token_id=TOKENIZER.cls_token_id, **special)
        return BartForSequenceClassification(config)
    config = T5Config(vocab_size=TOKENIZER.vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=2, dropout_rate=0.0, **special)
    return T5ForSequenceClassification(config)


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_gloss_trainer_trains_encoder_decoder_classifiers_on_the_encoder_states(kind, reviews, tmp_path):
    model = tiny_encoder_decoder(kind)
    train = tokenized(reviews.texts[:12], reviews.labels[:12])
    trainer = GLossTrainer(model=model, args=hf_args(tmp_path, max_steps=2), train_dataset=train, sigma=0.7)
    rows = train[:8]
    batch = {"input_ids": torch.tensor(rows["input_ids"]), "attention_mask": torch.tensor(rows["attention_mask"])}
    labels = torch.tensor(rows["labels"])
    model.eval()
    with torch.no_grad():
        value = trainer.compute_loss(model, {**batch, "labels": labels})
        out = model(**batch)
        embeddings = mean_pool(out.encoder_last_hidden_state, batch["attention_mask"])
    mask = split_mask(labels, 0.7, generator=torch.Generator().manual_seed(0))  # evaluation's seeded mask
    expected = 0.5 * F.cross_entropy(out.logits, labels) + 0.5 * g_loss(embeddings, labels, mask, sigma=0.7,
                                                                           num_classes=2)
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    encoder = [n for n in before if "encoder" in n and "layer" in n]
    assert encoder and any(not torch.equal(before[n], dict(model.named_parameters())[n]) for n in encoder)


# --------------------------------------------------------------------------------------------
# the evaluator: the head's and label propagation's scores against scikit-learn


def test_gloss_evaluator_scores_the_head_and_label_propagation_as_scikit_learn_does(tiny_folder, reviews):
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.semi_supervised import LabelPropagation

    model = tiny_sentence_transformer(tiny_folder)
    GLossLoss(model, num_labels=2, sigma=0.3, lam=0.5)  # gives the model its GLossHead: sigma 0.3 and a head
    reference, queries = reviews.texts[:16], reviews.texts[16:]
    evaluator = GLossEvaluator(queries, reviews.labels[16:], reference_texts=reference,
                               reference_labels=reviews.labels[:16], scheme="row", name="reviews")
    metrics = evaluator(model)
    assert evaluator.primary_metric == "reviews_lpa_macro_f1"
    truth = reviews.labels[16:].numpy()
    with torch.no_grad():
        query_embeddings = model.encode(queries, convert_to_tensor=True)
        by_head = model[-1].linear(query_embeddings).argmax(dim=1).numpy()
    assert metrics["reviews_head_accuracy"] == pytest.approx(accuracy_score(truth, by_head))
    assert metrics["reviews_head_macro_f1"] == pytest.approx(f1_score(truth, by_head, average="macro"))
    # scikit-learn's label propagation: rbf kernel exp(-gamma d^2) on unit rows, gamma = 1 / (2 sigma^2)
    units = F.normalize(model.encode(reference + queries, convert_to_tensor=True).double(), dim=1).numpy()
    sigma = model[-1].sigma
    propagation = LabelPropagation(kernel="rbf", gamma=1 / (2 * sigma**2), max_iter=100_000, tol=1e-9)
    propagation.fit(units, list(reviews.labels[:16].tolist()) + [-1] * len(queries))
    by_lpa = propagation.transduction_[16:]
    assert metrics["reviews_lpa_accuracy"] == pytest.approx(accuracy_score(truth, by_lpa))
    assert metrics["reviews_lpa_macro_f1"] == pytest.approx(f1_score(truth, by_lpa, average="macro"))
    with pytest.raises(ValueError, match="no classification head"):
        GLossEvaluator(queries, reviews.labels[16:])(tiny_sentence_transformer(tiny_folder))
    with pytest.raises(ValueError, match="8 texts but 3 labels"):
        GLossEvaluator(queries, [0, 1, 0])


# --------------------------------------------------------------------------------------------
# torch.compile traces G-Loss in one graph (the timing is benchmarks/compile_step.py's)


@pytest.mark.parametrize("scheme, target, weighted", [("gloss", "nll", False), ("row", "authors", True)])
def test_g_loss_compiles_in_one_graph_to_the_eager_value_and_gradient(scheme, target, weighted):
    torch._dynamo.reset()
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    mask = split_mask(labels, 0.6, generator=generator)
    options = dict(sigma=0.4, num_classes=3, scheme=scheme, target=target, divide_by_hidden=weighted,
                   class_weights=torch.tensor([1.0, 2.0, 0.5]) if weighted else None)
    results = []
    for function in (g_loss, torch.compile(g_loss, fullgraph=True, backend="aot_eager")):
        embeddings = torch.randn(10, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
        value = function(embeddings, labels, mask, **options)
        value.backward()
        results.append((value.detach(), embeddings.grad))
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-7)
    assert torch.allclose(compiled_grad, eager_grad, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------------------------
# one graph across processes: GLossLoss(gather_across_devices=True) in two gloo processes


GATHER_SIZES = (5, 7)


def gathered_batch():
    generator = torch.Generator().manual_seed(4)
    return torch.randn(sum(GATHER_SIZES), 8, generator=generator), torch.tensor([0, 1, 2] * 4)


def gather_task(rank, folder):
    model = tiny_sentence_transformer(folder).train()
    loss = GLossLoss(model, num_labels=3, sigma="sqrt", lam=1.0, gather_across_devices=True)
    embeddings, labels = gathered_batch()
    start = sum(GATHER_SIZES[:rank])
    local = embeddings[start:start + GATHER_SIZES[rank]].clone().requires_grad_()
    value = torch.stack(list(loss.compute_loss_from_embeddings(local, labels[start:start + len(local)]).values()))
    value.sum().backward()
    return {"loss": float(value.sum().detach()), "grad": local.grad, "sigma": loss.sigma,
            "mask": loss.gloss.last_mask}


def test_glossloss_gathered_across_two_processes_is_one_graph_with_one_sigma(tiny_folder, tmp_path):
    from test_distributed import run_processes

    results = run_processes(gather_task, tmp_path, str(tiny_folder))
    embeddings, labels = gathered_batch()
    assert results[0]["sigma"] == results[1]["sigma"]  # rank 0's estimate, on the global batch, for both
    sigma = float(torch.tensor(sigma_sqrt(embeddings), dtype=torch.float32))  # kept as float32 in the GLossHead
    assert results[0]["sigma"] == pytest.approx(sigma, rel=1e-6)
    assert torch.equal(results[0]["mask"], results[1]["mask"]) and len(results[0]["mask"]) == len(labels)
    whole = embeddings.clone().requires_grad_()
    reference = g_loss(whole, labels, results[0]["mask"], sigma=results[0]["sigma"], num_classes=3)
    reference.backward()
    for rank, result in enumerate(results):
        start = sum(GATHER_SIZES[:rank])
        assert result["loss"] == pytest.approx(float(reference.detach()), rel=1e-5)
        # the gather's backward sums both ranks' copies of the loss: W = 2 times the single-process gradient,
        # which DDP's average over the ranks divides again (gloss_lite.training.distributed)
        expected = 2 * whole.grad[start:start + GATHER_SIZES[rank]]
        assert torch.allclose(result["grad"], expected, rtol=1e-4, atol=1e-7)
