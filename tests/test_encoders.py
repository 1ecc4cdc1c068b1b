import pytest
import torch

from gloss_lite.encoders import default_model_path, load_encoder

TEXTS = [
    "The battery lasts two days and the screen is bright.",
    "Dull plot, wooden acting.",
    "A quiet hotel with a friendly front desk, though the breakfast was cold and the room smelled of smoke.",
    "Great trail!",
    "The soup was salty.",
]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(device="cpu")


def test_default_is_the_offline_minilm(encoder):
    assert encoder.dim == 384
    assert sum(p.numel() for p in encoder.model.parameters()) == pytest.approx(22.7e6, rel=0.01)
    assert next(encoder.model.parameters()).dtype == torch.float32


def test_mean_pooling_matches_sentence_transformers(encoder):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(default_model_path()), device="cpu")
    expected = torch.as_tensor(reference.encode(TEXTS, normalize_embeddings=True))
    ours = torch.nn.functional.normalize(encoder.embed(TEXTS), dim=1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_mean_and_cls_pooling_by_hand(encoder):
    batch = encoder.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state
        mask = batch["attention_mask"]
        first = hidden[0, mask[0].bool()].mean(dim=0)
        second = hidden[1, mask[1].bool()].mean(dim=0)
        torch.testing.assert_close(encoder(TEXTS[:2]), torch.stack([first, second]))
        cls = load_encoder(pooling="cls", device="cpu")
        torch.testing.assert_close(cls(TEXTS[:2]), hidden[:, 0])


def test_embed_batches_by_length_but_keeps_input_order(encoder):
    together = encoder.embed(TEXTS, batch_size=2)
    one_by_one = torch.cat([encoder.embed([text]) for text in TEXTS])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)
    assert together.shape == (5, 384) and together.device.type == "cpu"
    assert encoder.embed([]).shape == (0, 384)


def test_embed_has_no_gradient_and_restores_training_mode(encoder):
    encoder.train()
    out = encoder.embed(TEXTS[:2])
    assert not out.requires_grad and encoder.training
    with_grad = encoder(TEXTS[:2])
    assert with_grad.requires_grad
    encoder.eval()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="model path .* does not exist"):
        load_encoder("./no/such/model")
    with pytest.raises(ValueError, match="model path .* does not exist"):
        load_encoder("/tmp/definitely-missing-model-folder")
    with pytest.raises(ValueError, match="pooling must be one of"):
        load_encoder(pooling="max")
    with pytest.raises(OSError, match=r"(?s)could not load model .no-such-org/no-such-model.*offline all-MiniLM"):
        load_encoder("no-such-org/no-such-model")  # HF_HUB_OFFLINE=1 (conftest): fails at once


def test_texts_must_be_a_list_of_strings(encoder):
    with pytest.raises(ValueError, match="list of strings"):
        encoder("just one string")


def test_embed_refuses_one_string_instead_of_embedding_its_characters(encoder):
    with pytest.raises(ValueError, match=r"got a single str \('a sentence'\); pass \[text\]"):
        encoder.embed("a sentence")
    with pytest.raises(ValueError, match="item 1 is a int"):
        encoder.embed(["fine", 3])
    with pytest.raises(ValueError, match="item 0 is a bytes"):
        encoder([b"bytes"])
    assert encoder.embed(("a sentence",)).shape == (1, 384)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        encoder.embed(["a", "b"], batch_size=0)


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    """A complete model folder, as save_pretrained writes it: a tiny BERT and the offline tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_model")
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_without(source, target, drop=()):
    target.mkdir()
    for path in source.iterdir():
        if path.name not in drop:
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_a_complete_model_folder_loads(tiny_model_folder):
    assert load_encoder(tiny_model_folder, device="cpu").dim == 16


def test_an_empty_or_incomplete_model_folder_is_a_clear_error(tiny_model_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty' is incomplete: it lacks config.json; the weights .*folder is empty"):
        load_encoder(tmp_path / "empty")
    no_weights = copy_without(tiny_model_folder, tmp_path / "no_weights", drop=("model.safetensors",))
    with pytest.raises(ValueError, match=r"no_weights' is incomplete: it lacks the weights \(model.safetensors"):
        load_encoder(no_weights)
    no_tokenizer = copy_without(tiny_model_folder, tmp_path / "no_tok", drop=("tokenizer.json", "vocab.txt"))
    with pytest.raises(ValueError, match=r"no_tok' is incomplete: it lacks a tokenizer"):
        load_encoder(no_tokenizer)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_encoder(tmp_path / "weights.bin")


def test_damaged_weights_are_a_clear_error(tiny_model_folder, tmp_path):
    damaged = copy_without(tiny_model_folder, tmp_path / "damaged")
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OSError, match=r"could not read the model files in .*damaged.*copy the folder again"):
        load_encoder(damaged)


def test_loaded_encoder_is_in_eval_mode_so_forward_is_deterministic():
    fresh = load_encoder(device="cpu")
    assert not fresh.training and not fresh.model.training
    torch.testing.assert_close(fresh(TEXTS[:2]), fresh(TEXTS[:2]))


def test_tokenize_equals_tokenizing_the_full_texts():
    from transformers import AutoTokenizer

    from gloss_lite.encoders import tokenize

    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    words = "Re: the Voyager probe's camera, data rates (1.2 kbit/s) & an über-long reply.\n"
    texts = [
        *TEXTS,
        words * 400,  # ~30,000 characters: cut long before the end
        "x" * 5000 + " tail",  # no whitespace in the character budget: tokenised whole
        "w" * 200 + " " + "v" * 200 + " a b c d e f g h",  # cut after a [UNK] word: tokenised again in full
        "a " * 100 + "b" * 90 + " end",  # a cut inside the budget, short enough to keep every token
    ]
    for max_length in (8, 32, 128):
        expected = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ours = tokenize(tokenizer, texts, max_length, chars_per_token=2)  # tiny budget: every path taken
        assert set(ours) == set(expected)
        for key in expected:
            assert torch.equal(ours[key], expected[key]), (max_length, key)
        default = tokenize(tokenizer, texts, max_length)
        assert torch.equal(default["input_ids"], expected["input_ids"])
    assert expected["attention_mask"][len(TEXTS)].sum() == 128  # the long post was truncated

    calls = []

    def recording(batch, **kwargs):
        calls.append(list(batch))
        return tokenizer(batch, **kwargs)

    recording.truncation_side = "right"
    tokenize(recording, texts, 8)  # budget 32 * 8 = 256 characters
    first, again = calls
    post, cut = texts[len(TEXTS)], first[len(TEXTS)]
    assert 240 <= len(cut) <= 256 and post.startswith(cut) and post[len(cut)] == " "  # cut at a space
    assert first[len(TEXTS) + 1] == texts[len(TEXTS) + 1]  # no whitespace to cut at: kept whole
    assert first[len(TEXTS) + 2] == "w" * 200 and again[len(TEXTS) + 2] == texts[len(TEXTS) + 2]
    assert again[len(TEXTS)] == first[len(TEXTS)]  # only the short row is tokenised in full
    short = tokenize(tokenizer, TEXTS[:2], 128)
    assert torch.equal(short["input_ids"], tokenizer(TEXTS[:2], padding=True, return_tensors="pt")["input_ids"])
